"""TaniumMiddleware: Tanium session authentication for ``aiohttp.ClientSession``.

Needs the ``aiohttp`` extra (aiohttp 3.12 or later, for client middlewares):
``pip install "requests-tanium-session[aiohttp]"``.

It drives the one policy (:mod:`._policy`) and carries the one public face
(:mod:`._face`) as the other front-ends do, and only moves bytes: the header on the
caller's request, one resend after a recovered 401/403, and protocol calls through a
``ClientSession`` of its own per call (no redirects, no environment proxy for
loopback, one wall-clock deadline, nothing secret in anything it raises).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextvars import ContextVar
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, Optional, Union, cast

try:
    import aiohttp
    from aiohttp.payload import BytesPayload
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "requests_tanium_session.aiohttp needs aiohttp: "
        'pip install "requests-tanium-session[aiohttp]"'
    ) from exc

from ._answer import CONFIRM, DONE, INSPECT, READ_CHUNK, Next, announced_too_long, next_step
from ._effects import Answered, Credentials
from ._face import (
    AsyncFace,
    CommonOptions,
    TaniumAuthBase,
    check_options,
    warn_unverified,
    wrong_client,
)
from ._origin import OriginMatcher, is_loopback, parse_base_url, shown_url
from .exceptions import TaniumAuthError
from .protocol import (
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_LOGOUT_TIMEOUT,
    DEFAULT_REFRESH_STATUS_CODES,
    DEFAULT_REVALIDATE_AFTER,
    HEADER,
    MAX_ANSWER_BYTES,
    REDACTED,
    SECRET_HEADERS,
    Call,
    parse_retry_after,
    special_paths,
)
from .stats import AuthEvent
from .stores import SessionStore

__all__ = ["TaniumClientSession", "TaniumMiddleware"]

if TYPE_CHECKING:
    from typing_extensions import Unpack

Refresh = Callable[[], Any]

#: The Tanium URL another origin's redirect sends this task's next hop to: that hop goes
#: without the session, as in requests and httpx (one mark per task; see ``_arriving``).
_ARRIVING: ContextVar[Optional[URL]] = ContextVar("tanium_arriving", default=None)


# -- the wire: protocol calls, and nothing secret in what they raise ------------------------


def _timeout_error(message: str) -> Exception:
    return aiohttp.ServerTimeoutError(message)


def _no_userinfo(url: Any) -> Any:
    """``url`` without user and password (a proxy URL may carry them)."""
    return url.with_user(None) if isinstance(url, URL) and url.user is not None else url


def _redacted_headers(headers: Any) -> CIMultiDictProxy[str]:
    safe = CIMultiDict(
        (k, REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in (headers or {}).items()
    )
    return CIMultiDictProxy(safe)


def _secrets(call: Call, proxy: Optional[str]) -> list[str]:
    """Every value of ``call`` (and of the proxy URL) that must never be shown."""
    found = [v for k, v in call.headers.items() if k.lower() in SECRET_HEADERS]
    if isinstance(call.json, dict):
        found += [v for v in call.json.values() if isinstance(v, str) and v]
    if proxy:
        url = URL(proxy)
        if url.password:
            pair = f"{url.user or ''}:{url.password}".encode()
            found += [url.password, base64.b64encode(pair).decode("ascii")]
    return [s for s in found if len(s) >= 4]


def _scrubbed(exc: aiohttp.ClientError, call: Call, url: str, secrets: list[str]) -> Exception:
    """``exc`` rebuilt without its request's headers, a proxy's userinfo or any of
    ``secrets`` (aiohttp keeps all of them in ``request_info`` and ``args``)."""
    new: Exception = exc
    if isinstance(exc, aiohttp.ClientResponseError):
        info = exc.request_info
        safe = aiohttp.RequestInfo(
            _no_userinfo(info.url), info.method, _redacted_headers(info.headers),
            _no_userinfo(info.real_url),
        )  # fmt: skip
        new = type(exc)(safe, (), status=exc.status, message=exc.message, headers=None)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        key = exc.args[0]
        if hasattr(key, "_replace"):
            key = key._replace(proxy=_no_userinfo(key.proxy), proxy_auth=None)
        new = type(exc)(key, exc.os_error)
    shown = repr(new) + str(new) + repr(new.args)
    if any(secret in shown for secret in secrets):
        return aiohttp.ClientConnectionError(f"{call.method} {url}: {type(exc).__name__}")
    return new


class _Wire:
    """Protocol calls for one origin, each through a ``ClientSession`` of its own."""

    passthrough = (aiohttp.ClientError,)
    timeout_error = staticmethod(_timeout_error)

    def __init__(
        self,
        url: Optional[str],
        allow_http: bool,
        ssl_: Union[SSLContext, bool],
        proxy: Optional[str],
    ) -> None:
        if url is None:
            raise ValueError("url is required")
        self.url, self.origin = parse_base_url(url, allow_http)
        self._ssl = ssl_
        self._proxy = proxy
        self._trust_env = proxy is None and not is_loopback(self.origin[1].strip("[]"))

    async def aexchange(self, call: Call, timeout: float) -> Answered:
        """Make ``call`` within ``timeout`` wall-clock seconds (connect, headers, body);
        what it raises names the method and URL and holds no secret."""
        try:
            return await asyncio.wait_for(self._send(call), timeout)
        except asyncio.TimeoutError:
            failure: Exception = _timeout_error(
                f"{call.method} {self.url}{call.path} did not finish within {timeout:g} s"
            )
        except aiohttp.ClientError as exc:
            failure = _scrubbed(exc, call, self.url + call.path, _secrets(call, self._proxy))
        raise failure  # outside the except: no context chained to the original

    async def _send(self, call: Call) -> Answered:
        # No response rides along: aiohttp's carries the request's secret headers.
        async with aiohttp.ClientSession(
            trust_env=self._trust_env, cookie_jar=aiohttp.DummyCookieJar()
        ) as session, session.request(
            call.method, self.url + call.path, headers=dict(call.headers), json=call.json,
            allow_redirects=False, ssl=self._ssl, proxy=self._proxy,
        ) as response:  # fmt: skip
            kept, size = [], 0
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            while chunk := await response.content.read(1 << 16):
                size += len(chunk)
                if size > call.limit:
                    return Answered(response.status, None, str(response.url), None, retry_after)
                kept.append(chunk)
            body = b"".join(kept)
            return Answered(response.status, body, str(response.url), None, retry_after)


# -- the wire: the caller's answer, one capped read put back ------------------------------


class _Prefixed:
    """aiohttp's body stream with the bytes the auth read put back in front: every
    way of reading it (``read()``, ``iter_chunked()``, lines, ...) sees the whole body."""

    def __init__(self, kept: list[bytes], stream: Any) -> None:
        self._buffer = bytearray(b"".join(kept))
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_stream", "_buffer"):
            raise AttributeError(name)
        return getattr(self._stream, name)

    def _take(self, n: int) -> bytes:
        if n < 0 or n >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
        return data

    async def read(self, n: int = -1) -> bytes:
        if not self._buffer:
            data: bytes = await self._stream.read(n)
            return data
        if n >= 0:
            return self._take(n)
        head = self._take(-1)
        rest: bytes = await self._stream.read()
        return head + rest

    async def readany(self) -> bytes:
        if self._buffer:
            return self._take(-1)
        return await self._stream.readany()  # type: ignore[no-any-return]

    async def readchunk(self) -> tuple[bytes, bool]:
        if self._buffer:
            return self._take(-1), False
        return await self._stream.readchunk()  # type: ignore[no-any-return]

    async def readuntil(self, separator: bytes = b"\n", **kwargs: Any) -> bytes:
        end = self._buffer.find(separator)
        if end >= 0:
            return self._take(end + len(separator))
        head = self._take(-1)
        rest: bytes = await self._stream.readuntil(separator, **kwargs)
        return head + rest

    async def readline(self, **kwargs: Any) -> bytes:
        return await self.readuntil(b"\n")

    async def readexactly(self, n: int) -> bytes:
        head = self._take(n)
        if len(head) == n:
            return head
        rest: bytes = await self._stream.readexactly(n - len(head))
        return head + rest

    def read_nowait(self, n: int = -1) -> bytes:
        if self._buffer:
            return self._take(n)
        data: bytes = self._stream.read_nowait(n)
        return data

    def at_eof(self) -> bool:
        return not self._buffer and bool(self._stream.at_eof())

    async def _iterate(self, read: Callable[[], Any]) -> AsyncIterator[Any]:
        while True:
            item = await read()
            if not item or item == (b"", False):
                return
            yield item

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate(self.readline)

    def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        return self._iterate(lambda: self.read(n))

    def iter_any(self) -> AsyncIterator[bytes]:
        return self._iterate(self.readany)

    def iter_chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        return self._iterate(self.readchunk)


async def _apeek(response: aiohttp.ClientResponse) -> Optional[bytes]:
    """The one capped read (see :mod:`._answer`): the body when it is at most
    ``MAX_ANSWER_BYTES`` (its connection then goes back), else None; either way the
    caller reads the whole body afterwards."""
    if announced_too_long(response.headers.get("Content-Length")):
        return None
    content = response.content
    kept: list[bytes] = []
    size = 0
    try:
        while chunk := await content.read(READ_CHUNK):
            kept.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                break
    except Exception:  # the stream keeps its error: the caller meets it after the prefix
        size = MAX_ANSWER_BYTES + 1
    response.content = _Prefixed(kept, content)  # type: ignore[assignment]
    return b"".join(kept) if size <= MAX_ANSWER_BYTES else None


class _Shown:
    """What an exception carries as ``.response`` for an aiohttp answer: its status,
    reason, URL and headers, and a ``request_info`` without any secret."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        info = response.request_info
        self.status = response.status
        self.reason = response.reason
        self.url = response.url
        self.method = response.method
        self.headers = response.headers
        self.history: tuple[Any, ...] = ()
        self.request_info = aiohttp.RequestInfo(
            info.url, info.method, _redacted_headers(info.headers), info.real_url
        )

    def __repr__(self) -> str:
        return f"<response [{self.status} {self.reason}] {self.method} {shown_url(self.url)}>"


