"""One face for every front-end: the options checked once, the parts assembled once,
and the public names every auth carries.

- :class:`Core`: the parts of one Tanium session (token and clock, policy, flights for
  threads and tasks, the fleet) and the wire that carries its protocol calls. Every
  face over one session shares one core: an auth and its ``SessionId`` see the same
  token, the same callbacks and the same counters.
- :class:`CoreView`: what every face shows of its core (state, counters, timings,
  callbacks), with no I/O.
- :class:`TaniumAuthBase`: the face of an auth (``TaniumSessionAuth``, httpx
  ``TaniumAuth``, ``TaniumMiddleware``): ``token`` without I/O and its setter, the
  factories, ``close()``, pickling and ``repr``; :class:`SyncFace` and
  :class:`AsyncFace` add the calls that do I/O (``validated_token()``, ``logout()``;
  ``await atoken()``, ``await alogout()``).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, NamedTuple, Optional, TypedDict, TypeVar

from packaging.specifiers import SpecifierSet
from urllib3.exceptions import InsecureRequestWarning

from ._closing import Closing
from ._drive import arun, run
from ._effects import COROUTINE_REFRESH, Credentials, Flow, Provider
from ._flight import AsyncFlights, Flights
from ._origin import Origin, origin_name
from ._policy import Policy, first_session
from .protocol import (
    ENV_DOMAIN,
    ENV_PASSWORD,
    ENV_SESSION,
    ENV_URL,
    ENV_USER,
    LOGIN_ROUTES,
    check_seconds,
    check_token,
    login_body,
    login_headers,
)
from .state import TokenState
from .stats import AuthEvent, AuthStats
from .stores import Fleet, SessionStore, StoreHealth
from .versions import SpecCheck, parse_specifier, read_version, unreadable

__all__ = [
    "AsyncFace",
    "CommonOptions",
    "Core",
    "CoreView",
    "Options",
    "SyncFace",
    "TaniumAuthBase",
    "check_options",
    "core_of",
    "credentials_for",
    "warn_unverified",
    "wrong_client",
]

A = TypeVar("A", bound="TaniumAuthBase")


class _Unpickled(str):
    """The ``session`` an unpickled auth is rebuilt with: no token (never pickled)."""

    __slots__ = ()


#: Why an unpickled auth has no session.
_UNPICKLED_WHY = "it was unpickled (tokens are never pickled); set auth.token"


class Core:
    """The parts of one Tanium session and the wire that carries its calls.

    ``wire`` gives ``url``, ``origin``, ``passthrough`` (its transport errors, which a
    ``refresh`` may raise as they are), ``timeout_error(message)`` and ``exchange``
    (sync) and/or ``aexchange`` (async).
    """

    def __init__(
        self,
        wire: Any,
        token: Optional[str],
        *,
        revalidate_after: float,
        expires_after: float,
        login_timeout: float,
        logout_timeout: float,
    ) -> None:
        lock = threading.Lock()
        self.wire = wire
        self.url: str = wire.url
        self.origin: Origin = wire.origin
        self.state = TokenState(token, lock)
        self.state.revalidate_after = check_seconds(
            "revalidate_after", revalidate_after, zero_ok=True
        )
        if token is None:
            self.state.ended = "not logged in yet"
        self.flights = Flights(lock, wire.timeout_error)
        self.aflights = AsyncFlights(self.flights)  # one registry: threads and loops
        self.policy = Policy(
            self.url,
            self.state,
            login_timeout=check_seconds("login_timeout", login_timeout),
            logout_timeout=check_seconds("logout_timeout", logout_timeout),
            expires_after=check_seconds("expires_after", expires_after),
            passthrough=tuple(wire.passthrough),
        )
        self._tasks: set[asyncio.Future[Any]] = set()  # the async work this auth owns
        self._events: Optional[ThreadPoolExecutor] = None  # on_event, off the event loop
        _CORES.add(self)

    def run(self, flow: Flow) -> Any:
        """Drive ``flow`` blocking, through the wire's ``exchange``; ``on_event`` is
        called once it has landed."""
        try:
            return run(flow, self.wire.exchange, self.flights, self.policy.fleet)
        finally:
            self.policy.counters.flush()

    async def arun(self, flow: Flow) -> Any:
        """Drive ``flow`` in a task this auth owns, through the wire's ``aexchange``,
        and wait for it: a caller that is cancelled (or times out) only stops waiting,
        the work lands for every other caller and gives back what it holds."""
        task = asyncio.ensure_future(self._owned(flow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieved)
        return await asyncio.shield(task)

    async def _owned(self, flow: Flow) -> Any:
        try:
            return await arun(flow, self.wire.aexchange, self.aflights, self.policy.fleet)
        finally:
            counters = self.policy.counters
            if counters.pending:  # on one thread of this auth, in order: a slow webhook
                if self._events is None:  # never stops the loop or its callers
                    self._events = ThreadPoolExecutor(1, thread_name_prefix="tanium-events")
                self._events.submit(counters.flush)

    def after_fork(self) -> None:
        """In a child process after ``fork``: one fresh lock for the state and the
        flights, no flight, callback mark, task or breaker state of the parent."""
        lock = threading.Lock()
        self.state.lock = lock
        self.flights.after_fork(lock)
        self.policy.counters.after_fork()
        self.policy.busy_until = 0.0
        self._tasks = set()
        self._events = None  # the parent's event thread does not exist here
        fleet = self.policy.fleet
        if fleet is not None:
            fleet.after_fork()
        reset = getattr(self.wire, "after_fork", None)
        if reset is not None:
            reset()

    def use_store(self, store: Optional[SessionStore]) -> None:
        """Share the session through ``store`` (None: this process alone)."""
        policy = self.policy
        fleet = None
        if store is not None:
            fleet = Fleet(store, origin_name(self.origin), policy.lease, policy.expires_after)
        policy.fleet = fleet

    def require(self, spec: Optional[SpecifierSet]) -> None:
        """Check the server's version against ``spec`` at the first request."""
        self.policy.require(None if spec is None else SpecCheck(spec, self.url))

    def check_server(self, flights: Any) -> Flow:
        """The ``requires_server`` gate: checked once for every caller."""
        yield from self.policy.check_server(flights, read_version, self._unreadable)

    def begin(self, flights: Any, provider: Provider) -> Flow:
        """The token for a request to the origin: the version gate, then the token
        (validated when stale, renewed through ``provider`` when dead)."""
        if self.policy.gate:
            yield from self.check_server(flights)
        return (yield from self.policy.current(flights, provider))

    def _unreadable(self, exc: BaseException) -> None:
        unreadable(self.url, exc, stacklevel=8)


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark an owned task's outcome as seen (its caller may have stopped waiting)."""
    if not task.cancelled():
        task.exception()


