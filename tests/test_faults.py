"""Under load and faults: async bursts, cancelled leaders, many event loops, and stores
that freeze, stop or black-hole, counted by the local server (issue 17).

Real components only: the local Tanium server, worker processes, a real
``redis-server`` frozen with SIGSTOP and stopped by PID, a loopback TCP proxy that
swallows Redis traffic, and a lock holder stopped with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import redis
import requests

from requests_tanium_session import RedisStore, TaniumSessionAuth
from requests_tanium_session.aiohttp import TaniumMiddleware
from requests_tanium_session.httpx import TaniumAuth
from requests_tanium_session.testing import DEFAULT_USER, Fault, TaniumServer

from . import fleet_worker
from .conftest import RedisServer
from .harness import FRONTS, Front, statuses
from .test_stores import SPAWN

USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]
SENSORS = "/api/v2/sensors"
STORES_LOG = "requests_tanium_session.stores"


def _outage_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == STORES_LOG and r.levelno == logging.WARNING and "unavailable" in r.message
    )


# -- async: many tasks, one validation --------------------------------------------------


async def _burst(auth: Any, url: str, n: int, limit: int | None) -> list[Any]:
    """``n`` GETs released together through one async client of ``auth``'s kind."""
    gate = asyncio.Event()
    started = 0

    async def wait_all() -> None:
        nonlocal started
        started += 1
        if started == n:
            gate.set()
        await gate.wait()

    if isinstance(auth, TaniumMiddleware):
        connector = aiohttp.TCPConnector(limit=limit or 100)
        async with auth.client_session(connector=connector) as session:

            async def one_aiohttp() -> Any:
                await wait_all()
                try:
                    async with session.get(url) as response:
                        await response.read()
                        return response.status
                except Exception as exc:
                    return type(exc).__name__

            return list(await asyncio.gather(*(one_aiohttp() for _ in range(n))))
    limits = httpx.Limits(max_connections=limit) if limit else httpx.Limits()
    # httpcore hands out pooled connections in time quadratic in the queue: hundreds of
    # queued tasks wait seconds for a connection whatever the auth (a naive one too).
    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=60) as client:

        async def one_httpx() -> Any:
            await wait_all()
            try:
                return (await client.get(url)).status_code
            except Exception as exc:
                return type(exc).__name__

        return list(await asyncio.gather(*(one_httpx() for _ in range(n))))


ASYNC_FRONTS = ["httpx-async", "aiohttp"]


@pytest.fixture(params=FRONTS, ids=repr)
def any_front(request: pytest.FixtureRequest) -> Front:
    """Every front-end of the contract suite."""
    return request.param  # type: ignore[no-any-return]


def _from_credentials(kind: str, url: str, **kwargs: Any) -> Any:
    if kind == "aiohttp":
        return asyncio.run(TaniumMiddleware.from_credentials(url, USER, PASSWORD, **kwargs))
    return TaniumAuth.from_credentials(url, USER, PASSWORD, **kwargs)


@pytest.mark.parametrize("kind", ASYNC_FRONTS)
@pytest.mark.parametrize("tasks,limit", [(150, None), (500, 10)])
def test_more_401s_than_connections_one_validation_one_login(
    server: TaniumServer, kind: str, tasks: int, limit: int | None
) -> None:
    """Scenario 1: a waiting task holds no connection, so the leader's calls go through."""
    auth = _from_credentials(kind, server.url, revalidate_after=60)
    server.revoke_user()
    server.reset_counts()
    outcomes = asyncio.run(_burst(auth, server.url + SENSORS, tasks, limit))
    failed = [o for o in outcomes if o != 200]
    assert (len(failed), failed[:3]) == (0, [])
    assert server.auth_calls["validate"] == 1
    assert server.auth_calls["login"] == 1


async def _get(client: Any, url: str) -> int:
    """One GET through ``client`` (an ``httpx.AsyncClient`` or aiohttp session)."""
    if isinstance(client, httpx.AsyncClient):
        return (await client.get(url)).status_code
    async with client.get(url) as response:
        await response.read()
        return int(response.status)


def _async_client(auth: Any) -> Any:
    """One client for every task of a test: a client per task builds an SSL context
    each, blocking the loop for seconds on a busy machine."""
    if isinstance(auth, TaniumMiddleware):
        return auth.client_session()
    return httpx.AsyncClient(auth=auth)


