"""The exception tree: shape, pickling, and no secrets in messages."""

from __future__ import annotations

import pickle

import pytest
import requests

import requests_tanium_session as rts
from requests_tanium_session import exceptions as exc


def test_tree() -> None:
    assert issubclass(exc.TaniumAuthError, requests.exceptions.RequestException)
    for cls in (
        exc.LoginError,
        exc.LogoutError,
        exc.AuthServiceUnavailable,
        exc.VersionMismatchError,
    ):
        assert issubclass(cls, exc.TaniumAuthError)
    assert issubclass(exc.InvalidToken, exc.LoginError)
    assert issubclass(exc.NotLoggedInError, exc.LoginError)
    assert issubclass(exc.VersionMismatchError, ValueError)
    assert issubclass(exc.GetPlatformVersionWarning, UserWarning)
    assert exc.__doc__ is not None and "└── TaniumAuthError" in exc.__doc__


def test_public_names() -> None:
    for name in (
        "TaniumSessionAuth", "SessionId", "HttpClient", "TaniumAuthError", "LoginError",
        "InvalidToken", "NotLoggedInError", "LogoutError", "AuthServiceUnavailable",
        "VersionMismatchError", "GetPlatformVersionWarning", "__version__",
    ):  # fmt: skip
        assert hasattr(rts, name), name
    assert rts.__version__ == "0.1.0"


ALL = [
    exc.TaniumAuthError, exc.LoginError, exc.InvalidToken, exc.NotLoggedInError,
    exc.LogoutError, exc.AuthServiceUnavailable, exc.VersionMismatchError,
]  # fmt: skip


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_pickle_keeps_type_and_message_and_drops_response(cls: type[exc.TaniumAuthError]) -> None:
    resp = requests.Response()
    resp.status_code = 403
    req = requests.Request("GET", "https://h.example/x", headers={"session": "1-2-secretvalue"})
    resp.request = req.prepare()
    err = cls("GET https://h.example/x answered 403", response=resp)
    assert err.response is resp and err.request is resp.request
    data = pickle.dumps(err)
    assert b"secretvalue" not in data
    back = pickle.loads(data)
    assert type(back) is cls
    assert str(back) == str(err) and back.args == err.args
    assert back.response is None
    assert "secretvalue" not in repr(err) and "secretvalue" not in str(err)


def test_retryable() -> None:
    assert exc.AuthServiceUnavailable("x").retryable
    assert not exc.LoginError("x").retryable
