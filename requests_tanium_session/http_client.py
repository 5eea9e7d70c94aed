"""HttpClient: the Tanium base URL, its origin, and a private ``requests.Session``."""

from __future__ import annotations

import contextlib
import http.cookiejar
import importlib.util
import os
import re
import socket
import weakref
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar, Optional, Union

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.util import Retry

from ._closing import Closing
from ._origin import is_loopback, parse_base_url
from ._worker import Worker, on_worker
from .protocol import (
    REDACTED,
    SECRET_HEADERS,
    Call,
    parse_retry_after,
    proxy_reason,
    transport_reason,
)

__all__ = ["Answer", "HttpClient", "default_retry", "gateway_retry", "redact_request"]

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


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuses every cookie: the ``/auth`` session keeps nothing between calls."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


#: Environment proxies that never apply to a loopback Tanium server.
_NO_ENV_PROXIES = ("http", "https", "all")


def redact_request(req: Any) -> None:
    """Replace the secrets of a ``PreparedRequest`` in place (headers and JSON body)."""
    if not isinstance(req, requests.PreparedRequest):
        return
    for name in list(req.headers):
        if name.lower() in SECRET_HEADERS:
            req.headers[name] = REDACTED
    if req.body is not None:
        req.body = REDACTED


def _checked_verify(verify: Any) -> Union[bool, str]:
    if isinstance(verify, os.PathLike):
        verify = os.fspath(verify)
    if not isinstance(verify, (bool, str)):
        raise TypeError("verify must be True, False or the path of a CA bundle")
    if verify == "":
        raise ValueError("verify must be True, False or a non-empty CA bundle path")
    return verify


#: In a forked child: the parent's private sessions, kept from being closed (see
#: :meth:`HttpClient.after_fork`).
_INHERITED: list[requests.Session] = []


def _close_shuts_down() -> bool:
    """Whether this urllib3 shuts a socket down when it closes a connection
    (urllib3-future, which niquests installs in urllib3's place, does)."""
    return importlib.util.find_spec("urllib3.backend") is not None


def _private_session(retries: Union[int, Retry, None]) -> requests.Session:
    """The session ``/auth`` calls go through: small retries, no cookie jar."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=default_retry() if retries is None else retries)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.cookies.set_policy(_NoCookies())
    return session


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

    @property
    def retry_after(self) -> Optional[float]:
        """Seconds the answer's ``Retry-After`` asks for, or None."""
        return parse_retry_after(self.response.headers.get("Retry-After"))


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

    #: Transport errors of this wire: a ``refresh`` may raise them as they are.
    passthrough: ClassVar[tuple[type[BaseException], ...]] = (requests.RequestException,)

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
        self.verify = _checked_verify(verify)
        self.cert = cert
        self.proxies = dict(proxies) if proxies is not None else None
        self._owns_session = session is None
        self._retries = retries
        if session is None:
            session = self._private()
        elif retries is not None:
            raise ValueError("pass retries= or session=, not both: mount the retries on it")
        self.session = session
        self._send = self._per_call()

    def _private(self) -> requests.Session:
        session = _private_session(self._retries)
        # An auth dropped without close() closes its sockets when collected, as
        # urllib3 >= 1.26.16 does for its pools (older ones leave them to the GC,
        # which warns: ResourceWarning).
        self._closer = weakref.finalize(self, session.close)
        return session

    def _per_call(self) -> dict[str, Any]:
        """What every call passes: per-request values win over the environment
        (requests #3829); a supplied session keeps its own unless set here."""
        send: dict[str, Any] = {}
        if self._owns_session or self.verify is not True:
            send["verify"] = self.verify
        if self.cert is not None:
            send["cert"] = self.cert
        if self.proxies is not None:
            send["proxies"] = self.proxies
        elif is_loopback(self.origin[1]):
            send["proxies"] = {k: None for k in _NO_ENV_PROXIES if k not in self.session.proxies}
        return send

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
        except requests.exceptions.ChunkedEncodingError as exc:
            # urllib3 2's IncompleteRead or ours (urllib3 1.26): never a token.
            raise requests.exceptions.ChunkedEncodingError(
                f"{call.method} {self.url}{call.path}: the answer was cut short"
                " (connection dropped)",
                request=exc.request,
                response=exc.response,
            ) from exc
        except requests.exceptions.ProxyError as exc:
            raise requests.exceptions.ProxyError(
                f"{call.method} {self.url}{call.path} through the proxy "
                f"{self._proxy_for(self.url + call.path)}: {proxy_reason(str(exc))}",
                request=exc.request,
                response=exc.response,
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            if isinstance(exc, requests.exceptions.Timeout):
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
                redact_request(resp.request)
            resp._content = body or b""
            resp._content_consumed = True  # type: ignore[attr-defined]
            return Answer(resp, body)
        except BaseException as exc:
            redact_request(getattr(exc, "request", None))
            response = getattr(exc, "response", None)
            if response is not None:
                redact_request(response.request)
            raise

    def _proxy_for(self, url: str) -> str:
        """The proxy a call to ``url`` went through, without its credentials."""
        proxies = dict(self.session.proxies)
        if self._send.get("proxies") is not None:
            proxies.update(self._send["proxies"])
        elif self.session.trust_env:
            proxies.update(requests.utils.get_environ_proxies(url))
        proxy = requests.utils.select_proxy(url, proxies) or "(unknown)"
        return re.sub(r"//[^/@]*@", "//", proxy)  # user:password@ is not shown

    @staticmethod
    def timeout_error(message: str) -> Exception:
        """What a caller waiting for another's flight raises at its deadline."""
        return requests.exceptions.ReadTimeout(message)

    def after_fork(self) -> None:
        """In a child process after ``fork``: the private session's pooled connections
        are the parent's sockets too; drop them (the child opens its own)."""
        if not self._owns_session:
            return
        if not _close_shuts_down():
            self.session.close()  # closes this process's descriptors, nothing more
            return
        # urllib3-future shuts a connection down when it closes it, which would end
        # the parent's connection under a call it is making: the child keeps the
        # parent's pool, unused and never closed, and starts one of its own.
        self._closer.detach()
        _INHERITED.append(self.session)
        self.session = self._private()

    def close(self) -> None:
        """Close the private session (a supplied session is left to its owner)."""
        if self._owns_session:
            self.session.close()

    def __repr__(self) -> str:
        return f"HttpClient(url={self.url!r}, verify={self.verify!r})"


def cut_short(resp: requests.Response) -> Optional[requests.exceptions.ChunkedEncodingError]:
    """The error of a body read to its end with fewer bytes than its ``Content-Length``
    announced (a dropped connection), else None. urllib3 2 raises this itself; 1.26
    returns the cut body as if it were whole."""
    declared = resp.headers.get("content-length", "")
    tell = getattr(resp.raw, "tell", None)
    if not declared.isdigit() or tell is None:
        return None
    got = tell()
    if not isinstance(got, int) or got >= int(declared):
        return None
    return requests.exceptions.ChunkedEncodingError(
        f"the answer was cut short: {got} of {int(declared)} bytes (connection dropped)"
    )


def _read_capped(resp: requests.Response, limit: int, worker: Worker[Answer]) -> Optional[bytes]:
    """At most ``limit`` bytes of a streamed body, or None when it is longer; raises
    ``ChunkedEncodingError`` for a body cut short of its ``Content-Length``."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(4096):
        if worker.abandoned:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    cut = cut_short(resp)
    if cut is not None:
        raise cut
    return b"".join(chunks)
