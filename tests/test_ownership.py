"""Work that no caller owns (issue 27): a flight's work belongs to the auth, not to the
caller that started it; a forked child starts with nothing of its parent's; every
renewal goes through one flight; a fleet's records are judged by the store's clock; a
busy ``/auth`` is left alone; a half-broken store does not flap; ``on_event`` runs
after the flight; no query string reaches an event, a log line or a message.

Counted by the local server; real ``redis-server`` processes, real forks.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import aiohttp
import httpx
import pytest
import requests

from requests_tanium_session import (
    AuthEvent,
    FileStore,
    LoginError,
    MemoryStore,
    RedisStore,
    SessionStore,
    TaniumSessionAuth,
)
from requests_tanium_session.testing import DEFAULT_USER, Fault, TaniumServer

from . import fleet_worker
from .conftest import RedisServer
from .harness import FRONTS, SENSORS, Front, statuses

USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]
SPAWN = multiprocessing.get_context("spawn")
STORES_LOG = "requests_tanium_session.stores"
ASYNC = [f for f in FRONTS if f.is_async]
SYNC = [f for f in FRONTS if not f.is_async]


# -- fork -----------------------------------------------------------------------------------


def _fork(child: Any) -> int:
    """Run ``child()`` in a forked process; its exit code (0: it returned True)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork()"
        pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        code = 1
        try:
            code = 0 if child() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _request(front: Front, auth: Any, url: str) -> bool:
    try:
        return bool(statuses(front.get(auth, url)) == [200])
    except Exception:
        return False


@pytest.mark.parametrize("front", SYNC, ids=repr)
@pytest.mark.parametrize("during", ["validation", "login"])
def test_a_child_forked_during_a_flight_validates_on_its_own(
    server: TaniumServer, front: Front, during: str
) -> None:
    if during == "login":
        auth = front.from_credentials(server.url, USER, PASSWORD, revalidate_after=0)
        server.revoke_user()
        server.inject("/auth", status=401)  # the check: dead; then the login, slow
        server.inject("/auth", Fault(delay=1.0, passthrough=True))
    else:
        auth = front.auth(server.url, server.new_session(), revalidate_after=0)
        server.inject("/auth", Fault(delay=1.0, passthrough=True))
    server.reset_counts()
    parent = threading.Thread(target=_request, args=(front, auth, server.url + SENSORS))
    parent.start()
    while not list(server.requests) and parent.is_alive():
        time.sleep(0.01)
    time.sleep(0.2)  # the parent's flight is under way: the server holds /auth
    assert _fork(lambda: _request(front, auth, server.url + SENSORS)) == 0
    parent.join(10)
    assert server.count(SENSORS, 200) == 2  # the child's request was sent, and answered
    kind = "login" if during == "login" else "validate"
    assert server.auth_calls[kind] == 2  # one flight each: the parent's and the child's


def _pooled(url: str) -> int:
    return requests.get(url + SENSORS, auth=_POOLED["auth"], timeout=10).status_code


_POOLED: dict[str, Any] = {}


def test_pool_workers_forked_during_a_validation_are_served(server: TaniumServer) -> None:
    _POOLED["auth"] = auth = TaniumSessionAuth(server.url, server.new_session(), revalidate_after=0)
    server.inject("/auth", Fault(delay=1.0, passthrough=True))
    leader = threading.Thread(target=lambda: requests.get(server.url + SENSORS, auth=auth))
    leader.start()
    time.sleep(0.3)  # the validation is under way when the workers fork
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as pool:
            codes = list(pool.map(_pooled, [server.url] * 8, timeout=30))
    leader.join(10)
    assert codes == [200] * 8
    auth.close()


# -- a cancelled caller ------------------------------------------------------------------


async def _one(front: Front, auth: Any, url: str) -> int:
    if front.aiohttp:
        async with auth.client_session() as s, s.get(url) as r:
            return int(r.status)
    async with auth.async_client(timeout=10) as c:
        return (await c.get(url)).status_code