#: Every core of this process, for :func:`_after_fork_in_child`.
_CORES: weakref.WeakSet[Core] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for core in list(_CORES):
        core.after_fork()


if hasattr(os, "register_at_fork"):  # POSIX: a child starts with no flight of its parent
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: The auth to use for each client (by the top-level module of its request type).
_AUTH_FOR = {
    "requests": "requests_tanium_session.TaniumSessionAuth (or TaniumSession)",
    "niquests": "requests_tanium_session.TaniumSessionAuth",
    "httpx": "requests_tanium_session.httpx.TaniumAuth",
    "aiohttp": "requests_tanium_session.aiohttp.TaniumMiddleware",
}


def warn_unverified(url: str, stacklevel: int = 3) -> None:
    """Warn, as urllib3 does, that this auth's TLS calls to ``url`` are not verified
    (``verify=False``, ``ssl=False``): one ``InsecureRequestWarning`` per auth."""
    if url.startswith("https:"):
        warnings.warn(
            f"TLS certificate verification is off for {url}: anyone on the path can read "
            "the session id",
            InsecureRequestWarning,
            stacklevel=stacklevel,
        )


def wrong_client(mine: str, given: object) -> TypeError:
    """The error of ``mine`` ("TaniumAuth is the auth for httpx") handed a request of
    another client: it names the class to use for that client."""
    client = type(given).__module__.partition(".")[0]
    use = _AUTH_FOR.get(client)
    if use is None:
        others = "; ".join(f"for {name} {auth}" for name, auth in _AUTH_FOR.items())
        return TypeError(f"{mine}; it was given a {type(given).__name__}: {others}")
    return TypeError(f"{mine}; this is a {client} request: use {use}")


