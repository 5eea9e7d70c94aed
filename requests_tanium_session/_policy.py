"""The policy: every decision about a Tanium session, written once, without I/O.

Each decision is a generator that *yields effects* and receives their results (the
vocabulary, and what a driver sends back, is :mod:`._effects`); the front-ends only
carry the effects out (:mod:`._drive`). This module imports neither ``requests`` nor
``httpx`` nor ``aiohttp``, opens no socket and reads no clock but through
:class:`~.state.TokenState`.

The flights object a driver passes in (``Flights`` or ``AsyncFlights``) is used here
only for what needs no waiting: ``started``, ``land``, ``callback`` and ``in_callback``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Optional
from urllib.parse import urlsplit

from ._effects import (
    Credentials,
    Exchange,
    Flow,
    Lead,
    Provider,
    Refresh,
    RefreshMisuse,
    Reply,
    StoreOp,
    holder_time,
    store_budget,
    store_op,
)
from .exceptions import (
    AuthServiceUnavailable,
    InvalidToken,
    LoginError,
    LogoutError,
    NotLoggedInError,
    TaniumAuthError,
    VersionMismatchError,
)
from .protocol import (
    AUTH_PATH,
    REST_LOGIN_PATH,
    Call,
    Kind,
    Verdict,
    check_token,
    console_call,
    is_api_token,
    is_cloud,
    judge_logout,
    judge_soap,
    judge_token,
    login_call,
    logout_call,
    rest_login_call,
    token_shaped,
    uid_of,
    validate_call,
    verdict_error,
)
from .state import TokenState
from .stats import DIED, REFRESHED, AuthStats, Counters

__all__ = [
    "Adoption",
    "Policy",
    "adoptable",
    "first_session",
    "login",
    "recovery_failure",
    "refreshed_token",
    "server_version",
    "take",
]

log = logging.getLogger("requests_tanium_session.session_id")

#: What a user can do about a dead session, named in the errors that report one.
REMEDY = (
    "to recover by itself, give the auth refresh= (a function returning a new session) "
    "or build it with from_credentials(); or set auth.token to a new session"
)

#: The same at Tanium Cloud, which takes API tokens only.
CLOUD_REMEDY = (
    "Tanium Cloud takes API tokens only: create a new API token in the console and set "
    "auth.token to it, or give the auth refresh= (a function returning one)"
)


def remedy(url: str) -> str:
    """What to do about a dead session at ``url``."""
    return CLOUD_REMEDY if is_cloud(urlsplit(url).hostname or "") else REMEDY


_REENTRY = (
    "cannot be validated or refreshed from inside refresh() or on_token_update() "
    "on the same thread (that would wait for itself); requests from there go out "
    "without the session header"
)


# -- the store's adoption rule ----------------------------------------------------


@dataclass(frozen=True)
class Adoption:
    """What to do with a store's record: take ``token``, confirmed ``age`` seconds ago."""

    token: str = field(repr=False)
    age: float
    fresh: bool  # usable now; otherwise adopt it, then validate it


#: How far in the future a record may seem (a store without a clock of its own).
CLOCK_SKEW = 5.0

#: Seconds ``/auth`` is left alone after a busy answer without ``Retry-After`` (5xx,
#: 408, 429, a timeout, a refused connection).
BUSY_PAUSE = 2.0

#: The longest a ``Retry-After`` keeps ``/auth`` alone.
BUSY_MAX = 120.0


def adoptable(
    record: Any,
    *,
    origin: str,
    current: Optional[str],
    held_for: float,
    revalidate_after: float,
    exclude: Collection[Optional[str]],
    fresh_only: bool,
) -> Optional[Adoption]:
    """Whether a process of ``origin`` that has held ``current`` for ``held_for``
    seconds takes the store's ``record``: when it is fresh, or newer than ``current``
    (then it is validated first). Both are judged by durations, the record's ``age`` on
    the store's own clock and ``held_for`` on this process's, never by comparing two
    machines' wall clocks. Never a record of another origin, a token that is not
    token-shaped (the rule for ``/auth`` answers), an age that is not finite or lies in
    the future beyond ``CLOCK_SKEW``, or a token in ``exclude`` (known dead here, or the
    one a 401/403 refused).
    """
    if record is None or record.origin != origin or record.token in exclude:
        return None
    if not math.isfinite(record.age) or record.age < -CLOCK_SKEW:
        return None
    if not token_shaped(record.token, current):
        return None
    age = max(0.0, record.age)
    fresh = age < revalidate_after
    if record.token == current:
        return Adoption(record.token, age, True) if fresh else None
    if fresh or (not fresh_only and age < held_for):
        return Adoption(record.token, age, fresh)
    return None