@pytest.mark.parametrize("front", ASYNC, ids=repr)
@pytest.mark.parametrize("kind", ["memory", "file", "redis"])
def test_a_caller_cancelled_in_the_fleet_lock_wait_leaves_no_lock(
    server: TaniumServer, front: Front, kind: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    store: SessionStore
    if kind == "memory":
        store = MemoryStore()
    elif kind == "file":
        (tmp_path / "fleet").mkdir(mode=0o700)
        store = FileStore(tmp_path / "fleet" / "session.json")
    else:
        srv: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStore(srv.client(), key="tanium-test:cancel")
    auth = front.auth(server.url, server.new_session(), store=store, revalidate_after=0,
                      login_timeout=2)  # fmt: skip
    other = store.acquire(30, 1)  # another member of the fleet holds the lock
    assert other is not None

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_one(front, auth, server.url + SENSORS), 0.3)
        store.release(other)  # the holder is done; the cancelled caller's work goes on
        for _ in range(100):
            await asyncio.sleep(0.05)
            if server.auth_calls["validate"]:
                break
        await asyncio.sleep(0.3)

    asyncio.run(main())
    mine = store.acquire(30, 0.5)
    assert mine is not None, "the fleet lock was left taken"
    store.release(mine)
    assert server.auth_calls["validate"] == 1


POOL = 20


@pytest.mark.parametrize("front", ASYNC, ids=repr)
def test_callers_with_short_deadlines_share_one_auth_call(
    server: TaniumServer, front: Front
) -> None:
    auth = front.auth(server.url, server.new_session(), revalidate_after=1)
    url = server.url + SENSORS

    async def main() -> list[tuple[float, Any]]:
        # One client for every caller (a client per caller costs an SSL context each),
        # its pool of 20 filled first: a caller cancelled while connecting leaves an
        # unclosed socket in httpx 0.26; one cancelled while it waits leaves nothing.
        if front.aiohttp:
            client: Any = auth.client_session(connector=aiohttp.TCPConnector(limit=POOL))
        else:
            pool = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
            client = auth.async_client(timeout=10, limits=pool)

        async def get() -> int:
            if front.aiohttp:
                async with client.get(url) as r:
                    await r.read()
                    return int(r.status)
            return int((await client.get(url)).status_code)

        async def caller(at: float) -> tuple[float, Any]:
            await asyncio.sleep(at)
            try:
                return at, await asyncio.wait_for(get(), 0.3)
            except asyncio.TimeoutError:
                return at, "timeout"

        async with client:
            await asyncio.gather(*(get() for _ in range(POOL)))  # fresh: no /auth call
            await asyncio.sleep(1.05)  # stale; the flight lands at ~1 s, fresh past them
            server.inject("/auth", Fault(delay=1.0, passthrough=True, count=None))
            return list(await asyncio.gather(*(caller(i * 0.0075) for i in range(200))))

    outcomes = asyncio.run(main())
    assert server.auth_calls["validate"] <= 2
    late = [result for at, result in outcomes if at > 1.2]
    assert late and all(result == 200 for result in late)


# -- one renewal flight ------------------------------------------------------------------


def test_an_open_breaker_and_a_401_with_a_stale_check_log_in_once(
    server: TaniumServer, front: Front, redis_server: RedisServer
) -> None:
    store = RedisStore(redis_server.client(), key="tanium-test:breaker")
    store.backoff = 60
    auth = front.from_credentials(server.url, USER, PASSWORD, store=store, revalidate_after=30)
    redis_server.stop()  # the breaker opens at the first operation
    server.revoke_user()
    server.reset_counts()
    auth.revalidate_after = 0  # every check is stale: validations and 403s at once
    assert statuses(front.get(auth, server.url + SENSORS, n=8)) == [200] * 8
    assert server.auth_calls["login"] == 1


# -- the fleet lock covers its holder's work -------------------------------------------------


