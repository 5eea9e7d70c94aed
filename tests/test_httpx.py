"""TaniumAuth for httpx, sync and async, against the local server over real sockets."""

from __future__ import annotations

import asyncio
import pickle
import ssl
import subprocess
import sys
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, Callable, TypeVar

import httpx
import pytest

from requests_tanium_session import (
    AuthServiceUnavailable,
    InvalidToken,
    LoginError,
    LogoutError,
    VersionMismatchError,
)
from requests_tanium_session.httpx import TaniumAuth
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

from .conftest import Servers

USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]
T = TypeVar("T")

SENSORS = "/api/v2/sensors"


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def together(n: int, make: Callable[[], Awaitable[T]]) -> list[T]:
    """Run ``n`` tasks released together: each waits until all have started."""
    ready = asyncio.Event()
    started = 0

    async def one() -> T:
        nonlocal started
        started += 1
        if started == n:
            ready.set()
        await ready.wait()
        return await make()

    return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.fixture
def auth(server: TaniumServer) -> Iterator[TaniumAuth]:
    yield TaniumAuth(server.url, server.new_session())


# -- the basics, sync and async -------------------------------------------------------


def test_header_only_to_the_origin(servers: Servers) -> None:
    home, other = servers.start(), servers.start()
    auth = TaniumAuth(home.url, home.new_session())
    with httpx.Client(auth=auth) as client:
        assert client.get(home.url + SENSORS).status_code == 200
        assert client.get(other.url + SENSORS).status_code == 403  # no session there
    assert "session" not in next(other.received(SENSORS)).headers
    assert "session" in next(home.received(SENSORS)).headers
    assert home.count("/auth") == 0  # fresh: no check


def test_async_header_and_confirmation(server: TaniumServer, auth: TaniumAuth) -> None:
    async def main() -> list[int]:
        async with auth.async_client() as client:
            return [(await client.get(SENSORS)).status_code for _ in range(5)]

    assert run(main()) == [200] * 5
    assert server.count("/auth") == 0


