"""HttpClient: the Tanium base URL, its origin, and a private ``requests.Session``."""

from __future__ import annotations

import contextlib
import http.cookiejar
import ipaddress
import os
import socket
from collections.abc import Mapping
from functools import partial
from types import TracebackType
from typing import Any, Optional, TypeVar, Union
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.util import Retry, parse_url

from ._drive import Worker, on_worker
from .protocol import REDACTED, SECRET_HEADERS, Call, transport_reason

__all__ = [
    "Answer",
    "HttpClient",
    "Origin",
    "OriginMatcher",
    "default_retry",
    "gateway_retry",
    "is_loopback",
    "origin_name",
    "origin_of",
    "parse_base_url",
]

#: ``(scheme, host, port)``: scheme and host lower-cased, the port always filled in.
Origin = tuple[str, str, int]

#: Ports implied by each scheme.
DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}

#: Statuses from ``/auth`` that the private session retries (POST included).
RETRY_STATUSES = (502, 503, 504)


def gateway_retry(total: int = 3, backoff_factor: float = 0.05, **kwargs: Any) -> Retry:
    """A ``Retry`` for connect errors and 502/503/504 on every method (POST included).

    Never 401/403: a retry resends the same dead session; recovery is the auth's job.
    """
    kwargs.setdefault("raise_on_status", False)
    return Retry(
        total=total,
        backoff_factor=backoff_factor,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,
        **kwargs,
    )


def default_retry() -> Retry:
    """The small ``Retry`` used for ``/auth`` calls: connect errors and 502/503/504.

    Read errors are not retried, so a slow ``/auth`` costs one ``login_timeout``.
    """
    return gateway_retry(
        connect=2, read=False, status=2, redirect=False, other=0, respect_retry_after_header=False
    )


class _NoAuth(AuthBase):
    """Per-request auth that does nothing: keeps a session's own ``auth`` (or netrc) off."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


_NO_AUTH = _NoAuth()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ``::1`` and exactly ``localhost`` (nothing that asks DNS)."""
    if host == "localhost":
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


def parse_base_url(url: object, allow_http: bool = False) -> tuple[str, Origin]:
    """The normalised base URL (no trailing slash) and its origin; ``ValueError`` if bad.

    ``http://`` is refused for hosts other than loopback unless ``allow_http``.
    """
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
    if scheme == "http" and not allow_http and not is_loopback(origin[1]):
        raise ValueError(
            "url uses http:// for a host that is not loopback; use https:// or pass allow_http=True"
        )
    host = origin[1]
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = urlsplit(str(prepared.url)).path.rstrip("/")
    return f"{scheme}://{netloc}{path}", origin


def origin_name(origin: Origin) -> str:
    """``scheme://host:port``: how stores and messages name an origin."""
    scheme, host, port = origin
    return f"{scheme}://{host}:{port}"


class OriginMatcher:
    """Tells whether a URL, as sent, has one origin: a prefix test, then a parse."""

    __slots__ = ("origin", "prefixes")

    def __init__(self, origin: Origin) -> None:
        scheme, host, port = origin
        prefixes = [f"{scheme}://{host}:{port}/"]
        if port == DEFAULT_PORTS[scheme]:
            prefixes.append(f"{scheme}://{host}/")
        self.origin = origin
        self.prefixes = tuple(prefixes)

    def __call__(self, url: str) -> bool:
        return url.startswith(self.prefixes) or origin_of(url) == self.origin


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


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuses every cookie: the ``/auth`` session keeps nothing between calls."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


#: Environment proxies that never apply to a loopback Tanium server.
_NO_ENV_PROXIES = ("http", "https", "all")


def _redact(req: Any) -> None:
    """Replace the secrets of a ``PreparedRequest`` in place (headers and JSON body)."""
    if not isinstance(req, requests.PreparedRequest):
        return
    for name in list(req.headers):
        if name.lower() in SECRET_HEADERS:
            req.headers[name] = REDACTED
    if req.body is not None:
        req.body = REDACTED


class Answer:
    """A finished call: status, the body (None when over the call's cap), the response.

    ``response`` is closed, its ``content`` is the body read, and its ``request`` has
    every secret redacted, so it can ride on an exception.
    """

    __slots__ = ("body", "response", "status")

    def __init__(self, response: requests.Response, body: Optional[bytes]) -> None:
        self.response = response
        self.status = response.status_code
        self.body = body

    @property
    def url(self) -> str:
        """The URL that answered."""
        return str(self.response.url)