def core_of(view: CoreView) -> Core:
    """The core a face shows (for a face built over another's session)."""
    return view._core


class CommonOptions(TypedDict, total=False):
    """The keyword arguments every front-end takes, for the typed factories
    (``from_credentials``, ``from_env``), so editors and ``mypy`` catch a misspelt one."""

    revalidate_after: float
    expires_after: float
    login_timeout: float
    logout_timeout: float
    refresh_status_codes: Collection[int]
    on_token_update: Optional[Callable[[str], None]]
    allow_http: bool
    requires_server: Optional[str]
    store: Optional[SessionStore]
    on_event: Optional[Callable[[AuthEvent], None]]


class Options(NamedTuple):
    """An auth's options, checked (messages never show a secret)."""

    codes: frozenset[int]
    refresh: Provider
    on_token_update: Optional[Callable[[str], None]]
    on_event: Optional[Callable[[AuthEvent], None]]
    requires: Optional[SpecifierSet]
    store: Optional[SessionStore]


def check_options(
    *,
    refresh_status_codes: Collection[int],
    refresh: Provider,
    on_token_update: Optional[Callable[[str], None]],
    on_event: Optional[Callable[[AuthEvent], None]],
    requires_server: Optional[str],
    store: Optional[SessionStore],
    sync_only: Optional[str] = None,
) -> Options:
    """Check what every front-end takes. ``sync_only`` names a client that cannot await
    (a coroutine ``refresh`` is refused for it now)."""
    if refresh is not None and not (callable(refresh) or isinstance(refresh, Credentials)):
        raise TypeError("refresh must be a callable returning a new session id")
    if sync_only is not None and inspect.iscoroutinefunction(refresh):
        raise TypeError(COROUTINE_REFRESH.format(client=sync_only))
    for name, callback in (("on_token_update", on_token_update), ("on_event", on_event)):
        if callback is not None and not callable(callback):
            raise TypeError(f"{name} must be a callable")
    codes = frozenset(refresh_status_codes)
    if not all(isinstance(c, int) and 400 <= c < 600 for c in codes):
        raise ValueError("refresh_status_codes must be HTTP error statuses (400-599)")
    requires = parse_specifier(requires_server) if requires_server is not None else None
    if store is not None and not isinstance(store, SessionStore):
        raise TypeError("store must be a SessionStore (MemoryStore, FileStore, RedisStore)")
    return Options(codes, refresh, on_token_update, on_event, requires, store)


def credentials_for(
    username: str,
    password: str,
    *,
    domain: str = "",
    secondary: str = "",
    persistent: bool = False,
    login: str = "auth",
) -> Credentials:
    """Credentials for a login by the route ``login`` (``"auth"``: ``POST /auth`` with
    base64 headers; ``"rest"``: ``POST /api/v2/session/login`` with JSON)."""
    if login not in LOGIN_ROUTES:
        raise ValueError('login must be "auth" (POST /auth) or "rest" (POST /api/v2/session/login)')
    if login == "auth":
        return Credentials(login_headers(username, password, domain, secondary, persistent))
    if secondary or persistent:
        raise ValueError('secondary= and persistent= go with login="auth" only')
    return Credentials({}, "rest", login_body(username, password, domain))


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ValueError(f"environment variable {name} is missing or empty")
    return value


