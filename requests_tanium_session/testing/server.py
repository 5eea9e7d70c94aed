"""A real, threaded local Tanium server for tests, demos and users' own tests.

It speaks just enough of the platform's HTTP API to exercise session handling:
``/auth`` (validate, credential login, logout), ``/api/v2/session/{login,validate,logout}``,
``/config/console.json``, and protected sample endpoints under ``/api/v2/`` and
``/soap``. The clock, revocation, rotation and faults are controlled from the test.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
import xml.sax.saxutils
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Optional
from urllib.parse import urlsplit

__all__ = ["Clock", "Fault", "Recorded", "TaniumServer", "User"]

log = logging.getLogger(__name__)

#: Version reported by ``/config/console.json`` unless told otherwise.
DEFAULT_VERSION = "7.3.314.3424"

#: Idle lifetime of a session, the server setting ``session_expiration_seconds``.
DEFAULT_EXPIRATION = 300.0

#: Idle lifetime of a persistent session (``persistent: 1`` on a login): one week.
PERSISTENT_SECONDS = 7 * 86400.0

#: Paths the server answers that the library names too.
CURRENT_PATH = "/api/v2/session/current"
GATEWAY_PATH = "/plugin/products/gateway/graphql"

#: Built-in user: name, password and uid.
DEFAULT_USER = ("admin", "local-tanium-password", 1)


class Clock:
    """The server's clock: real monotonic time plus an offset the test can advance."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds on the server's clock."""
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward; sessions idle longer than their lifetime expire."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds


@dataclass
class Fault:
    """An injected answer for requests whose path matches; ``count=None`` is forever."""

    status: int = 503
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering
    partial: bool = False  # promise a body, send part of it, close
    count: Optional[int] = 1
    passthrough: bool = False  # after the delay, answer normally
    trickle: float = 0.0  # send the body one byte every ``trickle`` seconds
    endless: bool = False  # repeat the body without end (until the client hangs up)
    chunked: bool = False  # send the body with Transfer-Encoding: chunked (no length)
    raw: Optional[bytes] = None  # send exactly these bytes (a malformed answer), then close


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: Mapping[str, str] = field(repr=False)  # lower-cased names; may hold secrets
    status: int = 0
    body: bytes = field(default=b"", repr=False)  # may hold secrets (a JSON login)


@dataclass
class User:
    """A user of the local server."""

    name: str
    password: str
    uid: int
    domain: str = ""


@dataclass
class _Session:
    token: str
    uid: int
    last_seen: float
    api: bool = False
    trusted: bool = True
    expires_at: Optional[float] = None  # API tokens: absolute expiry on the clock
    lifetime: Optional[float] = None  # idle lifetime when not the server's (persistent)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of connections (hundreds of tasks
    # through a connection pool) would wait out SYN retransmissions of 1 s, 3 s, ...
    request_queue_size = 1024
    owner: TaniumServer

    def __init__(self, addr: tuple[str, int], owner: TaniumServer) -> None:
        self.owner = owner
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or fails the TLS handshake is routine here.
        log.debug("local Tanium server: connection from %s ended with an error", client_address)

    def close_connections(self) -> None:
        with self.sockets_lock:
            socks = list(self.open_sockets)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        # The request line without its query string: a test's URL may carry a secret.
        shown = [_QUERY.sub(" ", a) if isinstance(a, str) else a for a in args]
        log.debug("local Tanium server: " + format, *shown)

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        try:
            body = self._body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        owner = self.server.owner
        routed = owner._route(urlsplit(self.path).path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        if routed is None:  # outside the server's path prefix
            owner._record(self.command, urlsplit(self.path).path, headers, 404, body=body)
            self._send(404, b'{"text": "not found"}', dict(_JSON))
            return
        path = routed
        record = functools.partial(owner._record, self.command, path, headers, body=body)
        fault = owner._take_fault(path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop or fault.raw is not None:
                record(0)
                self.close_connection = True
                if fault.raw is not None:
                    with contextlib.suppress(OSError):
                        self.wfile.write(fault.raw)
                return
            if fault.trickle or fault.endless or fault.chunked:
                record(fault.status)
                self._stream(fault)
                return
            if fault.partial:
                record(fault.status)
                self.send_response(fault.status)
                self.send_header("Content-Length", str(len(fault.body) + 100))
                self.end_headers()
                self.wfile.write(fault.body)
                self.wfile.flush()
                self.close_connection = True
                return
            if not fault.passthrough:
                record(fault.status)
                self._send(fault.status, fault.body, dict(fault.headers))
                return
        status, payload, extra = owner._answer(self.command, path, headers, body)
        record(status)
        self._send(status, payload, extra)

    def _stream(self, fault: Fault) -> None:
        """A slow, endless or chunked body: one byte per ``trickle`` seconds, the body
        forever, or the body in chunks of 64 KiB (``Transfer-Encoding: chunked``)."""
        self.close_connection = not fault.chunked or fault.endless
        self.send_response(fault.status)
        for name, value in fault.headers.items():
            self.send_header(name, value)
        if fault.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            size = 1 << 40 if fault.endless else len(fault.body)
            self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = fault.body or b"x"
        try:
            while True:
                if fault.trickle:
                    for i in range(len(chunk)):
                        self.wfile.write(chunk[i : i + 1])
                        self.wfile.flush()
                        time.sleep(fault.trickle)
                elif fault.chunked:
                    for i in range(0, len(chunk), 1 << 16):
                        piece = chunk[i : i + (1 << 16)]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(chunk)
                if not fault.endless:
                    if fault.chunked:
                        self.wfile.write(b"0\r\n\r\n")
                    return
        except OSError:
            return  # the client hung up

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.log_request(status)
        reason = self.responses.get(status, ("",))[0]
        headers.setdefault("Content-Type", "application/json")
        lines = [f"{self.protocol_version} {status} {reason}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write: headers and body in two small writes meet delayed ACKs (40 ms).
        self.wfile.write(head if self.command == "HEAD" else head + body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


_JSON = {"Content-Type": "application/json"}

#: A query string in a request line (``GET /path?query HTTP/1.1``), up to the version.
_QUERY = re.compile(r"\?\S* ")
_TEXT = {"Content-Type": "text/plain; charset=us-ascii"}


def _json(status: int, data: Any) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(data).encode(), dict(_JSON)


def _listed(items: list[dict[str, Any]]) -> tuple[int, bytes, dict[str, str]]:
    """A REST list as real servers send it: the items, then a ``collectionInfo`` element
    that is not one of them (XSOAR drops the last element of every list)."""
    info = {"collectionInfo": {"amount": len(items), "pageSize": 100, "start": 0}}
    return _json(200, {"data": [*items, info]})


_SENSORS = [
    {"id": 1, "name": "Computer Name", "hash": 3409330187, "category": "Reserved"},
    {"id": 2, "name": "IP Address", "hash": 3209138996, "category": "Network"},
]

_SYSTEM_STATUS = [
    {"computer_id": 1, "host_name": "win-01.example.com", "status": "Leader",
     "last_registration": "2019-05-06T14:10:28", "full_version": "7.2.314.3476"},
    {"computer_id": 2, "host_name": "mac-02.example.com", "status": "Normal",
     "last_registration": "2019-05-06T14:10:31", "full_version": "7.2.314.3476"},
]  # fmt: skip

_SOAP_ANSWER = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    '<soap:Body><t:return xmlns:t="urn:TaniumSOAP">'
    "<command>{command}</command><session>{session}</session>"
    "<ID>1</ID><IDType>{tag}</IDType>{result}<server_version>{version}</server_version>"
    "</t:return></soap:Body></soap:Envelope>"
)


def _xml(text: str) -> str:
    return xml.sax.saxutils.escape(text)


def _soap_objects() -> dict[str, str]:
    sensors = "".join(
        f"<sensor><id>{s['id']}</id><name>{s['name']}</name><hash>{s['hash']}</hash>"
        f"<category>{s['category']}</category></sensor>"
        for s in _SENSORS
    )
    statuses = "".join(
        "<client_status>" + "".join(f"<{k}>{v}</{k}>" for k, v in item.items()) + "</client_status>"
        for item in _SYSTEM_STATUS
    )
    users = f"<user><id>{DEFAULT_USER[2]}</id><name>{DEFAULT_USER[0]}</name><domain/></user>"
    return {
        "sensors": f"<sensors>{sensors}</sensors>",
        "users": f"<users>{users}</users>",
        "system_status": f"<system_status>{statuses}</system_status>",
    }


#: ``GetObject`` answers by the plural of the requested object's tag.
_SOAP_OBJECTS = _soap_objects()


_SOAP_COMMAND = re.compile(rb"<command>([^<]{0,200})</command>")
_SOAP_OBJECT_LIST = re.compile(rb"<object_list>\s*(.{0,65536}?)\s*</object_list>", re.DOTALL)
_SOAP_TAG = re.compile(rb"<([A-Za-z_][\w.-]{0,100})")


def _soap_request(body: bytes) -> tuple[str, str, str]:
    """The command, the first object's tag and the object list of a SOAP request."""
    command = _SOAP_COMMAND.search(body)
    objects = _SOAP_OBJECT_LIST.search(body)
    listed = objects.group(1) if objects else b""
    tag = _SOAP_TAG.match(listed)
    return (
        command.group(1).decode("utf-8", "replace").strip() if command else "GetObject",
        tag.group(1).decode("ascii") if tag else "",
        listed.decode("utf-8", "replace"),
    )


