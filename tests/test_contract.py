"""The contract: one scenario, every front-end, counted by the local server.

Each test runs through requests, httpx sync, httpx async and aiohttp (the harness is
``tests/harness.py``): the ``front`` fixture is the only thing that differs.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import time
import warnings
from collections.abc import Callable
from typing import Any, Optional

import pytest

from requests_tanium_session import (
    AuthServiceUnavailable,
    GetPlatformVersionWarning,
    LoginError,
    MemoryStore,
)
from requests_tanium_session.aiohttp import TaniumMiddleware
from requests_tanium_session.testing import TaniumServer

from .conftest import Servers
from .harness import (
    DENIED,
    GATEWAY,
    LOGIN_HEADERS,
    PASSWORD,
    PASSWORD_B64,
    SENSORS,
    SOAP,
    USER,
    Front,
    _post,
    stale,
    statuses,
)

# -- the everyday path ---------------------------------------------------------------


def test_fresh_makes_no_auth_call(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session())
    assert statuses(front.get(auth, server.url + SENSORS, n=8)) == [200] * 8
    assert server.count("/auth") == 0


def test_stale_for_many_is_one_validation(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session(), revalidate_after=0.05)
    time.sleep(0.06)
    server.inject("/auth", passthrough=True, delay=0.3)  # every caller finds it running
    assert statuses(front.get(auth, server.url + SENSORS, n=16)) == [200] * 16
    assert server.auth_calls["validate"] == 1


def test_unavailable_validation_sends_the_kept_token(server: TaniumServer, front: Front) -> None:
    auth = stale(server, front)
    server.inject("/auth", status=500, count=None)
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.count(SENSORS, 200) == 1 and auth.logged_in


def test_token_validates_when_stale(server: TaniumServer, front: Front) -> None:
    auth = stale(server, front)
    assert front.token(auth) is not None
    assert server.auth_calls["validate"] == 1


# -- 401/403 ---------------------------------------------------------------------------


def test_revoked_with_refresh_is_one_validation_one_refresh_one_resend(
    server: TaniumServer, front: Front
) -> None:
    calls: list[int] = []

    def refresh() -> str:
        calls.append(1)
        return server.new_session()

    session = server.new_session()
    auth = front.auth(server.url, session, refresh=refresh)
    server.revoke(session)
    assert statuses(front.get(auth, server.url + SENSORS, n=8)) == [200] * 8
    assert server.auth_calls["validate"] == 1 and calls == [1]
    assert server.count(SENSORS, 403) == 8 and server.count(SENSORS, 200) == 8


def test_permission_answer_returned_as_it_came(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session())
    response = front.one(auth, server.url + DENIED)
    assert response.status_code == 403 and "permission denied" in response.text
    assert str(response.url).endswith(DENIED)
    assert server.auth_calls["validate"] == 1 and server.count(DENIED) == 1


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        ("unavailable", AuthServiceUnavailable),
        ("transport", None),  # the front-end's own transport error, as it was raised
        ("value", LoginError),
    ],
)
def test_refresh_errors(
    server: TaniumServer, front: Front, raised: str, expected: Optional[type[Exception]]
) -> None:
    errors: dict[str, Exception] = {
        "unavailable": AuthServiceUnavailable("the login server is down"),
        "transport": front.broken(),
        "value": ValueError("broken"),
    }

    def refresh() -> str:
        raise errors[raised]

    session = server.new_session()
    auth = front.auth(server.url, session, refresh=refresh)
    server.revoke(session)
    with pytest.raises(expected or front.transport_error) as info:
        front.one(auth, server.url + SENSORS)
    if raised == "value":
        assert isinstance(info.value.__cause__, ValueError)
        assert not isinstance(info.value, AuthServiceUnavailable)
    else:
        assert info.value is errors[raised]


def test_refresh_returning_the_dead_token(server: TaniumServer, front: Front) -> None:
    session = server.new_session()
    auth = front.auth(server.url, session, refresh=lambda: session)
    server.revoke(session)
    with pytest.raises(LoginError, match="just rejected"):
        front.one(auth, server.url + SENSORS)
    assert server.count(SENSORS) == 1  # never resent with it


# -- stores ---------------------------------------------------------------------------


def test_store_fresh_record_adopted(server: TaniumServer, front: Front) -> None:
    store = MemoryStore()
    first = front.from_credentials(server.url, USER, PASSWORD, store=store)
    second = front.from_credentials(server.url, USER, PASSWORD, store=store)
    assert server.auth_calls["login"] == 1  # the second took the published session
    assert statuses(front.get(second, server.url + SENSORS)) == [200]
    assert front.token(first) == front.token(second)


def test_store_newer_record_after_401(server: TaniumServer, front: Front) -> None:
    store = MemoryStore()
    old = server.new_session()
    auth = front.auth(server.url, old, store=store)
    server.revoke(old)
    front.from_credentials(server.url, USER, PASSWORD, store=store)  # logs in, publishes
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.auth_calls["validate"] == 0 and server.auth_calls["login"] == 1
    assert server.count(SENSORS, 403) == 1 and server.count(SENSORS, 200) == 1


def test_store_one_login_per_fleet_death(server: TaniumServer, front: Front) -> None:
    store = MemoryStore()
    auths = [front.from_credentials(server.url, USER, PASSWORD, store=store) for _ in range(3)]
    server.revoke_user()
    server.reset_counts()
    for auth in auths:
        assert statuses(front.get(auth, server.url + SENSORS, n=4)) == [200] * 4
    assert server.auth_calls["login"] == 1


# -- protocol calls: redirects, proxies, deadlines, redaction ---------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirected_auth_calls_send_nothing_elsewhere(
    servers: Servers, front: Front, status: int
) -> None:
    home, elsewhere = servers.start(), servers.start()
    # A stale validation, redirected.
    auth = stale(home, front)
    home.redirect("/auth", elsewhere.url + "/auth", status=status)
    with pytest.raises(LoginError, match=rf"{status}.*{home.url}|{home.url}.*{status}"):
        front.one(auth, home.url + SENSORS)
    # A credential login, redirected (the first and a recovery).
    home.redirect("/auth", elsewhere.url + "/auth", status=status)
    with pytest.raises(LoginError):
        front.from_credentials(home.url, USER, PASSWORD)
    auth = front.from_credentials(home.url, USER, PASSWORD)
    home.revoke_user()
    home.redirect("/auth", elsewhere.url + "/auth", status=status, count=2)
    with pytest.raises(LoginError):
        front.one(auth, home.url + SENSORS)
    # An API token's check after a 401, redirected.
    token = home.new_api_token()
    auth = front.auth(home.url, token)
    home.revoke(token)
    home.redirect("/api/v2/session/current", elsewhere.url + "/x", status=status)
    with pytest.raises(LoginError):
        front.one(auth, home.url + SENSORS)
    assert list(elsewhere.received()) == []


def test_redirect_never_shows_in_history(servers: Servers, front: Front) -> None:
    auth = front.from_credentials(servers.start().url, USER, PASSWORD)
    server = servers.all[0]
    server.revoke_user()
    response = front.one(auth, server.url + SENSORS)
    assert response.status_code == 200
    for hop in response.history:
        assert not str(hop.request.url).endswith("/auth")
        assert not set(LOGIN_HEADERS) & {k.lower() for k in hop.request.headers}


def test_loopback_auth_calls_skip_the_environment_proxy(
    server: TaniumServer,
    front: Front,
    monkeypatch: pytest.MonkeyPatch,
    proxy: http.server.ThreadingHTTPServer,
) -> None:
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    auth = stale(server, front)
    # The caller's own requests use the environment's proxy; the auth's calls never.
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.auth_calls["validate"] == 1
    assert proxy.seen == [SENSORS]  # type: ignore[attr-defined]


def test_login_timeout_bounds_the_whole_call(server: TaniumServer, front: Front) -> None:
    session = server.new_session()
    auth = front.auth(server.url, session, login_timeout=1)
    server.revoke(session)  # a 403, then a check that trickles past login_timeout
    server.inject("/auth", status=200, body=b"x" * 40, delay=0.8, trickle=0.1)
    began = time.monotonic()
    with pytest.raises(front.timeout_error):
        front.one(auth, server.url + SENSORS)
    assert time.monotonic() - began < 1.6
    assert server.count(SENSORS) == 1


def test_a_stale_check_that_times_out_sends_the_kept_session(
    server: TaniumServer, front: Front
) -> None:
    """Issue 27: like a 5xx, a stale check whose /auth times out lets the request go
    with the kept session; the API's answer decides."""
    auth = stale(server, front, login_timeout=0.5)
    server.inject("/auth", status=200, body=b"x" * 40, delay=0.4, trickle=0.1)
    began = time.monotonic()
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert time.monotonic() - began < 1.5 and server.count("/auth") == 1


