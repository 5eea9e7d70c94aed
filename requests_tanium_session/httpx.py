"""TaniumAuth: Tanium session authentication for ``httpx.Client`` and ``httpx.AsyncClient``.

Needs the ``httpx`` extra: ``pip install "requests-tanium-session[httpx]"``.

Every decision is the one policy (:mod:`._policy`) the ``requests`` adapter drives too,
and the public face is theirs (:mod:`._face`); this module only moves bytes. The auth
flow yields the caller's request and, after a recovered 401/403, that request once
more, nothing else: ``/auth``, login, validate, logout and ``console.json`` calls go
through a private client of this auth (no redirects, no environment proxy for
loopback, one wall-clock deadline, secrets redacted on anything raised), so they never
appear in the caller's ``history``.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Generator, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Optional, Union

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'requests_tanium_session.httpx needs httpx: pip install "requests-tanium-session[httpx]"'
    ) from exc

from ._answer import CONFIRM, DONE, INSPECT, Decoder, Next, announced_too_long, next_step
from ._effects import COROUTINE_REFRESH, Answered, Credentials, Flow, Provider
from ._face import (
    AsyncFace,
    CommonOptions,
    SyncFace,
    TaniumAuthBase,
    check_options,
    warn_unverified,
    wrong_client,
)
from ._origin import DEFAULT_PORTS, OriginMatcher, is_loopback, parse_base_url, shown_url
from ._worker import Worker, on_worker
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

__all__ = ["TaniumAuth"]

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)

Verify = Union[ssl.SSLContext, str, bool]

_URL = httpx.URL
Refresh = Callable[[], Any]


# -- the wire: protocol calls ----------------------------------------------------------


def _redacted_headers(headers: Any) -> dict[str, str]:
    return {k: REDACTED if k.lower() in SECRET_HEADERS else v for k, v in headers.items()}


def _redacted(call: Call, url: str) -> httpx.Request:
    """``call`` as an ``httpx.Request`` with every secret replaced: what exceptions carry."""
    content = REDACTED.encode() if call.json is not None else None
    return httpx.Request(call.method, url, headers=_redacted_headers(call.headers), content=content)


def _scrub(exc: BaseException, redacted: httpx.Request) -> None:
    if isinstance(exc, httpx.RequestError):
        exc.request = redacted


def _finish(response: httpx.Response, body: Optional[bytes], redacted: httpx.Request) -> Answered:
    response._content = body or b""  # readable, and closed
    response.request = redacted
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return Answered(response.status_code, body, str(response.url), response, retry_after)


def _ssl_context(verify: Verify, cert: Union[str, tuple[str, str], None]) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise ValueError("with an SSLContext as verify, load the client certificate into it")
        return verify
    if isinstance(verify, bool):
        ctx = httpx.create_ssl_context(verify=verify)
    elif isinstance(verify, str) and verify:
        if os.path.isdir(verify):
            ctx = ssl.create_default_context(capath=verify)
        else:
            ctx = ssl.create_default_context(cafile=verify)
    else:
        raise TypeError("verify must be True, False, an ssl.SSLContext or a CA bundle path")
    if cert is not None:
        ctx.load_cert_chain(*((cert,) if isinstance(cert, str) else cert))
    return ctx


def _timeout_error(message: str) -> Exception:
    return httpx.ReadTimeout(message)


class _Wire:
    """Makes protocol calls for one origin, each through a client of its own (so any
    thread or event loop may make them and nothing is left open), never following
    redirects, environment proxies only for hosts that are not loopback."""

    passthrough = (httpx.TransportError,)
    timeout_error = staticmethod(_timeout_error)

    def __init__(
        self, url: Optional[str], allow_http: bool, verify: Verify, cert: Any, proxy: Optional[str]
    ) -> None:
        if url is None:
            raise ValueError("url is required")
        self.url, self.origin = parse_base_url(url, allow_http)
        host = self.origin[1].strip("[]")
        self.ssl = _ssl_context(verify, cert) if self.url.startswith("https:") else None
        self._options: dict[str, Any] = {
            # Made once: httpx would build (and load a CA bundle into) one per client.
            "verify": self.ssl or httpx.create_ssl_context(verify=False),
            "proxy": proxy,
            "trust_env": proxy is None and not is_loopback(host),
            "follow_redirects": False,
        }

    def exchange(self, call: Call, timeout: float) -> Answered:
        """Make ``call`` within ``timeout`` wall-clock seconds (connect, headers, body)."""

        def give_up(worker: Worker[Answered]) -> BaseException:
            response = worker.response
            if response is not None:
                response.close()  # the worker's read ends now
            return httpx.ReadTimeout(
                f"{call.method} {self.url}{call.path} did not finish within {timeout:g} s",
                request=_redacted(call, self.url + call.path),
            )

        return on_worker(partial(self._run, call, timeout), timeout, give_up)

    def _run(self, call: Call, timeout: float, worker: Worker[Answered]) -> Answered:
        redacted = _redacted(call, self.url + call.path)
        try:
            with httpx.Client(timeout=timeout, **self._options) as client:
                request = client.build_request(
                    call.method, self.url + call.path, headers=dict(call.headers), json=call.json
                )
                response = worker.response = client.send(request, stream=True)
                try:
                    body = _capped(response.iter_bytes(), call.limit)
                finally:
                    response.close()
            return _finish(response, body, redacted)
        except BaseException as exc:
            _scrub(exc, redacted)
            raise

    async def aexchange(self, call: Call, timeout: float) -> Answered:
        """The async twin of :meth:`exchange`."""
        redacted = _redacted(call, self.url + call.path)
        try:
            return await asyncio.wait_for(self._asend(call, timeout, redacted), timeout)
        except asyncio.TimeoutError:
            raise httpx.ReadTimeout(
                f"{call.method} {self.url}{call.path} did not finish within {timeout:g} s",
                request=redacted,
            ) from None

    async def _asend(self, call: Call, timeout: float, redacted: httpx.Request) -> Answered:
        try:
            async with httpx.AsyncClient(timeout=timeout, **self._options) as client:
                request = client.build_request(
                    call.method, self.url + call.path, headers=dict(call.headers), json=call.json
                )
                response = await client.send(request, stream=True)
                try:
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > call.limit:
                            return _finish(response, None, redacted)
                        chunks.append(chunk)
                finally:
                    await response.aclose()
                return _finish(response, b"".join(chunks), redacted)
        except BaseException as exc:
            _scrub(exc, redacted)
            raise


def _capped(chunks: Any, limit: int) -> Optional[bytes]:
    """At most ``limit`` bytes of ``chunks``, or None when there are more."""
    kept: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        kept.append(chunk)
    return b"".join(kept)


# -- the wire: the caller's answer, one capped read put back ------------------------------


class _Replay(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response's raw stream whose first chunks the auth read: they come again
    first, then the rest (and an error met while reading, where it was met)."""

    def __init__(
        self,
        kept: list[bytes],
        rest: Any = None,
        original: Any = None,
        error: Optional[BaseException] = None,
        decoded: bytes = b"",
    ) -> None:
        self.kept = kept
        self.decoded = decoded  # what the kept chunks decode to, at most the cap
        self._rest = rest
        self._original = original
        self._error = error

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def __iter__(self) -> Iterator[bytes]:
        yield from self.kept
        if self._rest is not None:
            yield from self._rest
        self._raise()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.kept:
            yield chunk
        if self._rest is not None:
            async for chunk in self._rest:
                yield chunk
        self._raise()

    def close(self) -> None:
        if self._original is not None:
            self._original.close()

    async def aclose(self) -> None:
        if self._original is not None:
            await self._original.aclose()


