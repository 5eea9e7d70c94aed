"""TaniumMiddleware: Tanium session authentication for ``aiohttp.ClientSession``.

Needs the ``aiohttp`` extra (aiohttp 3.12 or later, for client middlewares):
``pip install "requests-tanium-session[aiohttp]"``.

It drives the one policy (:mod:`._policy`) as the other front-ends do, and only moves
bytes: the header on the caller's request, one resend after a recovered 401/403, and
protocol calls through a ``ClientSession`` of its own per call (no redirects, no
environment proxy for loopback, one wall-clock deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterator
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, Optional, Union

try:
    import aiohttp
    from aiohttp.payload import BytesPayload
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "requests_tanium_session.aiohttp needs aiohttp: "
        'pip install "requests-tanium-session[aiohttp]"'
    ) from exc

from ._drive import arun
from ._front import FrontOptions, PolicyFront, Refresh
from ._policy import Answered, Credentials, Flow, first_session
from .exceptions import TaniumAuthError
from .http_client import is_loopback
from .protocol import (
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_LOGOUT_TIMEOUT,
    DEFAULT_REFRESH_STATUS_CODES,
    DEFAULT_REVALIDATE_AFTER,
    GATEWAY_PATH,
    HEADER,
    MAX_ANSWER_BYTES,
    Call,
    login_headers,
    special_paths,
)
from .stats import AuthEvent
from .stores import SessionStore

__all__ = ["TaniumClientSession", "TaniumMiddleware"]

if TYPE_CHECKING:
    from typing_extensions import Unpack


async def _read(response: aiohttp.ClientResponse) -> Optional[bytes]:
    """Read an answer and release its connection; None when it announces more than
    ``MAX_ANSWER_BYTES`` (then it is left unread)."""
    if (response.content_length or 0) > MAX_ANSWER_BYTES:
        return None
    body = await response.read()  # it stays readable; its connection goes back now
    response.release()
    return body


class MiddlewareOptions(FrontOptions, total=False):
    """:class:`TaniumMiddleware`'s keyword arguments for ``from_credentials``."""

    ssl: Union[SSLContext, bool]
    proxy: Optional[str]


def _timeout_error(message: str) -> Exception:
    return aiohttp.ServerTimeoutError(message)


class _Wire:
    """Protocol calls for one origin, each through a ``ClientSession`` of its own."""

    def __init__(self, url: str, host: str, ssl_: Union[SSLContext, bool], proxy: Any) -> None:
        self.url = url
        self._ssl = ssl_
        self._proxy = proxy
        self._trust_env = proxy is None and not is_loopback(host)

    async def aexchange(self, call: Call, timeout: float) -> Answered:
        """Make ``call`` within ``timeout`` wall-clock seconds (connect, headers, body)."""
        try:
            return await asyncio.wait_for(self._send(call), timeout)
        except asyncio.TimeoutError:
            raise _timeout_error(
                f"{call.method} {self.url}{call.path} did not finish within {timeout:g} s"
            ) from None

    async def _send(self, call: Call) -> Answered:
        # No response rides along: aiohttp's carries the request's secret headers.
        async with aiohttp.ClientSession(
            trust_env=self._trust_env, cookie_jar=aiohttp.DummyCookieJar()
        ) as session, session.request(
            call.method, self.url + call.path, headers=dict(call.headers), json=call.json,
            allow_redirects=False, ssl=self._ssl, proxy=self._proxy,
        ) as response:  # fmt: skip
            kept, size = [], 0
            while chunk := await response.content.read(1 << 16):
                size += len(chunk)
                if size > call.limit:
                    return Answered(response.status, None, str(response.url))
                kept.append(chunk)
            return Answered(response.status, b"".join(kept), str(response.url))


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


