"""TaniumMiddleware for aiohttp, beyond the contract suite: bursts through a small
connection pool, coroutine refresh, the exceptions as they are, the import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from requests_tanium_session import LoginError, LogoutError
from requests_tanium_session.aiohttp import TaniumMiddleware
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]
SENSORS = "/api/v2/sensors"


async def _burst(mw: TaniumMiddleware, n: int, limit: int) -> list[Any]:
    ready, started = asyncio.Event(), 0
    connector = aiohttp.TCPConnector(limit=limit)
    async with mw.client_session(connector=connector) as session:

        async def one() -> Any:
            nonlocal started
            started += 1
            if started == n:
                ready.set()
            await ready.wait()
            try:
                async with session.get(SENSORS) as response:
                    await response.read()
                    return response.status
            except Exception as exc:
                return type(exc).__name__

        return list(await asyncio.gather(*(one() for _ in range(n))))


def test_2000_tasks_after_a_revocation_through_10_connections(server: TaniumServer) -> None:
    """Each waiting task gives its 403's connection back before it waits, so the one
    validation and the one login find a free connection."""

    async def main() -> list[Any]:
        mw = await TaniumMiddleware.from_credentials(server.url, USER, PASSWORD)
        server.revoke_user()
        server.reset_counts()
        return await _burst(mw, 2000, limit=10)

    outcomes = asyncio.run(main())
    assert outcomes.count(200) == 2000, {o for o in outcomes if o != 200}
    assert server.auth_calls["validate"] == 1 and server.auth_calls["login"] == 1


def test_coroutine_refresh(server: TaniumServer) -> None:
    calls: list[int] = []

    async def refresh() -> str:
        calls.append(1)
        await asyncio.sleep(0.05)
        return server.new_session()

    session = server.new_session()
    mw = TaniumMiddleware(server.url, session, refresh=refresh)
    server.revoke(session)
    assert asyncio.run(_burst(mw, 50, limit=10)) == [200] * 50
    assert calls == [1]


def test_plain_session_raises_ours_as_the_cause(server: TaniumServer) -> None:
    """aiohttp turns a middleware's ``OSError`` into ``ClientOSError``; this package's
    exceptions are ``OSError``s (``requests.RequestException``). ``client_session()``
    hands them back as they are; a plain session has them as the ``__cause__``."""
    mw = TaniumMiddleware(server.url, server.new_session())
    server.revoke_user()

    async def plain() -> None:
        async with aiohttp.ClientSession(middlewares=(mw,)) as s:
            await s.get(server.url + SENSORS)

    async def ours() -> None:
        async with mw.client_session() as s:
            await s.get(SENSORS)

    with pytest.raises(aiohttp.ClientOSError) as info:
        asyncio.run(plain())
    assert isinstance(info.value.__cause__, LoginError)
    mw = TaniumMiddleware(server.url, server.new_session())
    server.revoke_user()
    with pytest.raises(LoginError, match="cannot be refreshed"):
        asyncio.run(ours())


def test_credentials_refused_and_logout(server: TaniumServer) -> None:
    with pytest.raises(LoginError, match="credentials were refused"):
        asyncio.run(TaniumMiddleware.from_credentials(server.url, USER, "wrong"))
    mw = asyncio.run(TaniumMiddleware.from_credentials(server.url, USER, PASSWORD))
    token = mw.token
    assert token is not None and server.is_valid(token)
    asyncio.run(mw.logout())
    assert not mw.logged_in and not server.is_valid(token)
    other = TaniumMiddleware(server.url, server.new_session())
    server.inject("/auth", status=500, count=None)
    with pytest.raises(LogoutError, match="kept"):
        asyncio.run(other.logout())
    assert other.logged_in and "refresh=set" in repr(mw) and token not in repr(mw)


def test_importing_without_aiohttp_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "import requests_tanium_session\n"
        "try:\n"
        "    import requests_tanium_session.aiohttp\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "requests-tanium-session[aiohttp]" in out.stdout
