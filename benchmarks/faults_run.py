"""Under faults: an async burst after a revocation, and a fleet with Redis frozen.

    python benchmarks/faults_run.py                # 2,000 tasks (several minutes)
    python benchmarks/faults_run.py --tasks 500    # a quicker look

1. ``--tasks`` ``httpx.AsyncClient`` tasks through the default pool (100 connections)
   right after the user's sessions were revoked: failed requests (goal 0), /auth
   validations and logins (goal 1 and 1), and wall time as a ratio to a naive
   ``httpx.Auth`` (log in again on any 401/403, no single flight) in the same run.
2. Four worker processes sharing a ``RedisStore`` while ``redis-server`` is frozen with
   SIGSTOP for 3 x ``login_timeout``: failed requests (goal 0) and the longest request
   (goal <= the flight deadline).
3. Work no caller owns (issue 27): 200 aiohttp callers under ``asyncio.wait_for(0.3)``
   while ``/auth`` takes 1 s (``/auth`` calls, goal <= 2; callers after the first
   1.2 s served); a 503 with ``Retry-After: 5`` for 6 s (``/auth`` attempts per auth,
   and per fleet of three auths sharing a store, against a validation per stale check
   without the memory); a child forked while the parent validates (its first request,
   goal < ``login_timeout``); the SOAP judge on 1 MiB (against the old regex's scan on
   64 KiB).

The Tanium server runs in a process of its own (it would share this one's GIL) and is
driven over a pipe. Nothing is asserted: a table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import multiprocessing
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import requests
from run import print_table  # type: ignore[import-not-found]
from stores_run import Redis  # type: ignore[import-not-found]

from requests_tanium_session import MemoryStore, RedisStore, TaniumSessionAuth
from requests_tanium_session._face import core_of
from requests_tanium_session.aiohttp import TaniumMiddleware
from requests_tanium_session.httpx import TaniumAuth
from requests_tanium_session.protocol import judge_soap
from requests_tanium_session.testing import DEFAULT_USER, Fault, TaniumServer

URL_PATH = "/api/v2/sensors"
SPAWN = multiprocessing.get_context("spawn")
USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]


def serve(conn: Any) -> None:
    """The local Tanium server in this (child) process, answering commands on ``conn``."""
    with TaniumServer(record=0) as server:
        conn.send(server.url)
        while True:
            command = conn.recv()
            if command == "stop":
                return
            if command == "revoke":
                server.revoke_user()
                server.reset_counts()
                conn.send(None)
            elif command == "counts":
                conn.send((dict(server.auth_calls), server.count(URL_PATH)))
            elif command == "session":
                conn.send(server.new_session())


class Server:
    def __init__(self) -> None:
        self.conn, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=serve, args=(child,), daemon=True)
        self.proc.start()
        self.url: str = self.conn.recv()

    def ask(self, command: str) -> Any:
        self.conn.send(command)
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send("stop")
        self.proc.join(10)


class NaiveAuth(httpx.Auth):
    """What users write by hand: on a 401/403, log in again and resend (no single flight)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.headers = {
            "username": base64.b64encode(USER.encode()).decode(),
            "password": base64.b64encode(PASSWORD.encode()).decode(),
        }
        self.token = httpx.post(url + "/auth", headers=self.headers).text

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["session"] = self.token
        response = yield request
        if response.status_code in (401, 403):
            await response.aread()
            login = yield httpx.Request("POST", self.url + "/auth", headers=self.headers)
            self.token = (await login.aread()).decode()
            request.headers["session"] = self.token
            yield request


async def burst(auth: httpx.Auth, url: str, tasks: int) -> tuple[int, float]:
    """(failed requests, wall seconds) of ``tasks`` GETs through the default pool."""
    # No client timeout: httpcore hands out pooled connections in time quadratic in the
    # queue, which would fail both auths alike; the figure here is the auth's.
    async with httpx.AsyncClient(auth=auth, timeout=None) as client:

        async def one() -> bool:
            try:
                return (await client.get(url + URL_PATH)).status_code == 200
            except httpx.HTTPError:
                return False

        start = time.perf_counter()
        ok = await asyncio.gather(*(one() for _ in range(tasks)))
        return ok.count(False), time.perf_counter() - start


