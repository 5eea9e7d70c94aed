"""What the async-capable front-ends (httpx, aiohttp) share: their arguments, checked
once, and the policy, flights and store built from them. No I/O."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Optional, TypedDict, Union

from ._flight import AsyncFlights, Flights
from ._policy import Credentials, Flow, Policy
from .http_client import Origin, OriginMatcher, origin_name, parse_base_url
from .protocol import check_seconds, check_token
from .state import StateView, TokenState
from .stats import AuthEvent
from .stores import Fleet, SessionStore
from .versions import SpecCheck, parse_specifier, read_version, unreadable

__all__ = ["FrontOptions", "PolicyFront", "Refresh"]

Refresh = Callable[[], Union[str, Awaitable[str]]]


class FrontOptions(TypedDict, total=False):
    """The keyword arguments the httpx and aiohttp auths share, for their
    ``from_credentials`` (so editors and ``mypy`` catch a misspelt one)."""

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


class PolicyFront(StateView):
    """A front-end that drives :class:`~._policy.Policy` itself (not through SessionId)."""

    url: str
    refresh: Union[Refresh, Credentials, None]

    def _setup(
        self,
        url: Optional[str],
        session: Optional[str],
        *,
        revalidate_after: float,
        expires_after: float,
        login_timeout: float,
        logout_timeout: float,
        refresh_status_codes: Collection[int],
        refresh: Union[Refresh, Credentials, None],
        on_token_update: Optional[Callable[[str], None]],
        allow_http: bool,
        requires_server: Optional[str],
        store: Optional[SessionStore],
        on_event: Optional[Callable[[AuthEvent], None]],
        passthrough: tuple[type[BaseException], ...],
        timeout_error: Callable[[str], Exception],
    ) -> Origin:
        """Check every argument (messages never show a secret) and build the parts."""
        if url is None:
            raise ValueError("url is required")
        self.url, origin = parse_base_url(url, allow_http)
        if refresh is not None and not (callable(refresh) or isinstance(refresh, Credentials)):
            raise TypeError("refresh must be a callable returning a new session id")
        if on_token_update is not None and not callable(on_token_update):
            raise TypeError("on_token_update must be a callable taking the new token")
        if session is None and refresh is None:
            raise ValueError("session is required (or refresh=, or from_credentials())")
        token = check_token(session) if session is not None else None
        codes = frozenset(refresh_status_codes)
        if not all(isinstance(c, int) and 400 <= c < 600 for c in codes):
            raise ValueError("refresh_status_codes must be HTTP error statuses (400-599)")
        requires = parse_specifier(requires_server) if requires_server is not None else None
        lock = threading.Lock()
        self._state = TokenState(token, lock)
        self._state.revalidate_after = check_seconds(
            "revalidate_after", revalidate_after, zero_ok=True
        )
        if token is None:
            self._state.ended = "not logged in yet"
        policy = self._policy = Policy(
            self.url,
            self._state,
            login_timeout=check_seconds("login_timeout", login_timeout),
            logout_timeout=check_seconds("logout_timeout", logout_timeout),
            expires_after=check_seconds("expires_after", expires_after),
            passthrough=passthrough,
        )
        policy.on_token_update = on_token_update
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be a callable taking an AuthEvent")
        policy.counters.on_event = on_event
        if requires is not None:
            policy.require(SpecCheck(requires, self.url))
        if store is not None:
            policy.fleet = Fleet(store, origin_name(origin), policy.lease, policy.expires_after)
        self.refresh_status_codes = codes
        self.refresh = refresh
        self._matches = OriginMatcher(origin)
        self._flights = Flights(lock, timeout_error)
        self._aflights = AsyncFlights(self._flights)  # one registry: threads and loops
        return origin

    @property
    def revalidate_after(self) -> float:
        """Seconds after a confirmation during which the token is sent unchecked."""
        return self._state.revalidate_after

    @property
    def login_timeout(self) -> float:
        """Wall-clock seconds of one validate or login call."""
        return self._policy.login_timeout

    @property
    def logout_timeout(self) -> float:
        """Wall-clock seconds of one logout call."""
        return self._policy.logout_timeout

    @property
    def expires_after(self) -> float:
        """Idle seconds after which the session counts as expired."""
        return self._policy.expires_after

    @property
    def on_token_update(self) -> Optional[Callable[[str], None]]:
        """Called with the new token whenever it changes."""
        return self._policy.on_token_update

    @on_token_update.setter
    def on_token_update(self, callback: Optional[Callable[[str], None]]) -> None:
        self._policy.on_token_update = callback

    def _begin(self, flights: Any) -> Flow:
        """The token for a request to the origin: the server gate, then current."""
        policy = self._policy
        if policy.gate:
            yield from policy.check_server(flights, read_version, self._unreadable)
        return (yield from policy.current(flights, self.refresh))

    def _unreadable(self, exc: BaseException) -> None:
        unreadable(self.url, exc, stacklevel=8)

    def _no_token(self) -> bool:
        """True when there is no session and nothing can make one (``token`` is None)."""
        return self._state.current is None and self.refresh is None

    def __repr__(self) -> str:
        refresh = "credentials" if isinstance(self.refresh, Credentials) else self.refresh
        return (
            f"{type(self).__name__}(url={self.url!r}, logged_in={self.logged_in!r}, "
            f"refresh={'set' if refresh else None})"
        )