async def _until(check: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "the server never saw the expected calls"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("kind", ASYNC_FRONTS)
def test_a_cancelled_login_leader_hands_the_flight_over(server: TaniumServer, kind: str) -> None:
    """Scenario 2: cancelling the task that leads the login fails none of its waiters."""
    auth = _from_credentials(kind, server.url, revalidate_after=60)
    server.revoke_user()
    server.reset_counts()
    url = server.url + SENSORS
    # The leader's validation and login each take two seconds at the server.
    slow = server.inject("/auth", Fault(delay=2.0, passthrough=True, count=2))

    async def main() -> tuple[list[Any], bool]:
        async with _async_client(auth) as client:
            leader = asyncio.ensure_future(_get(client, url))
            await _until(lambda: slow.count == 0)  # the server holds its login now
            waiters = [asyncio.ensure_future(_get(client, url)) for _ in range(50)]
            # The session is known dead: the waiters wait for the login before sending.
            await asyncio.sleep(0.3)
            assert slow.count == 0 and server.auth_calls["login"] == 0  # still held there
            leader.cancel()
            outcomes = await asyncio.gather(*waiters, return_exceptions=True)
            try:
                await leader
            except asyncio.CancelledError:
                return list(outcomes), True
            return list(outcomes), False

    outcomes, cancelled = asyncio.run(main())
    assert cancelled
    assert [o for o in outcomes if o != 200] == []
    assert server.auth_calls["validate"] == 1  # the waiters did not validate again
    # One login for all fifty waiters (the cancelled one is still held by the server).
    assert server.auth_calls["login"] == 1


@pytest.mark.parametrize("kind", ASYNC_FRONTS)
def test_one_auth_serves_event_loops_in_many_threads(server: TaniumServer, kind: str) -> None:
    """Scenario 3: one auth, one loop per worker thread, one validation per stale window
    for all of them."""
    window = 0.5
    if kind == "aiohttp":
        auth: Any = TaniumMiddleware(server.url, server.new_session(), revalidate_after=window)
    else:
        auth = TaniumAuth(server.url, server.new_session(), revalidate_after=window)
    gate = threading.Barrier(2)
    results: list[list[Any]] = []

    def worker() -> None:
        async def main() -> list[Any]:
            return await _burst(auth, server.url + SENSORS, 100, None)

        gate.wait()
        results.append(asyncio.run(main()))

    time.sleep(window + 0.05)  # stale for both loops at once
    server.reset_counts()
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2
    assert [o for r in results for o in r if o != 200] == []
    assert server.auth_calls["validate"] == 1


def test_sync_threads_and_async_tasks_share_one_validation(server: TaniumServer) -> None:
    """A thread (httpx.Client) and tasks (AsyncClient) that find it stale together: one
    flight registry, one validation."""
    server.inject("/auth", Fault(delay=0.3, passthrough=True))
    auth = TaniumAuth(server.url, server.new_session(), revalidate_after=0)
    server.reset_counts()
    out: list[int] = []

    def sync_side() -> None:
        with httpx.Client(auth=auth) as client:
            out.append(client.get(server.url + SENSORS).status_code)

    t = threading.Thread(target=sync_side)
    t.start()
    time.sleep(0.1)  # the thread leads; the tasks join its flight
    codes = asyncio.run(_burst(auth, server.url + SENSORS, 20, None))
    t.join(10)
    assert out + codes == [200] * 21
    assert server.auth_calls["validate"] == 1


# -- the fleet: a stopped lock holder ------------------------------------------------


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fleet"
    d.mkdir(mode=0o700)
    return d


def test_a_stopped_lock_holder_fails_no_request(server: TaniumServer, private_dir: Path) -> None:
    """Scenario 4: the fleet lock's holder is stopped (SIGSTOP); 4 processes go on
    without the lock after a bounded wait, each with one /auth call at the most."""
    spec = ("file", str(private_dir / "session.json"))
    origin = f"http://127.0.0.1:{server.port}"
    held = SPAWN.Event()
    holder = SPAWN.Process(target=fleet_worker.hold_lock, args=(spec, origin, 60.0, held))
    holder.start()
    try:
        assert held.wait(30)
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGSTOP)
        session = server.new_session()
        start, out = SPAWN.Barrier(5), SPAWN.Queue()
        procs = [
            SPAWN.Process(
                target=fleet_worker.timed_burst,
                args=(server.url, session, spec, 0.5, start, out, 1.0),
            )
            for _ in range(4)
        ]
        for p in procs:
            p.start()
        server.reset_counts()
        start.wait()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
    finally:
        if holder.pid is not None:
            os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.join(10)
    statuses = [s for r in results for s in r["statuses"]]
    assert statuses == [200] * 32
    assert server.auth_calls["validate"] <= 4  # one per process at the most
    # Nobody waited for the stopped holder longer than the flight allows.
    assert max(r["longest"] for r in results) < 1.0 + 1 + 1.0 + 4 * 0.25 + 1.0