def test_a_slow_auth_costs_a_fleet_one_login_per_death(
    server: TaniumServer, redis_server: RedisServer
) -> None:
    spec = ("redis", redis_server.port, "tanium-test:slow")
    ready, go, out = SPAWN.Barrier(5), SPAWN.Event(), SPAWN.Queue()
    args = (server.url, USER, PASSWORD, spec, 1.0, ready, go, out)
    procs = [SPAWN.Process(target=fleet_worker.revoked_slowly, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    ready.wait(timeout=60)
    logins = server.auth_calls["login"]
    server.revoke_user()
    server.inject("/auth", Fault(delay=0.8, passthrough=True, count=None))  # 0.8 x login_timeout
    go.set()
    results = [out.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(10)
    assert [s for r in results for s in r] == [200] * 32
    assert server.auth_calls["login"] - logins == 1


# -- clocks ----------------------------------------------------------------------------


#: Long beside a round (16 requests): a round that outlasted the window on a busy machine
#: went stale mid-round and counted a validation the clocks did not cause (0.8 s failed
#: under the 3.9 matrix session, 1.5 s under niquests, whose urllib3 is slower to start).
WINDOW = 3.0


def _fleet_rounds(server: TaniumServer, port: int, skews: list[float]) -> tuple[int, int]:
    """Logins and validations of a 4-member fleet over 3 rounds with one death."""
    spec = ("redis", port, f"tanium-test:clock-{'-'.join(map(str, skews))}")
    gate, out = SPAWN.Barrier(5), SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=fleet_worker.rounds,
            args=(server.url, USER, PASSWORD, spec, skew, WINDOW, 3, gate, out),
        )
        for skew in skews
    ]
    for p in procs:
        p.start()
    gate.wait(timeout=60)  # every member has its session
    before = dict(server.auth_calls)
    for round_ in range(3):
        gate.wait(timeout=60)
        gate.wait(timeout=60)
        if round_ == 0:
            server.revoke_user()  # a death between the first and the second round
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert [s for r in results for s in r] == [200] * 48
    return (
        server.auth_calls["login"] - before.get("login", 0),
        server.auth_calls["validate"] - before.get("validate", 0),
    )


@pytest.mark.slow
@pytest.mark.parametrize("skews", [[30, 0, 0, 0], [600, -600, 0, 0]], ids=["30s", "10min"])
def test_a_member_whose_clock_is_off_costs_the_fleet_nothing(
    server: TaniumServer, redis_server: RedisServer, skews: list[float]
) -> None:
    baseline = _fleet_rounds(server, redis_server.port, [0, 0, 0, 0])
    skewed = _fleet_rounds(server, redis_server.port, skews)
    assert skewed[0] == baseline[0] == 1  # one login for the death
    assert skewed[1] <= baseline[1] + 1


# -- a busy /auth --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_a_busy_auth_is_left_alone_until_retry_after(
    server: TaniumServer, front: Front, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    auth = front.auth(server.url, server.new_session(), revalidate_after=0)
    busy = Fault(status=status, headers={"Retry-After": "1"}, count=None)
    server.inject("/auth", busy)
    began = time.monotonic()
    while time.monotonic() - began < 1.6:
        assert statuses(front.get(auth, server.url + SENSORS, n=4)) == [200] * 4
        time.sleep(0.1)
    server.clear_faults()
    attempts = auth.stats.validations
    assert attempts <= 3, attempts  # at t=0 and after 1 s: not one per request
    assert server.count("/auth") <= 3 * attempts  # (requests retries a 503 twice itself)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "busy" in r.message]
    assert len(warned) == 1


def test_a_busy_auth_is_left_alone_by_the_fleet(server: TaniumServer, front: Front) -> None:
    store = MemoryStore()
    session = server.new_session()
    auths = [front.auth(server.url, session, store=store, revalidate_after=0)
             for _ in range(3)]  # fmt: skip
    for auth in auths:  # the fleet's record exists: each validated (or adopted) once
        assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    before = sum(auth.stats.validations for auth in auths)
    server.inject("/auth", Fault(status=429, headers={"Retry-After": "5"}, count=None))
    began = time.monotonic()
    while time.monotonic() - began < 1.5:
        for auth in auths:
            assert statuses(front.get(auth, server.url + SENSORS, n=2)) == [200] * 2
        time.sleep(0.1)
    # one member learned it and marked the record; the others never asked
    assert sum(auth.stats.validations for auth in auths) - before == 1


# -- a half-broken store ------------------------------------------------------------------


@pytest.mark.parametrize("breakage", ["read-only", "full"])
def test_a_store_that_reads_but_refuses_writes_does_not_flap(
    server: TaniumServer, redis_server: RedisServer, breakage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    admin = redis_server.client()
    store = RedisStore(redis_server.client(), key="tanium-test:half")
    store.backoff = 0.2
    auth = TaniumSessionAuth(server.url, server.new_session(), store=store, revalidate_after=0)
    if breakage == "read-only":
        admin.replicaof("127.0.0.1", 1)  # a replica of nothing: reads work, writes refused
    else:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)  # full: writes refused, reads work
    try:
        began = time.monotonic()
        while time.monotonic() - began < 2.5:
            assert requests.get(server.url + SENSORS, auth=auth, timeout=10).status_code == 200
            time.sleep(0.05)
    finally:
        admin.replicaof("no", "one")
        admin.config_set("maxmemory", 0)
    outages = [r for r in caplog.records if r.name == STORES_LOG and r.levelno == logging.WARNING]
    backs = [r for r in caplog.records if r.name == STORES_LOG and "is back" in r.message]
    assert len(outages) == 1 and backs == []
    auth.close()


# -- events and messages -------------------------------------------------------------------


def _until(check: Callable[[], bool], limit: float) -> None:
    """Wait until ``check()`` holds, ``limit`` seconds at most."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "not within the limit"
        time.sleep(0.01)


def test_a_slow_on_event_fails_no_request(server: TaniumServer, front: Front) -> None:
    events: list[AuthEvent] = []

    def slow(event: AuthEvent) -> None:
        time.sleep(2.5)  # a webhook post
        events.append(event)

    session = server.new_session()
    auth = front.auth(
        server.url, session, refresh=server.new_session, on_event=slow, login_timeout=0.5
    )  # fmt: skip  (waiters would give up after ~3 s)
    server.revoke(session)
    assert statuses(front.get(auth, server.url + SENSORS, n=6)) == [200] * 6
    _until(lambda: len(events) >= 2, 10)  # (async: delivered on a thread of the auth)
    assert [e.kind for e in events] == ["session_died", "refreshed"]


def test_a_query_string_reaches_no_event_log_or_message(
    server: TaniumServer, front: Front, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[AuthEvent] = []
    url = server.url + SENSORS + "?password=hunter2-secret&user=admin"
    session = server.new_session()
    auth = front.auth(server.url, session, refresh=server.new_session, on_event=events.append)
    server.revoke(session)
    assert statuses(front.get(auth, url)) == [200]
    _until(lambda: len(events) >= 2, 10)
    dead = front.auth(server.url, server.new_session())
    server.revoke(dead.token or "")
    with pytest.raises(LoginError) as info:
        front.one(dead, url)
    shown = _messages(info.value) + " ".join(repr(e) for e in events)
    shown += " ".join(r.getMessage() + repr(r.__dict__) for r in caplog.records if
                      r.name.startswith("requests_tanium_session"))  # fmt: skip
    assert events and "hunter2" not in shown
    assert "/api/v2/sensors" in str(info.value)  # the path is named


def _messages(exc: BaseException) -> str:
    """What an exception says, through its whole chain: str, repr and args (the caller's
    own request and answer, which it may carry, hold the caller's own URL)."""
    texts: list[str] = []
    todo: list[Any] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        texts += [str(e), repr(e), repr(e.args)]
        todo += [e.__cause__, e.__context__]
    return " ".join(texts)


def test_a_stale_check_whose_auth_cannot_connect_sends_the_kept_session(front: Front) -> None:
    with TaniumServer() as server:
        auth = front.auth(server.url, server.new_session(), revalidate_after=0)
        server.inject("/auth", drop=True, count=None)
        assert statuses(front.get(auth, server.url + SENSORS)) == [200]