def async_burst(tasks: int) -> list[tuple[str, str, str, str, str]]:
    server = Server()
    try:
        naive = NaiveAuth(server.url)
        server.ask("revoke")
        naive_failed, naive_time = asyncio.run(burst(naive, server.url, tasks))
        naive_calls, _ = server.ask("counts")
        ours = TaniumAuth.from_credentials(server.url, USER, PASSWORD, revalidate_after=60)
        server.ask("revoke")
        failed, took = asyncio.run(burst(ours, server.url, tasks))
        calls, _ = server.ask("counts")
    finally:
        server.stop()
    ratio = took / naive_time
    return [
        (f"failed requests, {tasks} AsyncClient tasks after a revocation", f"naive {naive_failed}",
         f"{failed}", "goal 0", "yes" if failed == 0 else "NO"),
        ("/auth validations, logins", f"naive {naive_calls.get('validate', 0)}, "
         f"{naive_calls.get('login', 0)}", f"{calls.get('validate', 0)}, {calls.get('login', 0)}",
         "goal 1, 1", "yes" if (calls.get("validate"), calls.get("login")) == (1, 1) else "NO"),
        ("wall time (s)", f"naive {naive_time:.2f}", f"{took:.2f}",
         f"{ratio:.2f}x (goal <= 1.0x)", "yes" if ratio <= 1.0 else "NO"),
    ]  # fmt: skip


def fleet_worker(url: str, session: str, port: int, login_timeout: float, until: float,
                 out: Any) -> None:  # fmt: skip
    """8 threads send bursts until ``until`` (wall clock), idle past the 0.1 s window
    between bursts, so every burst begins with a stale check through the store."""
    import redis

    store = RedisStore(redis.Redis(host="127.0.0.1", port=port), key="bench:frozen")
    auth = TaniumSessionAuth(url, session, store=store, revalidate_after=0.1,
                             login_timeout=login_timeout)  # fmt: skip
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    gate = threading.Barrier(8)
    rounds = int((until - time.time()) / 0.15)

    def work() -> None:
        with requests.Session() as s:
            s.trust_env = False
            s.auth = auth
            for _ in range(rounds):
                gate.wait()
                start = time.monotonic()
                try:
                    ok = s.get(url + URL_PATH, timeout=60).status_code == 200
                except requests.RequestException:
                    ok = False
                with lock:
                    results.append((int(not ok), time.monotonic() - start))
                time.sleep(0.12)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(f for f, _ in results), max(d for _, d in results), len(results),
             core_of(auth).policy.validate_wait))  # fmt: skip


def frozen_redis(login_timeout: float) -> list[tuple[str, str, str, str, str]]:
    server = Server()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        redis_server = Redis(tmp)
        try:
            session = server.ask("session")
            frozen_for = 3 * login_timeout
            until = time.time() + 1 + frozen_for + 2
            out = SPAWN.Queue()
            procs = [
                SPAWN.Process(target=fleet_worker, args=(server.url, session, redis_server.port,
                                                         login_timeout, until, out))
                for _ in range(4)
            ]  # fmt: skip
            for p in procs:
                p.start()
            time.sleep(1)
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
            time.sleep(frozen_for)
            os.kill(redis_server.proc.pid, signal.SIGCONT)
            results = [out.get(timeout=120) for _ in procs]
            for p in procs:
                p.join(30)
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
            redis_server.stop()
            server.stop()
    failed = sum(r[0] for r in results)
    longest = max(r[1] for r in results)
    total = sum(r[2] for r in results)
    deadline = results[0][3]
    return [
        (f"failed requests, 4 processes x 8 threads, Redis frozen {frozen_for:g} s",
         f"{total} requests", f"{failed}", "goal 0", "yes" if failed == 0 else "NO"),
        ("longest request (s)", f"flight deadline {deadline:g}", f"{longest:.2f}",
         f"goal <= {deadline:g}", "yes" if longest <= deadline else "NO"),
    ]  # fmt: skip


Row = tuple[str, str, str, str, str]


def short_deadlines() -> list[Row]:
    """200 aiohttp callers under wait_for(0.3) while /auth takes 1 s."""
    with TaniumServer() as server:
        auth = TaniumMiddleware(server.url, server.new_session(), revalidate_after=3)
        time.sleep(3.05)
        server.inject("/auth", Fault(delay=1.0, passthrough=True, count=None))

        async def main() -> list[tuple[float, Any]]:
            async with auth.client_session() as session:

                async def get() -> int:
                    async with session.get(URL_PATH) as r:
                        return int(r.status)

                async def caller(at: float) -> tuple[float, Any]:
                    await asyncio.sleep(at)
                    try:
                        return at, await asyncio.wait_for(get(), 0.3)
                    except asyncio.TimeoutError:
                        return at, "timeout"

                return list(await asyncio.gather(*(caller(i * 0.0075) for i in range(200))))

        outcomes = asyncio.run(main())
        calls = server.auth_calls["validate"]
    late = [r for at, r in outcomes if at > 1.2]
    served = sum(1 for r in late if r == 200)
    return [
        ("/auth calls, 200 callers under wait_for(0.3), /auth 1 s", "before: 194-200 (issue 27)",
         f"{calls}", "goal <= 2", "yes" if calls <= 2 else "NO"),
        ("callers after the first 1.2 s served", "before: 0", f"{served}/{len(late)}",
         "goal all", "yes" if served == len(late) else "NO"),
    ]  # fmt: skip


