"""Single flight: one thread does the server work, the others wait for its outcome.

Flights are numbered in the order they start, so a caller can insist on a flight that
began after some moment (only a validation begun after a 401 arrived can judge it).
Waiters wait no longer than the flight's deadline. A thread running a user callback
(``refresh()``, ``on_token_update()``) is marked, so that it can be refused instead of
waiting for a flight it is itself part of.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Optional, Union

from requests.exceptions import ReadTimeout

__all__ = ["Flights"]


class _Flight:
    __slots__ = ("deadline", "done", "error", "result", "seq", "timeout_error")

    def __init__(
        self, seq: int, deadline: float, timeout_error: Callable[[str], Exception]
    ) -> None:
        self.seq = seq
        self.timeout_error = timeout_error
        self.deadline = deadline
        self.done = threading.Event()
        self.result: Optional[str] = None
        self.error: Optional[BaseException] = None

    def finished(self, what: str) -> bool:
        """Wait until the flight ends or its deadline passes (then ``ReadTimeout``)."""
        if not self.done.wait(max(0.0, self.deadline - monotonic())):
            raise self.timeout_error(f"gave up waiting for another thread's {what}")
        return True

    def outcome(self, what: str) -> str:
        self.finished(what)
        error = self.error
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no frame -> traceback -> exception cycle
        assert self.result is not None
        return self.result


class Flights:
    """Numbered single flights guarded by ``lock`` (shared with the state they change)."""

    def __init__(
        self, lock: threading.Lock, timeout_error: Callable[[str], Exception] = ReadTimeout
    ) -> None:
        self.lock = lock
        #: What a waiter raises at the deadline: the front-end's own timeout type.
        self.timeout_error = timeout_error
        self.started = 0  # flights started so far
        self._running: dict[str, _Flight] = {}
        self._local = threading.local()
        #: Threads inside a user callback now: a lock-free fast check for the hot path.
        self.in_callbacks = 0

    def lead(
        self,
        kind: str,
        done: Optional[Callable[[], Optional[str]]],
        timeout: float,
        after: Optional[int] = None,
    ) -> Union[str, _Flight]:
        """A result, or a new flight this caller must do and then :meth:`land`.

        ``done()`` (under the lock) returns a result when no work is needed. A flight
        already running answers for this caller too (its outcome is returned or
        raised); with ``after``, a flight numbered ``<= after`` is too old to answer:
        wait for it to end, then judge again. Waiters give up with ``ReadTimeout`` at
        the deadline (``timeout`` seconds after the flight began).
        """
        while True:
            with self.lock:
                if done is not None:
                    ready = done()
                    if ready is not None:
                        return ready
                flight = self._running.get(kind)
                if flight is None:
                    self.started += 1
                    flight = self._running[kind] = _Flight(
                        self.started, monotonic() + timeout, self.timeout_error
                    )
                    return flight
            if after is None or flight.seq > after:
                return flight.outcome(kind)
            flight.finished(kind)

    def land(
        self,
        kind: str,
        flight: _Flight,
        result: Optional[str] = None,
        error: Optional[BaseException] = None,
    ) -> None:
        """End ``flight`` with ``result`` or ``error``; its waiters wake up."""
        flight.result, flight.error = result, error
        with self.lock:
            if self._running.get(kind) is flight:
                del self._running[kind]
        flight.done.set()

    # -- user callbacks ---------------------------------------------------------

    @contextlib.contextmanager
    def callback(self) -> Iterator[None]:
        """Mark this thread as running a user callback for the duration."""
        local = self._local
        depth = getattr(local, "depth", 0)
        local.depth = depth + 1
        with self.lock:
            self.in_callbacks += 1
        try:
            yield
        finally:
            local.depth = depth
            with self.lock:
                self.in_callbacks -= 1

    def in_callback(self) -> bool:
        """True on a thread that is running a user callback of this object."""
        return self.in_callbacks > 0 and getattr(self._local, "depth", 0) > 0