def test_transport_errors_carry_no_secret(server: TaniumServer, front: Front) -> None:
    session = server.new_session()
    auth = front.auth(server.url, session)
    # the check a 401 asks for meets a dropped /auth (every time: aiohttp retries a GET
    # whose middleware raised ServerDisconnectedError once by itself)
    server.inject(SENSORS, status=401, count=None)
    server.inject("/auth", drop=True, count=None)
    with pytest.raises(front.transport_error) as info:
        front.one(auth, server.url + SENSORS)
    request = getattr(info.value, "request", None)
    assert session not in repr(vars(info.value)) + repr(info.value.args)
    if not front.aiohttp:  # aiohttp's transport errors carry no request at all
        assert request is not None and session not in str(dict(request.headers))
    with pytest.raises(front.transport_error) as info:
        front.from_credentials(server.url, USER, PASSWORD)
    assert PASSWORD_B64 not in repr(vars(info.value)) + repr(info.value.args)
    if not front.aiohttp:
        request = info.value.request
        assert all(request.headers[h] == "<redacted>" for h in LOGIN_HEADERS)


def test_waiters_raise_the_front_ends_timeout(server: TaniumServer, front: Front) -> None:
    """A leader stuck in ``refresh`` past the renew wait: its waiters give up with the
    front-end's own timeout type."""
    if front.is_async:

        async def arefresh() -> str:
            await asyncio.sleep(2.7)
            return server.new_session()

        refresh: Callable[[], Any] = arefresh
    else:

        def refresh() -> str:
            time.sleep(2.7)
            return server.new_session()

    session = server.new_session()
    auth = front.auth(server.url, session, refresh=refresh, login_timeout=0.2)  # waits 2.4 s
    server.revoke(session)
    outcomes = front.get(auth, server.url + SENSORS, n=3)
    waiters = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(waiters) == 2 and all(isinstance(o, front.timeout_error) for o in waiters)


