"""TLS for the local server: a throwaway CA (``trustme``) and a server context."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Union

__all__ = ["cert_context", "local_tls"]

#: Names the local server's certificate is issued for.
LOCAL_NAMES = ("127.0.0.1", "localhost")


def cert_context(cert: Any) -> ssl.SSLContext:
    """A server ``SSLContext`` holding a trustme leaf certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def local_tls(bundle: Union[str, Path]) -> ssl.SSLContext:
    """A new CA and a server context for :data:`LOCAL_NAMES`; the CA is written to ``bundle``.

    Needs ``trustme`` (the ``test`` extra): ``ImportError`` without it.
    """
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(bundle))
    return cert_context(ca.issue_cert(*LOCAL_NAMES))