# -- the fleet: Redis frozen, stopped, black-holed -----------------------------------


class Blackhole:
    """A loopback TCP proxy that accepts connections and swallows what they send."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)  # never read, never answered

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


def _sessions(auth: TaniumSessionAuth, url: str, n: int) -> tuple[list[Any], float]:
    """``n`` GETs in a row; their statuses (or error names) and the longest, in seconds."""
    out: list[Any] = []
    longest = 0.0
    with requests.Session() as s:
        s.trust_env = False
        s.auth = auth
        for _ in range(n):
            start = time.monotonic()
            try:
                out.append(s.get(url, timeout=30).status_code)
            except Exception as exc:
                out.append(type(exc).__name__)
            longest = max(longest, time.monotonic() - start)
    return out, longest


@pytest.mark.parametrize("fault", ["frozen", "stopped", "blackholed", "tls-to-plain"])
def test_redis_outage_fails_no_request(
    server: TaniumServer,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    any_front: Front,
    fault: str,
) -> None:
    """Scenario 5, through every front-end: whatever happens to Redis, every request is
    answered 200 within the flight's deadline, with one WARNING for the outage and the
    store's health readable on the auth."""
    login_timeout = 0.5
    hole = None
    if fault == "blackholed":
        hole = Blackhole()
        client = redis.Redis(host="127.0.0.1", port=hole.port)
    elif fault == "tls-to-plain":
        client = redis.Redis.from_url(f"rediss://127.0.0.1:{redis_server.port}/0")
    else:
        client = redis_server.client()
    store = RedisStore(client, key="tanium-test:outage")
    store.backoff = 0.3
    front = any_front
    auth = front.auth(
        server.url, server.new_session(), store=store, revalidate_after=0.1,
        login_timeout=login_timeout,
    )  # fmt: skip
    # A validation's deadline: the call and a second, the lock wait, four store steps
    # and a renewal under the lock.
    deadline = login_timeout + 1 + login_timeout + 4 * login_timeout / 4 + login_timeout
    try:
        assert redis_server.proc is not None
        if fault == "frozen":
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
        elif fault == "stopped":
            redis_server.stop()
        caplog.clear()
        outcomes: list[Any] = []
        longest = 0.0
        ends = time.monotonic() + 3 * login_timeout
        while time.monotonic() < ends:  # stale every 0.1 s for three login_timeouts
            time.sleep(0.11)
            began = time.monotonic()
            outcomes += statuses(front.get(auth, server.url + SENSORS, n=4))
            longest = max(longest, time.monotonic() - began)
    finally:
        if hole is not None:
            hole.close()
    assert [o for o in outcomes if o != 200] == []
    assert longest <= deadline
    assert _outage_warnings(caplog) == 1
    health = auth.store_health
    assert health is not None and not health.ok
    assert health.last_error is not None and health.degraded_since is not None


def test_a_frozen_redis_is_skipped_then_back(
    server: TaniumServer, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The breaker: an outage costs one slow check, not one per stale window; after the
    back-off one probe finds Redis back and the store is used again."""
    store = RedisStore(redis_server.client(), key="tanium-test:breaker")
    store.backoff = 2.0  # longer than the eight windows below take on a busy machine
    asked: list[float] = []
    load_at = store.load_at

    def counted() -> Any:  # the real read, counted: a skipped store is not asked at all
        asked.append(time.monotonic())
        return load_at()

    store.load_at = counted  # type: ignore[method-assign]
    auth = TaniumSessionAuth(
        server.url, server.new_session(), store=store, revalidate_after=0.05, login_timeout=1.0
    )
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    for _ in range(8):  # eight stale windows within the back-off
        time.sleep(0.06)
        got, _ = _sessions(auth, server.url + SENSORS, 1)
        assert got == [200]
    assert time.monotonic() - frozen_at < store.backoff, "the windows outlasted the back-off"
    # the first check asked the frozen store and waited for its budget; the rest skipped it
    assert len([t for t in asked if t >= frozen_at]) == 1
    health = auth.store_health
    assert health is not None and not health.ok and health.last_error == "TimeoutError"
    os.kill(redis_server.proc.pid, signal.SIGCONT)
    # the back-off counts from the failure, one read budget (0.25 s) after the freeze
    time.sleep(max(0.0, frozen_at + 0.25 + store.backoff + 0.3 - time.monotonic()))
    assert _sessions(auth, server.url + SENSORS, 3)[0] == [200] * 3
    assert auth.store_health is not None and auth.store_health.ok
    back = [r for r in caplog.records if r.name == STORES_LOG and "is back" in r.message]
    assert len(back) == 1
    assert redis_server.client().get("tanium-test:breaker") is not None  # published again