def _start_peek(response: httpx.Response) -> Optional[Decoder]:
    """The decoder for a peek at ``response``, or None when the auth reads nothing:
    announced too long, or an encoding it cannot decode."""
    if announced_too_long(response.headers.get("content-length")):
        return None
    return Decoder.of(response.headers.get("content-encoding"))


def _peek(response: httpx.Response) -> Optional[bytes]:
    """The one capped read (see :mod:`._answer`): the decoded body when it is at most
    ``MAX_ANSWER_BYTES`` (its connection then goes back), else None; either way the
    caller reads the whole body afterwards."""
    if response.is_stream_consumed:
        return response.content if len(response.content) <= MAX_ANSWER_BYTES else None
    decoder = _start_peek(response)
    if decoder is None:
        return None
    original = response.stream
    assert isinstance(original, httpx.SyncByteStream)
    kept: list[bytes] = []
    source = iter(original)
    try:
        for chunk in source:
            kept.append(chunk)
            if not decoder.feed(chunk):
                response.stream = _Replay(kept, source, original, decoded=decoder.prefix)
                return None
    except Exception as exc:
        response.stream = _Replay(kept, None, original, exc, decoder.prefix)
        return None
    original.close()  # read whole: the connection goes back to the pool now
    response.stream = _Replay(kept, decoded=decoder.prefix)
    return decoder.body


