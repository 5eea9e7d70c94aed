"""Benchmarks for the httpx front-end, against baselines of the same run.

    python benchmarks/httpx_run.py            # the full table (about two minutes)
    python benchmarks/httpx_run.py --quick    # fewer repetitions

Like ``run.py``: medians of interleaved repetitions, the local server in its own
process; nothing is asserted, a table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import platform
import statistics
import sys
import time
from collections.abc import Generator
from typing import Any

import httpx
from run import print_table, server_process  # type: ignore[import-not-found]

from requests_tanium_session.httpx import TaniumAuth
from requests_tanium_session.testing import TaniumServer

URL_PATH = "/api/v2/sensors"


class StaticHeader(httpx.Auth):
    """The baseline: the same header, set without any policy."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["session"] = self.token
        yield request


class NaiveAuth(httpx.Auth):
    """Validate through /auth whenever stale, with no single flight."""

    def __init__(self, url: str, token: str, revalidate_after: float) -> None:
        self.url, self.token, self.after = url, token, revalidate_after
        self.checked = time.monotonic()

    async def async_auth_flow(self, request: httpx.Request) -> Any:
        if time.monotonic() - self.checked >= self.after:
            resp = yield httpx.Request("POST", self.url + "/auth", headers={"session": self.token})
            await resp.aread()
            self.checked = time.monotonic()
        request.headers["session"] = self.token
        yield request


def flow_us(auths: dict[str, httpx.Auth], n: int, reps: int) -> dict[str, float]:
    """Microseconds per request of each auth's sync flow, on fresh requests, interleaved."""
    out: dict[str, list[float]] = {name: [] for name in auths}
    for _ in range(reps * 5):
        for name, auth in auths.items():
            reqs = [httpx.Request("GET", "https://tanium.example.com" + URL_PATH) for _ in range(n)]
            resps = [httpx.Response(200, request=r) for r in reqs]
            gc.disable()
            try:
                start = time.perf_counter()
                for req, resp in zip(reqs, resps):
                    flow = auth.sync_auth_flow(req)
                    next(flow)
                    with contextlib.suppress(StopIteration):
                        flow.send(resp)
                out[name].append((time.perf_counter() - start) / n * 1e6)
            finally:
                gc.enable()
    return {name: statistics.median(v) for name, v in out.items()}