class CoreView:
    """What a face shows of its :class:`Core`: no property here does I/O."""

    __slots__ = ()
    _core: Core

    @property
    def url(self) -> str:
        """The Tanium server's base URL (normalised, no trailing slash)."""
        return self._core.url

    @property
    def logged_in(self) -> bool:
        """True while there is a live token."""
        return self._core.state.current is not None

    @property
    def generation(self) -> int:
        """Counts changes of token (rotation, refresh, setter, death)."""
        return self._core.state.generation

    @property
    def store(self) -> Optional[SessionStore]:
        """The session store shared with other processes, or None."""
        fleet = self._core.policy.fleet
        return None if fleet is None else fleet.store

    @property
    def store_health(self) -> Optional[StoreHealth]:
        """The session store's health (ok, or degraded since when and the last
        error's type); None without a store."""
        fleet = self._core.policy.fleet
        return None if fleet is None else fleet.health

    @property
    def stats(self) -> AuthStats:
        """What this session's auth has done so far: validations, refreshes, resends,
        waiting, the store's operations and health (a snapshot)."""
        return self._core.policy.stats(self._core.flights.waited)

    @property
    def on_event(self) -> Optional[Callable[[AuthEvent], None]]:
        """Called with an :class:`~requests_tanium_session.AuthEvent` when the session
        dies or is refreshed, and when the store degrades or comes back; after the work
        that raised it has landed: on the calling thread in sync code, in order on one
        thread of the auth in async code (a slow callback never stops the loop)."""
        return self._core.policy.counters.on_event

    @on_event.setter
    def on_event(self, callback: Optional[Callable[[AuthEvent], None]]) -> None:
        if callback is not None and not callable(callback):
            raise TypeError("on_event must be a callable taking an AuthEvent")
        self._core.policy.counters.on_event = callback

    @property
    def on_token_update(self) -> Optional[Callable[[str], None]]:
        """Called with the new token whenever it changes after construction."""
        return self._core.policy.on_token_update

    @on_token_update.setter
    def on_token_update(self, callback: Optional[Callable[[str], None]]) -> None:
        if callback is not None and not callable(callback):
            raise TypeError("on_token_update must be a callable taking the new token")
        self._core.policy.on_token_update = callback

    @property
    def revalidate_after(self) -> float:
        """Seconds after a confirmation during which the token is used unchecked
        (0: validate before every use)."""
        return self._core.state.revalidate_after

    @revalidate_after.setter
    def revalidate_after(self, value: float) -> None:
        self._core.state.revalidate_after = check_seconds("revalidate_after", value, zero_ok=True)

    @property
    def expires_after(self) -> float:
        """Seconds of idleness after which the session counts as expired."""
        return self._core.policy.expires_after

    @expires_after.setter
    def expires_after(self, value: float) -> None:
        self._core.policy.expires_after = check_seconds("expires_after", value)

    @property
    def login_timeout(self) -> float:
        """Wall-clock seconds of one validate or login call."""
        return self._core.policy.login_timeout

    @login_timeout.setter
    def login_timeout(self, value: float) -> None:
        self._core.policy.login_timeout = check_seconds("login_timeout", value)

    @property
    def logout_timeout(self) -> float:
        """Wall-clock seconds of one logout call."""
        return self._core.policy.logout_timeout

    @logout_timeout.setter
    def logout_timeout(self, value: float) -> None:
        self._core.policy.logout_timeout = check_seconds("logout_timeout", value)


