"""pytest plugin: a real local Tanium server and auth objects bound to it.

Registered through the ``pytest11`` entry point, so installing the package is enough.

Fixtures: ``tanium_server`` (HTTP), ``tanium_server_tls`` (TLS, needs ``trustme``),
``tanium_auth``, ``tanium_auth_tls``, ``tanium_auth_factory`` and ``tanium_session``.
Each test gets fresh ones; everything is closed or stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest

from ..auth import TaniumSession, TaniumSessionAuth
from .server import TaniumServer
from .tls import cert_context, local_tls

__all__ = ["cert_context"]  # kept here for earlier imports; it lives in .tls


@pytest.fixture
def tanium_server() -> Iterator[TaniumServer]:
    """A fresh local Tanium server over HTTP on 127.0.0.1, stopped after the test."""
    with TaniumServer() as server:
        yield server


@pytest.fixture
def tanium_server_tls(tmp_path: Any) -> Iterator[TaniumServer]:
    """A fresh local Tanium server over TLS; ``server.ca_bundle`` is the CA to trust.

    Needs ``trustme`` (the ``test`` extra); fails with the install line without it.
    """
    try:
        import trustme  # noqa: F401

        missing = False
    except ImportError:
        missing = True
    if missing:  # outside the except: no chained ImportError in the report
        pytest.fail(
            'tanium_server_tls needs trustme: pip install "requests-tanium-session[test]" '
            "(or pip install trustme)",
            pytrace=False,
        )
    bundle = tmp_path / "tanium-ca.pem"
    with TaniumServer(ssl_context=local_tls(bundle)) as server:
        server.ca_bundle = str(bundle)
        yield server


@pytest.fixture
def tanium_auth(tanium_server: TaniumServer) -> Iterator[TaniumSessionAuth]:
    """A ``TaniumSessionAuth`` holding a fresh session of ``tanium_server``."""
    with TaniumSessionAuth(tanium_server.url, tanium_server.new_session()) as auth:
        yield auth


@pytest.fixture
def tanium_auth_tls(tanium_server_tls: TaniumServer) -> Iterator[TaniumSessionAuth]:
    """A ``TaniumSessionAuth`` for ``tanium_server_tls``, verifying with its CA bundle."""
    server = tanium_server_tls
    assert server.ca_bundle is not None
    with TaniumSessionAuth(server.url, server.new_session(), verify=server.ca_bundle) as auth:
        yield auth


@pytest.fixture
def tanium_auth_factory(
    tanium_server: TaniumServer,
) -> Iterator[Callable[..., TaniumSessionAuth]]:
    """Make ``TaniumSessionAuth`` objects for ``tanium_server``, closed at teardown.

    Call it with ``TaniumSessionAuth`` keyword arguments; without ``session=`` each
    gets a fresh session id: ``auth = tanium_auth_factory(revalidate_after=0)``.
    """
    made: list[TaniumSessionAuth] = []

    def make(**kwargs: Any) -> TaniumSessionAuth:
        session = kwargs.pop("session", None) or tanium_server.new_session()
        auth = TaniumSessionAuth(kwargs.pop("url", tanium_server.url), session, **kwargs)
        made.append(auth)
        return auth

    yield make
    for auth in made:
        auth.close()


@pytest.fixture
def tanium_session(tanium_server: TaniumServer) -> Iterator[TaniumSession]:
    """A ``TaniumSession`` on ``tanium_server``: ``tanium_session.get("/api/v2/sensors")``."""
    with TaniumSession(tanium_server.url, tanium_server.new_session()) as session:
        yield session