async def _apeek(response: httpx.Response) -> Optional[bytes]:
    """:func:`_peek` in async code."""
    if response.is_stream_consumed:
        return response.content if len(response.content) <= MAX_ANSWER_BYTES else None
    decoder = _start_peek(response)
    if decoder is None:
        return None
    original = response.stream
    assert isinstance(original, httpx.AsyncByteStream)
    kept: list[bytes] = []
    source = original.__aiter__()
    try:
        async for chunk in source:
            kept.append(chunk)
            if not decoder.feed(chunk):
                response.stream = _Replay(kept, source, original, decoded=decoder.prefix)
                return None
    except Exception as exc:
        response.stream = _Replay(kept, None, original, exc, decoder.prefix)
        return None
    await original.aclose()
    response.stream = _Replay(kept, decoded=decoder.prefix)
    return decoder.body


def _discarded(response: httpx.Response) -> Any:
    """Leave ``response`` with what the auth read, decoded (httpx reads it into
    ``history``: a compressed prefix would be inflated whole); the stream to close."""
    stream = response.stream
    response.stream = httpx.ByteStream(stream.decoded if isinstance(stream, _Replay) else b"")
    response.headers.pop("content-encoding", None)
    return None if response.is_stream_consumed else stream


def _discard(response: httpx.Response) -> None:
    """Close a response the auth will not return: nothing more is read."""
    stream = _discarded(response)
    if isinstance(stream, httpx.SyncByteStream):
        stream.close()


async def _adiscard(response: httpx.Response) -> None:
    stream = _discarded(response)
    if isinstance(stream, httpx.AsyncByteStream):
        await stream.aclose()


def _redacted_request(request: httpx.Request) -> httpx.Request:
    return httpx.Request(
        request.method, request.url, headers=_redacted_headers(request.headers),
        stream=request.stream,
    )  # fmt: skip


def _shown(response: httpx.Response) -> httpx.Response:
    """A copy of ``response`` to carry on an exception: its request (and the requests
    of its history) without the session or any other secret."""
    shown = copy.copy(response)
    shown.request = _redacted_request(response.request)
    shown.history = [_shown(h) for h in response.history]
    return shown


class HttpxOptions(CommonOptions, total=False):
    """:class:`TaniumAuth`'s keyword arguments for ``from_credentials`` and ``from_env``."""

    verify: Verify
    cert: Union[str, tuple[str, str], None]
    proxy: Optional[str]


