"""SessionId: a Tanium session token, its clock, and ``/auth`` validate/login/logout.

Thread-safety: one ``threading.Lock`` guards every change of state. Reads on the hot
path (``token`` while fresh) take no lock: they read two attributes that are only
ever replaced whole. Work that talks to the server runs as a *single flight*: the
first thread to need it does it, later threads wait for its result (token or
exception) instead of making their own call.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable
from functools import partial
from time import monotonic
from typing import Any, ClassVar, Optional, Union

import requests

from .exceptions import (
    AuthServiceUnavailable,
    InvalidToken,
    LoginError,
    LogoutError,
    NotLoggedInError,
)
from .http_client import HttpClient
from .versions import check_requirement, probe_version

__all__ = ["SessionId", "check_token", "is_api_token", "read_token_answer"]

log = logging.getLogger(__name__)

#: Longest token accepted, from a caller or from the server.
MAX_TOKEN_LENGTH = 4096

#: Prefix of Tanium API tokens; they are validated through :data:`VALIDATE_PATH`.
API_TOKEN_PREFIX = "token-"

#: Path that validates, logs in and logs out session ids.
AUTH_PATH = "/auth"

#: Path that validates API tokens.
VALIDATE_PATH = "/api/v2/session/validate"

#: Path that ends an API token's session.
LOGOUT_PATH = "/api/v2/session/logout"

#: Seconds after the last confirmation before ``token`` validates again.
DEFAULT_REVALIDATE_AFTER = 5.0

#: Statuses that mean "try again later": the token is kept.
TRANSIENT_STATUSES = frozenset({408, 429})

_TOKEN_RE = re.compile(rf"[!-~]{{1,{MAX_TOKEN_LENGTH}}}")
_UID_RE = re.compile(r"(\d+)-\d+-[0-9A-Fa-f]+")


def check_token(value: object, what: str = "session") -> str:
    """Return ``value`` if it is a well-formed token; the error never shows the value."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_TOKEN_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_TOKEN_LENGTH} characters")
    if _TOKEN_RE.fullmatch(value) is None:
        raise ValueError(f"{what} must be printable ASCII without whitespace or control characters")
    return value


def is_api_token(token: str) -> bool:
    """True for a Tanium API token (``token-…``), False for a session id."""
    return token.startswith(API_TOKEN_PREFIX)


def _uid_of(token: str) -> Optional[int]:
    match = _UID_RE.fullmatch(token)
    return int(match.group(1)) if match else None


def is_transient(status: int) -> bool:
    """True for answers that mean "the service is busy", not "the session is bad"."""
    return status >= 500 or status in TRANSIENT_STATUSES


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and greater than 0")
    return float(value)


def _level(lvl: Union[str, int]) -> int:
    if isinstance(lvl, int) and not isinstance(lvl, bool):
        return lvl
    if isinstance(lvl, str):
        value = logging.getLevelName(lvl.upper())
        if isinstance(value, int):
            return value
    raise ValueError(f"lvl must be a logging level name such as 'info', not {lvl!r}")


def _read_limited(resp: requests.Response, limit: int) -> Optional[bytes]:
    """At most ``limit`` bytes of a streamed body, or None when it is longer.

    Read through ``iter_content`` so a broken body raises a ``requests`` exception.
    """
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(8192):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def read_token_answer(resp: requests.Response, api: bool) -> str:
    """The token in a 200 answer, or ``LoginError`` when it is not a well-formed one."""
    what = f"POST {resp.url} answered 200 with"
    body = _read_limited(resp, 1 << 16 if api else MAX_TOKEN_LENGTH)
    if body is None:
        raise LoginError(f"{what} a body too long to be a token", response=resp)
    if api:
        try:
            data = json.loads(body.decode("utf-8"))
        except ValueError:
            raise LoginError(f"{what} a body that is not JSON", response=resp) from None
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]
        value = data.get("session") if isinstance(data, dict) else None
    else:
        try:
            value = body.decode("ascii")
        except UnicodeDecodeError:
            raise LoginError(f"{what} a body that is not ASCII", response=resp) from None
    try:
        new = check_token(value, "the answer")
    except (TypeError, ValueError):
        raise LoginError(f"{what} a malformed token", response=resp) from None
    if "<" in new or ">" in new:
        raise LoginError(f"{what} markup, not a token", response=resp)
    return new