class TaniumAuthBase(CoreView, Closing):
    """The face every auth shares (see the module docstring); a front-end adds its
    wire, its request path and its transport options."""

    #: The ``session`` of an auth rebuilt by unpickling (front-ends pass it on).
    UNPICKLED: ClassVar[str] = _Unpickled("<unpickled>")

    refresh: Provider
    refresh_status_codes: frozenset[int]
    _requires: Optional[SpecifierSet]

    def _assemble(
        self,
        wire: Any,
        session: Optional[str],
        options: Options,
        timings: dict[str, float],
        core: Optional[Core] = None,
    ) -> Core:
        """Build (or share) the core and apply ``options``; the checks come first, so
        nothing is half-built when one fails."""
        unpickled = isinstance(session, _Unpickled)
        if core is None:
            if session is None and options.refresh is None:
                raise ValueError("session is required (or refresh=, or from_credentials())")
            token = None if session is None or unpickled else check_token(session)
            core = Core(wire, token, **timings)
            if unpickled:
                core.state.ended = _UNPICKLED_WHY
            self._core = core
        else:
            self._core = core  # shared: the timings given here apply to it
            for name, value in timings.items():
                setattr(self, name, value)
        self._requires = options.requires
        self.refresh = options.refresh
        self.refresh_status_codes = options.codes
        if options.on_token_update is not None:
            self.on_token_update = options.on_token_update
        if options.on_event is not None:
            self.on_event = options.on_event
        if options.requires is not None:
            core.require(options.requires)
        if options.store is not None:
            core.use_store(options.store)
        return core

    # -- the token -----------------------------------------------------------------

    @property
    def token(self) -> Optional[str]:
        """The current token, or None when there is none (no I/O: to validate a stale
        one first, call ``validated_token()`` or ``await atoken()``)."""
        return self._core.state.current

    @token.setter
    def token(self, value: str) -> None:
        """Adopt a new session id or API token, confirmed now (revives a dead auth;
        ``on_token_update`` is called)."""
        core = self._core
        core.policy.adopt(value, core.flights)

    def _no_token(self) -> bool:
        """True when there is no session and nothing can make one."""
        return self._core.state.current is None and self.refresh is None

    # -- factories -----------------------------------------------------------------

    @classmethod
    def _from_environment(cls: type[A], options: dict[str, Any]) -> A:
        """Built from ``TANIUM_URL`` and ``TANIUM_SESSION`` (every ``from_env``), or from
        ``TANIUM_USER`` and ``TANIUM_PASSWORD`` (and ``TANIUM_DOMAIN``): then the first
        request logs in by ``options["login"]``'s route. With both, the session is used
        and the credentials log in again when it dies (unless ``refresh`` is given). No
        I/O here; ``ValueError`` names a missing or malformed variable (never its value)."""
        login = options.pop("login", "auth")
        url = _env(ENV_URL)
        session = os.environ.get(ENV_SESSION, "")
        build: Any = cls
        credentials = None
        if os.environ.get(ENV_USER) and os.environ.get(ENV_PASSWORD):
            credentials = credentials_for(
                os.environ[ENV_USER], os.environ[ENV_PASSWORD],
                domain=os.environ.get(ENV_DOMAIN, ""), login=login,
            )  # fmt: skip
        if not session and credentials is not None:
            if {"refresh", "session"} & options.keys():
                raise TypeError("from_env() with credentials makes its own session and refresh")
            return build(url, None, refresh=credentials, **options)  # type: ignore[no-any-return]
        if not session:
            raise ValueError(
                f"environment variable {ENV_SESSION} is missing or empty (or set "
                f"{ENV_USER} and {ENV_PASSWORD} to log in)"
            )
        try:
            check_token(session, ENV_SESSION)
        except ValueError as exc:
            hint = "; strip the surrounding whitespace" if session != session.strip() else ""
            raise ValueError(f"environment variable {exc}{hint}") from None
        if credentials is not None and "refresh" not in options:
            options["refresh"] = credentials  # the session first; a login when it dies
        return build(url, session, **options)  # type: ignore[no-any-return]

    @classmethod
    def _with_credentials(
        cls: type[A],
        url: str,
        username: str,
        password: str,
        *,
        domain: str,
        secondary: str,
        persistent: bool,
        options: dict[str, Any],
        login: str = "auth",
    ) -> tuple[A, Flow]:
        """An auth that logs in with these credentials whenever its session dies, and
        the flow of its first session (a login, or a fresh record of its store)."""
        if {"refresh", "session", "session_id"} & options.keys():
            raise TypeError("from_credentials() makes its own session and refresh")
        credentials = credentials_for(
            username, password, domain=domain, secondary=secondary, persistent=persistent,
            login=login,
        )  # fmt: skip
        build: Any = cls
        auth: A = build(url, refresh=credentials, **options)
        core = auth._core
        fleet = core.policy.fleet
        flow = first_session(
            credentials,
            core.policy.login_timeout,
            core.state.revalidate_after,
            None if fleet is None else fleet.origin,
        )
        return auth, flow

    @classmethod
    def _logged_in(cls: type[A], url: str, username: str, password: str, **kw: Any) -> A:
        """``from_credentials`` for the front-ends that block: the auth, logged in."""
        auth, flow = cls._with_credentials(url, username, password, **kw)
        try:
            auth._core.policy.start(auth._core.run(flow))
        except BaseException:
            auth.close()
            raise
        return auth

    @classmethod
    async def _alogged_in(cls: type[A], url: str, username: str, password: str, **kw: Any) -> A:
        """``from_credentials`` for the front-ends in an event loop."""
        auth, flow = cls._with_credentials(url, username, password, **kw)
        auth._core.policy.start(await auth._core.arun(flow))
        return auth

    # -- pickling and display ------------------------------------------------------

    def _pickled(self) -> dict[str, Any]:
        """The constructor arguments an unpickled copy is rebuilt from: the
        configuration without the token, credentials, callbacks or store."""
        refresh = self.refresh
        return {
            "url": self.url,
            "revalidate_after": self.revalidate_after,
            "expires_after": self.expires_after,
            "login_timeout": self.login_timeout,
            "logout_timeout": self.logout_timeout,
            "refresh_status_codes": tuple(sorted(self.refresh_status_codes)),
            "refresh": None if isinstance(refresh, Credentials) else refresh,
            "requires_server": None if self._requires is None else str(self._requires),
        }

    def __getstate__(self) -> dict[str, Any]:
        return self._pickled()

    def __setstate__(self, state: dict[str, Any]) -> None:
        options = dict(state)
        url = options.pop("url", None)
        init: Any = type(self).__init__
        init(self, url, self.UNPICKLED, **options)

    def __repr__(self) -> str:
        uid = self._core.policy.uid if self.logged_in else None
        refresh = "set" if self.refresh is not None else None
        return (
            f"{type(self).__name__}(url={self.url!r}, uid={uid!r}, "
            f"logged_in={self.logged_in!r}, refresh={refresh})"
        )


