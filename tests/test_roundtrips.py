"""The round-trip figures of the benchmarks, pinned by server-side counts (not timed)."""

from __future__ import annotations

import time
from typing import Callable

import requests

from requests_tanium_session import TaniumSessionAuth
from requests_tanium_session.testing import TaniumServer

from .conftest import concurrent_gets

MakeAuth = Callable[..., TaniumSessionAuth]


def test_continuous_traffic_over_many_windows_makes_zero_auth_calls(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    # Windows of 0.15 s: a pause that long is a real idle gap, not scheduling noise.
    http.auth = make_auth(revalidate_after=0.15)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < 1.0:  # spans more than six windows
        assert http.get(server.url + "/api/v2/sensors").status_code == 200
        sent += 1
    assert sent > 6
    assert server.count("/auth") == 0


def test_32_threads_stale_at_once_make_one_auth_call(
    server: TaniumServer, make_auth: MakeAuth
) -> None:
    auth = make_auth(revalidate_after=0.01)
    time.sleep(0.02)
    server.inject("/auth", delay=0.1, passthrough=True)
    statuses = concurrent_gets(server.url + "/api/v2/sensors", auth, threads=32)
    assert statuses == [200] * 32
    assert server.count("/auth") == 1


def test_a_403_recovery_costs_one_auth_call_and_one_resend(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    http.auth = make_auth()
    server.rotate_on_validate = True
    server.inject("/api/v2/sensors", status=403)
    resp = http.get(server.url + "/api/v2/sensors")
    assert resp.status_code == 200
    assert server.count("/auth") == 1
    assert server.count("/api/v2/sensors") == 2  # the request and its one resend