def take(
    state: TokenState, record: Any, origin: str, exclude: Optional[str], fresh_only: bool
) -> tuple[Optional[str], bool]:
    """Adopt ``record`` into ``state`` when :func:`adoptable` says so.

    Returns the token to use now (None: ask the server, about the adopted token when
    one was adopted) and whether the token changed.
    """
    found = adoptable(
        record,
        origin=origin,
        current=state.current,
        held_for=state.held_for(),
        revalidate_after=state.revalidate_after,
        exclude=(exclude, *state.dead),
        fresh_only=fresh_only,
    )
    if found is None:
        return None, False
    since = monotonic() - found.age
    changed = state.adopt(found.token, at=since, got=since)
    return (found.token if found.fresh else None), changed


# -- how recoveries end ---------------------------------------------------------------


def recovery_failure(
    exc: TaniumAuthError, cause: str, response: Any, can_refresh: bool, advice: str = REMEDY
) -> Optional[TaniumAuthError]:
    """What a 401/403 recovery raises when checking the session failed with ``exc``;
    None when the session is dead and ``refresh`` may renew it.

    The new exception carries the 401/403 as ``.response`` and says what happened.
    """
    if isinstance(exc, AuthServiceUnavailable):
        return AuthServiceUnavailable(
            f"{cause} and the session could not be checked: {exc}", response=response
        )
    if isinstance(exc, (InvalidToken, NotLoggedInError)):
        if can_refresh:
            return None
        return type(exc)(
            f"{cause} and the session cannot be refreshed: {exc}; {advice}", response=response
        )
    return LoginError(f"{cause} and the session could not be checked: {exc}", response=response)


def refreshed_token(value: object, url: str, dead: Collection[str]) -> str:
    """The session ``refresh()`` returned, as a plain ``str``.

    Raises ``LoginError`` (never showing the value) when it is malformed or is one of
    the ``dead`` tokens: a refresh that hands back the session just rejected would
    loop forever.
    """
    failed: Optional[str] = None
    try:
        new = check_token(value, "the session returned by refresh()")
    except (TypeError, ValueError) as exc:
        failed = str(exc)
    if failed is not None:
        raise LoginError(f"refresh of the session for {url} returned a bad value: {failed}")
    if new in dead:
        raise LoginError(
            f"refresh of the session for {url} returned the session that was just rejected"
        )
    return new


# -- decisions that need no session -----------------------------------------------


def login(credentials: Credentials, timeout: float) -> Flow:
    """Log in with ``credentials`` once, by their route; the new session id (adopted
    nowhere). A refused login is never tried by the other route."""
    rest = credentials.route == "rest"
    call = rest_login_call(credentials.body or {}) if rest else login_call(credentials.headers)
    reply = yield Exchange(call, timeout)
    verdict = judge_token(call, reply.status, reply.body)
    if verdict.kind is Kind.OK:
        assert verdict.token is not None
        return verdict.token
    what = f"{call.method} {reply.url} {verdict.reason.split(':')[0]}"
    refused = verdict.kind in (Kind.REJECTED, Kind.NOT_TANIUM)
    if refused and is_cloud(urlsplit(reply.url).hostname or ""):
        raise LoginError(
            f"{what}: {CLOUD_REMEDY} (credential logins work on-prem only)",
            response=reply.response,
        )
    if verdict.kind is Kind.NOT_TANIUM and not rest and reply.status in (404, 405):
        raise LoginError(
            f'{what}: this server has no /auth login; it may want login="rest" '
            f"(POST {REST_LOGIN_PATH}); no session was made",
            response=reply.response,
        )
    raise verdict_error(call, reply.url, verdict, "no session was made", reply.response)


