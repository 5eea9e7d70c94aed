"""Single flight: one caller does the server work, the others wait for its outcome.

One registry of flights serves threads (:class:`Flights`) and asyncio tasks on any
number of event loops in any number of threads (:class:`AsyncFlights`, a view of the
same registry), so a stale token costs one validation whoever finds it stale. A flight
wakes its waiters by a ``threading.Event`` and, for tasks, a future on each waiter's
own loop (``call_soon_threadsafe``): nothing is bound to one loop.

Flights are numbered in the order they start, so a caller can insist on a flight that
began after some moment (only a validation begun after a 401 arrived can judge it).
Waiters wait no longer than the flight's deadline, which covers everything its leader
may do. The work of a flight belongs to the auth, not to the caller that started it
(async drivers run it in a task the auth owns): a caller that is cancelled or times
out only stops waiting. Work that itself fails without an outcome *hands the flight
over*: one waiter leads again. A flight still registered past its deadline has lost
its leader (a child process after ``fork``, a leader stuck beyond every bound): the
next caller retires it and leads a new one, so no flight is handed out forever. A
caller running a user callback (``refresh()``, ``on_token_update()``) is marked, so
that it can be refused instead of waiting for a flight it is itself part of.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any, Optional, Union

from requests.exceptions import ReadTimeout

__all__ = ["AsyncFlights", "Flight", "Flights"]


class Flight:
    """One piece of server work under way; ``seq`` numbers it, ``deadline`` (monotonic)
    bounds how long its waiters wait."""

    __slots__ = ("deadline", "done", "ended", "error", "handover", "result", "seq", "waiters")

    def __init__(self, seq: int, deadline: float) -> None:
        self.seq = seq
        self.deadline = deadline
        self.done = threading.Event()
        self.ended = False  # set under the registry's lock, with the outcome
        self.handover = False  # ended without an outcome: a waiter leads again
        self.result: Optional[str] = None
        self.error: Optional[BaseException] = None
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def outcome(self) -> str:
        """The result, or the leader's error raised here."""
        error = self.error
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no frame -> traceback -> exception cycle
        assert self.result is not None
        return self.result


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


Joined = Union[str, tuple[Flight, bool]]


