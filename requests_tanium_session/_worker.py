"""One blocking call on a thread of its own, so its caller can stop waiting at a
wall-clock deadline (``requests`` and redis-py only bound each socket operation)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Optional, TypeVar

__all__ = ["Worker", "on_worker"]

T = TypeVar("T")


class Worker(Generic[T]):
    """One call running on a thread of its own; ``response`` lets the caller cut it short."""

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
