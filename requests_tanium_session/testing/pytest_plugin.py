"""pytest plugin: ``tanium_server``, ``tanium_server_tls`` and ``tanium_auth`` fixtures.

Registered through the ``pytest11`` entry point, so installing the package is enough.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..auth import TaniumSessionAuth
from .server import TaniumServer


@pytest.fixture
def tanium_server() -> Iterator[TaniumServer]:
    """A fresh local Tanium server over HTTP on 127.0.0.1, stopped after the test."""
    with TaniumServer() as server:
        yield server


@pytest.fixture
def tanium_server_tls(tmp_path: Any) -> Iterator[TaniumServer]:
    """A fresh local Tanium server over TLS; ``server.ca_bundle`` is the CA to trust.

    Needs ``trustme`` (the ``test`` extra); skipped without it.
    """
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = cert_context(cert)
    bundle = tmp_path / "tanium-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with TaniumServer(ssl_context=context) as server:
        server.ca_bundle = str(bundle)
        yield server


def cert_context(cert: Any) -> Any:
    """A server ``SSLContext`` holding a trustme leaf certificate."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@pytest.fixture
def tanium_auth(tanium_server: TaniumServer) -> Iterator[TaniumSessionAuth]:
    """A ``TaniumSessionAuth`` holding a fresh session of ``tanium_server``."""
    with TaniumSessionAuth(tanium_server.url, tanium_server.new_session()) as auth:
        yield auth
