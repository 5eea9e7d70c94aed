"""Drivers: carry out the effects (:mod:`._effects`) of a policy flow, and nothing else.

:func:`run` blocks (threads wait in :class:`~._flight.Flights`); :func:`arun` awaits
(tasks wait in :class:`~._flight.AsyncFlights`, store I/O runs on a worker thread).
Each is given its front-end's ``exchange``: the one function that moves bytes for a
protocol call.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Optional

from ._effects import (
    COROUTINE_REFRESH,
    STORE_BUDGET,
    Exchange,
    Flow,
    Lead,
    RefreshMisuse,
    Reply,
    StoreOp,
)
from .protocol import Call

__all__ = ["AsyncExchanger", "Exchanger", "Held", "arun", "call_refresh", "run"]

Exchanger = Callable[[Call, float], Reply]
AsyncExchanger = Callable[[Call, float], Awaitable[Reply]]


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
        elif effect.op == "busy":
            fleet.publish_busy(*effect.args, budget=budget)
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
    misuse = COROUTINE_REFRESH.format(client="a synchronous client")
    if inspect.iscoroutinefunction(provider):
        raise RefreshMisuse(misuse)
    with flights.callback():
        value = provider()
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise RefreshMisuse(misuse.replace("is a coroutine function", "returned an awaitable"))
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
