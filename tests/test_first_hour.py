"""A new user's mistakes explain themselves: one line, the fix named, no secret (issue 19)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import warnings
from pathlib import Path

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from requests_tanium_session import (
    FileStore,
    LoginError,
    TaniumSession,
    TaniumSessionAuth,
)
from requests_tanium_session.httpx import TaniumAuth
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

from .conftest import Servers, free_port

USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]
SENSORS = "/api/v2/sensors"
DENIED = "/api/v2/denied"


def test_the_httpx_auth_given_to_requests_names_the_requests_one(server: TaniumServer) -> None:
    auth = TaniumAuth(server.url, server.new_session())
    with requests.Session() as s, pytest.raises(TypeError) as info:
        s.get(server.url + SENSORS, auth=auth)  # type: ignore[arg-type]
    assert "TaniumSessionAuth" in str(info.value)
    assert server.count(SENSORS) == 0


def test_the_requests_auth_given_to_httpx_names_the_httpx_one(server: TaniumServer) -> None:
    auth = TaniumSessionAuth(server.url, server.new_session())
    with httpx.Client(auth=auth) as client, pytest.raises(TypeError) as info:  # type: ignore[arg-type]
        client.get(server.url + SENSORS)
    assert "requests_tanium_session.httpx.TaniumAuth" in str(info.value)
    assert "startswith" not in str(info.value)


def test_mounting_a_retry_of_401_403_warns(server: TaniumServer) -> None:
    with TaniumSession(server.url, server.new_session()) as s:
        with pytest.warns(UserWarning, match=r"401, 403 in status_forcelist.*remove them"):
            s.mount("http://", HTTPAdapter(max_retries=Retry(status_forcelist=[401, 403, 503])))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            s.mount("https://", HTTPAdapter(max_retries=Retry(status_forcelist=[502, 503])))


def test_a_401_403_urllib3_already_retried_is_reported_once(
    server: TaniumServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain session: nothing warns at mount time, so the hook says it, once."""
    auth = TaniumSessionAuth(server.url, server.new_session())
    retry = Retry(total=2, status_forcelist=[403], raise_on_status=False, backoff_factor=0)
    with requests.Session() as s:
        s.mount("http://", HTTPAdapter(max_retries=retry))
        s.auth = auth
        assert [s.get(server.url + DENIED).status_code for _ in range(2)] == [403, 403]
    told = [r for r in caplog.records if "status_forcelist" in r.getMessage()]
    assert [r.levelno for r in told] == [logging.WARNING]
    assert server.count(DENIED) == 6  # urllib3 sent each three times


def test_a_store_in_a_shared_directory_advises_a_private_one(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(PermissionError) as info:
        FileStore(shared / "x.json")
    message = str(info.value)
    assert "private directory" in message and "mkdir -m 700" in message
    assert "chmod go=" not in message


def test_a_missing_store_directory_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    store = FileStore(home / "myapp" / "session.json")
    info = (home / "myapp").stat()
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert store.load() is None


def test_a_misspelt_argument_is_refused_before_any_login(server: TaniumServer) -> None:
    with pytest.raises(TypeError, match="revalidate_afer"):
        TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD, revalidate_afer=60)  # type: ignore[call-arg]
    assert server.auth_calls["login"] == 0


def test_a_session_with_a_trailing_newline_says_where_and_what(
    server: TaniumServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = server.new_session()
    monkeypatch.setenv("TANIUM_URL", server.url)
    monkeypatch.setenv("TANIUM_SESSION", session + "\n")
    with pytest.raises(ValueError) as info:
        TaniumSessionAuth.from_env()
    message = str(info.value)
    assert "TANIUM_SESSION" in message and "strip" in message
    assert session not in message


def test_a_dead_session_names_the_remedy(server: TaniumServer) -> None:
    auth = TaniumSessionAuth(server.url, server.new_session())
    server.revoke_user()
    with requests.Session() as s:
        s.auth = auth
        with pytest.raises(LoginError) as info:
            s.get(server.url + SENSORS)
        assert "refresh=" in str(info.value) and "from_credentials()" in str(info.value)
        with pytest.raises(LoginError) as again:
            s.get(server.url + SENSORS)  # the object is dead now
        assert "auth.token" in str(again.value)


def test_a_page_instead_of_a_token_says_check_the_url(servers: Servers) -> None:
    server = servers.start()
    server.inject("/auth", status=200, body=b"<!DOCTYPE html><html>Welcome</html>", count=None)
    auth = TaniumSessionAuth(server.url, server.new_session(), revalidate_after=0)
    with pytest.raises(LoginError, match="is this a Tanium server\\? check the URL"):
        auth.session_id.validate()


@pytest.mark.parametrize("case", ["refused", "tls-to-http"])
def test_a_transport_failure_is_short_and_says_check_the_url(
    server: TaniumServer, case: str
) -> None:
    url = (
        f"http://127.0.0.1:{free_port()}"
        if case == "refused"
        else server.url.replace("http://", "https://")
    )
    auth = TaniumSessionAuth(url, server.new_session(), revalidate_after=0)
    with pytest.raises(requests.ConnectionError) as info:
        auth.session_id.validate()
    message = str(info.value)
    assert "check the URL" in message and "Max retries" not in message and len(message) < 160
    assert isinstance(info.value.__cause__, requests.ConnectionError)  # the details


def test_a_coroutine_refresh_is_refused_by_the_sync_httpx_client(server: TaniumServer) -> None:
    async def refresh() -> str:
        return server.new_session()

    auth = TaniumAuth(server.url, server.new_session(), refresh=refresh)
    with pytest.raises(TypeError, match="async_client"):
        auth.client()
    asyncio.run(auth.async_client().aclose())  # an AsyncClient can await it


def test_a_coroutine_refresh_in_a_plain_sync_client_fails_at_the_first_check(
    server: TaniumServer,
) -> None:
    async def refresh() -> str:
        return server.new_session()

    auth = TaniumAuth(server.url, server.new_session(), refresh=refresh, revalidate_after=0)
    with httpx.Client(auth=auth) as client, pytest.raises(TypeError, match="async_client"):
        client.get(server.url + SENSORS)  # stale at once: the first check, not a death
    assert server.count("/auth") == 0 and server.count(SENSORS) == 0
