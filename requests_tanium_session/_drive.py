"""Drivers: carry out the effects of a :mod:`._policy` generator, and nothing else.

:func:`run` blocks (threads wait in :class:`~._flight.Flights`); :func:`arun` awaits
(tasks wait in :class:`~._flight.AsyncFlights`, store I/O runs on a worker thread).
Each is given its front-end's ``exchange``: the one function that moves bytes for a
protocol call.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Optional, TypeVar

from ._policy import STORE_BUDGET, Exchange, Flow, Lead, RefreshMisuse, Reply, StoreOp
from .protocol import Call

__all__ = ["Held", "Worker", "arun", "on_worker", "run"]

T = TypeVar("T")

Exchanger = Callable[[Call, float], Reply]
AsyncExchanger = Callable[[Call, float], Awaitable[Reply]]

_COROUTINE = (
    "refresh is a coroutine function: only an httpx.AsyncClient can await it; "
    "give this client a plain function"
)


class Held:
    """The fleet lock as one flow holds it: taken once, given back when the flow ends."""

    __slots__ = ("depth", "fleet", "handle")

    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet
        self.depth = 0
        self.handle: Optional[object] = None

    def run(self, effect: StoreOp) -> Any:
        """Carry out one store operation within its budget."""
        fleet, budget = self.fleet, effect.budget
        if effect.op == "read":
            return fleet.read(budget)
        if effect.op == "publish":
            fleet.publish(*effect.args, budget=budget)
        elif effect.op == "lock":
            if self.depth == 0:
                self.handle = fleet.acquire(*effect.args, budget=budget)
            self.depth += 1
        elif self.depth == 1:  # unlock, the outermost
            self.end(budget)
        elif self.depth:
            self.depth -= 1
        return None

    def end(self, budget: float = STORE_BUDGET) -> None:
        """Give the lock back, if this flow holds it (within ``budget`` seconds)."""
        handle, self.handle, depth, self.depth = self.handle, None, self.depth, 0
        if depth:
            self.fleet.release(handle, budget)


def call_refresh(provider: Callable[[], Any], flights: Any) -> Any:
    """Call a sync ``refresh`` marked as a callback; an awaitable is refused."""
    if inspect.iscoroutinefunction(provider):
        raise RefreshMisuse(_COROUTINE)
    with flights.callback():
        value = provider()
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise RefreshMisuse(_COROUTINE.replace("is a coroutine function", "returned an awaitable"))
    return value


def run(flow: Flow, exchange: Exchanger, flights: Any, fleet: Any = None) -> Any:
    """Drive ``flow`` to its end, blocking; return its value or raise its error."""
    sent: Any = None
    error: Optional[BaseException] = None
    held: Optional[Held] = None
    try:
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(sent)
            except StopIteration as stop:
                return stop.value
            finally:
                error = sent = None
            try:
                if isinstance(effect, Exchange):
                    sent = exchange(effect.call, effect.timeout)
                elif isinstance(effect, Lead):
                    sent = flights.lead(effect.kind, effect.done, effect.timeout, effect.after)
                elif isinstance(effect, StoreOp):
                    held = held or Held(fleet)
                    sent = held.run(effect)
                else:
                    sent = call_refresh(effect.provider, flights)
            except Exception as exc:
                error = exc
    finally:
        flow.close()
        if held is not None:
            held.end()


async def arun(flow: Flow, exchange: AsyncExchanger, flights: Any, fleet: Any = None) -> Any:
    """Drive ``flow`` to its end in a task; return its value or raise its error."""
    sent: Any = None
    error: Optional[BaseException] = None
    held: Optional[Held] = None
    try:
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(sent)
            except StopIteration as stop:
                return stop.value
            finally:
                error = sent = None
            try:
                if isinstance(effect, Exchange):
                    sent = await exchange(effect.call, effect.timeout)
                elif isinstance(effect, Lead):
                    got = flights.lead(effect.kind, effect.done, effect.timeout, effect.after)
                    sent = await got
                elif isinstance(effect, StoreOp):  # blocking I/O: off the event loop
                    held = held or Held(fleet)
                    sent = await asyncio.to_thread(held.run, effect)
                else:
                    with flights.callback():
                        sent = effect.provider()
                        if inspect.isawaitable(sent):
                            sent = await sent
            except Exception as exc:
                error = exc
    finally:
        flow.close()
        if held is not None and held.depth:
            await asyncio.to_thread(held.end)


class Worker(Generic[T]):
    """One call running on a thread of its own, so that its caller can stop waiting at
    a wall-clock deadline; ``response`` lets the caller cut it short."""

    __slots__ = ("abandoned", "done", "error", "finished", "guard", "response", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.guard = threading.Lock()  # "finished" and "abandoned": one wins
        self.finished = False
        self.abandoned = False
        self.response: Any = None
        self.result: Optional[T] = None
        self.error: Optional[BaseException] = None


def on_worker(
    work: Callable[[Worker[T]], T],
    timeout: float,
    give_up: Callable[[Worker[T]], BaseException],
    late: Optional[Callable[[T], None]] = None,
) -> T:
    """``work(worker)`` on a worker thread; past ``timeout`` seconds, ``give_up(worker)``
    (which should cut the call short) returns the exception raised here, and a result
    that arrives afterwards goes to ``late`` (on the worker thread: a lock to give back)."""
    worker: Worker[T] = Worker()

    def body() -> None:
        result: Optional[T] = None
        try:
            result = work(worker)
        except BaseException as exc:
            worker.error = exc
        with worker.guard:
            worker.finished = True
            abandoned = worker.abandoned
            worker.result = None if abandoned else result
        worker.done.set()
        if abandoned:
            worker.error = None
            if late is not None and result is not None:
                late(result)

    threading.Thread(target=body, name="tanium-auth-call", daemon=True).start()
    if not worker.done.wait(timeout):
        with worker.guard:
            worker.abandoned = not worker.finished
        if worker.abandoned:
            raise give_up(worker)
    error, worker.error = worker.error, None
    if error is not None:
        try:
            raise error
        finally:
            error = None  # no frame -> traceback -> exception cycle
    return worker.result  # type: ignore[return-value]  # None only where T allows it
