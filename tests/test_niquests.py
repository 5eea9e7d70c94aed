"""niquests beside this package (collected only where niquests is installed: the nox
'niquests' session; see ``collect_ignore`` in conftest.py)."""

from __future__ import annotations

import asyncio
import gc

import niquests
import pytest

from requests_tanium_session import TaniumSessionAuth
from requests_tanium_session.testing import TaniumServer

from .harness import SENSORS


def test_a_niquests_session_recovers_as_requests_does(server: TaniumServer) -> None:
    session = server.new_session()
    auth = TaniumSessionAuth(server.url, session, refresh=server.new_session)
    with auth, niquests.Session() as http:
        http.auth = auth
        assert http.get(server.url + SENSORS).status_code == 200
        server.revoke(session)
        assert http.get(server.url + SENSORS).status_code == 200
    assert server.auth_calls["validate"] == 1


def test_niquests_async_session_is_refused_before_any_check(server: TaniumServer) -> None:
    auth = TaniumSessionAuth(server.url, server.new_session(), refresh=server.new_session)

    async def go() -> None:
        async with niquests.AsyncSession() as http:
            http.auth = auth
            await http.get(server.url + SENSORS)

    with auth, pytest.raises(TypeError, match="AsyncSession"):
        asyncio.run(go())
    assert server.count("/auth") == 0
    gc.collect()  # a response left open would warn here (ResourceWarning: an error)
