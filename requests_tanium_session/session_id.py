"""SessionId: pytan3's session-id authentication method, thread-safe and honest about time.

It composes three parts: a :class:`~.state.TokenState` (the token and its clock), a
:class:`~._flight.Flights` (one server call however many threads need it) and an
:class:`~.http_client.HttpClient` (the wire, with wall-clock deadlines). What to send
and how to read the answer come from :mod:`.protocol`.

The verbs, each with one meaning:

- *validate*: ask the server whether the token lives (one ``/auth`` call, or
  ``GET /api/v2/session/current`` for an API token); ``login()`` is pytan3's name for
  the same thing.
- *recheck*: validate to judge a 401/403, with a check begun after that answer.
- *renew*: replace a dead session with the one ``refresh()`` returns.
- *log in*: trade credentials for a new session (:class:`CredentialLogin`).
- *adopt*: take a token as the current one, confirmed now.
- *confirm*: note that a request carrying the token succeeded (no I/O).
- *kill*: drop the token after a rejection or a logout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Optional, Union

import requests

from ._drive import run
from ._flight import Flights
from ._policy import Credentials, Policy, first_session, login
from .http_client import HttpClient, origin_name
from .protocol import (
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_LOGOUT_TIMEOUT,
    HEADER,
    check_seconds,
    check_token,
    is_api_token,
    login_headers,
)
from .state import StateView, TokenState
from .stores import Fleet, SessionStore
from .versions import check_requirement, version_gate

__all__ = ["CredentialLogin", "SessionId", "check_token", "is_api_token"]

log = logging.getLogger(__name__)


def _level(lvl: Union[str, int]) -> int:
    if isinstance(lvl, int) and not isinstance(lvl, bool):
        return lvl
    if isinstance(lvl, str):
        value = logging.getLevelName(lvl.upper())
        if isinstance(value, int):
            return value
    raise ValueError(f"lvl must be a logging level name such as 'info', not {lvl!r}")


class CredentialLogin(Credentials):
    """A refresh provider that logs in with ``POST /auth`` and base64 credentials.

    The password lives only in this object's memory: it is never shown, logged or
    pickled. Each login uses the bound ``SessionId``'s current ``login_timeout``.
    """

    __slots__ = ("_client", "_sid")

    def __init__(
        self,
        client: HttpClient,
        username: str,
        password: str,
        domain: str = "",
        secondary: str = "",
        persistent: bool = False,
    ) -> None:
        super().__init__(login_headers(username, password, domain, secondary, persistent))
        self._client = client
        self._sid: Optional[SessionId] = None

    def bind(self, sid: SessionId) -> None:
        """Take ``login_timeout`` from ``sid`` from now on."""
        self._sid = sid

    def login(self, timeout: float) -> str:
        """Log in once; return the new session id (not adopted anywhere)."""
        token: str = run(login(self.headers, timeout), self._client.exchange, None)
        return token

    def first_session(
        self,
        timeout: float,
        store: Optional[SessionStore],
        fresh_for: float,
        ttl: float = DEFAULT_EXPIRES_AFTER,
    ) -> str:
        """The session to start with: a record fresh for ``fresh_for`` seconds in
        ``store``, else a login (under the fleet lock, published), so a fleet that starts
        together logs in once."""
        fleet = None
        if store is not None:
            fleet = Fleet(store, origin_name(self._client.origin), 2 * timeout + 2, ttl)
        flow = first_session(
            self.headers, timeout, fresh_for, None if fleet is None else fleet.origin
        )
        token: str = run(flow, self._client.exchange, None, fleet)
        return token

    def __call__(self) -> str:
        sid = self._sid
        return self.login(sid.login_timeout if sid is not None else DEFAULT_LOGIN_TIMEOUT)

    def __repr__(self) -> str:
        return f"<credential login at {self._client.url}>"


class SessionId(StateView):
    """A Tanium session id (or API token) kept alive through ``/auth``.

    The pytan3 ``SessionId`` API (``get_name``, ``get_args*``, ``validate``, ``login``,
    ``logout``, ``token``, ``last_used``, ``expired``, …) with these differences:
    thread-safe single flight, ``time.monotonic()``, a dead state after a definitive
    rejection, wall-clock deadlines, and exceptions under ``TaniumAuthError``.

    Args:
        http_client: the :class:`HttpClient` of the Tanium server.
        session: a session id (``uid-counter-hex``) or API token (``token-…``):
            printable ASCII without whitespace, at most 4096 characters. It counts as
            confirmed now.
        login_timeout: wall-clock seconds for one validate or login call.
        logout_timeout: wall-clock seconds for one logout call.
        expires_after: idle seconds after which ``expired`` is True.
        ver_check: check ``get_version_req()`` against the server at construction
            (only when a requirement is set).
        lvl: a level for the ``requests_tanium_session.session_id`` logger; None (the
            default) leaves logging configuration alone.

    Raises:
        TypeError, ValueError: a malformed argument (the message never shows a value).
        VersionMismatchError: ``ver_check`` found the server outside the requirement.
    """

    def __init__(
        self,
        http_client: HttpClient,
        session: str,
        login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
        logout_timeout: float = DEFAULT_LOGOUT_TIMEOUT,
        expires_after: float = DEFAULT_EXPIRES_AFTER,
        ver_check: bool = True,
        lvl: Union[str, int, None] = None,
    ) -> None:
        if not isinstance(http_client, HttpClient):
            raise TypeError("http_client must be an HttpClient")
        token = check_token(session)
        if lvl is not None:
            log.setLevel(_level(lvl))
        self._http_client = http_client
        self._init_state(token)
        self.login_timeout = login_timeout
        self.logout_timeout = logout_timeout
        self.expires_after = expires_after
        if ver_check and any(self.get_version_req().values()):
            check = partial(check_requirement, req=self.get_version_req(), src=http_client.url)
            version_gate(http_client, check, timeout=self.login_timeout)

    def _init_state(self, token: Optional[str]) -> None:
        lock = threading.Lock()
        self._state = TokenState(token, lock)
        self._flights = Flights(lock)
        self._policy = Policy(
            self._http_client.url,
            self._state,
            login_timeout=float(DEFAULT_LOGIN_TIMEOUT),
            logout_timeout=float(DEFAULT_LOGOUT_TIMEOUT),
            expires_after=float(DEFAULT_EXPIRES_AFTER),
            passthrough=(requests.RequestException,),
        )

    def _run(self, flow: Any) -> Any:
        """Drive a policy generator through this object's client, flights and store."""
        return run(flow, self._http_client.exchange, self._flights, self._policy.fleet)

    # -- pytan3 class methods ---------------------------------------------------

    @classmethod
    def get_name(cls) -> str:
        """The name of this authentication method (pytan3-compatible)."""
        return "session_id"

    @classmethod
    def get_version_req(cls) -> dict[str, str]:
        """Server version requirements; empty values check nothing (pytan3-compatible)."""
        return {"vmin": "", "vmax": "", "veq": ""}

    @classmethod
    def get_args(cls) -> list[str]:
        """Arguments this method takes (pytan3-compatible)."""
        return ["session"]

    @classmethod
    def get_args_required(cls) -> list[str]:
        """Arguments that must be given (pytan3-compatible)."""
        return ["session"]

    @classmethod
    def get_args_secure(cls) -> list[str]:
        """Arguments whose prompts must hide the input: a session id is a bearer secret.

        pytan3 answers ``[]`` here; this package deliberately answers ``["session"]``.
        """
        return ["session"]

    # -- configuration ------------------------------------------------------------

    @property
    def http_client(self) -> HttpClient:
        """The client used for ``/auth``."""
        return self._http_client

    @property
    def state(self) -> TokenState:
        """The token and its clock (no I/O)."""
        return self._state

    @property
    def revalidate_after(self) -> float:
        """Seconds since the last confirmation after which ``token`` validates first.

        0 validates before every use (pytan3's meaning).
        """
        return self._state.revalidate_after

    @revalidate_after.setter
    def revalidate_after(self, value: float) -> None:
        self._state.revalidate_after = check_seconds("revalidate_after", value, zero_ok=True)

    @property
    def expires_after(self) -> float:
        """Seconds of idleness after which the token counts as expired."""
        return self._policy.expires_after

    @expires_after.setter
    def expires_after(self, value: float) -> None:
        self._policy.expires_after = check_seconds("expires_after", value)

    @property
    def login_timeout(self) -> float:
        """Wall-clock seconds of one validate or login call."""
        return self._policy.login_timeout

    @login_timeout.setter
    def login_timeout(self, value: float) -> None:
        self._policy.login_timeout = check_seconds("login_timeout", value)

    @property
    def logout_timeout(self) -> float:
        """Wall-clock seconds of one logout call."""
        return self._policy.logout_timeout

    @logout_timeout.setter
    def logout_timeout(self, value: float) -> None:
        self._policy.logout_timeout = check_seconds("logout_timeout", value)

    # -- state ----------------------------------------------------------------

    def fresh_token(self) -> Optional[str]:
        """The token if confirmed less than ``revalidate_after`` ago, else None (no I/O)."""
        return self._state.fresh()

    @property
    def token(self) -> str:
        """The current token, validated first when it has gone stale."""
        return self._state.fresh() or self._run(
            self._policy.revalidate(self._flights, "stale token")
        )

    @token.setter
    def token(self, value: str) -> None:
        self.adopt(value)

    def adopt(self, value: object, what: str = "session") -> str:
        """Take ``value`` as the new token, confirmed now (the ``token`` setter)."""
        return self._policy.adopt(value, self._flights, what)

    @property
    def url(self) -> str:
        """The Tanium server's URL."""
        return self._http_client.url

    @property
    def last_used(self) -> Optional[float]:
        """Seconds since the token was last confirmed (a float); None without a live token."""
        return self._state.age()

    @property
    def expires_in(self) -> Optional[float]:
        """Seconds until the token counts as expired; None without a live token."""
        used = self.last_used
        return None if used is None else max(0.0, self._policy.expires_after - used)

    @property
    def expired(self) -> bool:
        """True without a live token or when ``last_used >= expires_after``."""
        used = self.last_used
        return used is None or used >= self._policy.expires_after

    @property
    def uid(self) -> Optional[int]:
        """User id: the first field of a ``uid-counter-hex`` token; None for API tokens."""
        return self._policy.uid

    @property
    def token_headers(self) -> dict[str, str]:
        """``{"session": token}``, validated first when stale (pytan3-compatible)."""
        return {HEADER: self.token}

    @property
    def checks_started(self) -> int:
        """Counts the server calls (flights) started so far; see :meth:`recheck`."""
        return self._flights.started

    def confirm(self, token: str) -> None:
        """Record that a request carrying ``token`` succeeded (no lock, no I/O)."""
        self._state.confirm(token)

    @property
    def flights(self) -> Flights:
        """The single-flight machinery (``flights.in_callbacks`` is a lock-free count)."""
        return self._flights

    def in_callback(self) -> bool:
        """True on a thread running ``refresh()`` or ``on_token_update()`` of this object."""
        return self._flights.in_callback()

    @property
    def on_token_update(self) -> Optional[Callable[[str], None]]:
        """Called with the new token whenever the token changes after construction."""
        return self._policy.on_token_update

    @on_token_update.setter
    def on_token_update(self, callback: Optional[Callable[[str], None]]) -> None:
        self._policy.on_token_update = callback

    @property
    def policy(self) -> Policy:
        """The decisions about this session, shared with every front-end (no I/O)."""
        return self._policy

    def use_store(self, store: Optional[SessionStore], lease: Optional[float] = None) -> None:
        """Share the session through ``store`` (None: this process alone).

        ``lease`` bounds how long a crashed lock holder blocks the fleet (default
        ``2 * login_timeout + 2``).
        """
        policy = self._policy
        if store is None:
            policy.fleet = None
            return
        lease = policy.lease if lease is None else check_seconds("lease", lease)
        name = origin_name(self._http_client.origin)
        policy.fleet = Fleet(store, name, lease, policy.expires_after)

    @property
    def store(self) -> Optional[SessionStore]:
        """The session store shared with other processes, or None."""
        fleet = self._policy.fleet
        return None if fleet is None else fleet.store

    def current(self, provider: Optional[Callable[[], str]] = None) -> str:
        """The token to send: as ``token``, and with a store, a dead session is renewed
        through ``provider`` while the fleet lock is held (one login for the fleet)."""
        return self._state.fresh() or self._run(
            self._policy.revalidate(self._flights, "stale token", provider)
        )

    # -- server calls ---------------------------------------------------------

    def validate(self, **kwargs: Any) -> str:
        """Validate the token (one server call); adopt and return what the server answers.

        Only ``cause=`` is accepted (logged).

        Raises:
            InvalidToken: the server rejected the token (it is dropped).
            NotLoggedInError: there is no live token (no server call).
            AuthServiceUnavailable: 5xx/408/429; the token is kept.
            LoginError: a malformed answer, or a URL that is not a Tanium ``/auth``
                (the token is kept), or a call from inside a callback.
            requests.RequestException: transport failure, ``ReadTimeout`` at the deadline.
        """
        cause = self._cause(kwargs, "validate")
        token: str = self._run(self._policy.validate(self._flights, cause))
        return token

    def login(self, **kwargs: Any) -> str:
        """Validate through ``/auth``; ``LoginError`` when rejected (pytan3-compatible).

        pytan3 raises ``NotImplementedError`` here; this package validates.
        """
        kwargs.setdefault("cause", "login")
        return self.validate(**kwargs)

    def recheck(
        self, sent: str, after: int, cause: str, provider: Optional[Callable[[], str]] = None
    ) -> str:
        """Judge a 401/403 to a request that carried ``sent``; return the token to use.

        No server call when the token has changed since; otherwise a validation that
        starts after ``checks_started`` was ``after`` (only a check begun after that
        answer arrived can tell a dead session from a permission answer). Concurrent
        callers share it. Raises as :meth:`validate`.
        """
        flow = self._policy.recheck(self._flights, sent, after, cause, provider)
        token: str = self._run(flow)
        return token

    def renew(self, provider: Callable[[], str], cause: str = "refresh") -> str:
        """Adopt a new session from ``provider()`` (single flight; skipped when alive).

        Raises:
            LoginError: the provider failed (chained to its error), returned a bad
                value, or returned the session that just died; or a call from inside
                a callback.
            requests.RequestException: as the provider raised it.
        """
        token: str = self._run(self._policy.renew(self._flights, provider, cause))
        return token

    def logout(self, **kwargs: Any) -> None:
        """End this session (``logout: 0``); afterwards ``logged_in`` is False.

        Raises:
            LogoutError: any answer but 200 (on 5xx/408/429 the token is kept).
            NotLoggedInError: there is no live token.
        """
        self._run(self._policy.logout(False, self._cause(kwargs, "logout")))

    def logout_all(self, **kwargs: Any) -> None:
        """End every session of this user (``logout: 1``); raises as :meth:`logout`."""
        self._run(self._policy.logout(True, self._cause(kwargs, "logout all")))

    # -- internals ------------------------------------------------------------

    @staticmethod
    def _cause(kwargs: dict[str, Any], default: str) -> str:
        cause = kwargs.pop("cause", default)
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        return str(cause)

    # -- display and pickling -------------------------------------------------

    def __repr__(self) -> str:
        used = self.last_used
        left = self.expires_in
        return (
            f"{type(self).__name__}(url={self.url!r}, uid={self.uid!r}, "
            f"logged_in={self.logged_in!r}, "
            f"last_used={None if used is None else round(used, 1)!r}, "
            f"expires_in={None if left is None else round(left, 1)!r})"
        )

    __str__ = __repr__

    _UNPICKLED: ClassVar[str] = "it was unpickled (tokens are never pickled); set .token"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "http_client": self._http_client,
            "login_timeout": self.login_timeout,
            "logout_timeout": self.logout_timeout,
            "expires_after": self.expires_after,
            "revalidate_after": self._state.revalidate_after,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._http_client = state["http_client"]
        self._init_state(None)
        self.login_timeout = state["login_timeout"]
        self.logout_timeout = state["logout_timeout"]
        self.expires_after = state["expires_after"]
        self._state.revalidate_after = state["revalidate_after"]
        self._state.ended = self._UNPICKLED
