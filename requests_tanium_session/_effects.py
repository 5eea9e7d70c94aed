"""The vocabulary between the policy and the drivers: effects, and what comes back.

A decision of :mod:`._policy` is a generator (a *flow*) that yields effects and
receives their results, the way httpx's ``Auth.auth_flow`` yields requests. A driver
(:mod:`._drive`) carries each effect out and sends back:

- :class:`Exchange` ``(call, timeout)``: make one protocol call (no redirects, no
  environment proxy for loopback, one wall-clock deadline, secrets redacted on
  anything raised) -> a :class:`Reply`.
- :class:`Lead` ``(kind, done, timeout, after)``: join or lead the single flight
  ``kind`` -> a token (``done()`` or a running flight answered) or a flight handle the
  flow must land.
- :class:`Refresh` ``(provider)``: call the user's ``refresh`` marked as a callback
  (awaited when it returns an awaitable, in async drivers) -> what it returned.
- :class:`StoreOp` ``(op, *args, budget)``: ``read``, ``lock``, ``unlock`` or ``publish``
  on the fleet, within ``budget`` wall-clock seconds (a failed or late one counts as
  "the store is down") -> a record, a lock handle or None.

An error of an effect is thrown into the flow at the ``yield``. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import Any, Optional, Protocol, Union

from .protocol import Call

__all__ = [
    "COROUTINE_REFRESH",
    "STORE_BUDGET",
    "Answered",
    "Credentials",
    "Effect",
    "Exchange",
    "Flow",
    "Lead",
    "Provider",
    "Refresh",
    "RefreshMisuse",
    "Reply",
    "StoreOp",
    "holder_time",
    "store_budget",
    "store_op",
]


class Reply(Protocol):
    """A finished protocol call as a driver hands it back."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> Optional[bytes]: ...  # None: longer than the call's limit

    @property
    def url(self) -> str: ...

    @property
    def response(self) -> Any: ...  # the front-end's response, secrets redacted, or None

    @property
    def retry_after(self) -> Optional[float]: ...  # seconds its Retry-After asks for


class Answered:
    """A :class:`Reply` as a wire that builds its own hands it back."""

    __slots__ = ("body", "response", "retry_after", "status", "url")

    def __init__(
        self,
        status: int,
        body: Optional[bytes],
        url: str,
        response: Any = None,
        retry_after: Optional[float] = None,
    ) -> None:
        self.status, self.body, self.url, self.response = status, body, url, response
        self.retry_after = retry_after


class Exchange:
    """Make ``call`` within ``timeout`` wall-clock seconds; the driver answers a Reply."""

    __slots__ = ("call", "timeout")

    def __init__(self, call: Call, timeout: float) -> None:
        self.call = call
        self.timeout = timeout


class Lead:
    """Join or lead the flight ``kind``; waiters give up ``timeout`` after it began."""

    __slots__ = ("after", "done", "kind", "timeout")

    def __init__(
        self,
        kind: str,
        done: Optional[Callable[[], Optional[str]]],
        timeout: float,
        after: Optional[int] = None,
    ) -> None:
        self.kind = kind
        self.done = done
        self.timeout = timeout
        self.after = after


class Refresh:
    """Call the user's ``refresh`` (marked as a callback); the driver answers its value."""

    __slots__ = ("provider",)

    def __init__(self, provider: Callable[[], Any]) -> None:
        self.provider = provider


class StoreOp:
    """A fleet operation: ``read``, ``lock`` (wait), ``unlock`` or ``publish`` (token,
    previous), given up after ``budget`` wall-clock seconds (beyond a lock's wait)."""

    __slots__ = ("args", "budget", "op")

    def __init__(self, op: str, *args: Any, budget: float) -> None:
        self.op = op
        self.args = args
        self.budget = budget


#: Wall-clock seconds one store read, publish or unlock may take at the most.
STORE_BUDGET = 1.0


def store_budget(login_timeout: float) -> float:
    """The budget of one store read, publish or unlock: short beside a server call."""
    return min(STORE_BUDGET, login_timeout / 4)


def holder_time(login_timeout: float) -> float:
    """The longest a fleet-lock holder may keep the lock: a validation and a login
    (``login_timeout`` each) and its store operations. Waiters wait that long, and the
    lease outlasts it."""
    return 2 * login_timeout + 4 * store_budget(login_timeout)


def store_op(op: str, login_timeout: float, *args: Any) -> StoreOp:
    """A fleet operation of a flow whose server calls take ``login_timeout``: the lock
    waits for what its holder may do (:func:`holder_time`), every other operation gets
    :func:`store_budget`."""
    wait = (holder_time(login_timeout),) if op == "lock" else ()
    return StoreOp(op, *wait, *args, budget=store_budget(login_timeout))


Effect = Union[Exchange, Lead, Refresh, StoreOp]
Flow = Generator[Effect, Any, Any]

#: Why a coroutine ``refresh`` is refused where nothing can await it (one message).
COROUTINE_REFRESH = (
    "refresh is a coroutine function, and {client} cannot await it: give it a plain "
    "function, or use an async client (httpx.AsyncClient through TaniumAuth.async_client(), "
    "or aiohttp through TaniumMiddleware)"
)


class RefreshMisuse(TypeError):
    """A ``refresh`` this driver cannot call (a coroutine function in a sync client)."""


class Credentials:
    """A credential login: the call's headers or JSON body, in memory only, never
    shown or pickled. ``route`` is ``"auth"`` (``POST /auth``) or ``"rest"``."""

    __slots__ = ("body", "headers", "route")

    def __init__(
        self,
        headers: Mapping[str, str],
        route: str = "auth",
        body: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.headers = dict(headers)
        self.route = route
        self.body = dict(body) if body is not None else None

    def __repr__(self) -> str:
        return "<credentials>"

    def __reduce__(self) -> Any:
        raise TypeError("credentials are never pickled")


Provider = Union[Callable[[], Any], Credentials, None]