def test_threads_that_find_it_stale_share_one_validation(server: TaniumServer) -> None:
    auth = TaniumAuth(server.url, server.new_session(), revalidate_after=0.05)
    server.inject("/auth", passthrough=True, delay=0.2)
    import time

    time.sleep(0.06)
    gate = threading.Barrier(16)
    statuses: list[int] = []
    with auth.client() as client:

        def one() -> None:
            gate.wait()
            statuses.append(client.get(SENSORS).status_code)

        workers = [threading.Thread(target=one) for _ in range(16)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert statuses == [200] * 16 and server.count("/auth") == 1


def test_500_tasks_that_find_it_stale_share_one_validation(server: TaniumServer) -> None:
    auth = TaniumAuth(server.url, server.new_session(), revalidate_after=0.05)
    server.inject("/auth", passthrough=True, delay=0.2)

    async def main() -> list[int]:
        await asyncio.sleep(0.06)
        limits = httpx.Limits(max_connections=50)
        # No pool timeout: 500 tasks queue for 50 connections, and httpcore hands them
        # out in time quadratic in the queue; a busy machine (httpcore 1.0 at the floors)
        # passed the default 5 s. The test is about /auth calls, not the pool.
        timeout = httpx.Timeout(10, pool=None)
        async with auth.async_client(limits=limits, timeout=timeout) as client:
            responses = await together(500, lambda: client.get(SENSORS))
        return [r.status_code for r in responses]

    assert run(main()) == [200] * 500
    assert server.count("/auth") == 1


def test_continuous_traffic_makes_no_auth_calls(server: TaniumServer) -> None:
    # A window ten times a slow request's time on a busy machine: the traffic never
    # pauses that long, so nothing goes stale.
    auth = TaniumAuth(server.url, server.new_session(), revalidate_after=0.5)
    import time

    with auth.client() as client:
        assert client.get(SENSORS).status_code == 200  # may check: the client took a while
        server.reset_counts()
        end = time.monotonic() + 1.5  # three windows
        while time.monotonic() < end:
            assert client.get(SENSORS).status_code == 200
    assert server.count("/auth") == 0


# -- 401/403 -------------------------------------------------------------------------


def test_permission_403_reaches_the_caller_as_that_403(
    server: TaniumServer, auth: TaniumAuth
) -> None:
    with auth.client() as client:
        resp = client.get("/api/v2/denied")
    assert resp.status_code == 403
    assert resp.json() == {"text": "permission denied"}
    assert str(resp.url) == server.url + "/api/v2/denied"
    assert resp.headers["content-type"] == "application/json"
    assert server.count("/api/v2/denied") == 1 and server.count("/auth") == 1
    assert auth.logged_in


def test_async_permission_403(server: TaniumServer, auth: TaniumAuth) -> None:
    async def main() -> httpx.Response:
        async with auth.async_client() as client:
            return await client.get("/api/v2/denied")

    resp = run(main())
    assert resp.status_code == 403 and resp.json() == {"text": "permission denied"}
    assert server.count("/api/v2/denied") == 1


def test_dead_without_refresh_raises_with_the_403(server: TaniumServer, auth: TaniumAuth) -> None:
    server.restart()
    with auth.client() as client, pytest.raises(InvalidToken) as info:
        client.get(SENSORS)
    assert info.value.response is not None and info.value.response.status_code == 403
    assert not auth.logged_in


def test_rotation_on_check_costs_one_auth_and_one_resend(server: TaniumServer) -> None:
    seen: list[str] = []
    auth = TaniumAuth(server.url, server.new_session(), on_token_update=seen.append)
    old = auth.token
    server.rotate_on_validate = True
    server.inject(SENSORS, status=401)
    with auth.client() as client:
        resp = client.get(SENSORS)
    assert resp.status_code == 200 and auth.token != old and seen == [auth.token]
    assert server.count("/auth") == 1 and server.count(SENSORS) == 2


def test_refresh_after_revocation_resends_once(server: TaniumServer) -> None:
    auth = TaniumAuth(server.url, server.new_session(), refresh=server.new_session)
    server.restart()
    with auth.client() as client:
        resp = client.post("/api/v2/echo", content=b"payload")
    assert resp.status_code == 200 and resp.json()["data"]["body"] == "payload"
    assert server.count("/api/v2/echo") == 2 and server.auth_calls["validate"] == 1


def test_async_coroutine_refresh(server: TaniumServer) -> None:
    calls: list[int] = []

    async def refresh() -> str:
        calls.append(1)
        await asyncio.sleep(0.05)
        return server.new_session()

    auth = TaniumAuth(server.url, server.new_session(), refresh=refresh)
    server.restart()

    async def main() -> list[int]:
        async with auth.async_client() as client:
            responses = await together(50, lambda: client.get(SENSORS))
        return [r.status_code for r in responses]

    assert run(main()) == [200] * 50
    assert calls == [1]


def test_async_refresh_in_a_sync_client_is_a_type_error(server: TaniumServer) -> None:
    async def refresh() -> str:
        return server.new_session()

    auth = TaniumAuth(server.url, server.new_session(), refresh=refresh)
    server.restart()
    with pytest.raises(TypeError, match="coroutine function"):
        auth.client()  # refused when the sync client is made
    plain = httpx.Client(auth=auth, base_url=server.url)  # a plain one: at first use
    with plain, pytest.raises(TypeError, match="coroutine function"):
        plain.get(SENSORS)


def test_from_credentials_logs_in_now_and_once_per_death(server: TaniumServer) -> None:
    auth = TaniumAuth.from_credentials(server.url, USER, PASSWORD)
    assert auth.logged_in and server.auth_calls["login"] == 1

    async def burst() -> list[int]:
        async with auth.async_client() as client:
            responses = await together(40, lambda: client.get(SENSORS))
        return [r.status_code for r in responses]

    assert run(burst()) == [200] * 40
    assert server.auth_calls["login"] == 1
    server.restart()
    assert run(burst()) == [200] * 40
    assert server.auth_calls["login"] == 2 and server.auth_calls["validate"] == 1


def test_from_credentials_refused(server: TaniumServer) -> None:
    with pytest.raises(LoginError, match="credentials were refused"):
        TaniumAuth.from_credentials(server.url, USER, "wrong")
    auth = TaniumAuth.from_credentials(server.url, USER, PASSWORD)
    with pytest.raises(TypeError):
        pickle.dumps(auth.refresh)


def test_api_token_is_never_revalidated_for_idleness(server: TaniumServer) -> None:
    auth = TaniumAuth(server.url, server.new_api_token(), revalidate_after=0)
    with auth.client() as client:
        assert client.get(SENSORS).status_code == 200
    assert server.count("/api/v2/session/current") == 0 and server.count("/auth") == 0


# -- hostile and unavailable servers ----------------------------------------------------


@pytest.mark.parametrize("body", [b"OK", b"null", b"<html>login</html>", b"z" * 5000])
def test_malformed_auth_answer_keeps_the_token(server: TaniumServer, body: bytes) -> None:
    auth = TaniumAuth(server.url, server.new_session(), revalidate_after=0)
    token = auth.token
    server.inject("/auth", status=200, body=body)
    with auth.client() as client, pytest.raises(LoginError, match=r"not a token|too long"):
        client.get(SENSORS)
    assert auth.token == token and server.count(SENSORS) == 0


def test_unavailable_auth_during_recovery_raises_retryable(
    server: TaniumServer, auth: TaniumAuth
) -> None:
    server.inject("/auth", status=503, count=None)
    with auth.client() as client, pytest.raises(AuthServiceUnavailable) as info:
        client.get("/api/v2/denied")
    assert info.value.retryable
    assert info.value.response is not None and info.value.response.status_code == 403


@pytest.mark.parametrize("status", [404, 501])
def test_not_a_tanium_auth_names_the_url(server: TaniumServer, status: int) -> None:
    auth = TaniumAuth(server.url, server.new_session(), revalidate_after=0)
    server.inject("/auth", status=status, count=None)
    with auth.client() as client, pytest.raises(LoginError, match="check the URL"):
        client.get(SENSORS)
    assert auth.logged_in


def test_requires_server(server: TaniumServer) -> None:
    auth = TaniumAuth(server.url, server.new_session(), requires_server=">=8")
    with auth.client() as client:
        for _ in range(2):
            with pytest.raises(VersionMismatchError, match=r"7\.3\.314\.3424"):
                client.get(SENSORS)
    assert server.count("/config/console.json") == 1


# -- redirects, TLS, logout, secrets ------------------------------------------------------


def test_client_strips_the_header_on_redirects_that_leave(servers: Servers) -> None:
    home, other = servers.start(), servers.start()
    auth = TaniumAuth(home.url, home.new_session())
    home.redirect(SENSORS, other.url + SENSORS)
    home.redirect("/api/v2/echo", home.url + SENSORS)
    with auth.client(follow_redirects=True) as client:
        client.get(SENSORS)
        assert client.get("/api/v2/echo").status_code == 200
    assert "session" not in next(other.received(SENSORS)).headers
    assert all("session" in r.headers for r in home.received(SENSORS))


def test_async_client_strips_too(servers: Servers) -> None:
    home, other = servers.start(), servers.start()
    auth = TaniumAuth(home.url, home.new_session())
    home.redirect(SENSORS, other.url + SENSORS)

    async def main() -> None:
        async with auth.async_client(follow_redirects=True) as client:
            await client.get(SENSORS)

    run(main())
    assert "session" not in next(other.received(SENSORS)).headers


def test_tls_sync_and_async(tls_server: TaniumServer, ca_bundle: str) -> None:
    verify = ssl.create_default_context(cafile=ca_bundle)
    auth = TaniumAuth(tls_server.url, tls_server.new_session(), revalidate_after=0, verify=verify)
    with auth.client() as client:  # the auth's verify is the client's default
        assert client.get(SENSORS).status_code == 200

    async def main() -> int:
        async with auth.async_client() as client:
            return (await client.get(SENSORS)).status_code

    assert run(main()) == 200
    assert tls_server.count("/auth") == 2


def test_logout_and_alogout(server: TaniumServer) -> None:
    auth = TaniumAuth(server.url, server.new_session())
    token = auth.token
    assert token
    with auth.client() as client:
        auth.logout(client)
        assert not auth.logged_in and not server.is_valid(token)
        with pytest.raises(LoginError):
            auth.logout(client)
    other = TaniumAuth(server.url, server.new_session())
    server.inject("/auth", status=500, count=None)

    async def main() -> None:
        async with other.async_client() as client:
            await other.alogout(client)

    with pytest.raises(LogoutError, match="kept"):
        run(main())
    assert other.logged_in


def test_no_secret_in_repr_errors_or_messages(server: TaniumServer) -> None:
    auth = TaniumAuth.from_credentials(server.url, USER, PASSWORD)
    with auth.client() as client:
        client.get(SENSORS)
        token = auth.token
        assert token
        server.restart()
        server.inject("/auth", status=401)  # the validation
        server.inject("/auth", status=401)  # the login
        with pytest.raises(LoginError) as info:
            client.get(SENSORS)
    text = repr(auth) + str(info.value) + repr(info.value) + repr(info.value.args)
    assert token not in text and PASSWORD not in text


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, ValueError),
        ({"session": "bad value"}, ValueError),
        ({"session": 5}, TypeError),
        ({"session": "1-2-ab", "revalidate_after": -1}, ValueError),
        ({"session": "1-2-ab", "login_timeout": 0}, ValueError),
        ({"session": "1-2-ab", "refresh_status_codes": [200]}, ValueError),
        ({"session": "1-2-ab", "refresh": "nope"}, TypeError),
        ({"session": "1-2-ab", "requires_server": "banana"}, ValueError),
    ],
)
def test_bad_values_are_refused(server: TaniumServer, kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error) as info:
        TaniumAuth(server.url, **kwargs)
    assert "bad value" not in str(info.value)
    with pytest.raises(ValueError, match="http://"):
        TaniumAuth("http://tanium.example.com", "1-2-ab")


def test_importing_without_httpx_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import requests_tanium_session\n"
        "try:\n"
        "    import requests_tanium_session.httpx\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "requests-tanium-session[httpx]" in out.stdout