class Flights:
    """Numbered single flights guarded by ``lock`` (shared with the state they change).

    Args:
        lock: the lock of the token state.
        timeout_error: what a waiter raises at the deadline (the front-end's own
            timeout type), given a message.
    """

    def __init__(
        self, lock: threading.Lock, timeout_error: Callable[[str], Exception] = ReadTimeout
    ) -> None:
        self.lock = lock
        self.timeout_error = timeout_error
        self.started = 0  #: flights started so far
        self._running: dict[str, Flight] = {}
        self._local = threading.local()
        #: Threads inside a user callback now: a lock-free fast check for the hot path.
        self.in_callbacks = 0
        #: Seconds callers (threads and tasks) spent waiting for others' flights, added up.
        self.waited = 0.0

    def waited_for(self, since: float) -> None:
        """Add the time since ``since`` (monotonic) to :attr:`waited`."""
        with self.lock:
            self.waited += monotonic() - since

    def join(
        self, kind: str, done: Optional[Callable[[], Optional[str]]], timeout: float
    ) -> Joined:
        """Under the lock: ``done()``'s result when no work is needed, else the running
        flight ``kind`` and whether this caller starts it (then it must :meth:`land`)."""
        retired = None
        with self.lock:
            if done is not None:
                ready = done()
                if ready is not None:
                    return ready
            flight = self._running.get(kind)
            if flight is not None and monotonic() <= flight.deadline:
                return flight, False
            if flight is not None:  # past its deadline: its leader is gone
                retired = self._retire(kind, flight)
            self.started += 1
            flight = self._running[kind] = Flight(self.started, monotonic() + timeout)
        if retired is not None:
            self._wake(*retired)
        return flight, True

    def _retire(
        self, kind: str, flight: Flight
    ) -> tuple[Flight, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]]:
        """End ``flight`` without an outcome (under the lock); what :meth:`_wake` needs."""
        flight.handover = flight.ended = True
        if self._running.get(kind) is flight:
            del self._running[kind]
        waiters, flight.waiters = flight.waiters, []
        return flight, waiters

    @staticmethod
    def _wake(
        flight: Flight, waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
    ) -> None:
        flight.done.set()
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_wake, future)

    def after_fork(self, lock: threading.Lock) -> None:
        """In a child process: no flight, no callback mark and no lock of the parent."""
        self.lock = lock
        self._running = {}
        self._local = threading.local()
        self.in_callbacks = 0

    def lead(
        self,
        kind: str,
        done: Optional[Callable[[], Optional[str]]],
        timeout: float,
        after: Optional[int] = None,
    ) -> Union[str, Flight]:
        """A result, or a new flight this caller must do and then :meth:`land`.

        ``done()`` (under the lock) returns a result when no work is needed. A flight
        already running answers for this caller too (its outcome is returned or
        raised); with ``after``, a flight numbered ``<= after`` is too old to answer:
        wait for it to end, then judge again. A flight handed over is joined again.
        Waiters give up at the deadline (``timeout`` seconds after the flight began).
        """
        while True:
            joined = self.join(kind, done, timeout)
            if isinstance(joined, str):
                return joined
            flight, leader = joined
            if leader:
                return flight
            began = monotonic()
            ended = flight.done.wait(max(0.0, flight.deadline - began))
            self.waited_for(began)
            if not ended:
                raise self.timeout_error(f"gave up waiting for another thread's {kind}")
            if not flight.handover and (after is None or flight.seq > after):
                return flight.outcome()

    def land(
        self,
        kind: str,
        flight: Flight,
        result: Optional[str] = None,
        error: Optional[BaseException] = None,
        handover: bool = False,
    ) -> None:
        """End ``flight`` with ``result`` or ``error`` (or hand it over: no outcome);
        its waiters wake up, on whatever thread or event loop they wait."""
        with self.lock:
            if flight.ended:  # retired meanwhile: its waiters lead again already
                return
            flight.result, flight.error, flight.handover = result, error, handover
            flight.ended = True
            if self._running.get(kind) is flight:
                del self._running[kind]
            waiters, flight.waiters = flight.waiters, []
        self._wake(flight, waiters)

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


class AsyncFlights:
    """The asyncio face of a :class:`Flights` registry: tasks of any event loop join
    the same flights as threads do. A task running a user callback is marked through
    a context variable."""

    def __init__(self, flights: Flights) -> None:
        self.flights = flights
        self._in_callback: contextvars.ContextVar[bool] = contextvars.ContextVar(
            "tanium_in_callback", default=False
        )

    @property
    def started(self) -> int:
        """Flights started so far (threads' and tasks')."""
        return self.flights.started

    def land(self, kind: str, flight: Flight, **outcome: Any) -> None:
        """As :meth:`Flights.land`."""
        self.flights.land(kind, flight, **outcome)

    async def lead(
        self,
        kind: str,
        done: Optional[Callable[[], Optional[str]]],
        timeout: float,
        after: Optional[int] = None,
    ) -> Union[str, Flight]:
        """As :meth:`Flights.lead`, waiting without blocking the event loop."""
        while True:
            joined = self.flights.join(kind, done, timeout)
            if isinstance(joined, str):
                return joined
            flight, leader = joined
            if leader:
                return flight
            await self._wait(flight, kind)
            if not flight.handover and (after is None or flight.seq > after):
                return flight.outcome()

    async def _wait(self, flight: Flight, kind: str) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self.flights.lock:
            if flight.ended:
                return
            flight.waiters.append(entry)
        began = monotonic()
        try:
            await asyncio.wait_for(future, max(0.0, flight.deadline - monotonic()))
        except asyncio.TimeoutError:
            raise self.flights.timeout_error(f"gave up waiting for another task's {kind}") from None
        finally:
            self.flights.waited_for(began)
            with self.flights.lock, contextlib.suppress(ValueError):
                flight.waiters.remove(entry)

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