class TaniumAuth(SyncFace, AsyncFace, TaniumAuthBase, httpx.Auth):
    """An ``httpx.Auth`` that puts the Tanium ``session`` header on one origin's requests.

    The same policy and the same public face as
    :class:`~requests_tanium_session.TaniumSessionAuth`: the header only to the exact
    origin; fresh for ``revalidate_after`` after a confirmation (a 2xx confirms); one
    validation however many threads (``httpx.Client``) or tasks (``httpx.AsyncClient``)
    find it stale; a 401/403 is judged by one ``/auth`` check: resent once with a new
    token, returned as it is when the session is alive, or refreshed (``refresh``) or
    raised as ``LoginError`` when it is dead.

    Args:
        url: the Tanium server, ``https://host[:port][/prefix]``.
        session: a session id or API token; None with ``refresh`` logs in lazily.
        revalidate_after: seconds after a confirmation before validating again.
        expires_after: idle seconds after which the session counts as expired.
        login_timeout: wall-clock seconds of one validate or login call.
        logout_timeout: wall-clock seconds of one logout call.
        refresh_status_codes: statuses from the origin that trigger recovery.
        refresh: returns a new session id; a plain callable (any client) or a
            coroutine function (``httpx.AsyncClient`` only).
        on_token_update: called with the new token whenever it changes.
        allow_http: allow ``http://`` for a host that is not loopback.
        requires_server: a version specifier checked at the first request.
        store: a session store shared with other processes or machines; its calls
            run on a worker thread in async flows.
        verify: TLS verification of this auth's own calls (``/auth``, login,
            validate, logout): True, False, an ``ssl.SSLContext`` or a CA bundle path;
            :meth:`client` and :meth:`async_client` use it too.
        cert: a client certificate for those calls (a path or ``(cert, key)``).
        proxy: a proxy URL for those calls; None: the environment's, except for a
            loopback server.
        on_event: called with an ``AuthEvent`` when the session dies or is
            refreshed, and when the store degrades or comes back.

    Raises:
        TypeError, ValueError: malformed arguments (messages never show a secret).
    """

    requires_request_body = False
    requires_response_body = False

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
        verify: Verify = True,
        cert: Union[str, tuple[str, str], None] = None,
        proxy: Optional[str] = None,
        on_event: Optional[Callable[[AuthEvent], None]] = None,
    ) -> None:
        options = check_options(
            refresh_status_codes=refresh_status_codes, refresh=refresh,
            on_token_update=on_token_update, on_event=on_event,
            requires_server=requires_server, store=store,
        )  # fmt: skip
        self._wire = _Wire(url, allow_http, verify, cert, proxy)
        timings = {
            "revalidate_after": revalidate_after,
            "expires_after": expires_after,
            "login_timeout": login_timeout,
            "logout_timeout": logout_timeout,
        }
        self._assemble(self._wire, session, options, timings)
        scheme, host, port = self._core.origin
        #: ``(scheme, userinfo, host, port)``: the first fields of httpx's parsed URL.
        self._key = (scheme, "", host.strip("[]"), None if port == DEFAULT_PORTS[scheme] else port)
        self._matches = OriginMatcher(self._core.origin)
        self._paths = special_paths(self.url)
        core = self._core  # what the flows read on every request, bound once
        self._fresh, self._confirm = core.state.fresh, core.state.confirm
        self._flights, self._aflights, self._policy = core.flights, core.aflights, core.policy
        self._transport = {"verify": verify, "cert": cert, "proxy": proxy, "allow_http": allow_http}
        if verify is False:
            warn_unverified(self.url)

    @classmethod
    def from_env(cls, *, login: str = "auth", **kwargs: Unpack[HttpxOptions]) -> TaniumAuth:
        """Build from ``TANIUM_URL`` and ``TANIUM_SESSION``, or ``TANIUM_USER`` and
        ``TANIUM_PASSWORD`` (``TANIUM_DOMAIN``), logging in by ``login``'s route at the
        first request; ``ValueError`` names what is missing (never a value)."""
        return cls._from_environment(dict(kwargs, login=login))

    @classmethod
    def from_credentials(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        domain: str = "",
        secondary: str = "",
        persistent: bool = False,
        login: str = "auth",
        **kwargs: Unpack[HttpxOptions],
    ) -> TaniumAuth:
        """Log in now (``POST /auth``, base64 headers; with a store, a fresh published
        session is taken instead) and again after every death, once however many
        requests are waiting; ``login="rest"`` logs in with ``POST /api/v2/session/login``
        and JSON instead. ``LoginError`` when the credentials are refused."""
        return cls._logged_in(
            url, username, password, domain=domain, secondary=secondary,
            persistent=persistent, options=dict(kwargs), login=login,
        )  # fmt: skip

    def is_tanium_url(self, url: Union[str, httpx.URL]) -> bool:
        """True when ``url`` has the Tanium origin (scheme, host, port); no userinfo."""
        if url.__class__ is _URL:
            # httpx's parsed form is one attribute away; the public properties decode
            # and re-encode on every read, which costs more than the rest of the flow.
            parsed: Any = url  # (annotations of this private attribute vary by version)
            try:
                return bool(parsed._uri_reference[:4] == self._key)
            except (AttributeError, TypeError):  # another httpx: the public, slower way
                pass
        return self._matches(str(url))

    # -- clients ----------------------------------------------------------------

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` with ``auth=self``, ``base_url=url``, this auth's
        ``verify``, and a request hook that removes the header from every request not
        to the origin (redirect hops included: httpx carries custom headers across
        origins). Refused (``TypeError``) while ``refresh`` is a coroutine function."""
        if inspect.iscoroutinefunction(self.refresh):
            raise TypeError(COROUTINE_REFRESH.format(client="an httpx.Client"))
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [self._strip, *hooks.get("request", [])]
        kwargs.setdefault("base_url", self.url)
        kwargs.setdefault("verify", self._wire.ssl or self._transport["verify"])
        return httpx.Client(auth=self, event_hooks=hooks, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` twin of :meth:`client`."""
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [self._astrip, *hooks.get("request", [])]
        kwargs.setdefault("base_url", self.url)
        kwargs.setdefault("verify", self._wire.ssl or self._transport["verify"])
        return httpx.AsyncClient(auth=self, event_hooks=hooks, **kwargs)

    @property
    def refresh(self) -> Provider:
        """What renews a dead session (see :class:`TaniumAuth`)."""
        return self._refresh

    @refresh.setter
    def refresh(self, value: Provider) -> None:
        self._refresh = value
        if inspect.iscoroutinefunction(value):  # an httpx.Client's first request raises
            self.sync_auth_flow = self._refused_flow  # type: ignore[method-assign]
        else:
            self.__dict__.pop("sync_auth_flow", None)

    def _refused_flow(self, request: httpx.Request) -> Generator[httpx.Request, Any, None]:
        """The sync flow while ``refresh`` is a coroutine function: the first request of
        a plain ``httpx.Client`` raises, before any call."""
        raise TypeError(COROUTINE_REFRESH.format(client="an httpx.Client"))
        yield request  # (a generator, as httpx expects)

    def _strip(self, request: httpx.Request) -> None:
        if HEADER in request.headers and not self.is_tanium_url(request.url):
            del request.headers[HEADER]
            log.debug("request to %s leaves the Tanium origin: session header removed",
                      shown_url(request.url))  # fmt: skip

    async def _astrip(self, request: httpx.Request) -> None:
        self._strip(request)

    # -- logout: the client argument is accepted and not needed -------------------------

    def logout(self, client: Optional[httpx.Client] = None) -> None:
        """End this session (``logout: 0``); ``LogoutError`` on any answer but 200. The
        call goes through this auth's own client; ``client`` is accepted and unused."""
        super().logout()

    async def alogout(self, client: Optional[httpx.AsyncClient] = None) -> None:
        """End this session from async code (as :meth:`logout`)."""
        await super().alogout()

    # -- the flows --------------------------------------------------------------

    def _usual(self, request: httpx.Request, response: httpx.Response) -> bool:
        """The usual answer in one call: a 2xx to ``request`` itself, from a path that is
        neither SOAP nor the gateway (:func:`next_step`'s CONFIRM without its other
        cases; anything else, or another httpx, goes to :meth:`_step`)."""
        try:
            return bool(
                200 <= response.status_code < 300
                and response._request is request
                and request.url._uri_reference.path not in self._paths
            )
        except AttributeError:
            return False

    def _step(self, request: httpx.Request, response: httpx.Response) -> Next:
        """The answer rule for ``response`` to ``request`` (which carried the session)."""
        url = request.url
        status = response.status_code
        if response._request is not request:  # redirected: followed by the client
            return self._followed(request, response)
        if 300 <= status < 400 and response.has_redirect_location:
            return next_step(status, None, (), self._away(request, response) is not None)
        try:
            special = self._paths.get(url._uri_reference.path)  # see is_tanium_url
        except AttributeError:  # another httpx
            special = self._paths.get(url.raw_path.split(b"?")[0].decode("ascii", "replace"))
        return next_step(status, special, self.refresh_status_codes)

    def _followed(self, request: httpx.Request, response: httpx.Response) -> Next:
        """The rule for an answer reached through redirects: the first hop, when it
        left the origin, is judged like a 401; else the answer where it ended."""
        hops = [*response.history, response]
        if hops[0]._request is request and self._away(request, hops[0]) is not None:
            return next_step(hops[0].status_code, None, (), True)
        if not self.is_tanium_url(response.url):
            return DONE  # another origin's answer
        return next_step(response.status_code, None, self.refresh_status_codes)

    def _away(self, request: httpx.Request, response: httpx.Response) -> Optional[str]:
        """Where a redirect ``response`` leads (``host:port``), when it leaves the origin."""
        location = response.headers.get("location", "")
        try:
            target = request.url.join(location)
        except httpx.InvalidURL:
            return "an unreadable location"
        return None if self.is_tanium_url(target) else target.netloc.decode("ascii", "replace")

    def _recovery(
        self, request: httpx.Request, response: httpx.Response, token: str, after: int, fl: Any
    ) -> Flow:
        first = response.history[0] if response.history else response
        away = None
        if first._request is request and 300 <= first.status_code < 400:
            away = self._away(request, first)
        hop = first if away is not None else response
        status = hop.status_code
        what = "200 with an in-band auth failure" if status < 300 else str(status)
        where = f" to {away} (another origin)" if away is not None else ""
        cause = f"{request.method} {shown_url(request.url)} answered {what}{where}"
        return self._core.policy.recover(fl, token, cause, _shown(response), self.refresh, after)

    def _slow_token(self, request: httpx.Request, flights: Any) -> Optional[str]:
        """None when ``request`` goes out as it is (another origin, or a call made from
        inside ``refresh()``); "" when the policy must give the token."""
        if flights.in_callback() or not self.is_tanium_url(request.url):
            return None
        return ""

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flights = self._flights
        token = self._fresh()
        if token is None or flights.in_callbacks or self._policy.gate:
            token = self._slow_token(request, flights)
            if token == "":
                core = self._core
                token = core.run(core.begin(flights, self.refresh))
        elif not self.is_tanium_url(request.url):
            token = None
        if token is None:
            yield request
            return
        request.headers[HEADER] = token
        response = yield request
        if self._usual(request, response):
            self._confirm(token)
            return
        step = self._step(request, response)
        if step is CONFIRM:
            self._confirm(token)
        elif step is not DONE:
            new = self._recovered(request, response, token, step)
            if new is not None:
                request.headers[HEADER] = new
                self._policy.resent()
                self._confirm_again((yield request), new)

    def _recovered(
        self, request: httpx.Request, response: httpx.Response, token: str, step: Next
    ) -> Optional[str]:
        """A 401/403 or a SOAP answer: the token to resend with, or None (the answer
        stands, put back whole)."""
        core = self._core
        after = core.flights.started  # only a check begun after this answer can judge it
        body = _peek(response)
        if step is INSPECT and not core.policy.soap(core.flights, token, body):
            return None
        try:
            new = core.run(self._recovery(request, response, token, after, core.flights))
        except BaseException:
            _discard(response)
            raise
        if new is None or not self._replayable(request):
            return None  # a permission answer, or a body that cannot be replayed
        _discard(response)
        return new  # type: ignore[no-any-return]

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flights = self._aflights
        token = self._fresh()
        if token is None or self._policy.gate or flights.in_callback():
            token = self._slow_token(request, flights)
            if token == "":
                core = self._core
                token = await core.arun(core.begin(flights, self.refresh))
        elif not self.is_tanium_url(request.url):
            token = None
        if token is None:
            yield request
            return
        request.headers[HEADER] = token
        response = yield request
        if self._usual(request, response):
            self._confirm(token)
            return
        step = self._step(request, response)
        if step is CONFIRM:
            self._confirm(token)
        elif step is not DONE:
            new = await self._arecovered(request, response, token, step)
            if new is not None:
                request.headers[HEADER] = new
                self._policy.resent()
                self._confirm_again((yield request), new)

    async def _arecovered(
        self, request: httpx.Request, response: httpx.Response, token: str, step: Next
    ) -> Optional[str]:
        """:meth:`_recovered` in a task."""
        core = self._core
        after = core.flights.started
        body = await _apeek(response)
        if step is INSPECT and not core.policy.soap(core.aflights, token, body):
            return None
        try:
            new = await core.arun(self._recovery(request, response, token, after, core.aflights))
        except BaseException:
            await _adiscard(response)
            raise
        if new is None or not self._replayable(request):
            return None
        await _adiscard(response)
        return new  # type: ignore[no-any-return]

    def _confirm_again(self, again: httpx.Response, new: str) -> None:
        if 200 <= again.status_code < 300 and self.is_tanium_url(again.url):
            self._core.state.confirm(new)

    @staticmethod
    def _replayable(request: httpx.Request) -> bool:
        if isinstance(request.stream, httpx.ByteStream):
            return True
        log.info("%s %s not resent: its body cannot be replayed", request.method,
                 shown_url(request.url))  # fmt: skip
        return False

    # -- pickling -------------------------------------------------------------

    def _pickled(self) -> dict[str, Any]:
        state = super()._pickled()
        state.update(self._transport)
        return state

    def __call__(self, request: Any, *_: Any) -> Any:
        """Refused: ``requests`` calls its auth like this (aiohttp its middlewares), and
        this is httpx's."""
        raise wrong_client("TaniumAuth is the auth for httpx", request)
