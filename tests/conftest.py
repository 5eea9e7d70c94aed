"""Shared fixtures: local Tanium servers over HTTP and TLS, and a secret-leak guard.

Every test runs with all loggers captured at DEBUG; afterwards no token issued by any
server of the test, and no test password, may appear in the captured log text.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
import requests
import requests.auth
import trustme
from hypothesis import settings

from requests_tanium_session import HttpClient, SessionId, TaniumSessionAuth
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

from .harness import FRONTS, Front

PASSWORD = DEFAULT_USER[1]

# Fuzzing budget: "ci" by default; HYPOTHESIS_PROFILE=long for a longer local run.
settings.register_profile("ci", max_examples=30, deadline=None)
settings.register_profile("long", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The environment users have stays as it is (REQUESTS_CA_BUNDLE and friends are set on
# many machines, this one included); the tests about it set what they need. Only the
# variables that would replace a test's own server and session are cleared.
_OWN_VARS = ["TANIUM_URL", "TANIUM_SESSION"]


#: Collected only where niquests is installed (the nox 'niquests' session): beside
#: niquests, urllib3 is urllib3-future, so the main environments never have it.
collect_ignore = [] if importlib.util.find_spec("niquests") else ["test_niquests.py"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OWN_VARS:
        monkeypatch.delenv(name, raising=False)


class Servers:
    """Every local server a test started, so the leak guard knows their tokens."""

    def __init__(self) -> None:
        self.all: list[TaniumServer] = []

    def start(self, **kwargs: Any) -> TaniumServer:
        server = TaniumServer(**kwargs).start()
        self.all.append(server)
        return server

    def secrets(self) -> set[str]:
        found = {PASSWORD}
        for server in self.all:
            found.update(server.issued)
        return found


def leaked(text: str, secrets: set[str]) -> int:
    """How many of ``secrets`` appear in ``text`` (the count only: never the values)."""
    return sum(1 for s in secrets if s in text)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@pytest.fixture
def servers(caplog: pytest.LogCaptureFixture) -> Iterator[Servers]:
    """Starts servers; afterwards proves that none of their tokens reached the logs."""
    registry = Servers()
    yield registry
    for srv in registry.all:
        srv.stop()
    text = caplog.text + "".join(repr(r.args) + r.getMessage() for r in caplog.records)
    found = leaked(text, registry.secrets())
    assert not found, f"{found} secret(s) appeared in the logs"


@pytest.fixture
def server(servers: Servers) -> TaniumServer:
    """A fresh local Tanium server over HTTP."""
    return servers.start()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_bundle(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = Path(tmp_path_factory.mktemp("ca")) / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def tls_server(servers: Servers, server_context: ssl.SSLContext, ca_bundle: str) -> TaniumServer:
    """A fresh local Tanium server over TLS, its CA in ``ca_bundle``."""
    srv = servers.start(ssl_context=server_context)
    srv.ca_bundle = ca_bundle
    return srv


@pytest.fixture
def client(server: TaniumServer) -> Iterator[HttpClient]:
    with HttpClient(server.url) as c:
        yield c


@pytest.fixture
def sid(server: TaniumServer, client: HttpClient) -> SessionId:
    return SessionId(client, server.new_session())


@pytest.fixture
def tanium_server(server: TaniumServer) -> TaniumServer:
    """The plugin's fixtures, bound to the leak-guarded ``server``."""
    return server


@pytest.fixture(params=FRONTS, ids=repr)
def front(request: pytest.FixtureRequest) -> Iterator[Front]:
    """Each front-end of the contract suite in turn (``tests/harness.py``); what it
    built is closed after the test."""
    chosen: Front = request.param
    yield chosen
    chosen.close_opened()


@pytest.fixture
def make_auth(
    tanium_auth_factory: Callable[..., TaniumSessionAuth],
) -> Callable[..., TaniumSessionAuth]:
    """The plugin's ``tanium_auth_factory``."""
    return tanium_auth_factory


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def concurrent_gets(
    url: str, auth: requests.auth.AuthBase, threads: int, per_thread: int = 1
) -> list[int]:
    """Statuses of GETs to ``url`` from ``threads`` threads released together by a
    barrier, each with a ``requests.Session`` of its own sharing ``auth``."""
    gate = threading.Barrier(threads)
    statuses: list[int] = []

    def work() -> None:
        with requests.Session() as s:
            s.auth = auth
            gate.wait()
            for _ in range(per_thread):
                statuses.append(s.get(url).status_code)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return statuses


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real ``redis-server`` on a free loopback port, in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is not installed (.ci/run installs it)")
            pytest.skip("redis-server is not installed: apt-get install redis-server")
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.exe = exe
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a test may have frozen it
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
            self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir(mode=0o700)
    srv = RedisServer(directory)
    yield srv
    srv.stop()


class _Proxy(BaseHTTPRequestHandler):
    """A forwarding HTTP proxy that records the paths it carried."""

    seen: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        target = urlsplit(self.path)
        self.server.seen.append(target.path)  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
        conn = HTTPConnection(target.hostname or "", target.port, timeout=10)
        conn.request(self.command, target.path, body=body or None, headers=headers)
        answer = conn.getresponse()
        payload = answer.read()
        conn.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _forward


@pytest.fixture
def proxy() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
