"""Hardening: re-entry, deadlines, the environment, hostile answers, secrets, logging.

Each test here failed before the fix it names (issue "Hardening"), over real sockets.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import pickle
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import requests

from requests_tanium_session import (
    GetPlatformVersionWarning,
    HttpClient,
    InvalidToken,
    LoginError,
    SessionId,
    TaniumSession,
    TaniumSessionAuth,
)
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer
from requests_tanium_session.versions import probe_version

from .conftest import Servers

MakeAuth = Callable[..., TaniumSessionAuth]
USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]


def _finishes(fn: Callable[[], Any], within: float) -> list[Any]:
    """Run ``fn`` on a thread; fail the test (not hang it) when it does not end in time."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(within)
    assert not worker.is_alive(), f"still running after {within} s: deadlocked or hung"
    return out


class _Listener:
    """A TCP listener that counts connections and never answers (a proxy we must avoid)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    lst = _Listener()
    yield lst
    lst.close()


# -- 1. re-entry never deadlocks ------------------------------------------------------


def test_refresh_that_logs_in_through_the_same_session_does_not_deadlock(
    server: TaniumServer, http: requests.Session
) -> None:
    def refresh() -> str:
        # The obvious way to write it: log in through the session that carries the auth.
        resp = http.post(
            server.url + "/api/v2/session/login", json={"username": USER, "password": PASSWORD}
        )
        assert "session" not in resp.request.headers  # it went out as a login
        return str(resp.json()["data"]["session"])

    with TaniumSessionAuth(server.url, server.new_session(), refresh=refresh) as auth:
        http.auth = auth
        server.restart()
        out = _finishes(lambda: http.get(server.url + "/api/v2/sensors").status_code, 10)
        assert out == [200]


def test_calls_from_inside_refresh_raise_instead_of_waiting(
    server: TaniumServer, make_auth: MakeAuth
) -> None:
    seen: list[str] = []
    holder: dict[str, TaniumSessionAuth] = {}

    def refresh() -> str:
        auth = holder["auth"]
        for call in (
            lambda: auth.session_id.validate(),
            lambda: auth.validated_token(),
            lambda: auth.session_id.token,
        ):
            try:
                call()
            except LoginError as exc:
                seen.append(str(exc))
        return server.new_session()

    auth = holder["auth"] = make_auth(refresh=refresh, revalidate_after=0)
    server.restart()
    out = _finishes(auth.validated_token, 10)
    assert isinstance(out[0], str) and len(seen) == 3
    assert all("inside refresh()" in text for text in seen)


def test_on_token_update_that_validates_during_rotation_does_not_deadlock(
    server: TaniumServer, make_auth: MakeAuth, caplog: pytest.LogCaptureFixture
) -> None:
    holder: dict[str, TaniumSessionAuth] = {}
    errors: list[type[BaseException]] = []

    def updated(token: str) -> None:
        try:
            holder["auth"].session_id.validate()
        except LoginError as exc:
            errors.append(type(exc))
            raise

    auth = holder["auth"] = make_auth(on_token_update=updated)
    server.rotate_on_validate = True
    out = _finishes(auth.session_id.validate, 10)
    assert isinstance(out[0], str) and errors == [LoginError]
    assert "on_token_update raised LoginError" in caplog.text


def test_waiters_give_up_at_the_flights_deadline(server: TaniumServer, make_auth: MakeAuth) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow_refresh() -> str:
        entered.set()
        release.wait(10)
        return server.new_session()

    # flight deadline: 2 * login_timeout + 2 = 2.2 s
    auth = make_auth(refresh=slow_refresh, login_timeout=0.1, revalidate_after=0)
    server.restart()
    leader = threading.Thread(target=auth.validated_token, daemon=True)
    try:
        leader.start()
        assert entered.wait(5)
        began = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            auth.validated_token()
        assert time.monotonic() - began < 4
    finally:
        release.set()
        leader.join(5)


# -- 2. wall-clock deadlines and capped bodies ---------------------------------------------


def test_trickling_auth_body_ends_at_the_deadline_for_leader_and_waiters(
    server: TaniumServer, client: HttpClient
) -> None:
    sid = SessionId(client, server.new_session(), login_timeout=1)
    server.inject("/auth", status=200, body=b"1-1-" + b"a" * 60, trickle=0.2)
    gate = threading.Barrier(4)
    outcomes: list[float] = []

    def one() -> None:
        gate.wait()
        began = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            sid.validate()
        outcomes.append(time.monotonic() - began)

    workers = [threading.Thread(target=one) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert len(outcomes) == 4 and max(outcomes) < 2.5  # 8 s before the fix
    assert sid.logged_in and server.count("/auth") == 1


def test_endless_console_json_is_capped(server: TaniumServer, client: HttpClient) -> None:
    server.inject("/config/console.json", status=200, body=b"x" * 65536, endless=True)
    tracemalloc.start()
    try:
        with pytest.warns(GetPlatformVersionWarning, match="more than"):
            assert probe_version(client, timeout=5) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # 97 MiB before the fix


@pytest.mark.parametrize("path", ["/auth", "/config/console.json"])
def test_deeply_nested_json_is_a_malformed_answer(
    server: TaniumServer, client: HttpClient, path: str
) -> None:
    deep = b"[" * 30000 + b"]" * 30000
    server.inject(path, status=200, body=deep)
    if path == "/config/console.json":
        with pytest.warns(GetPlatformVersionWarning, match="JSON object"):
            assert probe_version(client) is None
        return
    token = server.new_session()
    sid = SessionId(client, token)
    with pytest.raises(LoginError, match=r"not a token|too long"):
        sid.validate()
    assert sid.token == token  # kept (and still fresh: no call)


def test_credential_login_uses_the_current_login_timeout(
    server: TaniumServer, http: requests.Session
) -> None:
    with TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD) as auth:
        http.auth = auth
        auth.session_id.login_timeout = 0.3
        server.restart()
        server.inject("/auth", passthrough=True)  # the validation answers at once
        server.inject("/auth", passthrough=True, delay=2)  # the login is slow
        began = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            http.get(server.url + "/api/v2/sensors")
        assert time.monotonic() - began < 1.5


# -- 3 and 4. settings the environment must not override -------------------------------


def test_pinned_ca_bundle_wins_over_requests_ca_bundle(
    tls_server: TaniumServer, ca_bundle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system bundle cannot verify the local CA: if it replaced ours, TLS would fail.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", requests.certs.where())
    with TaniumSessionAuth(
        tls_server.url, tls_server.new_session(), verify=ca_bundle, revalidate_after=0
    ) as auth:
        assert auth.session_id.validate()
        with requests.Session() as s:
            s.auth = auth
            assert s.get(tls_server.url + "/api/v2/sensors", verify=ca_bundle).status_code == 200
    assert tls_server.count("/auth") == 2


def test_requests_ca_bundle_still_serves_the_default(
    tls_server: TaniumServer, ca_bundle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)  # verify=True: the user's default
    with HttpClient(tls_server.url) as client:
        assert SessionId(client, tls_server.new_session()).validate()


@pytest.mark.parametrize("verify", ["", b"/etc/ssl", 1])
def test_verify_must_be_a_bool_or_a_path(server: TaniumServer, verify: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="verify"):
        HttpClient(server.url, verify=verify)


def test_explicit_proxies_win_over_https_proxy(
    server: TaniumServer, listener: _Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", listener.url)
    monkeypatch.setenv("http_proxy", listener.url)
    with HttpClient(server.url, proxies={"http": server.url}) as client:
        # The "proxy" is the server itself: it answers the absolute-form request.
        assert SessionId(client, server.new_session()).validate()
    assert listener.connections == 0


def test_loopback_auth_never_uses_environment_proxies(
    server: TaniumServer, listener: _Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, listener.url)
    with TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD) as auth:
        auth.session_id.validate()
        auth.logout()
    assert listener.connections == 0  # no password or session in clear text to a proxy
    assert server.auth_calls["login"] == 1


@pytest.mark.parametrize("host", ["foo.localhost", "localhost.", "127.0.0.1.nip.io"])
def test_only_true_loopback_allows_http(host: str) -> None:
    with pytest.raises(ValueError, match="http://"):
        HttpClient(f"http://{host}:8080")


# -- 5. TaniumSession strips redirects no hook can hide ----------------------------------


def test_tanium_session_strips_redirects_made_by_another_hook(servers: Servers) -> None:
    home = servers.start()
    elsewhere = servers.start()

    def retry_on_503(r: requests.Response, **kwargs: Any) -> requests.Response:
        # A common user hook: resend once on 503 and hand back the new answer.
        if r.status_code == 503:
            r.content  # noqa: B018
            return r.connection.send(r.request.copy(), **kwargs)  # type: ignore[no-any-return]
        return r

    home.inject("/api/v2/sensors", status=503)
    home.redirect("/api/v2/sensors", elsewhere.url + "/api/v2/sensors")
    with TaniumSession(home.url, home.new_session()) as s:
        s.hooks["response"].append(retry_on_503)
        s.get("/api/v2/sensors")
    hops = list(elsewhere.received("/api/v2/sensors"))
    assert len(hops) == 1 and "session" not in hops[0].headers


def test_tanium_session_joins_relative_urls_and_builds_from_credentials(
    server: TaniumServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TaniumSession.from_credentials(server.url, USER, PASSWORD) as s:
        assert s.get("/api/v2/sensors").status_code == 200
        assert s.get("api/v2/sensors").status_code == 200
        assert isinstance(s.auth, TaniumSessionAuth)
    monkeypatch.setenv("TANIUM_URL", server.url)
    monkeypatch.setenv("TANIUM_SESSION", server.new_session())
    with TaniumSession.from_env() as s:
        assert s.get(server.url + "/api/v2/sensors").status_code == 200
    with pytest.raises(ValueError, match="auth="):
        TaniumSession(server.url, auth=TaniumSessionAuth(server.url, server.new_session()))


def test_tanium_session_pickles_without_the_token(server: TaniumServer) -> None:
    with TaniumSession(server.url, server.new_session()) as s:
        token = s.auth.token
        assert token
        data = pickle.dumps(s)
        assert token.encode() not in data
        clone = pickle.loads(data)
        assert clone.base_url == server.url and not clone.auth.session_id.logged_in
        clone.auth.token = server.new_session()
        assert clone.get("/api/v2/sensors").status_code == 200
        clone.close()


# -- 6 and 7. wrong answers ---------------------------------------------------------------


@pytest.mark.parametrize("body", [b"OK", b'{"success":true}', b"null", b"true", b"1-2-abc"])
def test_short_printable_auth_bodies_are_not_adopted(
    server: TaniumServer, client: HttpClient, body: bytes
) -> None:
    token = server.new_session()
    sid = SessionId(client, token)
    server.inject("/auth", status=200, body=body)
    with pytest.raises(LoginError, match="not a token"):
        sid.validate()
    assert sid.logged_in and sid.token == token  # kept, fresh: no call


def test_session_id_answer_must_keep_its_shape(server: TaniumServer, client: HttpClient) -> None:
    sid = SessionId(client, server.new_session())
    server.inject("/auth", status=200, body=b"token-" + b"a" * 40)
    with pytest.raises(LoginError, match="not a token"):
        sid.validate()


def test_malformed_answer_during_recovery_neither_resends_nor_refreshes(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    refreshed: list[int] = []
    auth = make_auth(refresh=lambda: refreshed.append(1) or server.new_session())
    http.auth = auth
    server.inject("/api/v2/sensors", status=401)
    server.inject("/auth", status=200, body=b"OK")
    with pytest.raises(LoginError) as info:
        http.get(server.url + "/api/v2/sensors")
    assert info.value.response is not None and info.value.response.status_code == 401
    assert server.count("/api/v2/sensors") == 1 and refreshed == []


def test_refresh_returning_the_rejected_token_ends_in_login_error(
    server: TaniumServer, http: requests.Session
) -> None:
    token = server.new_session()
    calls: list[int] = []

    def stubborn() -> str:
        calls.append(1)
        return token

    with TaniumSessionAuth(server.url, token, refresh=stubborn) as auth:
        http.auth = auth
        server.revoke(token)
        for _ in range(3):
            with pytest.raises(LoginError, match="just rejected"):
                http.get(server.url + "/api/v2/sensors")
    # each request: one send; the first found it dead, the others knew already
    assert server.count("/api/v2/sensors") == 1
    assert server.auth_calls["validate"] == 1 and len(calls) == 3


@pytest.mark.parametrize("status", [404, 405, 501])
def test_auth_that_is_not_tanium_names_the_url_and_keeps_the_token(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session, status: int
) -> None:
    auth = make_auth(revalidate_after=0)
    token = auth.token
    server.inject("/auth", status=status, count=None)
    with pytest.raises(LoginError, match="check the URL") as info:
        auth.session_id.validate()
    assert not isinstance(info.value, InvalidToken) and not info.value.retryable
    assert server.url in str(info.value)
    assert auth.token == token
    http.auth = auth
    with pytest.raises(LoginError, match="check the URL"):
        http.get(server.url + "/api/v2/sensors")
    assert auth.session_id.logged_in


# -- 8. no secret reachable from an exception ---------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]


def _exposed(exc: BaseException) -> str:
    """Everything a user could reach from ``exc`` and its chain, as text."""
    parts: list[str] = []
    for e in _chain(exc):
        parts += [repr(e), str(e), repr(e.args), repr(getattr(e, "doc", ""))]
        for owner in (e, getattr(e, "response", None)):
            req = getattr(owner, "request", None)
            if req is not None:
                parts += [repr(dict(req.headers)), repr(req.body)]
        resp = getattr(e, "response", None)
        if resp is not None:
            parts.append(repr(resp.content))
        with contextlib.suppress(Exception):  # an exception that does not pickle hides nothing
            parts.append(repr(pickle.dumps(e)))
    return "\n".join(parts)


def test_transport_errors_from_auth_carry_redacted_requests(servers: Servers) -> None:
    server = servers.start()
    import base64

    b64 = base64.b64encode(PASSWORD.encode()).decode()
    with TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD) as auth:
        token = auth.token
        assert token
        server.inject("/auth", drop=True, count=None)
        with pytest.raises(requests.ConnectionError) as info:
            auth.session_id.validate()
        text = _exposed(info.value)
        assert token not in text and "<redacted>" in text
        server.clear_faults()
        server.revoke(token)
        server.inject("/auth", status=401)  # the check: dead; then the login: dropped
        server.inject("/auth", drop=True, count=None)
        with pytest.raises(requests.ConnectionError) as info2:
            requests.get(server.url + "/api/v2/sensors", auth=auth)
        text = _exposed(info2.value)
        assert b64 not in text and PASSWORD not in text


def test_rest_answers_leave_no_raw_body_on_the_exception(
    server: TaniumServer, client: HttpClient
) -> None:
    token = server.new_session()
    secret_body = json.dumps({"data": {"session": "x"}, "echo": token})[:-1]  # not a token
    server.inject("/auth", status=200, body=secret_body.encode())
    with pytest.raises(LoginError) as info:
        SessionId(client, token).validate()
    for e in _chain(info.value):
        assert not hasattr(e, "doc")
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_cookies_set_by_auth_are_not_kept_or_pickled(server: TaniumServer) -> None:
    with TaniumSessionAuth(server.url, server.new_session()) as auth:
        server.inject(
            "/auth",
            status=200,
            body=auth.token.encode(),  # type: ignore[union-attr]
            headers={"Set-Cookie": "tanium_cookie_secret=abc123; Path=/"},
        )
        auth.session_id.validate()
        assert len(auth.http_client.session.cookies) == 0
        assert b"tanium_cookie_secret" not in pickle.dumps(auth)


@pytest.mark.parametrize("field", ["domain", "secondary"])
def test_credential_fields_with_outer_whitespace_are_refused(
    server: TaniumServer, field: str
) -> None:
    value = " CORP-hidden-value"
    with pytest.raises(ValueError, match=field) as info:
        TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD, **{field: value})
    assert value.strip() not in str(info.value)


def test_refresh_values_are_stored_as_plain_str(server: TaniumServer, make_auth: MakeAuth) -> None:
    class Sneaky(str):
        def __str__(self) -> str:
            return "shown"

    auth = make_auth(refresh=lambda: Sneaky(server.new_session()))
    server.restart()
    token = auth.validated_token()
    assert type(token) is str and type(auth.token) is str


# -- 9. logging by module name ----------------------------------------------------------


def test_package_logger_level_silences_session_id(
    server: TaniumServer, sid: SessionId, caplog: pytest.LogCaptureFixture
) -> None:
    package = logging.getLogger("requests_tanium_session")
    caplog.clear()
    sid.validate()
    names = {r.name for r in caplog.records}
    assert "requests_tanium_session.session_id" in names
    assert all(
        r.levelno == logging.DEBUG for r in caplog.records if r.name.startswith("requests_t")
    )
    before = package.level
    try:
        package.setLevel(logging.WARNING)
        # caplog sets the root logger's level; the package's own level now decides.
        caplog.clear()
        sid.validate()
        assert not [r for r in caplog.records if r.name.startswith("requests_tanium_session")]
    finally:
        package.setLevel(before)


def test_refresh_logs_at_info(
    server: TaniumServer, make_auth: MakeAuth, caplog: pytest.LogCaptureFixture
) -> None:
    auth = make_auth(refresh=server.new_session, revalidate_after=0)
    server.restart()
    caplog.clear()
    auth.validated_token()
    levels = {r.levelno for r in caplog.records if r.name == "requests_tanium_session.session_id"}
    assert logging.INFO in levels and logging.WARNING not in levels


# -- 10. smaller things ---------------------------------------------------------------------


def test_revalidate_after_zero_checks_before_every_request(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    http.auth = make_auth(revalidate_after=0)
    for _ in range(3):
        assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert server.auth_calls["validate"] == 3


def test_an_auth_over_a_ready_session_id_shares_it_and_sets_its_timings(
    server: TaniumServer, sid: SessionId
) -> None:
    sid.revalidate_after = 10
    sid.login_timeout = 9
    seen: list[str] = []
    auth = TaniumSessionAuth(session_id=sid, revalidate_after=2, login_timeout=3)
    assert (sid.revalidate_after, sid.login_timeout) == (2, 3)  # the auth's, given or default
    assert auth.session_id is sid and auth.token == sid.token
    sid.on_token_update = seen.append  # one session: one set of callbacks
    assert auth.on_token_update == seen.append
    auth.token = fresh = server.new_session()
    assert seen == [fresh] and sid.token == fresh
    auth.close()


def test_recovery_leaves_no_reference_cycles(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth(refresh=server.new_session)
    http.auth = auth
    url = server.url + "/api/v2/sensors"
    http.get(url)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            server.restart()  # 401/403 -> validate (rejected) -> refresh -> resend
            assert http.get(url).status_code == 200
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kinds = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not kinds & {"Response", "InvalidToken", "LoginError", "NotLoggedInError", "frame"}
