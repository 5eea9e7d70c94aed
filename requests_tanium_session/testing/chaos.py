"""A load driver: many threads through one auth while the server misbehaves.

``run_load`` sends requests from several threads through one shared
``TaniumSessionAuth`` while a chaos thread expires, rotates and revokes sessions and
injects 503s, then reports what the server counted. Used by the test suite (small) and
``benchmarks/load.py`` (32 threads x 2,000 requests).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from ..auth import TaniumSessionAuth
from ..http_client import gateway_retry
from ..protocol import HEADER
from .server import TaniumServer

__all__ = ["LoadReport", "run_load"]


@dataclass
class LoadReport:
    """What one load run did and what the server counted."""

    threads: int
    per_thread: int
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    validations: int = 0  # /auth calls that validated a session
    logins: int = 0  # /auth calls that logged in (the refresh)
    used_after_rejection: int = 0  # requests that arrived with a token already refused
    tokens: int = 1  # distinct tokens the auth held during the run
    sent_superseded: int = 0  # requests prepared after their token had been replaced

    @property
    def requests(self) -> int:
        """Requests the clients made."""
        return self.threads * self.per_thread

    @property
    def deaths(self) -> int:
        """Events that killed the live session (expiry or revocation)."""
        return self.events["expire"] + self.events["revoke"]

    @property
    def failed(self) -> int:
        """Requests that did not end in 200."""
        return self.requests - self.statuses[200]

    def lines(self) -> list[str]:
        """The report as printable lines."""
        return [
            f"{self.requests:,} requests from {self.threads} threads in {self.seconds:.1f} s "
            f"({self.requests / max(self.seconds, 1e-9):,.0f}/s)",
            f"server events: {dict(self.events)}",
            f"answered 200: {self.statuses[200]:,}; failed: {self.failed} "
            f"(statuses {dict(self.statuses)}, errors {dict(self.errors)})",
            f"/auth validations: {self.validations} for {self.deaths} deaths "
            f"(at most one per death: {'yes' if self.validations <= self.deaths + 1 else 'NO'})",
            f"/auth logins (refresh): {self.logins} "
            f"(at most one per death: {'yes' if self.logins <= self.deaths + 1 else 'NO'})",
            f"requests prepared with a token the client had already replaced: "
            f"{self.sent_superseded} (tokens held: {self.tokens})",
            f"requests that reached the server with a token it had already refused: "
            f"{self.used_after_rejection} (in flight when another thread learned it)",
        ]


class _Watch(AuthBase):
    """Wraps the auth to note, per request, the token sent and when preparing began."""

    def __init__(self, inner: TaniumSessionAuth, sends: list[tuple[float, str]]) -> None:
        self.inner = inner
        self.sends = sends

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        began = time.monotonic()
        r = self.inner(r)
        token = r.headers.get(HEADER)
        if token is not None:
            self.sends.append((began, token))  # list.append is atomic
        return r


def run_load(
    server: TaniumServer,
    auth: TaniumSessionAuth,
    *,
    threads: int = 8,
    per_thread: int = 150,
    path: str = "/api/v2/sensors",
    period: float = 0.03,
    settle: float = 0.1,
    seed: int = 7,
) -> LoadReport:
    """Run the load and the chaos; return the report (nothing is asserted here).

    After each death the chaos waits until the auth holds a new live session, then
    ``settle`` seconds more, so that every request can recover with its one resend.

    ``sent_superseded`` counts requests whose preparation *began* after the auth had
    already replaced their token (the moment is taken from ``on_token_update``, which
    fires after the swap): a sound count, with no false positives from races.
    """
    report = LoadReport(threads, per_thread)
    rng = random.Random(seed)
    stop = threading.Event()
    lock = threading.Lock()
    sid = auth
    server.reset_counts()
    sends: list[tuple[float, str]] = []
    adopted: list[tuple[float, str]] = [(time.monotonic(), auth.token or "")]
    previous = auth.on_token_update

    def noted(token: str) -> None:
        adopted.append((time.monotonic(), token))
        if previous is not None:
            previous(token)

    auth.on_token_update = noted
    watch = _Watch(auth, sends)

    def recovered(generation: int) -> None:
        deadline = time.monotonic() + 10
        while (sid.generation == generation or not sid.logged_in) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(settle)

    def chaos() -> None:
        while not stop.wait(period):
            kind = rng.choice(["expire", "rotate", "revoke", "503"])
            generation = sid.generation
            if kind == "expire":
                server.expire_all()
            elif kind == "rotate":
                server.rotate_on_validate = not server.rotate_on_validate
            elif kind == "revoke":
                token = auth.token
                if token is None:
                    continue
                server.revoke(token)
            else:
                server.inject(path, status=503, count=1)
            report.events[kind] += 1
            if kind in ("expire", "revoke"):
                recovered(generation)

    def work() -> None:
        retry = gateway_retry(total=5, backoff_factor=0, raise_on_status=True)
        with requests.Session() as s:
            s.mount("http://", HTTPAdapter(max_retries=retry))
            s.mount("https://", HTTPAdapter(max_retries=retry))
            s.auth = watch
            # Per request: a session-level verify loses to REQUESTS_CA_BUNDLE.
            verify = server.ca_bundle or True
            for _ in range(per_thread):
                try:
                    status = s.get(server.url + path, verify=verify).status_code
                    with lock:
                        report.statuses[status] += 1
                except Exception as exc:  # counted, never lost
                    with lock:
                        report.errors[type(exc).__name__] += 1

    monkey = threading.Thread(target=chaos, name="chaos")
    workers = [threading.Thread(target=work, name=f"load-{i}") for i in range(threads)]
    start = time.perf_counter()
    monkey.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    report.seconds = time.perf_counter() - start
    stop.set()
    monkey.join()
    report.validations = server.auth_calls["validate"]
    report.logins = server.auth_calls["login"]
    report.used_after_rejection = server.used_after_rejection
    auth.on_token_update = previous
    superseded_at = {token: adopted[i + 1][0] for i, (_, token) in enumerate(adopted[:-1])}
    report.tokens = len(adopted)
    report.sent_superseded = sum(
        1 for began, token in sends if began > superseded_at.get(token, float("inf"))
    )
    return report
