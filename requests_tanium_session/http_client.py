"""HttpClient: the Tanium base URL, its origin, and a private ``requests.Session``."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Optional, TypeVar, Union
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.util import Retry, parse_url

__all__ = ["HttpClient", "Origin", "default_retry", "origin_of"]

#: ``(scheme, host, port)``: scheme and host lower-cased, the port always filled in.
Origin = tuple[str, str, int]

#: Ports implied by each scheme.
DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}

#: Statuses from ``/auth`` that the private session retries (POST included).
RETRY_STATUSES = (502, 503, 504)


def default_retry() -> Retry:
    """The small ``Retry`` used for ``/auth`` calls: connect errors and 502/503/504.

    Read errors are not retried, so a slow ``/auth`` costs one ``login_timeout``.
    """
    return Retry(
        total=3,
        connect=2,
        read=False,
        status=2,
        redirect=False,
        other=0,
        backoff_factor=0.05,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,
        raise_on_status=False,
        respect_retry_after_header=False,
    )


class _NoAuth(AuthBase):
    """Per-request auth that does nothing: keeps a session's own ``auth`` (or netrc) off."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


_NO_AUTH = _NoAuth()


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> Optional[Origin]:
    """The origin of a prepared URL, or None when it has none we could match.

    Userinfo in front of the host gives None: such a URL is never the Tanium origin.
    """
    try:
        parts = parse_url(url)
    except Exception:
        return None
    scheme = (parts.scheme or "").lower()
    if parts.auth is not None or not parts.host or scheme not in DEFAULT_PORTS:
        return None
    port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    return (scheme, parts.host.lower(), port)


def _normalise(url: object, allow_http: bool) -> tuple[str, Origin]:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if not url or url != url.strip() or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ValueError("url must be a non-empty URL without whitespace")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("url is not a valid URL (bad host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("url must start with https:// (or http:// for a local server)")
    if "@" in parts.netloc:
        raise ValueError("url must not contain userinfo (user:password@)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("url must not contain a query or a fragment")
    if not parts.hostname:
        raise ValueError("url must name a host")
    # Let requests prepare the URL, so the host is encoded exactly as it will be sent.
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(f"{scheme}://{parts.netloc}{parts.path}", None)
    except requests.RequestException:
        raise ValueError("url has a host that requests cannot encode") from None
    origin = origin_of(str(prepared.url))
    if origin is None:
        raise ValueError("url is not a valid URL")
    if scheme == "http" and not allow_http and not _is_loopback(origin[1]):
        raise ValueError(
            "url uses http:// for a host that is not loopback; use https:// or pass allow_http=True"
        )
    host = origin[1]
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = urlsplit(str(prepared.url)).path.rstrip("/")
    return f"{scheme}://{netloc}{path}", origin


_C = TypeVar("_C", bound="Closing")


class Closing:
    """``with obj:`` calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        """Release what this object holds."""

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class HttpClient(Closing):
    """The Tanium server's base URL and a private ``requests.Session`` for ``/auth``.

    The private session never carries the caller's ``auth``; every call passes a
    no-op auth, so even a supplied session whose ``auth`` is this package's adapter
    cannot call itself.
    """

    def __init__(
        self,
        url: str,
        *,
        session: Optional[requests.Session] = None,
        verify: Union[bool, str] = True,
        cert: Union[str, tuple[str, str], None] = None,
        proxies: Optional[Mapping[str, str]] = None,
        retries: Union[int, Retry, None] = None,
        allow_http: bool = False,
    ) -> None:
        self.url, self.origin = _normalise(url, allow_http)
        if session is not None and not isinstance(session, requests.Session):
            raise TypeError("session must be a requests.Session")
        if not isinstance(verify, (bool, str)):
            raise TypeError("verify must be a bool or a CA bundle path")
        self.verify = verify
        self.cert = cert
        self.proxies = dict(proxies) if proxies is not None else None
        self._owns_session = session is None
        self._send: dict[str, Any] = {}
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(max_retries=default_retry() if retries is None else retries)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.verify = verify
            session.cert = cert
            if self.proxies is not None:
                session.proxies.update(self.proxies)
        else:
            if retries is not None:
                raise ValueError("pass retries= or session=, not both: mount the retries on it")
            # Only what the caller set explicitly overrides the supplied session.
            if verify is not True:
                self._send["verify"] = verify
            if cert is not None:
                self._send["cert"] = cert
            if self.proxies is not None:
                self._send["proxies"] = self.proxies
        self.session = session

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Optional[Mapping[str, str]] = None,
        json: Any = None,
        timeout: Union[float, tuple[float, float], None] = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send ``method`` to ``url + path`` without redirects and without any auth."""
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        return self.session.request(
            method,
            self.url + path,
            headers=dict(headers) if headers else None,
            json=json,
            timeout=timeout,
            auth=_NO_AUTH,
            allow_redirects=False,
            stream=stream,
            **self._send,
        )

    def close(self) -> None:
        """Close the private session (a supplied session is left to its owner)."""
        if self._owns_session:
            self.session.close()

    def __repr__(self) -> str:
        return f"HttpClient(url={self.url!r}, verify={self.verify!r})"