# -- the version gate -------------------------------------------------------------------


def test_unreachable_console_json_warns_and_sends(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session(), requires_server=">=7")
    server.inject("/config/console.json", drop=True, count=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert statuses(front.get(auth, server.url + SENSORS)) == [200]
        checks = server.count("/config/console.json")  # aiohttp resends a GET once itself
        assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert [w.category for w in caught] == [GetPlatformVersionWarning]
    assert checks in ((1, 2) if front.aiohttp else (1,))
    assert server.count("/config/console.json") == checks  # the gate stays open


def test_unmet_requirement_refuses_every_request(server: TaniumServer, front: Front) -> None:
    from requests_tanium_session import VersionMismatchError

    auth = front.auth(server.url, server.new_session(), requires_server=">=99")
    for _ in range(2):
        with pytest.raises(VersionMismatchError):
            front.one(auth, server.url + SENSORS)
    assert server.count("/config/console.json") == 1 and server.count(SENSORS) == 0


# -- other origins -----------------------------------------------------------------


def test_foreign_403_after_a_redirect_is_the_callers(servers: Servers, front: Front) -> None:
    """The redirect away is judged once (issue 28: it may be a sign-in page); the
    session lives, so the caller gets the other origin's answer as it came."""
    home, other = servers.start(), servers.start()
    auth = front.auth(home.url, home.new_session())
    home.redirect(SENSORS, other.url + SENSORS)
    response = front.one(auth, home.url + SENSORS)
    assert response.status_code == 403 and str(response.url).startswith(other.url)
    assert home.count("/auth") == 1 and other.count(SENSORS) == 1
    assert "session" not in next(other.received(SENSORS)).headers


def test_from_credentials_logs_in_now_with_secondary(server: TaniumServer, front: Front) -> None:
    auth = front.from_credentials(server.url, USER, PASSWORD, secondary="otp-123456")
    assert auth.logged_in and server.auth_calls["login"] == 1
    assert next(server.received("/auth")).headers["secondary"] == "otp-123456"


# -- the shape of the code -------------------------------------------------------------

DECISIONS = [
    "validate_call", "login_call", "logout_call", "console_call",
    "judge_token", "judge_logout", "judge_version", "judge_soap", "verdict_error",
    "adoptable", "take", "recovery_failure", "refreshed_token",
]  # fmt: skip


def test_each_builder_judge_and_adoption_rule_is_called_from_one_module() -> None:
    """Outside ``testing/`` and the CLI, one module calls each of them: the policy is
    written once (the module that defines a judge may use it too)."""
    import ast
    from pathlib import Path

    import requests_tanium_session

    root = Path(requests_tanium_session.__file__).parent
    callers: dict[str, set[str]] = {name: set() for name in DECISIONS}
    for path in root.glob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in callers:
                    callers[name].add(path.name)
    assert {name: sorted(mods) for name, mods in callers.items() if len(mods) != 1} == {}


# -- the Tanium protocol as real servers speak it --------------------------------------


def test_soap_in_band_dead_session_is_refreshed_and_resent(
    server: TaniumServer, front: Front
) -> None:
    session = server.new_session()
    auth = front.auth(server.url, session, refresh=server.new_session)
    server.revoke(session)
    response = _post(front, auth, server.url + SOAP)
    assert response.status_code == 200 and "GetObject" in response.text
    assert server.auth_calls["validate"] == 1 and server.count(SOAP) == 2


def test_soap_in_band_dead_session_without_refresh_raises(
    server: TaniumServer, front: Front
) -> None:
    session = server.new_session()
    auth = front.auth(server.url, session)
    server.revoke(session)
    with pytest.raises(LoginError, match="in-band"):
        _post(front, auth, server.url + SOAP)


def test_soap_permission_answer_returned_as_it_came(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session())
    server.soap_denied = True
    response = _post(front, auth, server.url + SOAP)
    assert "RBACInsufficientPrivilege" in response.text
    assert server.auth_calls["validate"] == 1 and server.count(SOAP) == 1


def test_soap_session_rotation_is_adopted(server: TaniumServer, front: Front) -> None:
    seen: list[str] = []
    old = server.new_session()
    auth = front.auth(server.url, old, on_token_update=seen.append)
    server.rotate_on_soap = True
    assert _post(front, auth, server.url + SOAP).status_code == 200
    assert len(seen) == 1 and seen[0] != old and server.is_valid(seen[0])
    server.rotate_on_soap = False
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.count("/auth") == 0  # the new session was confirmed by the answer


def test_api_token_never_revalidated_for_idleness(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_api_token(), revalidate_after=0)
    assert statuses(front.get(auth, server.url + SENSORS, n=4)) == [200] * 4
    assert server.count("/api/v2/session/current") == 0 and server.count("/auth") == 0


def test_api_token_401_is_judged_by_session_current(server: TaniumServer, front: Front) -> None:
    token = server.new_api_token()
    auth = front.auth(server.url, token)
    response = front.one(auth, server.url + DENIED)  # alive: the 403 stands
    assert response.status_code == 403 and server.count("/api/v2/session/current") == 1
    server.revoke(token)
    with pytest.raises(LoginError) as info:
        front.one(auth, server.url + SENSORS)
    assert server.count(SENSORS, 401) == 1 and server.count("/api/v2/session/current") == 2
    for word in ("expired", "revoked", "rotated", "trusted"):
        assert word in str(info.value)
    assert token not in str(info.value)


def test_api_token_logout_sends_nothing(server: TaniumServer, front: Front) -> None:
    from requests_tanium_session import LogoutError

    token = server.new_api_token()
    auth = front.auth(server.url, token)
    with pytest.raises(LogoutError, match="revoke it in the Tanium console"):
        if isinstance(auth, TaniumMiddleware):
            asyncio.run(auth.logout())
        else:
            auth.logout()
    assert auth.logged_in and server.is_valid(token) and list(server.received()) == []


def test_gateway_answers_do_not_confirm(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session(), revalidate_after=0.4)
    time.sleep(0.2)
    assert _post(front, auth, server.url + GATEWAY, b'{"query": "{ now }"}').status_code == 200
    time.sleep(0.25)  # 0.45 s after the last confirmation: stale
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.auth_calls["validate"] == 1


def test_gateway_401_recovers(server: TaniumServer, front: Front) -> None:
    session = server.new_session()
    auth = front.auth(server.url, session, refresh=server.new_session)
    server.revoke(session)
    response = _post(front, auth, server.url + GATEWAY, b'{"query": "{ now }"}')
    assert response.status_code == 200 and server.count(GATEWAY) == 2


def test_persistent_login(server: TaniumServer, front: Front) -> None:
    auth = front.from_credentials(server.url, USER, PASSWORD, persistent=True)
    assert auth.logged_in and server.persistent_logins == 1
    assert next(server.received("/auth")).headers["persistent"] == "1"
    front.from_credentials(server.url, USER, PASSWORD)
    assert server.persistent_logins == 1  # off by default