def _busy_round(auths: list[Any], server: TaniumServer, seconds: float) -> None:
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        for auth in auths:
            with requests.Session() as s:
                s.trust_env = False
                s.auth = auth
                s.get(server.url + URL_PATH, timeout=10)
        time.sleep(0.05)


def busy_auth() -> list[Row]:
    """A 503 with Retry-After: 5 for 6 s: /auth attempts per auth and per fleet."""
    rows: list[Row] = []
    for label, store in (("one auth", None), ("a fleet of 3 auths sharing a store", MemoryStore())):
        with TaniumServer() as server:
            n = 1 if store is None else 3
            auths = [TaniumSessionAuth(server.url, server.new_session(), revalidate_after=0,
                                       store=store) for _ in range(n)]  # fmt: skip
            server.inject("/auth", Fault(status=503, headers={"Retry-After": "5"}, count=None))
            _busy_round(auths, server, 6)
            attempts = sum(a.stats.validations for a in auths)
            requests_sent = server.count(URL_PATH)
        rows.append((f"/auth attempts, 503 Retry-After 5 for 6 s, {label}",
                     f"a validation per stale check: {requests_sent}", f"{attempts}",
                     "goal <= 2 per auth", "yes" if attempts <= 2 * n else "NO"))  # fmt: skip
    return rows


def forked_child() -> list[Row]:
    """A child forked while its parent validates: its first request."""
    import warnings

    with TaniumServer() as server:
        auth = TaniumSessionAuth(server.url, server.new_session(), revalidate_after=0,
                                 login_timeout=2)  # fmt: skip
        server.inject("/auth", Fault(delay=1.0, passthrough=True))
        parent = threading.Thread(target=lambda: requests.get(server.url + URL_PATH, auth=auth))
        parent.start()
        time.sleep(0.3)
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            began = time.monotonic()
            try:
                ok = requests.get(server.url + URL_PATH, auth=auth, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            os.write(write, f"{int(ok)} {time.monotonic() - began:.3f}".encode())
            os._exit(0)
        os.waitpid(pid, 0)
        ok, took = os.read(read, 64).decode().split()
        parent.join(10)
    good = ok == "1" and float(took) < 2
    return [("a child forked during a validation: its first request (s)",
             "before: ReadTimeout after the parent's deadline", took,
             "goal < login_timeout (2 s)", "yes" if good else "NO")]  # fmt: skip


def soap_judge() -> list[Row]:
    """The SOAP judge on 1 MiB of openings that never close, against the old regex."""
    import re

    old = re.compile(rb"<command>(.*?)</command>", re.DOTALL)
    small, big = b"<command>" * (64 * 1024 // 9), b"<command>" * (1024 * 1024 // 9)
    began = time.perf_counter()
    old.search(small)
    old_took = time.perf_counter() - began
    began = time.perf_counter()
    judge_soap(big, "1-2-" + "ab" * 64)
    took = time.perf_counter() - began
    return [("SOAP judge, an answer of openings that never close (s)",
             f"old regex on 64 KiB: {old_took:.2f}", f"{took:.4f} on 1 MiB",
             "linear", "yes" if took < old_took else "NO")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks in the async burst")
    parser.add_argument("--login-timeout", type=float, default=2.0, help="for the Redis run")
    parser.add_argument("--only-27", action="store_true", help="only the issue 27 scenarios")
    args = parser.parse_args()
    rows: list[Row] = []
    for name, scenario in (
        ("short deadlines", short_deadlines),
        ("a busy /auth", busy_auth),
        ("a forked child", forked_child),
        ("the SOAP judge", soap_judge),
    ):
        rows += scenario()
        print(f"  measured: {name}", file=sys.stderr, flush=True)
    if not args.only_27:
        rows = async_burst(args.tasks) + frozen_redis(args.login_timeout) + rows
    command = "python benchmarks/faults_run.py"
    if args.tasks != 2000:
        command += f" --tasks {args.tasks}"
    print(
        f"\n{datetime.date.today()} · Python {platform.python_version()} · httpx "
        f"{httpx.__version__} · {os.cpu_count()} CPUs · command: {command}\n"
    )
    print_table(("figure", "baseline (same run)", "ours", "goal", "met"), rows)


if __name__ == "__main__":
    main()