class TaniumServer:
    """A local Tanium server on ``127.0.0.1`` (TLS when given a certificate).

    Use as a context manager or call ``start()``/``stop()``; ``url`` is its base URL.
    TLS: pass ``certfile`` (and ``keyfile``) or a server ``ssl_context``.

    Endpoints (under ``prefix`` when given, as behind a reverse proxy):

    - ``POST /auth`` (and ``GET /auth``, as pytan 2 sends it): with ``session``,
      validates (answers the token as text; a new one when ``rotate_on_validate``) or,
      with ``logout: 0``/``1``, logs out; with base64 ``username``/``password`` headers,
      logs in. A dead session answers ``auth_reject_status`` (401).
    - ``POST /api/v2/session/login`` (JSON credentials), ``…/validate`` and
      ``…/logout`` (JSON ``{"session": token}``): ``{"data": {"session": …}}``.
    - ``GET /config/console.json``: ``{"serverVersion": version, …}``, no auth.
    - ``GET /info.json`` (a live session): ``Diagnostics`` with ``Settings/Version``.
    - Protected, with a live ``session`` header (else ``dead_status``, 403, or a 302 to
      ``sign_in_redirect``): ``/api/v2/sensors``, ``/api/v2/users`` and
      ``/api/v2/system_status`` (REST lists ending in a ``collectionInfo`` element, as
      real servers send them; a trailing slash is the same path), ``/api/v2/echo``
      (method, uid, body), ``/soap`` (namespaced envelopes carrying the request's own
      command, the session and ``server_version``; ``GetObject`` answers sensors, users
      or system status), and the paths in ``denied_paths`` (403 to a live session:
      "permission denied"); other ``/api/v2/`` paths 404.

    Attributes a test may read or set:

    - ``clock``: the server's :class:`Clock`; ``clock.advance(301)`` expires sessions
      idle longer than ``session_expiration_seconds`` (300 by default).
    - ``rotate_on_validate``: answer every ``/auth`` validation with a new token.
    - ``denied_paths``: paths that answer 403 to a live session (``{"/api/v2/denied"}``).
    - ``validate_bare``: answer REST validate with a bare ``{"session": …}``.
    - ``ca_bundle``: a CA bundle path that verifies this server, when known.
    - ``counts``, ``statuses`` and :meth:`count`: requests seen per path (and status).
    - ``auth_calls``: ``/auth`` calls answered by kind: ``login``, ``validate``, ``logout``.
    - ``used_after_rejection``: protected requests that carried a token this server had
      already refused on ``/auth`` or validate.
    - ``issued``: every token issued, so tests can prove none leaked.
    - ``requests``/:meth:`received`: the last ``record`` requests, headers included.

    Faults: :meth:`inject` queues answers per path (status, body, headers, delay,
    dropped connection, partial, trickled, endless or chunked body, raw malformed
    bytes); :meth:`redirect`.
    """

    def __init__(
        self,
        *,
        ssl_context: Optional[ssl.SSLContext] = None,
        certfile: Optional[str] = None,
        keyfile: Optional[str] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = DEFAULT_VERSION,
        session_expiration_seconds: float = DEFAULT_EXPIRATION,
        rotate_on_validate: bool = False,
        dead_status: int = 403,
        auth_reject_status: int = 401,
        record: int = 10_000,
        prefix: str = "",
    ) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError("prefix must start with '/' and not end with one, like '/tanium'")
        #: A path prefix the server answers under (a reverse proxy's), like ``/tanium``.
        self.prefix = prefix
        if certfile is not None:
            if ssl_context is not None:
                raise ValueError("pass ssl_context= or certfile=, not both")
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(certfile, keyfile)
        self.ssl_context = ssl_context
        #: Path of a CA bundle that verifies this server's certificate, when known.
        self.ca_bundle: Optional[str] = None
        self.host = host
        self.version = version
        self.session_expiration_seconds = session_expiration_seconds
        self.rotate_on_validate = rotate_on_validate
        self.dead_status = dead_status
        self.auth_reject_status = auth_reject_status
        #: Answer ``/api/v2/session/validate`` with a bare ``{"session": …}``.
        self.validate_bare = False
        #: Answer SOAP with a new session in ``<session>`` (the old one ends).
        self.rotate_on_soap = False
        #: Answer SOAP to a live session with ``RBACInsufficientPrivilege`` in-band.
        self.soap_denied = False
        #: Answer a REST request with a dead session by a 302 to this URL (a sign-in
        #: page on another origin, as a Cloud gateway does), not ``dead_status``.
        self.sign_in_redirect: Optional[str] = None
        #: Credential logins that asked for a persistent session (``persistent: 1``).
        self.persistent_logins = 0
        #: Paths that answer 403 to a live session: "permission denied".
        self.denied_paths: set[str] = {"/api/v2/denied"}
        self.clock = Clock()
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[tuple[str, int]] = Counter()
        #: ``/auth`` calls answered (faults aside) by kind: login, validate, logout.
        self.auth_calls: Counter[str] = Counter()
        #: Protected requests that carried a token after the server had refused it on
        #: ``/auth`` or ``validate``: a client should stop using a token once told.
        self.used_after_rejection = 0
        self.requests: deque[Recorded] = deque(maxlen=max(record, 0) or None)
        self._record_on = record > 0
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        #: Every token this server ever issued, so tests can prove none leaked.
        self.issued: list[str] = []
        self._rejected: set[str] = set()
        self._faults: dict[str, list[Fault]] = {}
        self._users: dict[str, User] = {}
        self._counter = 1000
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._port = port
        self.add_user(*DEFAULT_USER)

    # -- life cycle -----------------------------------------------------------

    def start(self) -> TaniumServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        server = _Server((self.host, self._port), self)
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"tanium-server-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> TaniumServer:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT`` or ``https://…``."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self._port}{self.prefix}"

    def __repr__(self) -> str:
        return f"TaniumServer(url={self.url!r}, sessions={len(self._sessions)})"

    # -- users and sessions ---------------------------------------------------

    def add_user(self, name: str, password: str, uid: int, domain: str = "") -> User:
        """Add a user who may log in with ``/auth`` or ``/api/v2/session/login``."""
        user = User(name, password, uid, domain)
        with self._lock:
            self._users[name] = user
        return user

    def _issue(self, uid: int, lifetime: Optional[float] = None) -> str:
        self._counter += 1
        token = f"{uid}-{self._counter}-{secrets.token_hex(64)}"
        self.issued.append(token)
        self._sessions[token] = _Session(token, uid, self.clock.now(), lifetime=lifetime)
        return token

    def new_session(self, uid: int = DEFAULT_USER[2]) -> str:
        """A fresh session id for ``uid``."""
        with self._lock:
            return self._issue(uid)

    def new_api_token(
        self, uid: int = DEFAULT_USER[2], *, trusted: bool = True, lifetime: float = 7 * 86400
    ) -> str:
        """A fresh API token; ``trusted=False`` acts as a client address not trusted."""
        token = f"token-{secrets.token_hex(32)}"
        with self._lock:
            self.issued.append(token)
            self._sessions[token] = _Session(
                token,
                uid,
                self.clock.now(),
                api=True,
                trusted=trusted,
                expires_at=self.clock.now() + lifetime,
            )
        return token

    def is_valid(self, token: str) -> bool:
        """True when ``token`` is a live session or API token now."""
        with self._lock:
            return self._live(token) is not None

    def revoke(self, token: str) -> None:
        """End one session (as an administrator would)."""
        with self._lock:
            self._sessions.pop(token, None)

    def revoke_user(self, uid: int = DEFAULT_USER[2]) -> int:
        """End every session of ``uid``; returns how many ended."""
        with self._lock:
            dead = [t for t, s in self._sessions.items() if s.uid == uid]
            for token in dead:
                del self._sessions[token]
            return len(dead)

    def restart(self) -> None:
        """Forget every session, as a restarted server does."""
        with self._lock:
            self._sessions.clear()

    def expire(self, token: str) -> None:
        """Make one session idle past its lifetime, as if unused for too long."""
        with self._lock:
            sess = self._sessions.get(token)
            if sess is not None:
                sess.last_seen -= self.session_expiration_seconds + 1
                if sess.expires_at is not None:
                    sess.expires_at = self.clock.now()

    def expire_all(self) -> None:
        """Advance the clock past the idle lifetime: every session expires."""
        self.clock.advance(self.session_expiration_seconds + 1)

    def rotate(self, token: str) -> str:
        """Replace ``token`` by a new one of the same user now; returns the new one."""
        with self._lock:
            old = self._sessions.pop(token)
            return self._issue(old.uid)

    @property
    def session_count(self) -> int:
        """Live and expired-but-not-purged sessions held."""
        return len(self._sessions)

    # -- faults ---------------------------------------------------------------

    def inject(self, path: str, fault: Optional[Fault] = None, **kwargs: Any) -> Fault:
        """Queue ``fault`` (or ``Fault(**kwargs)``) for requests to ``path``.

        A fault answers ``count`` requests (default 1; None: every request until
        :meth:`clear_faults`). The ``/auth`` client retries 502/503/504 twice by itself,
        so ``inject("/auth", status=503)`` is absorbed; use ``count=None`` (or 3) to see
        ``AuthServiceUnavailable``.
        """
        fault = fault if fault is not None else Fault(**kwargs)
        with self._lock:
            self._faults.setdefault(path, []).append(fault)
        return fault

    def redirect(
        self, path: str, location: str, status: int = 302, count: Optional[int] = 1
    ) -> Fault:
        """Answer requests to ``path`` with a redirect to ``location``."""
        return self.inject(path, status=status, headers={"Location": location}, count=count)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Optional[Fault]:
        with self._lock:
            queue = self._faults.get(path)
            if not queue:
                return None
            fault = queue[0]
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    queue.pop(0)
            return fault

    # -- counters -------------------------------------------------------------

    def count(self, path: str, status: Optional[int] = None) -> int:
        """Requests seen for ``path`` (optionally only those answered ``status``)."""
        if status is None:
            return self.counts[path]
        return self.statuses[(path, status)]

    def reset_counts(self) -> None:
        """Zero every counter and forget recorded requests."""
        with self._lock:
            self.counts.clear()
            self.statuses.clear()
            self.auth_calls.clear()
            self.requests.clear()
            self.used_after_rejection = 0

    def received(self, path: Optional[str] = None) -> Iterator[Recorded]:
        """Recorded requests, optionally for one path."""
        return (r for r in list(self.requests) if path is None or r.path == path)

    def _record(
        self, method: str, path: str, headers: dict[str, str], status: int, body: bytes = b""
    ) -> None:
        with self._lock:
            self.counts[path] += 1
            self.statuses[(path, status)] += 1
            if self._record_on:
                self.requests.append(Recorded(method, path, headers, status, body))

    def _route(self, path: str) -> Optional[str]:
        """``path`` below the server's prefix (None: outside it)."""
        prefix = self.prefix
        if not prefix:
            return path
        if path != prefix and not path.startswith(prefix + "/"):
            return None
        return path[len(prefix) :] or "/"

    # -- the protocol ---------------------------------------------------------

    def _live(self, token: str) -> Optional[_Session]:
        sess = self._sessions.get(token)
        if sess is None:
            return None
        now = self.clock.now()
        if sess.api:
            if sess.expires_at is not None and now >= sess.expires_at:
                return None
        elif now - sess.last_seen > (sess.lifetime or self.session_expiration_seconds):
            del self._sessions[token]
            return None
        return sess

    def _touch(self, token: str) -> Optional[_Session]:
        sess = self._live(token)
        if sess is not None:
            sess.last_seen = self.clock.now()
        return sess

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        if path != "/" and path.endswith("/"):
            path = path.rstrip("/")  # real servers answer /api/v2/sensors/ as well
        if path == "/config/console.json":
            return _json(200, {"serverVersion": self.version, "consoleVersion": self.version})
        if path == "/auth" and method in ("POST", "GET"):  # pytan 2 sends GET
            return self._auth(headers)
        if path == "/info.json" and method == "GET":
            return self._info(headers)
        if path == CURRENT_PATH and method == "GET":
            return self._current(headers)
        if path.startswith("/api/v2/session/") and method == "POST":
            return self._session_api(path, headers, body)
        if path == "/soap":
            return self._soap(headers, body)
        if path == GATEWAY_PATH:
            return self._gateway(headers)
        if path.startswith("/api/v2/"):
            return self._protected(method, path, headers, body)
        return _json(404, {"text": "not found"})

    def _auth(self, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        kind = (
            "login"
            if "username" in headers or "password" in headers
            else "logout"
            if "logout" in headers
            else "validate"
        )
        with self._lock:
            self.auth_calls[kind] += 1
        if kind == "login":
            try:
                name = base64.b64decode(headers.get("username", ""), validate=True).decode()
                password = base64.b64decode(headers.get("password", ""), validate=True).decode()
            except ValueError:
                return self.auth_reject_status, b"", dict(_TEXT)
            with self._lock:
                user = self._users.get(name)
                if (
                    user is None
                    or not secrets.compare_digest(user.password, password)
                    or (user.domain and headers.get("domain", "") != user.domain)
                ):
                    return self.auth_reject_status, b"", dict(_TEXT)
                lifetime = PERSISTENT_SECONDS if headers.get("persistent") == "1" else None
                if lifetime is not None:
                    self.persistent_logins += 1
                return 200, self._issue(user.uid, lifetime).encode(), dict(_TEXT)
        token = headers.get("session", "")
        with self._lock:
            sess = self._touch(token)
            if sess is None or sess.api:
                self._rejected.add(token)
                return self.auth_reject_status, b"", dict(_TEXT)
            flag = headers.get("logout")
            if flag == "0":
                del self._sessions[token]
                return 200, b"", dict(_TEXT)
            if flag == "1":
                for other in [t for t, s in self._sessions.items() if s.uid == sess.uid]:
                    del self._sessions[other]
                return 200, b"", dict(_TEXT)
            if self.rotate_on_validate:
                del self._sessions[token]
                token = self._issue(sess.uid)
            return 200, token.encode(), dict(_TEXT)

    def _session_api(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return _json(400, {"text": "body is not JSON"})
        if not isinstance(data, dict):
            return _json(400, {"text": "body is not an object"})
        with self._lock:
            if path == "/api/v2/session/login":
                user = self._users.get(str(data.get("username", "")))
                if user is None or not secrets.compare_digest(
                    user.password, str(data.get("password", ""))
                ):
                    return _json(403, {"text": "bad credentials"})
                return _json(200, {"data": {"session": self._issue(user.uid)}})
            token = str(data.get("session") or headers.get("session", ""))
            sess = self._touch(token)
            if sess is None or not sess.trusted:
                self._rejected.add(token)
                return _json(403, {"text": "not a valid session"})
            if path == "/api/v2/session/validate":
                answer: dict[str, Any] = {"session": token}
                return _json(200, answer if self.validate_bare else {"data": answer})
            if path == "/api/v2/session/logout":
                del self._sessions[token]
                return _json(200, {})
        return _json(404, {"text": "not found"})

    def _refused(self, token: str) -> tuple[int, bytes, dict[str, str]]:
        """A dead session's answer: 401 for an API token (as real servers), else
        ``dead_status``."""
        if token in self._rejected:
            self.used_after_rejection += 1
        if self.sign_in_redirect is not None:
            return 302, b"", {"Location": self.sign_in_redirect, "Content-Type": "text/html"}
        status = 401 if token.startswith("token-") else self.dead_status
        return _json(status, {"text": "not a valid session"})

    def _info(self, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """``/info.json`` (with a live session): diagnostics whose ``Settings`` hold the
        ``Version``, as pytan 2 and pytan3 read it."""
        token = headers.get("session", "")
        with self._lock:
            if not token or self._touch(token) is None:
                return _json(403, {"text": "not a valid session"})
            live = len(self._sessions)
        settings = [{"Version": self.version}, {"Session Expiration Seconds": 300}]
        cache = [{"Active Question Estimate": 0}, {"Active Client Estimate": 2}]
        diagnostics = [{"Settings": settings}, {"Active Question Cache": cache},
                       {"Sessions": [{"Live": live}]}]  # fmt: skip
        return _json(200, {"Diagnostics": diagnostics})

    def _current(self, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        token = headers.get("session", "")
        with self._lock:
            sess = self._touch(token) if token else None
            if sess is None or not sess.trusted:
                self._rejected.add(token)
                return _json(401, {"text": "not a valid session"})
            return _json(200, {"data": {"id": sess.uid}})

    def _soap(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """SOAP answers 200, failures in-band, in the envelope real servers send: the
        request's own ``<command>``, ``<session>``, ``<server_version>`` and, for
        ``GetObject``, a small object set (sensors, users, system status)."""
        token = headers.get("session", "")
        command, tag, objects = _soap_request(body)
        with self._lock:
            sess = self._touch(token) if token else None
            if sess is None or not sess.trusted:
                if token in self._rejected:
                    self.used_after_rejection += 1
                command, token, result = "ERROR: 403 Forbidden", "", ""
            elif self.soap_denied:
                command, result = "RBACInsufficientPrivilege", ""
            else:
                result = self._soap_result(command, tag, objects)
                if command.lower().startswith("newsession"):
                    token = self._issue(sess.uid)  # a new session: the caller's own stays
                elif self.rotate_on_soap:
                    del self._sessions[token]
                    token = self._issue(sess.uid)
        xml = _SOAP_ANSWER.format(
            command=_xml(command), session=token, tag=_xml(tag or "object"), result=result,
            version=_xml(self.version),
        )  # fmt: skip
        return 200, xml.encode(), {"Content-Type": "text/xml;charset=UTF-8"}

    def _soap_result(self, command: str, tag: str, objects: str) -> str:
        """What a live session's SOAP ``command`` answers (the lock is held)."""
        if command in ("GetResultInfo", "GetResultData", "GetMergedResultData"):
            return "<ResultXML><![CDATA[<result_sets><result_set/></result_sets>]]></ResultXML>"
        if command != "GetObject":
            return f"<result_object>{objects}</result_object>"  # what was added or changed
        plural = tag if tag.endswith("s") else tag + "s"
        return f"<result_object>{_SOAP_OBJECTS.get(plural, f'<{plural}/>')}</result_object>"

    def _gateway(self, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """The API Gateway: the same header; it does not slide the idle clock."""
        token = headers.get("session", "")
        with self._lock:
            sess = self._live(token) if token else None
            if sess is None or not sess.trusted:
                return _json(401, {"errors": [{"message": "not a valid session"}]})
        return _json(200, {"data": {"endpoints": {"edges": []}}})

    def _protected(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        token = headers.get("session", "")
        with self._lock:
            sess = self._touch(token) if token else None
            if sess is None or not sess.trusted:
                return self._refused(token)
            uid = sess.uid
        if path in self.denied_paths:
            return _json(403, {"text": "permission denied"})
        if path == "/api/v2/sensors":
            return _listed([dict(s) for s in _SENSORS])
        if path == "/api/v2/echo":
            return _json(
                200,
                {"data": {"method": method, "uid": uid, "body": body.decode("utf-8", "replace")}},
            )
        if path == "/api/v2/system_status":
            return _listed([dict(s) for s in _SYSTEM_STATUS])
        if path == "/api/v2/users":
            return _listed([{"id": u.uid, "name": u.name, "domain": u.domain}
                            for u in list(self._users.values())])  # fmt: skip
        return _json(404, {"text": "not found"})