def _abandon(worker: Worker[Answer]) -> None:
    """Stop reading: shut the socket down so a blocked read returns now."""
    resp = worker.response
    if resp is None:
        return
    conn = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class HttpClient(Closing):
    """The Tanium server's base URL and a private ``requests.Session`` for ``/auth``.

    Args:
        url: ``https://host[:port][/prefix]``; ``http://`` only for loopback hosts
            unless ``allow_http=True``. Query, fragment and userinfo are refused.
        session: a ``requests.Session`` to send ``/auth`` calls through (CA bundle,
            proxies, adapters); its own ``auth`` is never applied. Default: a private
            one with :func:`default_retry` mounted and no cookie jar.
        verify: True, False or the path of a CA bundle; passed on every call, so
            ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` cannot replace a path or False.
        cert: client certificate, as ``requests`` takes it.
        proxies: proxies for ``/auth`` calls; they win over the environment. Loopback
            servers never use environment proxies.
        retries: the ``Retry`` (or count) of the private session.
        allow_http: allow ``http://`` for a host that is not loopback.

    Raises:
        ValueError: a malformed URL or ``verify``, or ``retries`` with ``session``.
        TypeError: arguments of the wrong type.
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
        self.url, self.origin = parse_base_url(url, allow_http)
        if session is not None and not isinstance(session, requests.Session):
            raise TypeError("session must be a requests.Session")
        if isinstance(verify, os.PathLike):
            verify = os.fspath(verify)
        if not isinstance(verify, (bool, str)):
            raise TypeError("verify must be True, False or the path of a CA bundle")
        if verify == "":
            raise ValueError("verify must be True, False or a non-empty CA bundle path")
        self.verify = verify
        self.cert = cert
        self.proxies = dict(proxies) if proxies is not None else None
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(max_retries=default_retry() if retries is None else retries)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.cookies.set_policy(_NoCookies())
        elif retries is not None:
            raise ValueError("pass retries= or session=, not both: mount the retries on it")
        self.session = session
        # Passed on every call: per-request values win over the environment (requests
        # #3829). A supplied session keeps its own values unless set explicitly here.
        send: dict[str, Any] = {}
        if self._owns_session or verify is not True:
            send["verify"] = verify
        if cert is not None:
            send["cert"] = cert
        if self.proxies is not None:
            send["proxies"] = self.proxies
        elif is_loopback(self.origin[1]):
            send["proxies"] = {k: None for k in _NO_ENV_PROXIES if k not in session.proxies}
        self._send = send

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
        """Send ``method`` to ``url + path`` without redirects and without any auth.

        ``timeout`` is ``requests``' (per socket operation); :meth:`exchange` is the
        call with a wall-clock deadline and a capped body.
        """
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        send = self._send
        return self.session.request(
            method,
            self.url + path,
            headers=dict(headers) if headers else None,
            json=json,
            timeout=timeout,
            auth=_NO_AUTH,
            allow_redirects=False,
            stream=stream,
            verify=send.get("verify"),
            cert=send.get("cert"),
            proxies=dict(send["proxies"]) if "proxies" in send else None,
        )

    def exchange(self, call: Call, timeout: float) -> Answer:
        """Make ``call`` within ``timeout`` wall-clock seconds (connect, headers, body).

        The body is read up to ``call.limit`` bytes. Raises ``ReadTimeout`` at the
        deadline and the ``requests`` exception of a transport failure, in both cases
        with the request's secrets redacted.
        """

        def give_up(worker: Worker[Answer]) -> BaseException:
            _abandon(worker)
            return requests.exceptions.ReadTimeout(
                f"{call.method} {self.url}{call.path} did not finish within {timeout:g} s"
            )

        try:
            return on_worker(partial(self._run, call, timeout), timeout, give_up)
        except requests.exceptions.ConnectionError as exc:
            if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ProxyError)):
                raise
            # The same type, in a few words instead of urllib3's wrapped text (its
            # cause keeps the details).
            raise type(exc)(
                f"{call.method} {self.url}{call.path}: {transport_reason(str(exc))}",
                request=exc.request,
                response=exc.response,
            ) from exc

    def _run(self, call: Call, timeout: float, worker: Worker[Answer]) -> Answer:
        try:
            resp = self.request(
                call.method,
                call.path,
                headers=call.headers,
                json=call.json,
                timeout=(timeout, timeout),
                stream=True,
            )
            worker.response = resp
            try:
                body = _read_capped(resp, call.limit, worker)
            finally:
                resp.close()
                _redact(resp.request)
            resp._content = body or b""
            resp._content_consumed = True  # type: ignore[attr-defined]
            return Answer(resp, body)
        except BaseException as exc:
            _redact(getattr(exc, "request", None))
            response = getattr(exc, "response", None)
            if response is not None:
                _redact(response.request)
            raise

    def close(self) -> None:
        """Close the private session (a supplied session is left to its owner)."""
        if self._owns_session:
            self.session.close()

    def __repr__(self) -> str:
        return f"HttpClient(url={self.url!r}, verify={self.verify!r})"


def _read_capped(resp: requests.Response, limit: int, worker: Worker[Answer]) -> Optional[bytes]:
    """At most ``limit`` bytes of a streamed body, or None when it is longer."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(4096):
        if worker.abandoned:
            break
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