@contextlib.contextmanager
def _ours() -> Iterator[None]:
    """aiohttp turns every ``OSError`` a middleware raises (this package's exceptions
    are ``requests.RequestException``, an ``OSError``) into a ``ClientOSError``: undo it."""
    try:
        yield
    except aiohttp.ClientOSError as exc:
        if isinstance(exc.__cause__, TaniumAuthError):
            raise exc.__cause__  # noqa: B904 - its own cause stays as it was
        raise


class _Request:
    """``session.get(...)``'s awaitable and async context manager, unwrapped by ``_ours``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __await__(self) -> Any:
        return self._wait().__await__()

    async def _wait(self) -> aiohttp.ClientResponse:
        with _ours():
            return await self._inner  # type: ignore[no-any-return]

    async def __aenter__(self) -> aiohttp.ClientResponse:
        with _ours():
            return await self._inner.__aenter__()  # type: ignore[no-any-return]

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)


class TaniumClientSession:
    """An ``aiohttp.ClientSession`` (every other attribute is the session's) whose
    requests raise ``LoginError`` and the rest of this package's exceptions as they are."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    async def __aenter__(self) -> TaniumClientSession:
        await self.session.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.session.__aexit__(*exc)

    def request(self, method: str, url: Any, **kwargs: Any) -> _Request:
        """As ``ClientSession.request``."""
        return _Request(self.session.request(method, url, **kwargs))

    def get(self, url: Any, **kwargs: Any) -> _Request:
        """As ``ClientSession.get``."""
        return self.request("GET", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> _Request:
        """As ``ClientSession.post``."""
        return self.request("POST", url, **kwargs)

    def put(self, url: Any, **kwargs: Any) -> _Request:
        """As ``ClientSession.put``."""
        return self.request("PUT", url, **kwargs)

    def delete(self, url: Any, **kwargs: Any) -> _Request:
        """As ``ClientSession.delete``."""
        return self.request("DELETE", url, **kwargs)


class MiddlewareOptions(CommonOptions, total=False):
    """:class:`TaniumMiddleware`'s keyword arguments for ``from_credentials`` and ``from_env``."""

    ssl: Union[SSLContext, bool]
    proxy: Optional[str]


class TaniumMiddleware(AsyncFace, TaniumAuthBase):
    """An aiohttp client middleware that puts the Tanium ``session`` header on one
    origin's requests, with the guarantees and the public face of the other front-ends.

    Args: as :class:`~requests_tanium_session.httpx.TaniumAuth`, except ``ssl`` (True,
    False or an ``ssl.SSLContext``, for this middleware's own calls) instead of
    ``verify``/``cert``, and ``proxy`` for those calls.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        session: Optional[str] = None,
        *,
        revalidate_after: float = DEFAULT_REVALIDATE_AFTER,
        expires_after: float = DEFAULT_EXPIRES_AFTER,
        login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
        logout_timeout: float = DEFAULT_LOGOUT_TIMEOUT,
        refresh_status_codes: Collection[int] = DEFAULT_REFRESH_STATUS_CODES,
        refresh: Union[Refresh, Credentials, None] = None,
        on_token_update: Optional[Callable[[str], None]] = None,
        allow_http: bool = False,
        requires_server: Optional[str] = None,
        store: Optional[SessionStore] = None,
        ssl: Union[SSLContext, bool] = True,
        proxy: Optional[str] = None,
        on_event: Optional[Callable[[AuthEvent], None]] = None,
    ) -> None:
        options = check_options(
            refresh_status_codes=refresh_status_codes, refresh=refresh,
            on_token_update=on_token_update, on_event=on_event,
            requires_server=requires_server, store=store,
        )  # fmt: skip
        wire = _Wire(url, allow_http, ssl, proxy)
        timings = {
            "revalidate_after": revalidate_after,
            "expires_after": expires_after,
            "login_timeout": login_timeout,
            "logout_timeout": logout_timeout,
        }
        self._assemble(wire, session, options, timings)
        scheme, host, port = self._core.origin
        self._key = (scheme, host.strip("[]"), port)
        self._matches = OriginMatcher(self._core.origin)
        self._paths = special_paths(self.url)
        self._transport = {"ssl": ssl, "proxy": proxy, "allow_http": allow_http}
        if ssl is False:
            warn_unverified(self.url)
        core = self._core  # what the middleware reads on every request, bound once
        self._fresh, self._confirm = core.state.fresh, core.state.confirm
        self._aflights, self._policy = core.aflights, core.policy

    @classmethod
    def from_env(
        cls, *, login: str = "auth", **kwargs: Unpack[MiddlewareOptions]
    ) -> TaniumMiddleware:
        """Build from ``TANIUM_URL`` and ``TANIUM_SESSION``, or ``TANIUM_USER`` and
        ``TANIUM_PASSWORD`` (``TANIUM_DOMAIN``), logging in by ``login``'s route at the
        first request; ``ValueError`` names what is missing (never a value)."""
        return cls._from_environment(dict(kwargs, login=login))

    @classmethod
    async def from_credentials(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        domain: str = "",
        secondary: str = "",
        persistent: bool = False,
        login: str = "auth",
        **kwargs: Unpack[MiddlewareOptions],
    ) -> TaniumMiddleware:
        """Log in now (with a store, a fresh published session is taken instead), and
        again after every death (``login="rest"``: through ``POST /api/v2/session/login``);
        ``LoginError`` when the credentials are refused."""
        return await cls._alogged_in(
            url, username, password, domain=domain, secondary=secondary,
            persistent=persistent, options=dict(kwargs), login=login,
        )  # fmt: skip

    async def logout(self) -> None:
        """As :meth:`alogout` (aiohttp's only way: every call here is awaited)."""
        await self.alogout()

    async def logout_all(self) -> None:
        """As :meth:`alogout_all`."""
        await self.alogout_all()

    def is_tanium_url(self, url: Any) -> bool:
        """True when the ``yarl.URL`` (or string) ``url`` has the Tanium origin."""
        if isinstance(url, str):
            return self._matches(url)
        return url.raw_user is None and (url.scheme, url.host, url.port) == self._key

    def _away(
        self, request: aiohttp.ClientRequest, response: aiohttp.ClientResponse
    ) -> Optional[str]:
        """Where a redirect leads (``host:port``), when it leaves the origin; else None."""
        location = response.headers.get("Location")
        if location is None:
            return None
        try:
            target = request.url.join(URL(location))
        except ValueError:
            return "an unreadable location"
        return None if self.is_tanium_url(target) else f"{target.host}:{target.port}"

    def _back(
        self, request: aiohttp.ClientRequest, response: aiohttp.ClientResponse
    ) -> Optional[URL]:
        """The Tanium URL a redirect from another origin leads to, else None."""
        location = response.headers.get("Location")
        try:
            target = request.url.join(URL(location)) if location else None
        except ValueError:
            return None
        return target if target is not None and self.is_tanium_url(target) else None

    @staticmethod
    def _arriving(url: URL) -> bool:
        """Whether this request is the hop another origin's redirect announced (the
        mark is used up either way: it holds for the next request of this task only)."""
        target = _ARRIVING.get()
        _ARRIVING.set(None)
        return target is not None and target.with_fragment(None) == url.with_fragment(None)

    def client_session(self, **kwargs: Any) -> TaniumClientSession:
        """An ``aiohttp.ClientSession`` with this middleware and ``base_url`` set, whose
        requests raise this package's exceptions as they are (a plain session with the
        middleware raises them as the ``__cause__`` of an ``aiohttp.ClientOSError``)."""
        kwargs.setdefault("base_url", self.url + "/")
        # Innermost: a caller's middleware that sends elsewhere (a failover) sends no
        # session, and a resend is one request to the middlewares around it.
        middlewares = (*kwargs.pop("middlewares", ()), self)
        return TaniumClientSession(aiohttp.ClientSession(middlewares=middlewares, **kwargs))

    def __call__(
        self, request: aiohttp.ClientRequest, handler: Optional[aiohttp.ClientHandlerType] = None
    ) -> Awaitable[aiohttp.ClientResponse]:
        if handler is None:  # requests calls its auth so, httpx a callable auth
            raise wrong_client("TaniumMiddleware is the middleware for aiohttp", request)
        return self._handle(request, handler)

    async def _handle(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        flights = self._aflights
        if flights.in_callback() or not self.is_tanium_url(request.url):
            request.headers.popall(HEADER, None)  # a redirect hop that left the origin
            response = await handler(request)
            if 300 <= response.status < 400 and not flights.in_callback():
                _ARRIVING.set(self._back(request, response))
            return response
        if _ARRIVING.get() is not None and self._arriving(request.url):
            return await handler(request)  # a hop sent here by another origin: no session
        token = self._fresh()
        core = self._core
        if token is None or self._policy.gate:
            token = cast(str, await core.arun(core.begin(flights, self.refresh)))
        request.headers[HEADER] = token
        response = await handler(request)
        away = self._away(request, response) if 300 <= response.status < 400 else None
        step = next_step(
            response.status, self._paths.get(request.url.raw_path), self.refresh_status_codes,
            away is not None,
        )  # fmt: skip
        if step is CONFIRM:
            self._confirm(token)
            return response
        if step is DONE:
            return response
        return await self._recovered(request, handler, response, token, step, away)

    async def _recovered(
        self,
        request: aiohttp.ClientRequest,
        handler: aiohttp.ClientHandlerType,
        response: aiohttp.ClientResponse,
        token: str,
        step: Next,
        away: Optional[str],
    ) -> aiohttp.ClientResponse:
        """A 401/403, a redirect away or a SOAP answer: resend once with the token
        the policy gives, or the answer as it came."""
        core, flights = self._core, self._aflights
        after = flights.started  # only a check begun after this answer can judge it
        body = await _apeek(response)
        if step is INSPECT and not core.policy.soap(flights, token, body):
            return response
        what = "200 with an in-band auth failure" if response.status < 300 else response.status
        where = f" to {away} (another origin)" if away is not None else ""
        cause = f"{request.method} {shown_url(request.url)} answered {what}{where}"
        flow = core.policy.recover(flights, token, cause, _Shown(response), self.refresh, after)
        try:
            new = await core.arun(flow)
        except BaseException:
            response.close()
            raise
        if new is None or not (request.body == b"" or isinstance(request.body, BytesPayload)):
            return response  # a permission answer, or a body that cannot be replayed
        response.close()
        request.headers[HEADER] = new
        core.policy.resent()
        again = await handler(request)
        if 200 <= again.status < 300:
            self._confirm(new)
        return again

    def _pickled(self) -> dict[str, Any]:
        state = super()._pickled()
        state.update(self._transport)
        return state