class SyncFace:
    """The calls that do I/O, for front-ends that block (requests, ``httpx.Client``)."""

    __slots__ = ()
    _core: Core
    refresh: Provider

    def validated_token(self) -> str:
        """The token, validated first when stale and renewed through ``refresh`` when
        dead (pytan3's token getter). Blocks for one ``/auth`` call at the most.

        Raises:
            NotLoggedInError: there is no session and nothing can make one.
            LoginError: the session is dead and cannot be renewed.
        """
        core = self._core
        token = core.state.fresh()
        if token is not None:
            return token
        if core.state.current is None and self.refresh is None:
            raise core.policy.not_logged_in()
        found: str = core.run(core.begin(core.flights, self.refresh))
        return found

    def logout(self) -> None:
        """End this session (``logout: 0``); ``LogoutError`` on any answer but 200 (on
        5xx/408/429 the token is kept), ``NotLoggedInError`` without a session."""
        self._core.run(self._core.policy.logout(False, "logout"))

    def logout_all(self) -> None:
        """End every session of this user (``logout: 1``); raises as :meth:`logout`."""
        self._core.run(self._core.policy.logout(True, "logout all"))


class AsyncFace:
    """The calls that do I/O, for front-ends in an event loop (httpx
    ``AsyncClient``, aiohttp)."""

    __slots__ = ()
    _core: Core
    refresh: Provider

    async def atoken(self) -> str:
        """The token, validated first when stale and renewed through ``refresh`` when
        dead; the calls run in this task. Raises as ``validated_token()``."""
        core = self._core
        token = core.state.fresh()
        if token is not None:
            return token
        if core.state.current is None and self.refresh is None:
            raise core.policy.not_logged_in()
        found: str = await core.arun(core.begin(core.aflights, self.refresh))
        return found

    async def alogout(self) -> None:
        """End this session (``logout: 0``), from async code; raises as ``logout()``."""
        await self._core.arun(self._core.policy.logout(False, "logout"))

    async def alogout_all(self) -> None:
        """End every session of this user (``logout: 1``), from async code."""
        await self._core.arun(self._core.policy.logout(True, "logout all"))
