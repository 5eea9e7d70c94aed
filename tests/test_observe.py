"""What the auth shows of itself: counters (``auth.stats``) and events (``on_event`` and
log records with ``extra=`` fields), the same through every front-end (issue 19)."""

from __future__ import annotations

import logging
from typing import Any, Optional

import pytest
import requests

from requests_tanium_session import (
    AuthEvent,
    AuthStats,
    LoginError,
    MemoryStore,
    SessionStore,
    TaniumSessionAuth,
)
from requests_tanium_session.testing import DEFAULT_USER, Fault, TaniumServer

from .conftest import Servers
from .harness import DENIED, SENSORS, Front, statuses

USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]


def test_a_revocation_counts_one_validation_one_refresh_one_resend(
    server: TaniumServer, front: Front, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[AuthEvent] = []
    auth = front.from_credentials(server.url, USER, PASSWORD, revalidate_after=60)
    auth.on_event = events.append
    server.revoke_user()
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    stats = auth.stats
    assert (stats.validations, stats.refreshes, stats.resends) == (1, 1, 1)
    assert (stats.permission_answers, stats.failed_recoveries) == (0, 0)
    assert [e.kind for e in events] == ["session_died", "refreshed"]
    origin = f"http://127.0.0.1:{server.port}"
    assert all(e.origin == origin for e in events)
    assert events[1].generation > events[0].generation
    logged = [r for r in caplog.records if getattr(r, "tanium_event", None)]
    assert [r.tanium_event for r in logged] == ["session_died", "refreshed"]  # type: ignore[attr-defined]
    assert all(r.tanium_origin == origin for r in logged)  # type: ignore[attr-defined]


def test_a_permission_answer_is_counted(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session())
    assert statuses(front.get(auth, server.url + DENIED)) == [403]
    stats = auth.stats
    assert (stats.validations, stats.permission_answers, stats.resends) == (1, 1, 0)


def test_a_recovery_that_fails_is_counted(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session())
    server.revoke_user()
    (outcome,) = front.get(auth, server.url + SENSORS)
    assert isinstance(outcome, LoginError)
    assert (auth.stats.failed_recoveries, auth.stats.validations) == (1, 1)


def test_waiting_for_a_flight_is_timed(server: TaniumServer, front: Front) -> None:
    server.inject("/auth", Fault(delay=0.3, passthrough=True))
    auth = front.auth(server.url, server.new_session(), revalidate_after=0)
    assert statuses(front.get(auth, server.url + SENSORS, n=4)) == [200] * 4
    stats = auth.stats
    assert stats.validations == 1
    assert stats.flight_wait_seconds > 0.3  # three waiters, most of 0.3 s each


def test_store_operations_are_counted(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session(), store=MemoryStore(), revalidate_after=0)
    assert auth.stats.store_ok is True
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    stats = auth.stats
    assert stats.store_reads >= 2 and stats.store_publishes == 1 and stats.store_outages == 0


class BrokenStore(SessionStore):
    """A store whose every call fails, as an unreachable one does."""

    def load(self) -> Optional[bytes]:
        raise ConnectionError("down")

    def save(self, data: bytes, ttl: float) -> None:
        raise ConnectionError("down")

    def acquire(self, lease: float, wait: float) -> Optional[object]:
        raise ConnectionError("down")

    def release(self, handle: object) -> None:
        raise ConnectionError("down")


def test_a_store_outage_is_an_event_and_a_count(server: TaniumServer, front: Front) -> None:
    events: list[AuthEvent] = []
    store = BrokenStore()
    store.backoff = 60
    auth = front.auth(
        server.url, server.new_session(), store=store, revalidate_after=0, on_event=events.append
    )
    for _ in range(3):
        assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    stats = auth.stats
    assert (stats.store_outages, stats.store_ok, stats.validations) == (1, False, 3)
    assert [e.kind for e in events] == ["store_degraded"]
    assert events[0].cause == "ConnectionError while reading"


def test_the_snapshot_reads_plainly(server: TaniumServer) -> None:
    auth = TaniumSessionAuth(server.url, server.new_session())
    stats = auth.stats
    assert isinstance(stats, AuthStats)
    assert repr(stats).startswith("AuthStats(validations=0, rotations=0, refreshes=0,")
    assert "flight_wait_seconds=0.000" in repr(stats)
    assert list(stats.as_dict()) == [
        "validations", "rotations", "refreshes", "resends", "permission_answers",
        "failed_recoveries", "flight_wait_seconds", "store_reads", "store_adoptions",
        "store_publishes", "store_outages", "store_ok",
    ]  # fmt: skip


def test_the_hot_path_counts_nothing(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session())
    assert statuses(front.get(auth, server.url + SENSORS, n=4)) == [200] * 4
    assert auth.stats == AuthStats()


def test_a_broken_event_callback_breaks_nothing(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    server = servers.start()

    def broken(event: AuthEvent) -> Any:
        raise RuntimeError("oops")

    auth = TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD, on_event=broken)
    server.revoke_user()
    with requests.Session() as s:
        s.auth = auth
        assert s.get(server.url + SENSORS).status_code == 200
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "on_event" in r.message]
    assert len(warned) == 2  # died, refreshed: each ignored with one line


def test_a_coroutine_refresh_is_refused_when_built(server: TaniumServer) -> None:
    async def refresh() -> str:
        return server.new_session()

    with pytest.raises(TypeError, match=r"coroutine function.*plain function"):
        TaniumSessionAuth(server.url, server.new_session(), refresh=refresh)
