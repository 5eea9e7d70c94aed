"""Session stores: worker processes sharing one session through a file or a real Redis.

The Redis tests start ``redis-server`` on a free loopback port in a temporary directory
and stop it by PID. Without ``redis-server`` on PATH they are skipped locally and fail
in CI (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from requests_tanium_session import (
    FileStore,
    MemoryStore,
    RedisStore,
    SessionStore,
    TaniumSession,
    TaniumSessionAuth,
)
from requests_tanium_session.stores import Record
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

from . import fleet_worker
from .conftest import RedisServer, Servers

USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]
SENSORS = "/api/v2/sensors"
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fleet"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture(params=["file", "redis"])
def spec(request: pytest.FixtureRequest, private_dir: Path) -> tuple[Any, ...]:
    """How workers build the shared store: a file, or a key on a real Redis."""
    if request.param == "file":
        return ("file", str(private_dir / "session.json"))
    srv: RedisServer = request.getfixturevalue("redis_server")
    return ("redis", srv.port, "tanium-test:fleet")


def _run(target: Callable[..., None], *args: Any, n: int) -> list[Any]:
    procs = [SPAWN.Process(target=target, args=args) for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def _collect(procs: list[Any], out: Any, timeout: float = 60) -> list[Any]:
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    return results


# -- the fleet, in worker processes ---------------------------------------------------


def test_four_processes_find_it_stale_at_once_one_validation(
    server: TaniumServer, spec: tuple[Any, ...]
) -> None:
    session = server.new_session()
    start, out = SPAWN.Barrier(4), SPAWN.Queue()
    procs = _run(fleet_worker.stale_burst, server.url, session, spec, 0.5, start, out, n=4)
    statuses = [st for statuses in _collect(procs, out) for st in statuses]
    assert statuses == [200] * 32
    assert server.auth_calls["validate"] == 1  # 4 without a store


def test_revocation_costs_the_fleet_one_login(server: TaniumServer, spec: tuple[Any, ...]) -> None:
    ready, go, out = SPAWN.Barrier(5), SPAWN.Event(), SPAWN.Queue()
    procs = _run(fleet_worker.revoked, server.url, USER, PASSWORD, spec, ready, go, out, n=4)
    ready.wait(timeout=60)
    logins_at_start = server.auth_calls["login"]
    assert logins_at_start == 1  # a fleet that starts together logs in once
    server.revoke_user()
    go.set()
    statuses = [st for statuses in _collect(procs, out) for st in statuses]
    assert statuses == [200] * 96
    assert server.auth_calls["login"] - logins_at_start == 1


def test_rotation_by_one_process_is_adopted_without_auth(
    server: TaniumServer, spec: tuple[Any, ...]
) -> None:
    session = server.new_session()
    go, out = SPAWN.Event(), SPAWN.Queue()
    procs = _run(fleet_worker.follower, server.url, session, spec, go, out, n=1)
    with TaniumSessionAuth(server.url, session, store=fleet_worker.make_store(spec)) as auth:
        time.sleep(1)  # the follower is up and holds the old session
        server.rotate_on_validate = True
        rotated = auth.session_id.validate()
        assert rotated != session
        go.set()
        ((status, resends),) = _collect(procs, out)
    assert status == 200 and resends == 1  # its 403, then the store's session
    assert server.count("/auth") == 1  # only the rotating validation


def test_a_killed_lock_holder_delays_the_fleet_at_most_a_lease(
    server: TaniumServer, spec: tuple[Any, ...]
) -> None:
    origin = f"http://127.0.0.1:{server.port}"
    held = SPAWN.Event()
    holder = SPAWN.Process(target=fleet_worker.hold_lock, args=(spec, origin, 1.2, held))
    holder.start()
    assert held.wait(30)
    auth = TaniumSessionAuth(
        server.url,
        server.new_session(),
        store=fleet_worker.make_store(spec),
        revalidate_after=0.01,
        login_timeout=0.1,
    )  # fmt: skip  (lease: 2 * 0.1 + 2 = 2.2 s)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    began = time.monotonic()
    time.sleep(0.02)
    with requests.Session() as s:
        s.auth = auth
        assert s.get(server.url + SENSORS).status_code == 200
    assert time.monotonic() - began < 2.2 + 0.5
    auth.close()


# -- outages and garbage ---------------------------------------------------------------


def test_redis_stopped_mid_run_degrades_with_one_warning(
    server: TaniumServer, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(redis_server.client())
    auth = TaniumSessionAuth(server.url, server.new_session(), store=store, revalidate_after=0)
    with requests.Session() as s:
        s.auth = auth
        assert s.get(server.url + SENSORS).status_code == 200
        redis_server.stop()
        caplog.clear()
        for _ in range(3):
            assert s.get(server.url + SENSORS).status_code == 200
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "unavailable" in r.getMessage()
    ]
    assert len(warnings) == 1
    auth.close()


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_garbage_is_treated_as_empty_with_a_warning(
    server: TaniumServer, private_dir: Path, request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture, kind: str,
) -> None:  # fmt: skip
    garbage = b'{"token": "SECRET-GARBAGE-VALUE", "confirmed_at": "soon"}'
    store: SessionStore
    if kind == "file":
        path = private_dir / "session.json"
        path.write_bytes(garbage)
        path.chmod(0o600)
        store = FileStore(path)
    else:
        srv: RedisServer = request.getfixturevalue("redis_server")
        srv.client().set("tanium-test:garbage", garbage)
        store = RedisStore(srv.client(), key="tanium-test:garbage")
    auth = TaniumSessionAuth(server.url, server.new_session(), store=store, revalidate_after=0)
    caplog.clear()
    assert auth.validated_token()
    text = caplog.text
    assert "not a record" in text and "SECRET-GARBAGE-VALUE" not in text
    assert server.auth_calls["validate"] == 1  # asked the server instead
    assert Record.loads(store.load() or b"") is not None  # and replaced it
    auth.close()


def test_redis_keys_name_the_origin_never_the_token(
    server: TaniumServer, redis_server: RedisServer
) -> None:
    client = redis_server.client()
    auth = TaniumSessionAuth(
        server.url, server.new_session(), store=RedisStore(client), revalidate_after=0,
        expires_after=30,
    )  # fmt: skip
    token = auth.validated_token()
    keys = [k.decode() for k in client.keys("*")]
    assert keys == [f"tanium-session:http://127.0.0.1:{server.port}"]
    assert token not in keys[0]
    assert 0 < client.pttl(keys[0]) <= 30_000
    record = json.loads(client.get(keys[0]))
    assert record["token"] == token
    assert set(record) == {"token", "confirmed_at", "generation", "origin"}
    assert record["origin"] == f"http://127.0.0.1:{server.port}"
    auth.close()


def test_redis_lock_is_released_only_by_its_owner(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.client(), key="tanium-test:lock")
    handle = store.acquire(5, 1)
    assert handle is not None
    store.release("someone-else")
    assert store.acquire(5, 0.05) is None  # still held
    store.release(handle)
    assert store.acquire(5, 0.05) is not None


# -- the file's rules --------------------------------------------------------------------


def test_file_store_creates_private_files(server: TaniumServer, private_dir: Path) -> None:
    path = private_dir / "session.json"
    auth = TaniumSessionAuth(
        server.url, server.new_session(), store=FileStore(path), revalidate_after=0
    )
    assert auth.validated_token()
    for p in (path, private_dir / "session.json.lock"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [p.name for p in private_dir.iterdir() if p.name.startswith(".")] == []  # no temp left
    auth.close()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_file_readable_by_others_is_refused(private_dir: Path, mode: int) -> None:
    path = private_dir / "session.json"
    path.write_bytes(b"{}")
    path.chmod(mode)
    with pytest.raises(PermissionError, match="group or others"):
        FileStore(path)


def test_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    with pytest.raises(PermissionError, match="directory"):
        FileStore(d / "session.json")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_file_of_another_user_is_refused(private_dir: Path) -> None:
    path = private_dir / "session.json"
    path.write_bytes(b"{}")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(PermissionError, match="another user"):
        FileStore(path)


def test_symlink_is_refused(private_dir: Path) -> None:
    target = private_dir / "elsewhere.json"
    target.write_bytes(b"{}")
    target.chmod(0o600)
    (private_dir / "session.json").symlink_to(target)
    with pytest.raises(PermissionError, match="symbolic link"):
        FileStore(private_dir / "session.json")


# -- in one process ------------------------------------------------------------------------


def test_memory_store_shares_a_session_between_auths(server: TaniumServer) -> None:
    store = MemoryStore()
    first = TaniumSessionAuth(server.url, server.new_session(), store=store, revalidate_after=0.3)
    second = TaniumSessionAuth(server.url, server.new_session(), store=store, revalidate_after=0.3)
    time.sleep(0.31)
    token = first.validated_token()  # validates and publishes
    assert second.validated_token() == token  # adopted, no second /auth
    assert server.auth_calls["validate"] == 1
    with TaniumSession(server.url, server.new_session(), store=store) as s:
        assert s.auth.store is store


def test_store_is_never_read_on_the_fresh_path(server: TaniumServer, private_dir: Path) -> None:
    class Counting(FileStore):
        loads = 0

        def load(self) -> bytes | None:
            Counting.loads += 1
            return super().load()

    auth = TaniumSessionAuth(
        server.url, server.new_session(), store=Counting(private_dir / "s.json")
    )
    with requests.Session() as s:
        s.auth = auth
        for _ in range(20):
            assert s.get(server.url + SENSORS).status_code == 200
    assert Counting.loads == 0
    auth.close()


def test_importing_the_package_does_not_import_redis() -> None:
    code = "import sys, requests_tanium_session; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


# -- httpx ------------------------------------------------------------------------------


def test_httpx_auths_share_a_store_sync_and_async(
    server: TaniumServer, spec: tuple[Any, ...]
) -> None:
    import asyncio

    from requests_tanium_session.httpx import TaniumAuth

    session = server.new_session()
    first = TaniumAuth(server.url, session, store=fleet_worker.make_store(spec), revalidate_after=1)
    second = TaniumAuth(
        server.url, session, store=fleet_worker.make_store(spec), revalidate_after=1
    )
    time.sleep(1.05)
    with first.client() as client:
        assert client.get(SENSORS).status_code == 200  # validates and publishes

    async def main() -> int:
        async with second.async_client() as client:
            return (await client.get(SENSORS)).status_code

    assert asyncio.run(main()) == 200  # adopted from the store
    assert server.auth_calls["validate"] == 1


def test_httpx_revocation_one_login_for_two_auths(server: TaniumServer, private_dir: Path) -> None:
    from requests_tanium_session.httpx import TaniumAuth

    path = private_dir / "session.json"
    auths = [
        TaniumAuth.from_credentials(server.url, USER, PASSWORD, store=FileStore(path))
        for _ in range(2)
    ]
    clients = [a.client() for a in auths]
    for c in clients:
        assert c.get(SENSORS).status_code == 200
    logins = server.auth_calls["login"]
    server.revoke_user()
    for c in clients:
        assert c.get(SENSORS).status_code == 200
        c.close()
    assert server.auth_calls["login"] - logins == 1


# -- store records: what is never adopted ---------------------------------------------


def test_a_record_of_another_origin_is_never_adopted(
    servers: Servers, spec: tuple[Any, ...]
) -> None:
    """Two auths for two servers sharing one file or one Redis key: server A's session
    never goes to server B."""
    a, b = servers.start(), servers.start()
    first = TaniumSessionAuth.from_credentials(
        a.url, USER, PASSWORD, store=fleet_worker.make_store(spec)
    )
    second = TaniumSessionAuth.from_credentials(
        b.url, USER, PASSWORD, store=fleet_worker.make_store(spec)
    )
    assert a.auth_calls["login"] == 1 and b.auth_calls["login"] == 1  # B logged in itself
    assert first.token != second.token and b.is_valid(second.token)
    with requests.Session() as s:
        s.auth = second
        assert s.get(b.url + SENSORS).status_code == 200
    assert not any(r.headers.get("session") == first.token for r in b.received())
    first.close()
    second.close()


def _plant(path: Path, server: TaniumServer, **fields: Any) -> None:
    record = {"token": server.new_session(), "confirmed_at": time.time(), "generation": 1,
              "origin": server.url, **fields}  # fmt: skip
    path.write_text(json.dumps(record))
    path.chmod(0o600)


@pytest.mark.parametrize(
    "fields",
    [{"token": "x"}, {"confirmed_at": float("inf")}, {"confirmed_at": time.time() + 3600}],
    ids=["not-token-shaped", "confirmed-at-infinity", "confirmed-in-the-future"],
)
def test_records_that_break_the_rules_are_not_adopted(
    server: TaniumServer, private_dir: Path, fields: dict[str, Any]
) -> None:
    path = private_dir / "session.json"
    _plant(path, server, **fields)
    if "confirmed_at" in fields:  # json writes inf as Infinity, which json reads back
        assert json.loads(path.read_text())["confirmed_at"] == fields["confirmed_at"]
    auth = TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD, store=FileStore(path))
    assert server.auth_calls["login"] == 1  # the planted record was not taken
    assert json.loads(path.read_text())["token"] == auth.token
    auth.close()


def test_a_fifo_at_the_store_path_never_blocks(server: TaniumServer, private_dir: Path) -> None:
    path = private_dir / "session.json"
    store = FileStore(path)
    os.mkfifo(path, 0o600)
    done: list[int] = []

    def go() -> None:
        with (
            TaniumSessionAuth(
                server.url, server.new_session(), store=store, revalidate_after=0
            ) as auth,
            requests.Session() as s,
        ):
            s.auth = auth
            done.append(s.get(server.url + SENSORS).status_code)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(10)
    assert done == [200]  # degraded to this process alone, not blocked on the FIFO


def test_filestore_checks_its_directory_at_each_use(
    server: TaniumServer, private_dir: Path
) -> None:
    store = FileStore(private_dir / "session.json")
    private_dir.chmod(0o755)  # opened to others after the store was made
    try:
        with pytest.raises(PermissionError, match="open to group or others"):
            store.load()
        with pytest.raises(PermissionError, match="open to group or others"):
            store.save(b"{}", 10)
    finally:
        private_dir.chmod(0o700)
