"""TaniumAuth: Tanium session authentication for ``httpx.Client`` and ``httpx.AsyncClient``.

Needs the ``httpx`` extra: ``pip install "requests-tanium-session[httpx]"``.

The policy is written once, as a generator of *effects* (send this request, read
that body, wait for a flight, call ``refresh``); ``sync_auth_flow`` and
``async_auth_flow`` only carry them out, with threads or with tasks. Every ``/auth``
and REST call is a request the flow yields, so it goes through the user's own client
(its TLS, proxies and transport).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Generator
from time import monotonic
from typing import Any, Optional, Union

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'requests_tanium_session.httpx needs httpx: pip install "requests-tanium-session[httpx]"'
    ) from exc

from ._aflight import AsyncFlights
from ._flight import Flights
from .exceptions import (
    AuthServiceUnavailable,
    InvalidToken,
    LoginError,
    LogoutError,
    NotLoggedInError,
    VersionMismatchError,
)
from .http_client import DEFAULT_PORTS, OriginMatcher, origin_name, parse_base_url
from .protocol import (
    AUTH_PATH,
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_LOGOUT_TIMEOUT,
    DEFAULT_REFRESH_STATUS_CODES,
    DEFAULT_REVALIDATE_AFTER,
    HEADER,
    Call,
    Kind,
    check_seconds,
    check_token,
    console_call,
    judge_logout,
    judge_token,
    login_call,
    login_headers,
    logout_call,
    recovery_failure,
    refreshed_token,
    validate_call,
    verdict_error,
)
from .state import TokenState
from .stores import Fleet, Record, SessionStore, take
from .versions import check_specifier, parse_specifier, read_version, unreadable

__all__ = ["TaniumAuth"]

log = logging.getLogger(__name__)

Refresh = Callable[[], Union[str, Awaitable[str]]]
_AnyFlights = Union[Flights, AsyncFlights]


# -- effects: what the policy asks its driver to do ----------------------------------


class _Send:
    __slots__ = ("request",)

    def __init__(self, request: httpx.Request) -> None:
        self.request = request


class _Read:
    __slots__ = ("deadline", "limit", "response")

    def __init__(self, response: httpx.Response, limit: int, deadline: float) -> None:
        self.response = response
        self.limit = limit
        self.deadline = deadline


class _Lead:
    __slots__ = ("after", "done", "kind", "timeout")

    def __init__(
        self,
        kind: str,
        done: Callable[[], Optional[str]],
        timeout: float,
        after: Optional[int] = None,
    ) -> None:
        self.kind = kind
        self.done = done
        self.timeout = timeout
        self.after = after


class _Refresh:
    __slots__ = ()


class _Store:
    """A store operation: ``read``, ``lock``, ``unlock`` or ``publish`` (token, previous)."""

    __slots__ = ("args", "op")

    def __init__(self, op: str, *args: Any) -> None:
        self.op = op
        self.args = args


_REFRESH = _Refresh()
_READ = _Store("read")
_LOCK = _Store("lock")
_UNLOCK = _Store("unlock")
_Effect = Union[_Send, _Read, _Lead, _Refresh, _Store]
_Flow = Generator[_Effect, Any, Any]


class _Credentials:
    """Credential login headers: in memory only, never shown or pickled."""

    __slots__ = ("headers",)

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def __repr__(self) -> str:
        return "<credentials>"

    def __reduce__(self) -> Any:
        raise TypeError("credentials are never pickled")


def _keep(response: httpx.Response, body: Optional[bytes]) -> Optional[bytes]:
    response._content = body or b""  # what was read stays readable (httpx reads it again)
    return body


def _read_sync(effect: _Read) -> Optional[bytes]:
    response, chunks, size = effect.response, [], 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > effect.limit:
                return _keep(response, None)
            if monotonic() > effect.deadline:
                raise httpx.ReadTimeout(
                    "the answer did not finish in time", request=response.request
                )
            chunks.append(chunk)
    finally:
        response.close()
    return _keep(response, b"".join(chunks))


async def _read_async(effect: _Read) -> Optional[bytes]:
    response, chunks, size = effect.response, [], 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > effect.limit:
                return _keep(response, None)
            if monotonic() > effect.deadline:
                raise httpx.ReadTimeout(
                    "the answer did not finish in time", request=response.request
                )
            chunks.append(chunk)
    finally:
        await response.aclose()
    return _keep(response, b"".join(chunks))


class _Held:
    """The fleet lock as one flow holds it: taken once, given back when the flow ends."""

    __slots__ = ("depth", "fleet", "handle")

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.depth = 0
        self.handle: Optional[object] = None

    def run(self, effect: _Store) -> Any:
        fleet = self.fleet
        if effect.op == "read":
            return fleet.read()
        if effect.op == "publish":
            fleet.publish(*effect.args)
        elif effect.op == "lock":
            if self.depth == 0:
                self.handle = fleet.acquire()
            self.depth += 1
        elif self.depth:  # unlock
            self.depth -= 1
            if self.depth == 0:
                self.end()
        return None

    def end(self) -> None:
        handle, self.handle, self.depth = self.handle, None, 0
        self.fleet.release(handle)


def _become(last: httpx.Response, want: httpx.Response) -> None:
    """Make ``last`` (the answer to a yielded ``/auth`` call) read as ``want``.

    httpx returns the answer to the last request a flow yielded; a permission 403
    must reach the caller as that 403, not as the ``/auth`` answer.
    """
    last.status_code = want.status_code
    last.headers = want.headers
    last.request = want.request
    last.extensions = want.extensions
    last.history = list(want.history)
    last._content = want.content


class TaniumAuth(httpx.Auth):
    """An ``httpx.Auth`` that puts the Tanium ``session`` header on one origin's requests.

    The same policy as :class:`~requests_tanium_session.TaniumSessionAuth`: the header
    only to the exact origin; fresh for ``revalidate_after`` after a confirmation (a
    2xx confirms); one validation however many threads (``httpx.Client``) or tasks
    (``httpx.AsyncClient``) find it stale; a 401/403 is judged by one ``/auth`` check:
    resent once with a new token, returned as it is when the session is alive, or
    refreshed (``refresh``) or raised as ``LoginError`` when it is dead.

    Args:
        url: the Tanium server, ``https://host[:port][/prefix]``.
        session: a session id or API token; None with ``refresh`` logs in lazily.
        revalidate_after: seconds after a confirmation before validating again.
        expires_after: idle seconds after which the session counts as expired.
        login_timeout: timeout of each yielded validate or login call.
        logout_timeout: timeout of a logout call.
        refresh_status_codes: statuses from the origin that trigger recovery.
        refresh: returns a new session id; a plain callable (any client) or a
            coroutine function (``httpx.AsyncClient`` only).
        on_token_update: called with the new token whenever it changes.
        allow_http: allow ``http://`` for a host that is not loopback.
        requires_server: a version specifier checked at the first request.
        store: a session store shared with other processes or machines; its calls
            run on a worker thread in async flows.

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
        refresh: Union[Refresh, _Credentials, None] = None,
        on_token_update: Optional[Callable[[str], None]] = None,
        allow_http: bool = False,
        requires_server: Optional[str] = None,
        store: Optional[SessionStore] = None,
    ) -> None:
        if url is None:
            raise ValueError("url is required")
        self.url, origin = parse_base_url(url, allow_http)
        if refresh is not None and not (callable(refresh) or isinstance(refresh, _Credentials)):
            raise TypeError("refresh must be a callable returning a new session id")
        if on_token_update is not None and not callable(on_token_update):
            raise TypeError("on_token_update must be a callable taking the new token")
        if session is None and refresh is None:
            raise ValueError("session is required (or refresh=, or from_credentials())")
        token = check_token(session) if session is not None else None
        codes = frozenset(refresh_status_codes)
        if not all(isinstance(c, int) and 400 <= c < 600 for c in codes):
            raise ValueError("refresh_status_codes must be HTTP error statuses (400-599)")
        self._requires = parse_specifier(requires_server) if requires_server is not None else None
        lock = threading.Lock()
        self._state = TokenState(token, lock)
        self._state.revalidate_after = check_seconds(
            "revalidate_after", revalidate_after, zero_ok=True
        )
        if token is None:
            self._state.ended = "not logged in yet"
        self.expires_after = check_seconds("expires_after", expires_after)
        self.login_timeout = check_seconds("login_timeout", login_timeout)
        self.logout_timeout = check_seconds("logout_timeout", logout_timeout)
        self.refresh_status_codes = codes
        self.refresh: Union[Refresh, _Credentials, None] = refresh
        self.on_token_update = on_token_update
        self._matches = OriginMatcher(origin)
        scheme, host, port = origin
        # The origin as httpx.URL spells it: host without brackets, default port None.
        scheme, host, port = origin
        #: ``(scheme, userinfo, host, port)``: the first fields of httpx's parsed URL.
        self._key = (scheme, "", host.strip("[]"), None if port == DEFAULT_PORTS[scheme] else port)
        self._flights = Flights(lock)
        self._aflights = AsyncFlights(lock)
        lease = 2 * self.login_timeout + 2
        name = origin_name(origin)
        self._fleet = None if store is None else Fleet(store, name, lease, self.expires_after)
        self._gate_error: Optional[str] = None
        self._gate = self._requires is not None

    @classmethod
    def from_credentials(
        cls, url: str, username: str, password: str, *, domain: str = "", **kwargs: Any
    ) -> TaniumAuth:
        """Log in on the first request (``POST /auth``, base64 headers) and again after
        every death, once however many requests are waiting."""
        if "refresh" in kwargs or "session" in kwargs:
            raise TypeError("from_credentials() makes its own session and refresh")
        return cls(url, refresh=_Credentials(login_headers(username, password, domain)), **kwargs)

    # -- public state (no I/O) --------------------------------------------------------

    @property
    def token(self) -> Optional[str]:
        """The current token, or None (no I/O)."""
        return self._state.current

    @property
    def logged_in(self) -> bool:
        """True while there is a live token."""
        return self._state.current is not None

    @property
    def generation(self) -> int:
        """Counts changes of token (rotation, refresh, death)."""
        return self._state.generation

    def is_tanium_url(self, url: Union[str, httpx.URL]) -> bool:
        """True when ``url`` has the Tanium origin (scheme, host, port); no userinfo."""
        if isinstance(url, httpx.URL):
            # httpx's parsed form is one attribute away; the public properties decode
            # and re-encode on every read, which costs more than the rest of the flow.
            try:
                return bool(url._uri_reference[:4] == self._key)
            except (AttributeError, TypeError):  # another httpx: the public, slower way
                url = str(url)
        return self._matches(url)

    # -- clients ----------------------------------------------------------------

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` with ``auth=self``, ``base_url=url`` and a request hook
        that removes the header from every request not to the origin (redirect hops
        included: httpx carries custom headers across origins)."""
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [self._strip, *hooks.get("request", [])]
        kwargs.setdefault("base_url", self.url)
        return httpx.Client(auth=self, event_hooks=hooks, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` twin of :meth:`client`."""
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [self._astrip, *hooks.get("request", [])]
        kwargs.setdefault("base_url", self.url)
        return httpx.AsyncClient(auth=self, event_hooks=hooks, **kwargs)

    def _strip(self, request: httpx.Request) -> None:
        if HEADER in request.headers and not self.is_tanium_url(request.url):
            del request.headers[HEADER]
            log.debug("request to %s leaves the Tanium origin: session header removed", request.url)

    async def _astrip(self, request: httpx.Request) -> None:
        self._strip(request)

    # -- logout -------------------------------------------------------------------

    def logout(self, client: httpx.Client) -> None:
        """End this session through ``client``; ``LogoutError`` on any answer but 200."""
        call, token = self._logout_call()
        response = client.send(self._request(call, self.logout_timeout), auth=None)
        response.read()
        self._logged_out(call, token, response)

    async def alogout(self, client: httpx.AsyncClient) -> None:
        """End this session through an ``httpx.AsyncClient``."""
        call, token = self._logout_call()
        response = await client.send(self._request(call, self.logout_timeout), auth=None)
        await response.aread()
        self._logged_out(call, token, response)

    def _logout_call(self) -> tuple[Call, str]:
        token = self._state.current
        if token is None:
            raise self._not_logged_in()
        return logout_call(token), token

    def _logged_out(self, call: Call, token: str, response: httpx.Response) -> None:
        verdict = judge_logout(response.status_code)
        if verdict.kind is Kind.OK:
            self._kill(token, "it was logged out")
            return
        what = f"{call.method} {response.url} {verdict.reason} to a logout"
        if verdict.kind is Kind.TRANSIENT:
            raise LogoutError(f"{what}; the session is kept")
        self._kill(token, f"logout was refused ({response.status_code})")
        raise LogoutError(f"{what}; the session was dropped")

    # -- the drivers --------------------------------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flights, state = self._flights, self._state
        token = state.fresh()
        if (
            token is None
            or flights.in_callbacks
            or self._gate
            or not self.is_tanium_url(request.url)
        ):
            core = self._flow(request, flights, flights.in_callback())
        else:  # the hot path: send, and only a 401/403 starts the policy
            request.headers[HEADER] = token
            response = yield request
            status = response.status_code
            if 200 <= status < 300:
                state.confirm(token)
                return
            if status not in self.refresh_status_codes:
                return
            core = self._answered(request, response, token, flights)
        sent: Any = None
        error: Optional[BaseException] = None
        last: Optional[httpx.Response] = None
        held: Optional[_Held] = None
        try:
            while True:
                try:
                    effect = core.throw(error) if error is not None else core.send(sent)
                except StopIteration as stop:
                    if stop.value is not None and last is not None and stop.value is not last:
                        _become(last, stop.value)
                    return
                finally:
                    error = sent = None
                if isinstance(effect, _Send):
                    sent = last = yield effect.request
                    continue
                try:
                    if isinstance(effect, _Read):
                        sent = _read_sync(effect)
                    elif isinstance(effect, _Lead):
                        sent = flights.lead(effect.kind, effect.done, effect.timeout, effect.after)
                    elif isinstance(effect, _Store):
                        held = held or _Held(self._fleet)  # type: ignore[arg-type]
                        sent = held.run(effect)
                    else:
                        sent = self._call_refresh(flights)
                except Exception as exc:
                    error = exc
        finally:
            core.close()
            if held is not None:
                held.end()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flights, state = self._aflights, self._state
        token = state.fresh()
        in_callback = flights.in_callback()
        if token is None or in_callback or self._gate or not self.is_tanium_url(request.url):
            core = self._flow(request, flights, in_callback)
        else:  # the hot path: send, and only a 401/403 starts the policy
            request.headers[HEADER] = token
            response = yield request
            status = response.status_code
            if 200 <= status < 300:
                state.confirm(token)
                return
            if status not in self.refresh_status_codes:
                return
            core = self._answered(request, response, token, flights)
        sent: Any = None
        error: Optional[BaseException] = None
        last: Optional[httpx.Response] = None
        held: Optional[_Held] = None
        try:
            while True:
                try:
                    effect = core.throw(error) if error is not None else core.send(sent)
                except StopIteration as stop:
                    if stop.value is not None and last is not None and stop.value is not last:
                        _become(last, stop.value)
                    return
                finally:
                    error = sent = None
                if isinstance(effect, _Send):
                    sent = last = yield effect.request
                    continue
                try:
                    if isinstance(effect, _Read):
                        sent = await _read_async(effect)
                    elif isinstance(effect, _Lead):
                        sent = await flights.lead(
                            effect.kind, effect.done, effect.timeout, effect.after
                        )
                    elif isinstance(effect, _Store):  # blocking I/O: off the event loop
                        held = held or _Held(self._fleet)  # type: ignore[arg-type]
                        sent = await asyncio.to_thread(held.run, effect)
                    else:
                        sent = await self._acall_refresh(flights)
                except Exception as exc:
                    error = exc
        finally:
            core.close()
            if held is not None:
                await asyncio.to_thread(held.end)

    def _call_refresh(self, flights: Flights) -> object:
        refresh = self.refresh
        assert refresh is not None and not isinstance(refresh, _Credentials)
        if inspect.iscoroutinefunction(refresh):
            raise TypeError(
                "refresh is a coroutine function: it needs an httpx.AsyncClient; "
                "give a sync httpx.Client a plain function"
            )
        with flights.callback():
            value = self._provided(refresh)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError("refresh returned an awaitable: use an httpx.AsyncClient")
        return value

    async def _acall_refresh(self, flights: AsyncFlights) -> object:
        refresh = self.refresh
        assert refresh is not None and not isinstance(refresh, _Credentials)
        with flights.callback():
            value = self._provided(refresh)
            if inspect.isawaitable(value):
                value = await self._awaited(value)
        return value

    def _provided(self, refresh: Refresh) -> Any:
        try:
            return refresh()
        except LoginError:
            raise
        except Exception as exc:
            raise LoginError(
                f"refresh of the session for {self.url} failed: {type(exc).__name__}"
            ) from exc

    async def _awaited(self, value: Awaitable[Any]) -> Any:
        try:
            return await value
        except LoginError:
            raise
        except Exception as exc:
            raise LoginError(
                f"refresh of the session for {self.url} failed: {type(exc).__name__}"
            ) from exc

    # -- the policy, once -----------------------------------------------------------

    def _flow(self, request: httpx.Request, flights: _AnyFlights, in_callback: bool) -> _Flow:
        """The whole policy for one request; returns the response the caller must see."""
        if in_callback or not self.is_tanium_url(request.url):
            yield _Send(request)  # another origin, or a login made from inside refresh()
            return None
        if self._gate:
            yield from self._check_server()
        state = self._state
        token = state.fresh()
        if token is None:
            token = yield from self._current(flights)
        request.headers[HEADER] = token
        response: httpx.Response = yield _Send(request)
        status = response.status_code
        if 200 <= status < 300:
            state.confirm(token)
            return None
        if status not in self.refresh_status_codes:
            return None
        return (yield from self._answered(request, response, token, flights))

    def _answered(
        self, request: httpx.Request, response: httpx.Response, token: str, flights: _AnyFlights
    ) -> _Flow:
        """The policy after a 401/403 from the origin to ``request``, sent with ``token``."""
        state = self._state
        new = yield from self._recover(response, token, flights)
        if new is None:
            return response  # a permission answer, as it came
        if not isinstance(request.stream, httpx.ByteStream):
            log.info("%s %s not resent: its body cannot be replayed", request.method, request.url)
            return response
        request.headers[HEADER] = new
        again: httpx.Response = yield _Send(request)
        if 200 <= again.status_code < 300:
            state.confirm(new)
        return again

    def _current(self, flights: _AnyFlights) -> _Flow:
        """The token to send now: validate when stale, renew when dead."""
        state = self._state
        if state.current is not None:
            try:
                return (yield from self._validate(flights, state.fresh, None, "stale token"))
            except AuthServiceUnavailable:
                kept = state.current
                if kept is None:
                    raise
                log.warning(
                    "%s at %s is unavailable; sending with the kept session", AUTH_PATH, self.url
                )
                return kept
            except (InvalidToken, NotLoggedInError):
                if self.refresh is None:
                    raise
        elif self.refresh is None:
            raise self._not_logged_in()
        return (yield from self._renew(flights, "the session is dead"))

    def _recover(self, response: httpx.Response, sent: str, flights: _AnyFlights) -> _Flow:
        """Decide what a 401/403 means: the token to resend with, or None (it stands)."""
        state = self._state
        after = flights.started  # only a check begun after this answer can judge it
        current = state.current
        if current is not None and current != sent:
            return current
        cause = f"{response.request.method} {response.url} answered {response.status_code}"

        def done() -> Optional[str]:
            token = state.current
            if token is None:
                raise self._not_logged_in()
            return token if token != sent or state.ok_seq > after else None

        try:
            new = yield from self._validate(flights, done, after, cause, sent)
        except (LoginError, AuthServiceUnavailable) as exc:
            failure = recovery_failure(exc, cause, response, self.refresh is not None)
            if failure is not None:
                raise failure from exc
            new = ""  # dead: renew below
        if not new:
            return (yield from self._renew(flights, cause))
        return new if new != sent else None

    def _validate(
        self,
        flights: _AnyFlights,
        done: Callable[[], Optional[str]],
        after: Optional[int],
        cause: str,
        exclude: Optional[str] = None,
    ) -> _Flow:
        if flights.in_callback():
            raise LoginError(
                f"the session for {self.url} cannot be validated from inside refresh()"
            )
        got = yield _Lead("validate", done, self.login_timeout + 1, after)
        if isinstance(got, str):
            return got
        try:
            token = yield from self._check(got.seq, flights, cause, exclude)
        except GeneratorExit:
            flights.land("validate", got, error=self._abandoned("validation"))
            raise
        except BaseException as exc:
            flights.land("validate", got, error=exc)
            del got
            raise
        flights.land("validate", got, result=token)
        return token

    def _check(self, seq: int, flights: _AnyFlights, cause: str, exclude: Optional[str]) -> _Flow:
        """A validation: alone, one ``/auth`` call; with a store, first a fresh or newer
        record, then under the fleet lock the server and, when the session is dead and
        ``refresh`` is set, the refresh too, published for the fleet."""
        if self._fleet is None:
            return (yield from self._validate_once(seq, flights, cause))
        token = self._from_store((yield _READ), exclude, True, flights)
        if token is not None:
            return token
        yield _LOCK
        record = yield _READ
        token = self._from_store(record, exclude, False, flights)
        if token is None:
            try:
                token = yield from self._validate_once(seq, flights, cause)
            except (InvalidToken, NotLoggedInError):
                if self.refresh is None:
                    raise
                token = yield from self._renewed(flights, cause)
            yield _Store("publish", token, record)
        yield _UNLOCK
        return token

    def _from_store(
        self,
        record: Optional[Record],
        exclude: Optional[str],
        fresh_only: bool,
        flights: _AnyFlights,
    ) -> Optional[str]:
        """Adopt the store's token as :func:`~.stores.take` decides."""
        token, changed = take(self._state, record, exclude, fresh_only)
        if changed and self._state.current is not None:
            log.debug("session adopted from the session store")
            self._notify(self._state.current, flights)
        return token

    def _validate_once(self, seq: int, flights: _AnyFlights, cause: str) -> _Flow:
        state = self._state
        token = state.current
        if token is None:
            raise self._not_logged_in()
        call = validate_call(token)
        log.debug("%s %s at %s (cause: %s)", call.method, call.path, self.url, cause)
        response: httpx.Response = yield _Send(self._request(call, self.login_timeout))
        body = yield _Read(response, call.limit, monotonic() + self.login_timeout)
        verdict = judge_token(call, response.status_code, body)
        if verdict.kind is Kind.OK:
            assert verdict.token is not None
            current, changed = state.answered(token, verdict.token, seq)
            if current is None:
                raise self._not_logged_in()
            if changed:
                log.debug("session rotated by the server")
                self._notify(current, flights)
            return current
        if verdict.kind is Kind.REJECTED:
            self._kill(
                token, f"the server rejected it ({call.path} answered {response.status_code})"
            )
            raise verdict_error(call, str(response.url), verdict, "the session was dropped")
        log.warning("%s %s at %s %s", call.method, call.path, self.url, verdict.reason)
        raise verdict_error(call, str(response.url), verdict, "the session is kept")

    def _renew(self, flights: _AnyFlights, cause: str) -> _Flow:
        if flights.in_callback():
            raise LoginError(
                f"the session for {self.url} cannot be refreshed from inside refresh()"
            )
        state = self._state
        got = yield _Lead("renew", lambda: state.current, 2 * self.login_timeout + 2)
        if isinstance(got, str):
            return got
        try:
            if self._fleet is None:
                new = yield from self._renewed(flights, cause)
            else:
                yield _LOCK
                record = yield _READ
                found = self._from_store(record, None, False, flights) or state.current
                if found is None:
                    found = yield from self._renewed(flights, cause)
                    yield _Store("publish", found, record)
                yield _UNLOCK
                new = found
        except GeneratorExit:
            flights.land("renew", got, error=self._abandoned("login"))
            raise
        except BaseException as exc:
            flights.land("renew", got, error=exc)
            del got
            raise
        flights.land("renew", got, result=new)
        return new

    def _renewed(self, flights: _AnyFlights, cause: str) -> _Flow:
        """Log in or call ``refresh`` once, and adopt the new session."""
        log.info("refreshing the session for %s (cause: %s)", self.url, cause)
        if isinstance(self.refresh, _Credentials):
            value = yield from self._login(self.refresh)
        else:
            value = yield _REFRESH
        new = refreshed_token(value, self.url, self._state.dead)
        if self._state.adopt(new):
            self._notify(new, flights)
        return new

    def _login(self, credentials: _Credentials) -> _Flow:
        call = login_call(credentials.headers)
        response: httpx.Response = yield _Send(self._request(call, self.login_timeout))
        body = yield _Read(response, call.limit, monotonic() + self.login_timeout)
        verdict = judge_token(call, response.status_code, body)
        if verdict.kind is not Kind.OK:
            raise verdict_error(call, str(response.url), verdict, "no session was made")
        return verdict.token

    def _check_server(self) -> _Flow:
        if self._gate_error is None:
            assert self._requires is not None
            call = console_call()
            response: httpx.Response = yield _Send(self._request(call, self.login_timeout))
            body = yield _Read(response, call.limit, monotonic() + self.login_timeout)
            try:
                version = read_version(response.status_code, body)
            except ValueError as exc:
                unreadable(self.url, exc, stacklevel=6)
            else:
                try:
                    check_specifier(version, self._requires, src=self.url)
                except VersionMismatchError as exc:
                    self._gate_error = str(exc)
            self._gate = self._gate_error is not None
        if self._gate_error is not None:
            raise VersionMismatchError(self._gate_error)

    # -- small helpers --------------------------------------------------------------

    def _request(self, call: Call, timeout: float) -> httpx.Request:
        return httpx.Request(
            call.method,
            self.url + call.path,
            headers=dict(call.headers),
            json=call.json,
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )

    def _kill(self, token: str, why: str) -> None:
        self._state.kill(token, why)

    def _notify(self, token: str, flights: _AnyFlights) -> None:
        callback = self.on_token_update
        if callback is None:
            return
        try:
            with flights.callback():
                callback(token)
        except Exception as exc:  # a broken callback must not break the session
            log.warning("on_token_update raised %s; ignored", type(exc).__name__)

    def _not_logged_in(self) -> NotLoggedInError:
        return NotLoggedInError(f"no live session for {self.url}: {self._state.ended}")

    def _abandoned(self, what: str) -> AuthServiceUnavailable:
        return AuthServiceUnavailable(
            f"the {what} for {self.url} was abandoned (its request failed); try again"
        )

    def __repr__(self) -> str:
        refresh = "credentials" if isinstance(self.refresh, _Credentials) else self.refresh
        return (
            f"{type(self).__name__}(url={self.url!r}, logged_in={self.logged_in!r}, "
            f"refresh={'set' if refresh else None})"
        )