class _Flight:
    """One piece of server work whose result several threads wait for."""

    __slots__ = ("done", "error", "result", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq  # flights are numbered in the order they start
        self.done = threading.Event()
        self.result: Optional[str] = None
        self.error: Optional[BaseException] = None

    def wait(self) -> str:
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class SessionId:
    """A Tanium session id (or API token) kept alive through ``/auth``.

    ``token`` validates first when ``last_used >= revalidate_after``. A definitive
    rejection marks the object dead: ``token`` then raises ``NotLoggedInError`` at
    once until a new session is set.
    """

    def __init__(
        self,
        http_client: HttpClient,
        session: str,
        login_timeout: float = 5,
        logout_timeout: float = 5,
        expires_after: float = 295,
        ver_check: bool = True,
        lvl: Union[str, int] = "info",
    ) -> None:
        if not isinstance(http_client, HttpClient):
            raise TypeError("http_client must be an HttpClient")
        token = check_token(session)
        self._http_client = http_client
        self.login_timeout = login_timeout
        self.logout_timeout = logout_timeout
        self.expires_after = expires_after
        self.revalidate_after = DEFAULT_REVALIDATE_AFTER
        self._lvl = _level(lvl)
        self.log = self._make_log()
        #: Called with the new token whenever the token changes after construction.
        self.on_token_update: Optional[Callable[[str], None]] = None
        self._init_state()
        self._token: Optional[str] = token
        self._uid = _uid_of(token)
        if ver_check and any(self.get_version_req().values()):
            version = probe_version(http_client, timeout=self.login_timeout)
            if version is not None:
                check_requirement(version, self.get_version_req(), src=http_client.url)

    def _init_state(self) -> None:
        """The lock and the state of a new object with no token yet."""
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._token = None
        self._confirmed_at = monotonic()
        self._generation = 0  # bumps whenever the token changes or dies
        self._seq = 0  # flights started
        self._ok_seq = 0  # number of the last validation the server answered 200
        self._ended = "no session was set"

    def _make_log(self) -> logging.Logger:
        # A logger of this object's own, so ``lvl`` does not touch other objects.
        obj_log = logging.Logger(f"{__name__}.{type(self).__name__}", self._lvl)
        obj_log.parent = log
        return obj_log

    # -- class methods of the seed ------------------------------------------------

    @classmethod
    def get_name(cls) -> str:
        """The name of this authentication method."""
        return "session_id"

    @classmethod
    def get_version_req(cls) -> dict[str, str]:
        """Server version requirements; empty values check nothing."""
        return {"vmin": "", "vmax": "", "veq": ""}

    @classmethod
    def get_args(cls) -> list[str]:
        """Arguments this method takes."""
        return ["session"]

    @classmethod
    def get_args_required(cls) -> list[str]:
        """Arguments that must be given."""
        return ["session"]

    @classmethod
    def get_args_secure(cls) -> list[str]:
        """Arguments whose prompts must hide the input (a session id is a secret)."""
        return ["session"]

    # -- configuration ------------------------------------------------------------

    @property
    def http_client(self) -> HttpClient:
        """The client used for ``/auth``."""
        return self._http_client

    @property
    def revalidate_after(self) -> float:
        """Seconds since the last confirmation after which ``token`` validates first."""
        return self._revalidate_after

    @revalidate_after.setter
    def revalidate_after(self, value: float) -> None:
        self._revalidate_after = _positive("revalidate_after", value)

    @property
    def expires_after(self) -> float:
        """Seconds of idleness after which the token counts as expired."""
        return self._expires_after

    @expires_after.setter
    def expires_after(self, value: float) -> None:
        self._expires_after = _positive("expires_after", value)

    @property
    def login_timeout(self) -> float:
        """Timeout in seconds of validate and login calls."""
        return self._login_timeout

    @login_timeout.setter
    def login_timeout(self, value: float) -> None:
        self._login_timeout = _positive("login_timeout", value)

    @property
    def logout_timeout(self) -> float:
        """Timeout in seconds of logout calls."""
        return self._logout_timeout

    @logout_timeout.setter
    def logout_timeout(self, value: float) -> None:
        self._logout_timeout = _positive("logout_timeout", value)

    # -- state ----------------------------------------------------------------

    def fresh_token(self) -> Optional[str]:
        """The token if confirmed less than ``revalidate_after`` ago, else None (no lock)."""
        tok = self._token
        if tok is not None and monotonic() - self._confirmed_at < self._revalidate_after:
            return tok
        return None

    @property
    def token(self) -> str:
        """The current token, validated first when it has gone stale."""
        return self.fresh_token() or self._revalidate("stale token")

    @token.setter
    def token(self, value: str) -> None:
        self.adopt(value)

    def adopt(self, value: object, what: str = "session") -> str:
        """Take ``value`` as the new token, confirmed now (the ``token`` setter)."""
        new = check_token(value, what)
        with self._lock:
            changed = new != self._token
            self._token = new
            self._uid = _uid_of(new)
            self._confirmed_at = monotonic()
            if changed:
                self._generation += 1
        if changed:
            self.log.info("new session adopted for uid %s at %s", self._uid, self.url)
            self._notify(new)
        return new

    @property
    def url(self) -> str:
        """The Tanium server's URL."""
        return self._http_client.url

    @property
    def last_used(self) -> Optional[float]:
        """Seconds since the token was last confirmed; None without a live token."""
        if self._token is None:
            return None
        return monotonic() - self._confirmed_at

    @property
    def expires_in(self) -> Optional[float]:
        """Seconds until the token counts as expired; None without a live token."""
        used = self.last_used
        return None if used is None else max(0.0, self._expires_after - used)

    @property
    def logged_in(self) -> bool:
        """True while there is a live token."""
        return self._token is not None

    @property
    def expired(self) -> bool:
        """True without a live token or when ``last_used >= expires_after``."""
        used = self.last_used
        return used is None or used >= self._expires_after

    @property
    def uid(self) -> Optional[int]:
        """User id: the first field of a ``uid-counter-hex`` token; None for API tokens."""
        return self._uid

    @property
    def token_headers(self) -> dict[str, str]:
        """``{"session": token}``, validated first when stale."""
        return {"session": self.token}

    @property
    def generation(self) -> int:
        """Counts changes of token (rotation, refresh, setter, death)."""
        return self._generation

    @property
    def checks_started(self) -> int:
        """Counts the server calls (flights) started so far; see ``recheck``."""
        return self._seq

    def confirm(self, token: str) -> None:
        """Record that a request carrying ``token`` succeeded (no lock: one float store)."""
        if token == self._token:
            self._confirmed_at = monotonic()

    # -- server calls ---------------------------------------------------------

    def validate(self, **kwargs: Any) -> str:
        """Validate the token (one server call); adopt and return what the server answers.

        Raises ``InvalidToken`` when rejected, ``NotLoggedInError`` without a live token,
        ``AuthServiceUnavailable`` on 5xx/408/429 (token kept).
        """
        cause = self._cause(kwargs, "validate")
        if self._token is None:
            raise self._not_logged_in()
        return self._single_flight("validate", partial(self._validate_once, cause), None)

    def login(self, **kwargs: Any) -> str:
        """Re-establish the session through ``/auth``; ``LoginError`` when rejected."""
        kwargs.setdefault("cause", "login")
        return self.validate(**kwargs)

    def recheck(self, sent: str, after: int, cause: str) -> str:
        """Judge a 401/403 to a request that carried ``sent``; return the token to use.

        No server call when the token has changed since; otherwise a validation that
        starts after ``checks_started`` was ``after`` (only a check begun after that
        answer arrived can tell a dead session from a permission answer). Concurrent
        callers share it.
        """

        def done() -> Optional[str]:
            token = self._token
            if token is None:
                raise self._not_logged_in()
            return token if token != sent or self._ok_seq > after else None

        work = partial(self._validate_once, cause)
        return self._single_flight("validate", work, done, after=after)

    def _revalidate(self, cause: str) -> str:
        def fresh() -> Optional[str]:
            if self._token is None:
                raise self._not_logged_in()
            return self.fresh_token()

        return self._single_flight("validate", partial(self._validate_once, cause), fresh)

    def renew(self, provider: Callable[[], str], cause: str = "refresh") -> str:
        """Adopt a new session from ``provider()`` (single flight; skipped when alive).

        A provider that fails raises ``LoginError`` chained to its error; a transport
        error from ``requests`` propagates as it is.
        """

        def alive() -> Optional[str]:
            return self._token

        def work(seq: int) -> str:
            self.log.info("refreshing the session for %s (cause: %s)", self.url, cause)
            try:
                value = provider()
            except requests.RequestException:
                raise  # LoginError, AuthServiceUnavailable, or a transport error as it is
            except Exception as exc:
                raise LoginError(
                    f"refresh of the session for {self.url} failed: {type(exc).__name__}"
                ) from exc
            try:
                return self.adopt(value, "the session returned by refresh()")
            except (TypeError, ValueError) as exc:
                raise LoginError(
                    f"refresh of the session for {self.url} returned a bad value: {exc}"
                ) from None

        return self._single_flight("renew", work, alive)

    def logout(self, **kwargs: Any) -> None:
        """End this session (``logout: 0``); afterwards ``logged_in`` is False."""
        self._logout("0", self._cause(kwargs, "logout"))

    def logout_all(self, **kwargs: Any) -> None:
        """End every session of this user (``logout: 1``)."""
        self._logout("1", self._cause(kwargs, "logout all"))

    # -- internals ------------------------------------------------------------

    @staticmethod
    def _cause(kwargs: dict[str, Any], default: str) -> str:
        cause = kwargs.pop("cause", default)
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        return str(cause)

    def _not_logged_in(self) -> NotLoggedInError:
        return NotLoggedInError(f"no live session for {self.url}: {self._ended}")

    def _single_flight(
        self,
        kind: str,
        work: Callable[[int], str],
        done: Optional[Callable[[], Optional[str]]],
        after: Optional[int] = None,
    ) -> str:
        """Run ``work`` once for every thread that needs it now; share its outcome.

        ``done()`` (under the lock) returns a token when no work is needed. With
        ``after``, a flight numbered ``<= after`` is too old to answer: wait for it to
        end, then judge again.
        """
        while True:
            with self._lock:
                if done is not None:
                    ready = done()
                    if ready is not None:
                        return ready
                flight = self._flights.get(kind)
                leader = flight is None
                if flight is None:
                    self._seq += 1
                    flight = self._flights[kind] = _Flight(self._seq)
            if leader:
                break
            if after is None or flight.seq > after:
                return flight.wait()
            flight.done.wait()
        try:
            flight.result = work(flight.seq)
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[kind]
            flight.done.set()

    def _validate_once(self, cause: str, seq: int) -> str:
        token = self._token
        if token is None:
            raise self._not_logged_in()
        api = is_api_token(token)
        path = VALIDATE_PATH if api else AUTH_PATH
        self.log.debug("POST %s for uid %s at %s (cause: %s)", path, self._uid, self.url, cause)
        resp = self._post_token(token, VALIDATE_PATH, self._login_timeout, stream=True)
        with resp:
            status = resp.status_code
            self.log.debug("POST %s answered %s", path, status)
            if status == 200:
                new = read_token_answer(resp, api)
                return self._confirm_answer(token, new, seq)
            if is_transient(status):
                raise AuthServiceUnavailable(
                    f"POST {resp.url} answered {status}; the session is kept, try again later",
                    response=resp,
                )
            if 400 <= status < 500:
                self._kill(token, f"the server rejected it (POST {path} answered {status})")
                self.log.info("session for uid %s rejected by %s (%s)", self._uid, path, status)
                raise InvalidToken(self._rejection(resp.url, status, api), response=resp)
            raise LoginError(
                f"POST {resp.url} answered an unexpected {status}; the session is kept",
                response=resp,
            )

    @staticmethod
    def _rejection(url: Optional[str], status: int, api: bool) -> str:
        if api:
            return (
                f"POST {url} rejected the API token ({status}): it may have expired, been "
                "revoked or rotated, or this client's address is not in its trusted list"
            )
        return f"POST {url} rejected the session ({status}): it expired or was revoked"

    def _confirm_answer(self, old: str, new: str, seq: int) -> str:
        with self._lock:
            current = self._token
            if current != old:
                # Someone set another token (or logged out) meanwhile: theirs wins.
                if current is None:
                    raise self._not_logged_in()
                return current
            changed = new != old
            self._token = new
            self._confirmed_at = monotonic()
            self._ok_seq = max(self._ok_seq, seq)
            if changed:
                self._uid = _uid_of(new)
                self._generation += 1
        if changed:
            self.log.info("session for uid %s rotated by the server", self._uid)
            self._notify(new)
        return new

    def _post_token(
        self, token: str, api_path: str, timeout: float, stream: bool = False, **headers: str
    ) -> requests.Response:
        """POST ``token``: to ``/auth`` in the ``session`` header (plus ``headers``), or,
        for an API token, to ``api_path`` as JSON ``{"session": token}``."""
        if is_api_token(token):
            return self._http_client.request(
                "POST", api_path, json={"session": token}, timeout=timeout, stream=stream
            )
        return self._http_client.request(
            "POST", AUTH_PATH, headers={"session": token, **headers}, timeout=timeout, stream=stream
        )

    def _kill(self, token: str, why: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None
                self._ended = why
                self._generation += 1

    def _notify(self, token: str) -> None:
        callback = self.on_token_update
        if callback is None:
            return
        try:
            callback(token)
        except Exception as exc:  # a broken callback must not break the session
            self.log.warning("on_token_update raised %s; ignored", type(exc).__name__)

    def _logout(self, flag: str, cause: str) -> None:
        token = self._token
        if token is None:
            raise self._not_logged_in()
        if flag == "1" and is_api_token(token):
            raise TypeError("logout_all() needs a session id, not an API token")
        resp = self._post_token(token, LOGOUT_PATH, self._logout_timeout, logout=flag)
        with resp:
            status = resp.status_code
            self.log.debug("logout (%s, cause: %s) answered %s", flag, cause, status)
            if status == 200:
                self._kill(token, "it was logged out")
                self.log.info("session for uid %s logged out at %s", self._uid, self.url)
                return
            if is_transient(status):
                raise LogoutError(
                    f"POST {resp.url} answered {status} to logout; the session is kept, "
                    "try again later",
                    response=resp,
                )
            self._kill(token, f"logout was refused ({status}) and the session dropped")
            raise LogoutError(
                f"POST {resp.url} answered {status} to logout; the session was dropped",
                response=resp,
            )

    # -- display and pickling -------------------------------------------------

    def __repr__(self) -> str:
        used = self.last_used
        left = self.expires_in
        return (
            f"{type(self).__name__}(url={self.url!r}, uid={self._uid!r}, "
            f"logged_in={self.logged_in!r}, "
            f"last_used={None if used is None else round(used, 1)!r}, "
            f"expires_in={None if left is None else round(left, 1)!r})"
        )

    __str__ = __repr__

    _UNPICKLED: ClassVar[str] = "it was unpickled (tokens are never pickled); set .token"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_flights", "log", "_token", "on_token_update"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()
        self._ended = self._UNPICKLED
        self.on_token_update = None
        self.log = self._make_log()