class TaniumMiddleware(PolicyFront):
    """An aiohttp client middleware that puts the Tanium ``session`` header on one
    origin's requests, with the guarantees of the other front-ends.

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
        scheme, host, port = self._setup(
            url, session, revalidate_after=revalidate_after, expires_after=expires_after,
            login_timeout=login_timeout, logout_timeout=logout_timeout,
            refresh_status_codes=refresh_status_codes, refresh=refresh,
            on_token_update=on_token_update, allow_http=allow_http,
            requires_server=requires_server, store=store, on_event=on_event,
            passthrough=(aiohttp.ClientError,), timeout_error=_timeout_error,
        )  # fmt: skip
        self._key = (scheme, host.strip("[]"), port)
        self._ssl = ssl
        self._wire = _Wire(self.url, host.strip("[]"), ssl, proxy)
        self._paths = special_paths(self.url)

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
        **kwargs: Unpack[MiddlewareOptions],
    ) -> TaniumMiddleware:
        """Log in now (with a store, a fresh published session is taken instead), and
        again after every death; ``LoginError`` when the credentials are refused."""
        if "refresh" in kwargs or "session" in kwargs:
            raise TypeError("from_credentials() makes its own session and refresh")
        credentials = Credentials(login_headers(username, password, domain, secondary, persistent))
        self = cls(url, refresh=credentials, **kwargs)
        policy = self._policy
        origin = None if policy.fleet is None else policy.fleet.origin
        flow = first_session(credentials.headers, policy.login_timeout,
                             self.revalidate_after, origin)  # fmt: skip
        policy.start(await self._arun(flow))
        return self

    @property
    def token(self) -> Optional[str]:
        """The current token, or None (no I/O; :meth:`atoken` validates when stale)."""
        return self._state.current

    async def atoken(self) -> Optional[str]:
        """The current token, validated (or refreshed) first when stale."""
        token = self._state.fresh()
        if token is not None or self._no_token():
            return token
        found: str = await self._arun(self._policy.current(self._aflights, self.refresh))
        return found

    def is_tanium_url(self, url: Any) -> bool:
        """True when the ``yarl.URL`` (or string) ``url`` has the Tanium origin."""
        if isinstance(url, str):
            return self._matches(url)
        return url.raw_user is None and (url.scheme, url.host, url.port) == self._key

    def client_session(self, **kwargs: Any) -> TaniumClientSession:
        """An ``aiohttp.ClientSession`` with this middleware and ``base_url`` set, whose
        requests raise this package's exceptions as they are (a plain session with the
        middleware raises them as the ``__cause__`` of an ``aiohttp.ClientOSError``)."""
        kwargs.setdefault("base_url", self.url + "/")
        middlewares = (self, *kwargs.pop("middlewares", ()))
        return TaniumClientSession(aiohttp.ClientSession(middlewares=middlewares, **kwargs))

    async def logout(self) -> None:
        """End this session (``logout: 0``); ``LogoutError`` on any answer but 200."""
        await self._arun(self._policy.logout(False, "logout"))

    async def _arun(self, flow: Flow) -> Any:
        return await arun(flow, self._wire.aexchange, self._aflights, self._policy.fleet)

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        flights, state = self._aflights, self._state
        if flights.in_callback() or not self.is_tanium_url(request.url):
            request.headers.popall(HEADER, None)  # a redirect hop that left the origin
            return await handler(request)
        token = state.fresh()
        if token is None or self._policy.gate:
            token = await self._arun(self._begin(flights))
        request.headers[HEADER] = token
        response = await handler(request)
        status = response.status
        after = flights.started  # only a check begun after this answer can judge it
        if 200 <= status < 300:
            special = self._paths.get(request.url.raw_path)
            if special is None:
                state.confirm(token)
                return response
            if special == GATEWAY_PATH or not self._policy.soap(
                flights, token, await _read(response)
            ):
                return response
            status = "200 with an in-band auth failure"  # type: ignore[assignment]
        elif status not in self.refresh_status_codes:
            return response
        else:
            await _read(response)
        cause = f"{request.method} {request.url} answered {status}"
        flow = self._policy.recover(flights, token, cause, response, self.refresh, after)
        new = await self._arun(flow)
        if new is None or not (request.body == b"" or isinstance(request.body, BytesPayload)):
            return response  # a permission answer, or a body that cannot be replayed
        request.headers[HEADER] = new
        self._policy.resent()
        again = await handler(request)
        if 200 <= again.status < 300:
            state.confirm(new)
        return again
