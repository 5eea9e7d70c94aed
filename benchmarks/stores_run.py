"""Benchmarks for session stores: a fleet of processes, with and without a store.

    python benchmarks/stores_run.py            # the full table (about a minute)
    python benchmarks/stores_run.py --quick

Needs ``redis-server`` on PATH for the RedisStore rows (``apt-get install
redis-server``); it is started on a free loopback port and stopped by PID.
Nothing is asserted: a table is printed.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import requests
from requests.auth import HTTPBasicAuth
from run import print_table  # type: ignore[import-not-found]

from requests_tanium_session import FileStore, RedisStore, SessionStore, TaniumSessionAuth
from requests_tanium_session.stores import Fleet
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

URL_PATH = "/api/v2/sensors"
SPAWN = multiprocessing.get_context("spawn")


def make_store(spec: Optional[tuple[Any, ...]]) -> Optional[SessionStore]:
    if spec is None:
        return None
    if spec[0] == "file":
        return FileStore(spec[1])
    import redis

    return RedisStore(redis.Redis(host="127.0.0.1", port=spec[1]), key=spec[2])


def worker(
    url: str, spec: Optional[tuple[Any, ...]], rounds: int, window: float, gate: Any
) -> None:
    """Every round: wait for the fleet, a burst from 8 threads, then idle past the window."""
    auth = TaniumSessionAuth.from_credentials(
        url, DEFAULT_USER[0], DEFAULT_USER[1], store=make_store(spec), revalidate_after=window
    )
    sessions = [requests.Session() for _ in range(8)]
    for s in sessions:
        s.trust_env = False
        s.auth = auth
    for _ in range(rounds):
        gate.wait()
        threads = [threading.Thread(target=s.get, args=(url + URL_PATH,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(window + 0.05)
    gate.wait()


def fleet(
    spec: Optional[tuple[Any, ...]], rounds: int, deaths_every: int
) -> tuple[int, int, int, int]:
    """(validations, logins, stale events, deaths) for 4 processes x 8 threads."""
    with TaniumServer(record=0) as server:
        gate = SPAWN.Barrier(5)
        procs = [
            SPAWN.Process(target=worker, args=(server.url, spec, rounds, 0.2, gate))
            for _ in range(4)
        ]
        for p in procs:
            p.start()
        deaths = 0
        gate.wait()  # every worker logged in
        server.reset_counts()
        for r in range(1, rounds):
            if r % deaths_every == 0:
                server.revoke_user()
                deaths += 1
            gate.wait()
        gate.wait()
        for p in procs:
            p.join(30)
        events = rounds - 1  # every round after the first begins stale or dead
        return server.auth_calls["validate"], server.auth_calls["login"], events, deaths


def stale_check_us(store: SessionStore, reps: int) -> tuple[float, float]:
    """What a stale check adds through ``store``, in microseconds, without the /auth call:
    a read that finds a fresh record, and a lock + read + publish cycle."""
    fleet = Fleet(store, "http://127.0.0.1:1", lease=5, ttl=300)
    fleet.publish("25-1659-" + "2f54" * 32, None)
    reads, cycles = [], []
    for _ in range(reps):
        start = time.perf_counter()
        record = fleet.read()
        reads.append((time.perf_counter() - start) * 1e6)
        assert record is not None
        start = time.perf_counter()
        handle = fleet.acquire()
        fleet.publish(record.token, fleet.read())
        fleet.release(handle)
        cycles.append((time.perf_counter() - start) * 1e6)
    return statistics.median(reads), statistics.median(cycles)


def hot_path_with_store(spec: tuple[Any, ...], n: int, reps: int) -> tuple[float, float]:
    token = "25-1659-" + "2f54" * 32
    ours = TaniumSessionAuth("https://tanium.example.com", token, revalidate_after=3600,
                             store=make_store(spec))  # fmt: skip
    basic = HTTPBasicAuth("tanium-user", "tanium-password")
    template = requests.Request("GET", "https://tanium.example.com" + URL_PATH).prepare()
    out: dict[str, list[float]] = {"ours": [], "basic": []}
    for _ in range(reps * 5):
        for name, fn in (("ours", ours), ("basic", basic)):
            batch = [template.copy() for _ in range(n)]
            for r in batch:
                r.hooks = {"response": []}
            start = time.perf_counter()
            for r in batch:
                fn(r)
            out[name].append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(out["ours"]), statistics.median(out["basic"])


class Redis:
    def __init__(self, directory: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        exe = shutil.which("redis-server")
        assert exe, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", directory,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        for _ in range(500):
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.01)

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    q = parser.parse_args().quick
    rounds = 9 if q else 25
    rows: list[tuple[str, str, str, str, str]] = []

    def row(figure: str, baseline: str, ours: str, goal: str, ok: bool) -> None:
        rows.append((figure, baseline, ours, goal, "yes" if ok else "NO"))
        print(f"  measured: {figure}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        redis_server = Redis(tmp) if shutil.which("redis-server") else None
        specs: list[tuple[str, tuple[Any, ...]]] = [
            ("FileStore", ("file", str(Path(tmp) / "s.json")))
        ]
        if redis_server is not None:
            specs.append(("RedisStore", ("redis", redis_server.port, "bench:fleet")))
        try:
            v0, l0, events, deaths = fleet(None, rounds, 4)
            for name, spec in specs:
                v, logins, events, deaths = fleet(spec, rounds, 4)
                row(
                    f"/auth validations, 4 processes x 8 threads, {events} stale or dead "
                    f"rounds ({name})",
                    f"no store {v0}",
                    f"{v}",
                    f"goal {events} (1 per round)",
                    v <= events,
                )
                row(
                    f"logins, {deaths} revocations ({name})",
                    f"no store {l0}",
                    f"{logins}",
                    f"goal {deaths} (1 per death)",
                    logins <= deaths,
                )
            for name, spec in specs:
                ours, basic = hot_path_with_store(spec, 2000 if q else 10000, 3 if q else 7)
                row(
                    f"`__call__` on a fresh token with a {name} (µs)",
                    f"HTTPBasicAuth {basic:.2f}",
                    f"{ours:.2f}",
                    f"{ours / basic:.2f}x (goal ≤ 0.6x: the store is not touched)",
                    ours / basic <= 0.6,
                )
                adopt, full = stale_check_us(make_store(spec), 200 if q else 1000)  # type: ignore[arg-type]
                row(
                    f"stale check through a {name} (µs)",
                    "—",
                    f"{adopt:.0f} read of a fresh record; {full:.0f} lock + read + publish",
                    "goal < 1000 µs" if name == "FileStore" else "goal: 1 round trip (+ lock)",
                    adopt < 1000,
                )
        finally:
            if redis_server is not None:
                redis_server.stop()
    print(
        f"\n{datetime.date.today()} · Python {platform.python_version()} · "
        f"{os.cpu_count()} CPUs · command: python benchmarks/stores_run.py{' --quick' if q else ''}\n"
    )
    print_table(("figure", "baseline (same run)", "ours", "goal", "met"), rows)


if __name__ == "__main__":
    main()
