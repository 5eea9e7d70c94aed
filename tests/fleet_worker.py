"""Worker processes for the store tests: each builds its own auth on a shared store.

Kept in a module of its own so ``multiprocessing`` (spawn) can import it by name.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from requests_tanium_session import FileStore, RedisStore, SessionStore, TaniumSessionAuth

SENSORS = "/api/v2/sensors"


def make_store(spec: tuple[Any, ...]) -> SessionStore:
    """``("file", path)`` or ``("redis", port, key)``."""
    if spec[0] == "file":
        return FileStore(spec[1])
    import redis

    return RedisStore(redis.Redis(host="127.0.0.1", port=spec[1]), key=spec[2])


def _threads(url: str, auth: TaniumSessionAuth, threads: int, per_thread: int) -> list[int]:
    gate = threading.Barrier(threads)
    statuses: list[int] = []

    def one() -> None:
        with requests.Session() as s:
            s.trust_env = False
            s.auth = auth
            gate.wait()
            for _ in range(per_thread):
                statuses.append(s.get(url + SENSORS).status_code)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return statuses


def stale_burst(
    url: str, session: str, spec: tuple[Any, ...], window: float, start: Any, out: Any
) -> None:
    """All threads of all workers find the session stale at once."""
    auth = TaniumSessionAuth(url, session, store=make_store(spec), revalidate_after=window)
    start.wait()
    time.sleep(window + 0.1)
    out.put(_threads(url, auth, 8, 1))


def timed_burst(
    url: str,
    session: str,
    spec: tuple[Any, ...],
    window: float,
    start: Any,
    out: Any,
    login_timeout: float,
) -> None:
    """As :func:`stale_burst`, with a ``login_timeout``; reports the longest request."""
    auth = TaniumSessionAuth(url, session, store=make_store(spec), revalidate_after=window,
                             login_timeout=login_timeout)  # fmt: skip
    start.wait()
    time.sleep(window + 0.1)
    began = time.monotonic()
    statuses = _threads(url, auth, 8, 1)
    out.put({"statuses": statuses, "longest": time.monotonic() - began})


def revoked(
    url: str, user: str, password: str, spec: tuple[Any, ...], ready: Any, go: Any, out: Any
) -> None:
    """from_credentials in every worker; requests after the administrator revoked."""
    auth = TaniumSessionAuth.from_credentials(
        url, user, password, store=make_store(spec), revalidate_after=30
    )
    ready.wait()  # every worker has its session (one login: the others found it fresh)
    go.wait()  # the test revoked every session of the user
    out.put(_threads(url, auth, 8, 3))


def follower(url: str, session: str, spec: tuple[Any, ...], go: Any, out: Any) -> None:
    """Holds ``session`` while another process rotates it; one request afterwards."""
    auth = TaniumSessionAuth(url, session, store=make_store(spec), revalidate_after=60)
    go.wait()
    with requests.Session() as s:
        s.trust_env = False
        s.auth = auth
        resp = s.get(url + SENSORS)
        out.put((resp.status_code, len(resp.history)))


def hold_lock(spec: tuple[Any, ...], origin: str, lease: float, held: Any) -> None:
    """Take the fleet lock and never give it back (the test kills this process)."""
    store = make_store(spec)
    store.bind(origin)
    assert store.acquire(lease, 5) is not None
    held.set()
    time.sleep(60)


def revoked_slowly(
    url: str, user: str, password: str, spec: tuple[Any, ...], login_timeout: float,
    ready: Any, go: Any, out: Any,
) -> None:  # fmt: skip
    """As :func:`revoked`, with a ``login_timeout`` the server's ``/auth`` nearly uses up."""
    auth = TaniumSessionAuth.from_credentials(
        url, user, password, store=make_store(spec), revalidate_after=30,
        login_timeout=login_timeout,
    )  # fmt: skip
    ready.wait()
    go.wait()
    out.put(_threads(url, auth, 4, 2))


def rounds(
    url: str, user: str, password: str, spec: tuple[Any, ...], skew: float, window: float,
    count: int, gate: Any, out: Any,
) -> None:  # fmt: skip
    """A member whose wall clock is ``skew`` seconds off: ``count`` rounds of requests,
    each begun and ended with the whole fleet (and the test) at ``gate``; between rounds
    the session goes stale, and the test may revoke it."""
    if skew:
        real = time.time
        time.time = lambda: real() + skew  # type: ignore[assignment]
    auth = TaniumSessionAuth.from_credentials(
        url, user, password, store=make_store(spec), revalidate_after=window
    )
    statuses: list[int] = []
    gate.wait()  # every member has its session
    for _ in range(count):
        time.sleep(window + 0.1)  # stale again
        gate.wait()
        statuses += _threads(url, auth, 4, 1)
        gate.wait()
    out.put(statuses)