def sync_throughput(url: str, token: str, total: int, reps: int) -> tuple[float, float, float]:
    """Requests/s of ours and of a static header, alternating request by request."""
    ours = TaniumAuth(url, token)
    clients = {
        "ours": httpx.Client(auth=ours, base_url=url),
        "static": httpx.Client(auth=StaticHeader(token), base_url=url),
    }
    ratios, rates = [], []
    for _ in range(reps):
        spent = dict.fromkeys(clients, 0.0)
        for c in clients.values():
            c.get(URL_PATH)
        for k in range(total // reps):
            order = list(clients.items()) if k % 2 == 0 else list(clients.items())[::-1]
            for name, c in order:
                start = time.perf_counter()
                c.get(URL_PATH)
                spent[name] += time.perf_counter() - start
        n = total // reps
        rates.append((n / spent["ours"], n / spent["static"]))
        ratios.append(spent["static"] / spent["ours"])
    for c in clients.values():
        c.close()
    return (
        statistics.median(o for o, _ in rates),
        statistics.median(s for _, s in rates),
        statistics.median(ratios),
    )


async def async_throughput(
    url: str, token: str, tasks: int, per_task: int, reps: int
) -> tuple[float, float, float]:
    """Requests/s with ``tasks`` concurrent tasks; each alternates ours and static."""
    ours = TaniumAuth(url, token)
    limits = httpx.Limits(max_connections=tasks)
    clients = {
        "ours": httpx.AsyncClient(auth=ours, base_url=url, limits=limits),
        "static": httpx.AsyncClient(auth=StaticHeader(token), base_url=url, limits=limits),
    }
    ratios, rates = [], []
    for _ in range(reps):
        spent = dict.fromkeys(clients, 0.0)

        async def one(i: int, spent: dict[str, float] = spent) -> None:
            items = list(clients.items())
            for k in range(per_task):
                for name, c in items if (k + i) % 2 == 0 else items[::-1]:
                    start = time.perf_counter()
                    await c.get(URL_PATH)
                    spent[name] += time.perf_counter() - start

        await asyncio.gather(*(one(i) for i in range(tasks)))
        n = tasks * per_task
        rates.append((tasks * n / spent["ours"], tasks * n / spent["static"]))
        ratios.append(spent["static"] / spent["ours"])
    for c in clients.values():
        await c.aclose()
    return (
        statistics.median(o for o, _ in rates),
        statistics.median(s for _, s in rates),
        statistics.median(ratios),
    )


async def stale_tasks(tasks: int = 500) -> tuple[int, int]:
    counts = []
    for make in ("ours", "naive"):
        with TaniumServer(record=0) as server:
            token = server.new_session()
            server.inject("/auth", delay=0.05, passthrough=True, count=None)
            auth: httpx.Auth = (
                TaniumAuth(server.url, token, revalidate_after=0.01)
                if make == "ours"
                else NaiveAuth(server.url, token, 0.01)
            )
            await asyncio.sleep(0.02)
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(auth=auth, base_url=server.url, limits=limits) as c:
                ready = asyncio.Event()
                started = 0

                async def one(c: httpx.AsyncClient = c, ready: asyncio.Event = ready) -> None:
                    nonlocal started
                    started += 1
                    if started == tasks:
                        ready.set()
                    await ready.wait()
                    await c.get(URL_PATH)

                await asyncio.gather(*(one() for _ in range(tasks)))
            counts.append(server.count("/auth"))
    return counts[0], counts[1]


def continuous(requests_n: int, window: float) -> tuple[int, float]:
    with TaniumServer(record=0) as server:
        auth = TaniumAuth(server.url, server.new_session(), revalidate_after=window)
        with auth.client() as c:
            c.get(URL_PATH)
            server.reset_counts()
            start = time.perf_counter()
            for _ in range(requests_n):
                c.get(URL_PATH)
            elapsed = time.perf_counter() - start
        return server.count("/auth"), elapsed / window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    q = parser.parse_args().quick
    reps = 3 if q else 7
    rows: list[tuple[str, str, str, str, str]] = []

    def row(figure: str, baseline: str, ours: str, ratio: str, ok: bool) -> None:
        rows.append((figure, baseline, ours, ratio, "yes" if ok else "NO"))
        print(f"  measured: {figure}", file=sys.stderr, flush=True)

    token = "25-1659-" + "2f54" * 32
    f = flow_us(
        {
            "ours": TaniumAuth("https://tanium.example.com", token, revalidate_after=3600),
            "basic": httpx.BasicAuth("tanium-user", "tanium-password"),
            "static": StaticHeader(token),
        },
        1000 if q else 4000,
        reps,
    )
    r = f["ours"] / f["basic"]
    row(
        "flow per request, fresh token (µs)",
        f"httpx.BasicAuth {f['basic']:.2f}; static header {f['static']:.2f}",
        f"{f['ours']:.2f}",
        f"{r:.2f}x Basic (goal ≤ 1.0x)",
        r <= 1.0,
    )
    with server_process() as (url, session):
        ours, static, r = sync_throughput(url, session, 1000 if q else 6000, reps)
        row(
            "requests/s, httpx.Client keep-alive",
            f"static header {static:.0f}",
            f"{ours:.0f}",
            f"{r:.3f}x, median of {reps} runs (goal ≥ 0.97x)",
            r >= 0.97,
        )
        ours, static, r = asyncio.run(async_throughput(url, session, 50, 10 if q else 40, reps))
        row(
            "requests/s, httpx.AsyncClient, 50 tasks",
            f"static header {static:.0f}",
            f"{ours:.0f}",
            f"{r:.3f}x, median of {reps} runs (goal ≥ 0.97x)",
            r >= 0.97,
        )
    ours_calls, naive_calls = asyncio.run(stale_tasks(500))
    row("/auth calls, 500 tasks find it stale", f"naive {naive_calls}", f"{ours_calls}",
        "goal 1", ours_calls == 1)  # fmt: skip
    calls, windows = continuous(2000 if q else 8000, 0.05)
    row(
        f"/auth calls, continuous traffic over {windows:.0f} windows",
        "—",
        f"{calls}",
        "goal 0",
        calls == 0,
    )
    print(
        f"\n{datetime.date.today()} · Python {platform.python_version()} · "
        f"httpx {httpx.__version__} · command: python benchmarks/httpx_run.py"
        f"{' --quick' if q else ''}\n"
    )
    print_table(("figure", "baseline (same run)", "ours", "ratio / goal", "met"), rows)


if __name__ == "__main__":
    main()
