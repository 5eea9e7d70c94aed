"""The policy without any I/O: generators driven by hand, with answers a test makes up.

This is what sans-I/O buys: a rule that needs a server no test can start (a Tanium
Cloud host) is checked by answering the effect it yields.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from requests_tanium_session import LoginError
from requests_tanium_session._effects import Credentials, Exchange
from requests_tanium_session._policy import login
from requests_tanium_session.protocol import AUTH_PATH, judge_soap, login_headers


class Reply:
    def __init__(self, status: int, body: Optional[bytes], url: str) -> None:
        self.status, self.body, self.url, self.response = status, body, url, None


def answer(flow: Any, reply: Reply) -> Any:
    """Run ``flow`` to its first effect, answer it with ``reply``; return its value."""
    effect = next(flow)
    assert isinstance(effect, Exchange) and effect.call.path == AUTH_PATH
    try:
        flow.send(reply)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the login asked for more than one call")


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refused_login_at_tanium_cloud_says_to_use_an_api_token(status: int) -> None:
    headers = Credentials(login_headers("admin", "secret"))
    url = "https://acme-api.cloud.tanium.com/auth"
    with pytest.raises(LoginError, match="API token") as info:
        answer(login(headers, 5), Reply(status, b"", url))
    assert "on-prem" in str(info.value) and "secret" not in str(info.value)


def test_a_refused_login_on_prem_says_the_credentials_were_refused() -> None:
    flow = login(Credentials(login_headers("admin", "secret")), 5)
    with pytest.raises(LoginError, match="credentials were refused") as info:
        answer(flow, Reply(401, b"", "https://tanium.example.com/auth"))
    assert "API token" not in str(info.value)


def test_persistent_is_one_header() -> None:
    assert login_headers("a", "b", persistent=True)["persistent"] == "1"
    assert "persistent" not in login_headers("a", "b")
    with pytest.raises(TypeError, match="persistent"):
        login_headers("a", "b", persistent="yes")  # type: ignore[arg-type]


SENT = "1-2-" + "ab" * 64
NEW = "1-3-" + "cd" * 64


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"<command>GetObject</command><session>{SENT}</session>", (False, None)),
        (f"<command>GetObject</command><session>{NEW}</session>", (False, NEW)),
        ("<command>ERROR: 403 Forbidden</command><session></session>", (True, None)),
        ("<command>RBACInsufficientPrivilege</command>", (True, None)),
        ("<command>GetObject</command><session>x</session>", (False, None)),  # not a token
        ("<command>GetObject</command><session>token-abcdef0123456789</session>", (False, None)),
        ("no command at all", (False, None)),
    ],
)
def test_judge_soap(body: str, expected: tuple[bool, Optional[str]]) -> None:
    assert judge_soap(body.encode(), SENT) == expected
