"""Single flight for asyncio tasks: the twin of :mod:`._flight` for async front-ends.

One task does the server work, the others ``await`` its outcome, never past the
flight's deadline. Flights are numbered, so a caller can insist on one that began
after some moment. A task running a user callback is marked through a context
variable, so that it is refused instead of waiting for a flight it is part of.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Optional, Union

from requests.exceptions import ReadTimeout

__all__ = ["AsyncFlights"]


class _AsyncFlight:
    __slots__ = ("deadline", "done", "error", "result", "seq", "timeout_error")

    def __init__(
        self, seq: int, deadline: float, timeout_error: Callable[[str], Exception]
    ) -> None:
        self.seq = seq
        self.timeout_error = timeout_error
        self.deadline = deadline
        self.done = asyncio.Event()
        self.result: Optional[str] = None
        self.error: Optional[BaseException] = None

    async def finished(self, what: str) -> None:
        """Wait until the flight ends or its deadline passes (then ``ReadTimeout``)."""
        try:
            await asyncio.wait_for(self.done.wait(), max(0.0, self.deadline - monotonic()))
        except asyncio.TimeoutError:
            raise self.timeout_error(f"gave up waiting for another task's {what}") from None

    async def outcome(self, what: str) -> str:
        await self.finished(what)
        error = self.error
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no frame -> traceback -> exception cycle
        assert self.result is not None
        return self.result


class AsyncFlights:
    """Numbered single flights among asyncio tasks, guarded by ``lock`` for threads."""

    def __init__(
        self, lock: threading.Lock, timeout_error: Callable[[str], Exception] = ReadTimeout
    ) -> None:
        self.lock = lock
        #: What a waiter raises at the deadline: the front-end's own timeout type.
        self.timeout_error = timeout_error
        self.started = 0
        self._running: dict[str, _AsyncFlight] = {}
        self._in_callback: contextvars.ContextVar[bool] = contextvars.ContextVar(
            "tanium_in_callback", default=False
        )

    async def lead(
        self,
        kind: str,
        done: Optional[Callable[[], Optional[str]]],
        timeout: float,
        after: Optional[int] = None,
    ) -> Union[str, _AsyncFlight]:
        """A result, or a new flight this task must do and then :meth:`land`.

        The same rules as :meth:`._flight.Flights.lead`.
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
                    flight = _AsyncFlight(self.started, monotonic() + timeout, self.timeout_error)
                    self._running[kind] = flight
                    return flight
            if after is None or flight.seq > after:
                return await flight.outcome(kind)
            await flight.finished(kind)

    def land(
        self,
        kind: str,
        flight: _AsyncFlight,
        result: Optional[str] = None,
        error: Optional[BaseException] = None,
    ) -> None:
        """End ``flight`` with ``result`` or ``error``; its waiters wake up."""
        flight.result, flight.error = result, error
        with self.lock:
            if self._running.get(kind) is flight:
                del self._running[kind]
        flight.done.set()

    @contextlib.contextmanager
    def callback(self) -> Iterator[None]:
        """Mark this task (its context) as running a user callback for the duration."""
        mark = self._in_callback.set(True)
        try:
            yield
        finally:
            self._in_callback.reset(mark)

    def in_callback(self) -> bool:
        """True inside a user callback of this object, in this task."""
        return self._in_callback.get()
