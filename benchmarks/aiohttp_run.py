"""Benchmarks for the aiohttp front-end, against baselines of the same run.

    python benchmarks/aiohttp_run.py            # the full table (about a minute)
    python benchmarks/aiohttp_run.py --quick    # fewer repetitions

Like ``run.py``: medians of interleaved repetitions, the local server in its own
process; nothing is asserted, a table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import statistics
import sys
import time
from typing import Any

import aiohttp
from run import print_table, server_process  # type: ignore[import-not-found]

from requests_tanium_session.aiohttp import TaniumMiddleware

URL_PATH = "/api/v2/sensors"


class StaticHeader:
    """The baseline: a middleware that sets the same header, without any policy."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        request.headers["session"] = self.token
        return await handler(request)


class _Request:
    """Just enough of a ``ClientRequest`` for a middleware to run on it."""

    def __init__(self, url: Any) -> None:
        self.url = url
        self.method = "GET"
        self.headers: dict[str, str] = {}
        self.body = b""


class _Response:
    status = 200


async def middleware_us(mws: dict[str, Any], n: int, reps: int) -> dict[str, float]:
    """Microseconds per request in each middleware, with a handler that answers 200."""
    from yarl import URL

    url = URL("https://tanium.example.com" + URL_PATH)
    response = _Response()

    async def handler(request: Any) -> Any:
        return response

    out: dict[str, list[float]] = {name: [] for name in mws}
    for _ in range(reps * 5):
        for name, mw in mws.items():
            requests = [_Request(url) for _ in range(n)]
            start = time.perf_counter()
            for request in requests:
                await mw(request, handler)
            out[name].append((time.perf_counter() - start) / n * 1e6)
    return {name: statistics.median(v) for name, v in out.items()}


async def throughput(
    url: str, token: str, tasks: int, per_task: int, reps: int
) -> tuple[float, float, float]:
    """Requests/s with ``tasks`` concurrent tasks; each alternates ours and static."""
    ours = TaniumMiddleware(url, token)
    sessions = {
        "ours": aiohttp.ClientSession(middlewares=(ours,)),
        "static": aiohttp.ClientSession(middlewares=(StaticHeader(token),)),
    }
    ratios, rates = [], []
    for _ in range(reps):
        spent = dict.fromkeys(sessions, 0.0)

        async def one(i: int, spent: dict[str, float] = spent) -> None:
            items = list(sessions.items())
            for k in range(per_task):
                for name, s in items if (k + i) % 2 == 0 else items[::-1]:
                    start = time.perf_counter()
                    async with s.get(url + URL_PATH) as response:
                        await response.read()
                    spent[name] += time.perf_counter() - start

        await asyncio.gather(*(one(i) for i in range(tasks)))
        n = tasks * per_task
        rates.append((tasks * n / spent["ours"], tasks * n / spent["static"]))
        ratios.append(spent["static"] / spent["ours"])
    for s in sessions.values():
        await s.close()
    return (
        statistics.median(o for o, _ in rates),
        statistics.median(s for _, s in rates),
        statistics.median(ratios),
    )


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
    mws = {
        "ours": TaniumMiddleware("https://tanium.example.com", token, revalidate_after=3600),
        "static": StaticHeader(token),
    }
    f = asyncio.run(middleware_us(mws, 1000 if q else 5000, reps))
    row(
        "middleware per request, fresh token (µs)",
        f"static header {f['static']:.2f}",
        f"{f['ours']:.2f}",
        f"{f['ours'] - f['static']:+.2f} µs over static (no goal set)",
        True,
    )
    with server_process() as (url, session):
        for tasks in (1, 50):
            ours, static, r = asyncio.run(throughput(url, session, tasks, 400 // tasks * 5, reps))
            row(
                f"requests/s, aiohttp.ClientSession, {tasks} task(s)",
                f"static header {static:.0f}",
                f"{ours:.0f}",
                f"{r:.3f}x, median of {reps} runs (goal ≥ 0.97x)",
                r >= 0.97,
            )
    print(
        f"\n{datetime.date.today()} · Python {platform.python_version()} · "
        f"aiohttp {aiohttp.__version__} · command: python benchmarks/aiohttp_run.py"
        f"{' --quick' if q else ''}\n"
    )
    print_table(("figure", "baseline (same run)", "ours", "ratio / goal", "met"), rows)


if __name__ == "__main__":
    main()