def first_session(
    credentials: Credentials, timeout: float, fresh_for: float, origin: Optional[str]
) -> Flow:
    """The session to start with: with a store (the fleet's ``origin`` given), a record
    fresh for ``fresh_for`` seconds, else a login under the fleet lock, published, so a
    fleet that starts together logs in once; alone, a login."""
    if origin is None:
        return (yield from login(credentials, timeout))

    def fresh(record: Any) -> Optional[str]:
        found = adoptable(
            record, origin=origin, current=None, held_for=math.inf,
            revalidate_after=fresh_for, exclude=(), fresh_only=True,
        )  # fmt: skip
        return None if found is None else found.token

    token = fresh((yield store_op("read", timeout)))
    if token is not None:
        return token
    yield store_op("lock", timeout)
    record = yield store_op("read", timeout)
    token = fresh(record)
    if token is None:
        token = yield from login(credentials, timeout)
        yield store_op("publish", timeout, token, record)
    yield store_op("unlock", timeout)
    return token


def server_version(timeout: float) -> Flow:
    """``(status, body)`` of ``GET /config/console.json``, for a version reader."""
    reply = yield Exchange(console_call(), timeout)
    return reply.status, reply.body


# -- the policy ------------------------------------------------------------------------


class Policy:
    """The decisions about one Tanium session, shared by every front-end driving it.

    Args:
        url: the Tanium server's base URL (for messages).
        state: the token and its clock.
        passthrough: exception types a ``refresh`` may raise as they are (the
            front-end's transport errors); anything else becomes ``LoginError``.
    """

    def __init__(
        self,
        url: str,
        state: TokenState,
        *,
        login_timeout: float,
        logout_timeout: float,
        expires_after: float,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.url = url
        self.state = state
        self.login_timeout = login_timeout
        self.logout_timeout = logout_timeout
        self.expires_after = expires_after
        self.passthrough: tuple[type[BaseException], ...] = (
            TaniumAuthError,
            RefreshMisuse,
            *passthrough,
        )
        #: The wire's transport errors: a stale check that meets one sends the kept token.
        self.transport = passthrough
        #: Monotonic time until which ``/auth`` is left alone (it answered busy).
        self.busy_until = 0.0
        self._busy_told = False
        self._future_told = False
        self.counters = Counters(url)  #: what this session's auth has done (AuthStats)
        self._fleet: Any = None
        self.on_token_update: Optional[Callable[[str], None]] = None
        self.uid = uid_of(state.current) if state.current is not None else None
        #: ``requires_server``: a check taking a Version (raises VersionMismatchError).
        self.requirement: Optional[Callable[[Any], None]] = None
        self.gate = False  #: True while the requirement is unchecked or unmet
        self.gate_error: Optional[str] = None
        self._checked = False

    @property
    def fleet(self) -> Any:
        """A ``stores.Fleet``, or None: this process alone."""
        return self._fleet

    @fleet.setter
    def fleet(self, fleet: Any) -> None:
        if fleet is not None:
            fleet.on_event = self._store_event
        self._fleet = fleet

    def _store_event(self, kind: str, cause: str) -> None:
        self.counters.event(kind, cause, self.state.generation, logged=True)

    def stats(self, waited: float) -> AuthStats:
        """The counters now (``waited``: the flights' waiting time); no I/O."""
        fleet = self._fleet
        if fleet is None:
            return self.counters.snapshot(waited, None, None)
        return self.counters.snapshot(waited, dict(fleet.counts), fleet.health.ok)

    def resent(self) -> None:
        """A front-end sent a request again after a recovered 401/403."""
        self.counters.add("resends")

    # -- timing rules, each written once ------------------------------------------

    # A flight's deadline covers everything its leader may do, each step bounded on
    # the wall clock, so a waiter never gives up before its leader.

    @property
    def store_budget(self) -> float:
        """Wall-clock seconds of one store read, publish or unlock."""
        return store_budget(self.login_timeout)

    @property
    def lock_wait(self) -> float:
        """How long a leader waits for the fleet lock before it goes on without it (a
        holder stopped or frozen): all its holder may do under it, a validation and a
        login with their store operations (see :func:`store_op`)."""
        return holder_time(self.login_timeout)

    @property
    def fleet_time(self) -> float:
        """What a store may add to a flight: the lock wait and five store operations
        (two reads, a publish, an unlock, and a re-read after a lock wait given up);
        0 without a store."""
        if self.fleet is None:
            return 0.0
        return self.lock_wait + 5 * self.store_budget

    @property
    def validate_wait(self) -> float:
        """How long waiters wait for a validation: the call's deadline, a second, and
        what the store may add."""
        return self.login_timeout + 1 + self.fleet_time

    @property
    def renew_wait(self) -> float:
        """How long waiters wait for a renewal: a validation, a login, and the store."""
        return 2 * self.login_timeout + 2 + self.fleet_time

    @property
    def lease(self) -> float:
        """How long a crashed fleet-lock holder blocks the fleet: longer than a live
        holder may keep the lock."""
        return holder_time(self.login_timeout) + 2

    def _store(self, op: str, *args: Any) -> StoreOp:
        return store_op(op, self.login_timeout, *args)

    def require(self, check: Optional[Callable[[Any], None]]) -> None:
        """Check the server's version with ``check`` at the first request (None: never)."""
        self.requirement = check
        self.gate = check is not None
        self.gate_error = None
        self._checked = check is None

    # -- state changes without I/O --------------------------------------------------

    def note_busy(self, pause: Optional[float], why: str) -> None:
        """``/auth`` answered busy (``pause``: its ``Retry-After``, or None): leave it
        alone until then, for every caller of this auth. One WARNING per episode."""
        pause = min(BUSY_MAX, pause if pause is not None and pause > 0 else BUSY_PAUSE)
        self.busy_until = max(self.busy_until, monotonic() + pause)
        if not self._busy_told:
            self._busy_told = True
            log.warning(
                "%s at %s is busy (%s): for %.1f s stale checks send the kept session and "
                "recoveries raise AuthServiceUnavailable without asking it again",
                AUTH_PATH, self.url, why, pause,
            )  # fmt: skip

    def busy(self) -> AuthServiceUnavailable:
        """The error of a check left undone because ``/auth`` is busy."""
        left = max(0.0, self.busy_until - monotonic())
        return AuthServiceUnavailable(
            f"{AUTH_PATH} at {self.url} is busy: not asked again for {left:.1f} s"
        )

    def not_logged_in(self) -> NotLoggedInError:
        """The error for "there is no live token", saying why."""
        return NotLoggedInError(
            f"no live session for {self.url}: {self.state.ended}; {remedy(self.url)}"
        )

    def adopt(self, value: object, fl: Any, what: str = "session") -> str:
        """Take ``value`` as the token, confirmed now; notify when it changed."""
        new = check_token(value, what)
        if self.state.adopt(new):
            self._changed(new, fl, "adopted")
        return new

    def start(self, token: str) -> None:
        """Take the first session (no callback: nothing has changed for the user)."""
        self.state.adopt(token)
        self.uid = uid_of(token)

    def no_reentry(self, fl: Any) -> None:
        """Refuse a validation or refresh asked for from inside a callback."""
        if fl.in_callback():
            raise LoginError(f"the session for {self.url} {_REENTRY}")

    def _changed(self, token: str, fl: Any, how: str) -> None:
        self.uid = uid_of(token)
        log.debug("session for uid %s %s at %s", self.uid, how, self.url)
        callback = self.on_token_update
        if callback is None:
            return
        try:
            with fl.callback():
                callback(token)
        except Exception as exc:  # a broken callback must not break the session
            log.warning("on_token_update raised %s; ignored", type(exc).__name__)

    # -- flights ------------------------------------------------------------------------

    def _flight(
        self,
        fl: Any,
        kind: str,
        work: Callable[[int], Flow],
        done: Optional[Callable[[], Optional[str]]],
        wait: float,
        after: Optional[int] = None,
    ) -> Flow:
        """Lead or join the flight ``kind``; the leader runs ``work(seq)`` and lands it.
        A leader stopped without an outcome (its task cancelled, its flow closed) hands
        the flight over: one waiter leads again."""
        got = yield Lead(kind, done, wait, after)
        if isinstance(got, str):
            return got
        try:
            result = yield from work(got.seq)
        except GeneratorExit:
            fl.land(kind, got, handover=True)
            raise
        except BaseException as exc:
            fl.land(kind, got, error=exc)
            del got  # the traceback keeps this frame: let go of the flight and its error
            raise
        fl.land(kind, got, result=result)
        return result

    # -- decisions ------------------------------------------------------------------------

    def current(self, fl: Any, provider: Provider) -> Flow:
        """The token to send now: validate when stale, renew through ``provider`` when
        dead. While ``/auth`` is busy (it answered 5xx/408/429, timed out or could not
        be reached) the kept token is sent unchecked: the API's answer decides."""
        state = self.state
        token = state.fresh()
        if token is not None:
            return token
        kept = state.current
        if kept is not None and monotonic() < self.busy_until:
            return kept
        try:
            return (yield from self.revalidate(fl, "stale token"))
        except AuthServiceUnavailable:
            if state.current is None:
                raise
            return state.current
        except (InvalidToken, NotLoggedInError):
            if provider is None:
                raise
        except TaniumAuthError:
            raise
        except self.transport as exc:  # a timeout, a refused connection: as a 5xx
            if state.current is None:
                raise
            self.note_busy(None, type(exc).__name__)
            return state.current
        return (yield from self.renew(fl, provider, "the session is dead"))

    def revalidate(self, fl: Any, cause: str) -> Flow:
        """The token, validated first when stale (one validation for every caller)."""
        self.no_reentry(fl)
        state = self.state

        def fresh() -> Optional[str]:
            if state.current is None:
                raise self.not_logged_in()
            return state.fresh()

        def work(seq: int) -> Flow:
            return self._check(seq, fl, cause, None)

        return (yield from self._flight(fl, "validate", work, fresh, self.validate_wait))

    def validate(self, fl: Any, cause: str) -> Flow:
        """An explicit validation: always the server, then its answer for the fleet."""
        self.no_reentry(fl)
        if self.state.current is None:
            raise self.not_logged_in()

        def work(seq: int) -> Flow:
            token = yield from self._validate_once(seq, fl, cause)
            if self.fleet is not None:
                yield self._store("lock")
                record = yield self._store("read")
                yield self._store("publish", token, record)
                yield self._store("unlock")
            return token

        return (yield from self._flight(fl, "validate", work, None, self.validate_wait))

    def recheck(self, fl: Any, sent: str, after: int, cause: str, provider: Provider) -> Flow:
        """Judge a 401/403 to a request that carried ``sent``: the token to use, from a
        validation begun after flight ``after`` (or no call when the token changed)."""
        self.no_reentry(fl)
        state = self.state

        def done() -> Optional[str]:
            token = state.current
            if token is None:
                raise self.not_logged_in()
            return token if token != sent or state.ok_seq > after else None

        def work(seq: int) -> Flow:
            return self._check(seq, fl, cause, sent)

        if monotonic() < self.busy_until:
            raise self.busy()
        return (yield from self._flight(fl, "validate", work, done, self.validate_wait, after))

    def recover(
        self, fl: Any, sent: str, cause: str, response: Any, provider: Provider, after: int
    ) -> Flow:
        """What a 401/403 to a request that carried ``sent`` means: the token to resend
        with, or None when the answer stands (the session is alive: a permission
        answer). ``after``: ``fl.started`` when the answer arrived."""
        state = self.state
        current = state.current
        if current is not None and current != sent:
            log.debug("%s: session replaced meanwhile; resending", cause)
            return current
        try:
            try:
                new = yield from self.recheck(fl, sent, after, cause, provider)
            except (LoginError, AuthServiceUnavailable) as exc:
                failure = recovery_failure(
                    exc, cause, response, provider is not None, remedy(self.url)
                )
                if failure is not None:
                    raise failure from exc
                new = ""  # dead: renew below
            if not new:
                assert provider is not None
                return (yield from self.renew(fl, provider, cause))
        except Exception:
            self.counters.add("failed_recoveries")
            raise
        if new != sent:
            return new
        log.debug("%s: the session is alive, so this is a permission answer", cause)
        self.counters.add("permission_answers")
        return None

    def renew(self, fl: Any, provider: Provider, cause: str = "refresh") -> Flow:
        """Adopt a new session from ``provider`` (one renewal for every caller; none
        while a live token is there). With a store, under the fleet lock: a session
        another process published is taken instead, and a new one is published."""
        self.no_reentry(fl)
        assert provider is not None
        state = self.state

        def work(seq: int) -> Flow:
            if self.fleet is None:
                return (yield from self._renewed(fl, provider, cause))
            yield self._store("lock")
            record = yield self._store("read")
            token = self._from_store(record, None, False, fl) or state.current
            if token is None:
                token = yield from self._renewed(fl, provider, cause)
                yield self._store("publish", token, record)
            yield self._store("unlock")
            return token

        return (yield from self._flight(fl, "renew", work, lambda: state.current, self.renew_wait))

    def login(self, credentials: Credentials) -> Flow:
        """Log in with ``credentials`` once; the new session id (adopted nowhere)."""
        return (yield from login(credentials, self.login_timeout))

    def logout(self, every: bool, cause: str) -> Flow:
        """End this session (``logout: 0``) or every session of its user (``logout: 1``)."""
        state = self.state
        token = state.current
        if token is None:
            raise self.not_logged_in()
        if is_api_token(token):  # what a logout does to a token is unknown: it may revoke it
            raise LogoutError(
                f"an API token for {self.url} is not logged out by this library: revoke it "
                "in the Tanium console (API Tokens) or through the API token endpoints; "
                "the token is kept"
            )
        call = logout_call(token, every)
        reply = yield Exchange(call, self.logout_timeout)
        log.debug("%s %s (%s) answered %s", call.method, call.path, cause, reply.status)
        verdict = judge_logout(reply.status)
        if verdict.kind is Kind.OK:
            state.kill(token, "it was logged out")
            log.debug("session for uid %s logged out at %s", self.uid, self.url)
            return None
        what = f"{call.method} {reply.url} {verdict.reason}"
        if verdict.kind is Kind.TRANSIENT:
            raise LogoutError(f"{what}; the session is kept", response=reply.response)
        state.kill(token, f"logout was refused ({reply.status}) and the session dropped")
        raise LogoutError(f"{what}; the session was dropped", response=reply.response)

    def check_server(self, fl: Any, read: Callable[[int, Optional[bytes]], Any],
                     unreadable: Callable[[BaseException], None]) -> Flow:  # fmt: skip
        """The ``requires_server`` gate, checked once for every caller: unreadable ->
        ``unreadable(exc)`` (a warning) and the gate opens; unmet ->
        ``VersionMismatchError`` now and on every later request."""
        if not self._checked:

            def done() -> Optional[str]:
                return "" if self._checked else None

            def work(seq: int) -> Flow:
                try:
                    status, body = yield from server_version(self.login_timeout)
                    version = read(status, body)
                except GeneratorExit:
                    raise
                except Exception as exc:  # not readable: nothing is checked
                    unreadable(exc)
                    version = None
                if version is not None:
                    assert self.requirement is not None
                    try:
                        self.requirement(version)
                    except VersionMismatchError as exc:
                        self.gate_error = str(exc)
                self._checked = True
                self.gate = self.gate_error is not None
                return ""

            yield from self._flight(fl, "server", work, done, self.validate_wait)
        if self.gate_error is not None:
            raise VersionMismatchError(self.gate_error)

    def soap(self, fl: Any, sent: str, body: Optional[bytes]) -> bool:
        """A SOAP 200 from the origin to a request that carried ``sent`` (``body`` None:
        too long to read): True when it reports an auth failure in-band (judge it as a
        401/403); else it confirms, or rotates to the ``<session>`` it carries."""
        if body is None:
            self.state.confirm(sent)
            return False
        failed, new = judge_soap(body, sent)
        if failed:
            log.debug("a SOAP answer at %s reports an auth failure in-band", self.url)
            return True
        if new is None:
            self.state.confirm(sent)
            return False
        current, changed = self.state.answered(sent, new, 0)
        if changed and current is not None:
            self.counters.add("rotations")
            self._changed(current, fl, "rotated in a SOAP answer")
        return False

    # -- the steps ----------------------------------------------------------------------

    def _check(self, seq: int, fl: Any, cause: str, exclude: Optional[str]) -> Flow:
        """A validation: alone, one server call; with a store, first a fresh or newer
        record, then under the fleet lock (or, the wait given up, after reading the
        store again) the server, its answer published for the fleet. A dead session is
        renewed by the caller, in the one renewal flight."""
        if self.fleet is None:
            return (yield from self._validate_once(seq, fl, cause))
        token = self._from_store((yield self._store("read")), exclude, True, fl)
        if token is not None:
            return token
        yield self._store("lock")
        record = yield self._store("read")
        token = self._from_store(record, exclude, False, fl)
        try:
            if token is None:
                token = yield from self._validate_once(seq, fl, cause)
                yield self._store("publish", token, record)
        except AuthServiceUnavailable:
            pause = self.busy_until - monotonic()
            if record is not None and pause > 0:  # the fleet leaves /auth alone too
                yield self._store("busy", record, pause)
            yield self._store("unlock")
            raise
        except (InvalidToken, NotLoggedInError):
            yield self._store("unlock")  # the renewal takes it again, in its own flight
            raise
        yield self._store("unlock")
        return token

    def _from_store(
        self, record: Any, exclude: Optional[str], fresh_only: bool, fl: Any
    ) -> Optional[str]:
        """Adopt the store's token as :func:`take` decides; the token to use now, or
        None when this process must ask the server. A record that says ``/auth`` is
        busy makes this process leave it alone too (:exc:`AuthServiceUnavailable`)."""
        if record is not None and record.origin == self.fleet.origin:
            if record.busy_left > 0:
                self.note_busy(record.busy_left, "the session store says so")
            if record.age < -CLOCK_SKEW and not self._future_told:
                self._future_told = True
                log.warning("session store %r holds a record %.0f s in the future by its own "
                            "clock; not adopted", self.fleet.store, -record.age)  # fmt: skip
        if monotonic() < self.busy_until and self.state.current is not None:
            fresh = take(self.state, record, self.fleet.origin, exclude, True)[0]
            if fresh is None:
                raise self.busy()
        token, changed = take(self.state, record, self.fleet.origin, exclude, fresh_only)
        if changed and self.state.current is not None:
            self.counters.add("store_adoptions")
            self.counters.add("rotations")
            self._changed(self.state.current, fl, "adopted from the session store")
        return token

    def _validate_once(self, seq: int, fl: Any, cause: str) -> Flow:
        state = self.state
        token = state.current
        if token is None:
            raise self.not_logged_in()
        call = validate_call(token)
        log.debug("%s %s for uid %s at %s (cause: %s)", call.method, call.path, self.uid,
                  self.url, cause)  # fmt: skip
        self.counters.add("validations")
        reply = yield Exchange(call, self.login_timeout)
        log.debug("%s %s answered %s", call.method, call.path, reply.status)
        verdict = judge_token(call, reply.status, reply.body)
        if verdict.kind is Kind.TRANSIENT:
            self.note_busy(getattr(reply, "retry_after", None), f"it answered {reply.status}")
        if verdict.kind is not Kind.OK:
            raise self._failed(call, reply, verdict, token)
        assert verdict.token is not None
        if self._busy_told:
            self._busy_told = False
            log.info("%s at %s answers again", AUTH_PATH, self.url)
        current, changed = state.answered(token, verdict.token, seq)
        if current is None:
            raise self.not_logged_in()
        if changed:
            self.counters.add("rotations")
            self._changed(current, fl, "rotated by the server")
        return current

    def _failed(self, call: Call, reply: Reply, verdict: Verdict, token: str) -> TaniumAuthError:
        if verdict.kind is Kind.REJECTED:
            why = f"the server rejected it ({call.method} {call.path} answered {reply.status})"
            if self.state.kill(token, why):
                self.counters.event(DIED, why, self.state.generation)
            log.debug("session for uid %s rejected by %s (%s)", self.uid, call.path, reply.status)
            return verdict_error(call, reply.url, verdict,
                                 f"the session was dropped; {remedy(self.url)}",
                                 reply.response)  # fmt: skip
        if verdict.kind is not Kind.TRANSIENT:  # a busy /auth said so once already
            log.warning("%s %s at %s %s", call.method, call.path, self.url, verdict.reason)
        return verdict_error(call, reply.url, verdict, "the session is kept", reply.response)

    def _renewed(self, fl: Any, provider: Provider, cause: str) -> Flow:
        """Log in or call ``refresh`` once, and adopt the new session."""
        log.info("refreshing the session for %s (cause: %s)", self.url, cause)
        if isinstance(provider, Credentials):
            value = yield from self.login(provider)
        else:
            assert provider is not None
            try:
                value = yield Refresh(provider)
            except self.passthrough:
                raise  # LoginError, AuthServiceUnavailable, a transport error: as it is
            except Exception as exc:
                raise LoginError(
                    f"refresh of the session for {self.url} failed: {type(exc).__name__}"
                ) from exc
        new = refreshed_token(value, self.url, self.state.dead)
        self.counters.add("refreshes")
        if self.state.adopt(new):
            self._changed(new, fl, "adopted from refresh()")
        how = "a credential login" if isinstance(provider, Credentials) else "refresh()"
        self.counters.event(REFRESHED, f"{cause}; a new session from {how}", self.state.generation)
        return new
