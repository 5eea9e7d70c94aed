"""What an auth has done: counters kept by the policy, and events worth alerting on.

Every front-end (``requests``, httpx, aiohttp) drives the same policy, so the same
counters mean the same thing everywhere. Counting happens off the hot path only (a
fresh token is sent without touching them); reading a snapshot does no I/O.

- :class:`AuthStats`: a snapshot (``auth.stats``), with a stable ``repr`` and
  :meth:`AuthStats.as_dict`.
- :class:`AuthEvent`: a moment a user may want to alert on, given to ``on_event`` and
  logged with ``extra=`` fields (``tanium_event``, ``tanium_origin``, ``tanium_cause``,
  ``tanium_generation``). Never a token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

__all__ = [
    "DEGRADED",
    "DIED",
    "REFRESHED",
    "STORE_BACK",
    "AuthEvent",
    "AuthStats",
    "Counters",
    "event_fields",
]

log = logging.getLogger(__name__)

#: The session was found dead (rejected by the server).
DIED = "session_died"
#: A new session was adopted from ``refresh()`` or a credential login.
REFRESHED = "refreshed"
#: The session store failed; this process goes on alone.
DEGRADED = "store_degraded"
#: The session store works again.
STORE_BACK = "store_back"

_LEVELS = {DIED: logging.INFO, REFRESHED: logging.INFO, DEGRADED: logging.WARNING,
           STORE_BACK: logging.INFO}  # fmt: skip


@dataclass(frozen=True)
class AuthEvent:
    """One event: what happened (``kind``), where (``origin``), why (``cause``) and the
    token's generation afterwards. Carries no secret."""

    kind: str
    origin: str
    cause: str
    generation: int


@dataclass(frozen=True)
class AuthStats:
    """Counters of one auth since it was made (a snapshot; no I/O to take it).

    Attributes:
        validations: ``/auth`` (or REST) validations sent.
        rotations: new tokens adopted from the server (validate or SOAP) or the store.
        refreshes: sessions obtained from ``refresh()`` or a credential login.
        resends: requests sent again after a recovered 401/403.
        permission_answers: 401/403 answers found to be permission answers (the
            session alive), returned as they are.
        failed_recoveries: 401/403 recoveries that raised.
        flight_wait_seconds: time callers spent waiting for another's validation or
            login, added up.
        store_reads, store_adoptions, store_publishes: session-store operations.
        store_outages: outages of the session store (each began with one WARNING).
        store_ok: the store's health now; None without a store.
    """

    validations: int = 0
    rotations: int = 0
    refreshes: int = 0
    resends: int = 0
    permission_answers: int = 0
    failed_recoveries: int = 0
    flight_wait_seconds: float = 0.0
    store_reads: int = 0
    store_adoptions: int = 0
    store_publishes: int = 0
    store_outages: int = 0
    store_ok: Optional[bool] = None

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (field order)."""
        return asdict(self)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{f.name}={getattr(self, f.name):.3f}"
            if isinstance(getattr(self, f.name), float)
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"AuthStats({parts})"


def event_fields(kind: str, origin: str, cause: str, generation: Optional[int]) -> dict[str, Any]:
    """The ``extra=`` fields of an event's log record."""
    return {"tanium_event": kind, "tanium_origin": origin, "tanium_cause": cause,
            "tanium_generation": generation}  # fmt: skip


_NAMES = frozenset(f.name for f in fields(AuthStats)) - {"store_ok", "flight_wait_seconds"}


class Counters:
    """The live counters behind :class:`AuthStats`, and the events' one way out."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.on_event: Optional[Callable[[AuthEvent], None]] = None
        self._values: dict[str, int] = dict.fromkeys(_NAMES, 0)
        self.after_fork()

    def after_fork(self) -> None:
        """A fresh lock and no pending events (in a child process: none of the parent's)."""
        self._lock = threading.Lock()
        self._pending: list[AuthEvent] = []

    def add(self, name: str) -> None:
        """Count one more of ``name`` (an :class:`AuthStats` field)."""
        with self._lock:
            self._values[name] += 1

    def snapshot(
        self, waited: float, store: Optional[dict[str, int]], store_ok: Optional[bool]
    ) -> AuthStats:
        """The counters now, with the flights' ``waited`` seconds and the store's counts
        (``Fleet.counts``, named as AuthStats fields)."""
        with self._lock:
            values = dict(self._values)
        values.update(store or {})
        return AuthStats(flight_wait_seconds=waited, store_ok=store_ok, **values)

    def event(self, kind: str, cause: str, generation: int, logged: bool = False) -> None:
        """Log the event now (``extra=`` fields, no secret; not when the caller
        ``logged`` it already) and keep it for ``on_event``, which :meth:`flush` calls
        once the work under way has landed (a slow callback holds no waiter)."""
        if not logged:
            log.log(
                _LEVELS[kind],
                "%s at %s: %s",
                kind,
                self.origin,
                cause,
                extra=event_fields(kind, self.origin, cause, generation),
            )
        if self.on_event is not None:
            with self._lock:
                self._pending.append(AuthEvent(kind, self.origin, cause, generation))

    @property
    def pending(self) -> bool:
        """Whether events wait for :meth:`flush`."""
        return bool(self._pending)

    def flush(self) -> None:
        """Hand the events kept so far to ``on_event`` (on the calling thread)."""
        if not self._pending:
            return
        with self._lock:
            events, self._pending = self._pending, []
        callback = self.on_event
        for event in events:
            if callback is None:
                return
            try:
                callback(event)
            except Exception as exc:  # a broken callback must not break the session
                log.warning("on_event raised %s; ignored", type(exc).__name__)
