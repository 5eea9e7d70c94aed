"""Recovery: the 401/403 hook, refresh providers, retry adapters, faults and load."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from typing import Callable

import pytest
import requests
import tenacity
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from requests_tanium_session import (
    AuthServiceUnavailable,
    InvalidToken,
    LoginError,
    NotLoggedInError,
    TaniumSessionAuth,
)
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer
from requests_tanium_session.testing.chaos import run_load

from .conftest import concurrent_gets

MakeAuth = Callable[..., TaniumSessionAuth]
USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]


def _retrying(http: requests.Session, total: int = 3) -> requests.Session:
    retry = Retry(
        total=total, backoff_factor=0, status_forcelist=[502, 503, 504], allowed_methods=None
    )
    http.mount("http://", HTTPAdapter(max_retries=retry))
    return http


def _validations(server: TaniumServer) -> int:
    """``/auth`` calls that validated a session (not logins, not logouts)."""
    return sum(
        1 for r in server.received("/auth") if "session" in r.headers and "logout" not in r.headers
    )


def _logins(server: TaniumServer) -> int:
    return sum(1 for r in server.received("/auth") if "username" in r.headers)


# -- the hook -------------------------------------------------------------------


def test_permission_403_is_returned_after_one_check(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth()
    http.auth = auth
    resp = http.get(server.url + "/api/v2/denied")
    assert resp.status_code == 403 and resp.history == []
    assert server.count("/auth") == 1 and server.count("/api/v2/denied") == 1
    assert auth.session_id.logged_in


def test_rotation_on_check_costs_one_auth_and_one_resend(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    seen: list[str] = []
    auth = make_auth(on_token_update=seen.append)
    old = auth.session_id.token
    http.auth = auth
    server.rotate_on_validate = True
    server.inject("/api/v2/sensors", status=401)
    resp = http.get(server.url + "/api/v2/sensors")
    assert resp.status_code == 200
    assert [h.status_code for h in resp.history] == [401]
    new = auth.session_id.token
    assert new != old and seen == [new]
    assert resp.request.headers["session"] == new
    assert server.count("/auth") == 1 and server.count("/api/v2/sensors") == 2


def test_token_replaced_meanwhile_resends_without_auth(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth()
    http.auth = auth
    old = auth.session_id.token
    server.inject("/api/v2/sensors", delay=0.3, passthrough=True)
    out: list[requests.Response] = []
    worker = threading.Thread(target=lambda: out.append(http.get(server.url + "/api/v2/sensors")))
    worker.start()
    time.sleep(0.1)  # the request is on the wire with the old token
    new = server.new_session()
    server.revoke(old)
    auth.token = new
    worker.join()
    (resp,) = out
    assert resp.status_code == 200 and [h.status_code for h in resp.history] == [403]
    assert resp.request.headers["session"] == new
    assert server.count("/auth") == 0


def test_rejected_without_refresh_raises_with_the_403(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth()
    http.auth = auth
    server.revoke(auth.session_id.token)
    with pytest.raises(LoginError) as info:
        http.get(server.url + "/api/v2/sensors")
    assert info.value.response is not None and info.value.response.status_code == 403
    assert info.value.response.request.path_url == "/api/v2/sensors"


def test_resend_carries_cookies_and_rewinds_a_seekable_body(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    http.auth = make_auth()
    server.rotate_on_validate = True
    server.inject("/api/v2/echo", status=401, headers={"Set-Cookie": "route=node7; Path=/"})
    resp = http.post(server.url + "/api/v2/echo", data=io.BytesIO(b"replay me"))
    assert resp.status_code == 200
    assert resp.json()["data"]["body"] == "replay me"
    first, second = list(server.received("/api/v2/echo"))
    assert "cookie" not in first.headers
    assert second.headers["cookie"] == "route=node7"


def test_generator_body_is_never_resent(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth()
    old = auth.session_id.token
    http.auth = auth
    server.rotate_on_validate = True
    server.inject("/api/v2/echo", status=401)

    def body() -> Iterator[bytes]:
        yield b"once "
        yield b"only"

    resp = http.post(server.url + "/api/v2/echo", data=body())
    assert resp.status_code == 401 and resp.history == []
    assert server.count("/api/v2/echo") == 1
    assert auth.session_id.token != old  # the state was refreshed all the same
    assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert server.count("/auth") == 1


def test_at_most_one_resend(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    http.auth = make_auth()
    server.rotate_on_validate = True
    server.inject("/api/v2/sensors", status=401, count=2)
    resp = http.get(server.url + "/api/v2/sensors")
    assert resp.status_code == 401 and len(resp.history) == 1
    assert server.count("/api/v2/sensors") == 2 and server.count("/auth") == 1


def test_custom_refresh_status_codes(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    http.auth = make_auth(refresh_status_codes=[401])
    resp = http.get(server.url + "/api/v2/denied")
    assert resp.status_code == 403
    assert server.count("/auth") == 0


def test_auth_unavailable_during_check_raises_with_the_answer(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth()
    http.auth = auth
    server.inject("/auth", status=503, count=3)
    with pytest.raises(AuthServiceUnavailable) as info:
        http.get(server.url + "/api/v2/denied")
    assert info.value.retryable
    assert info.value.response is not None and info.value.response.status_code == 403
    assert auth.session_id.logged_in
    assert http.get(server.url + "/api/v2/sensors").status_code == 200


# -- refresh providers ------------------------------------------------------------


def test_refresh_after_revocation_resends_once(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    calls: list[str] = []

    def refresh() -> str:
        calls.append("refresh")
        return server.new_session()

    seen: list[str] = []
    auth = make_auth(refresh=refresh, on_token_update=seen.append)
    http.auth = auth
    server.revoke(auth.session_id.token)
    resp = http.get(server.url + "/api/v2/sensors")
    assert resp.status_code == 200 and [h.status_code for h in resp.history] == [403]
    assert calls == ["refresh"] and seen == [auth.session_id.token]
    assert server.count("/auth") == 1


def test_refresh_before_sending_when_stale_and_dead(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth(refresh=server.new_session, revalidate_after=0.05)
    http.auth = auth
    server.revoke(auth.session_id.token)
    time.sleep(0.06)
    resp = http.get(server.url + "/api/v2/sensors")
    assert resp.status_code == 200 and resp.history == []
    assert server.count("/api/v2/sensors") == 1 and server.count("/auth") == 1


def test_concurrent_threads_share_one_refresh(server: TaniumServer, make_auth: MakeAuth) -> None:
    calls: list[int] = []

    def refresh() -> str:
        calls.append(1)
        time.sleep(0.1)
        return server.new_session()

    auth = make_auth(refresh=refresh)
    server.revoke(auth.session_id.token)
    statuses = concurrent_gets(server.url + "/api/v2/sensors", auth, threads=16)
    assert statuses == [200] * 16
    assert len(calls) == 1
    assert server.count("/auth") == 1


@pytest.mark.parametrize(
    ("provider", "cause"),
    [
        (lambda: (_ for _ in ()).throw(RuntimeError("vault down")), RuntimeError),
        (lambda: "", ValueError),
        (lambda: None, TypeError),
    ],
    ids=["raises", "empty", "none"],
)
def test_failing_refresh_raises_login_error_chained(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session,
    provider: Callable[[], str], cause: type[Exception],
) -> None:  # fmt: skip
    auth = make_auth(refresh=provider)
    http.auth = auth
    server.revoke(auth.session_id.token)
    with pytest.raises(LoginError) as info:
        http.get(server.url + "/api/v2/sensors")
    assert type(info.value) is LoginError
    if cause is RuntimeError:
        assert isinstance(info.value.__cause__, RuntimeError)
    assert not auth.session_id.logged_in


def test_from_credentials_logs_in_with_base64_headers(
    server: TaniumServer, http: requests.Session
) -> None:
    with TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD) as auth:
        http.auth = auth
        assert http.get(server.url + "/api/v2/sensors").status_code == 200
        (login,) = list(server.received("/auth"))
        assert base64.b64decode(login.headers["username"]).decode() == USER
        assert base64.b64decode(login.headers["password"]).decode() == PASSWORD
        assert "domain" not in login.headers and "secondary" not in login.headers
        for text in (repr(auth), str(auth), repr(auth.refresh), repr(auth.session_id)):
            assert PASSWORD not in text


def test_from_credentials_sends_domain_and_secondary_when_set(server: TaniumServer) -> None:
    server.add_user("svc", "svc-password-1", uid=9, domain="CORP")
    with TaniumSessionAuth.from_credentials(
        server.url, "svc", "svc-password-1", domain="CORP", secondary="123456"
    ) as auth:
        assert auth.session_id.uid == 9
    (login,) = list(server.received("/auth"))
    assert login.headers["domain"] == "CORP" and login.headers["secondary"] == "123456"


def test_from_credentials_survives_idle_expiry_on_both_paths(
    server: TaniumServer, http: requests.Session
) -> None:
    with TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD) as auth:
        http.auth = auth
        first = auth.session_id.token
        server.clock.advance(server.session_expiration_seconds + 1)
        resp = http.get(server.url + "/api/v2/sensors")  # the hook path
        assert resp.status_code == 200 and len(resp.history) == 1
        second = auth.session_id.token
        assert second != first
        auth.session_id.revalidate_after = 0.05
        server.clock.advance(server.session_expiration_seconds + 1)
        time.sleep(0.06)
        resp = http.get(server.url + "/api/v2/sensors")  # the proactive path
        assert resp.status_code == 200 and resp.history == []
        assert auth.session_id.token not in (first, second)
        assert _logins(server) == 3 and _validations(server) == 2


def test_from_credentials_wrong_password(server: TaniumServer) -> None:
    with pytest.raises(LoginError) as info:
        TaniumSessionAuth.from_credentials(server.url, USER, "wrong-password-xyz")
    assert "wrong-password-xyz" not in str(info.value) and "401" in str(info.value)
    with pytest.raises(ValueError, match="password"):
        TaniumSessionAuth.from_credentials(server.url, USER, "")


def test_server_restart_recovers_through_refresh_or_fails(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    with_refresh = make_auth(refresh=server.new_session)
    without = make_auth()
    server.restart()
    assert requests.get(server.url + "/api/v2/sensors", auth=with_refresh).status_code == 200
    with pytest.raises(InvalidToken):
        requests.get(server.url + "/api/v2/sensors", auth=without)
    with pytest.raises(NotLoggedInError):
        requests.get(server.url + "/api/v2/sensors", auth=without)


# -- retry adapters ----------------------------------------------------------------


def test_adapter_retries_api_503s(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    _retrying(http).auth = make_auth()
    server.inject("/api/v2/sensors", status=503, count=2)
    assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert server.count("/api/v2/sensors") == 3 and server.count("/auth") == 0


def test_resend_benefits_from_the_adapter_retries(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    _retrying(http).auth = make_auth()
    server.rotate_on_validate = True
    server.inject("/api/v2/sensors", status=403)
    server.inject("/api/v2/sensors", status=503)
    resp = http.get(server.url + "/api/v2/sensors")
    assert resp.status_code == 200 and len(resp.history) == 1
    assert server.count("/api/v2/sensors") == 3 and server.count("/auth") == 1


def test_tenacity_retries_a_briefly_unreachable_auth(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    http.auth = make_auth()
    server.inject("/api/v2/sensors", status=401)  # a recovery's check meets a dropped /auth
    server.inject("/auth", drop=True)
    attempts: list[int] = []

    @tenacity.retry(
        retry=tenacity.retry_if_exception_type(requests.ConnectionError),
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_none(),
        reraise=True,
    )
    def call() -> requests.Response:
        attempts.append(1)
        return http.get(server.url + "/api/v2/sensors")

    assert call().status_code == 200
    assert len(attempts) == 2
    assert server.count("/api/v2/sensors") == 2


# -- faults ---------------------------------------------------------------------


def test_slow_auth_on_a_stale_check_sends_the_kept_session(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    auth = make_auth(revalidate_after=0.05, login_timeout=0.1)
    http.auth = auth
    time.sleep(0.06)
    server.inject("/auth", delay=0.4, passthrough=True)
    assert http.get(server.url + "/api/v2/sensors").status_code == 200  # like a 5xx
    assert auth.logged_in and auth.stats.validations == 1
    assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert auth.stats.validations == 1  # left alone for a while: it was busy
    assert sum("is busy" in r.getMessage() for r in caplog.records) == 1


def test_auth_dropped_mid_answer(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth(revalidate_after=0.05)
    token = auth.token
    http.auth = auth
    time.sleep(0.06)
    server.inject("/auth", status=200, body=b"1-2-ab", partial=True)
    # a cut answer is a transport failure, never a token: the kept session goes out
    assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert auth.token == token and server.count("/auth") == 1
    other = make_auth()  # (the first leaves a busy /auth alone for a while)
    http.auth = other
    token = other.token
    server.inject("/api/v2/sensors", status=401)
    server.inject("/auth", status=200, body=b"1-2-ab", partial=True)
    with pytest.raises(requests.exceptions.RequestException) as info:
        http.get(server.url + "/api/v2/sensors")  # a recovery's check raises it
    assert isinstance(
        info.value, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
    )
    assert other.token == token


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_absorbed_then_unavailable(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session,
    caplog: pytest.LogCaptureFixture, status: int,
) -> None:  # fmt: skip
    auth = make_auth(revalidate_after=0.05)
    http.auth = auth
    time.sleep(0.06)
    server.inject("/auth", status=status, count=2)
    assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert server.count("/auth") == 3
    time.sleep(0.06)
    server.inject("/auth", status=status, count=None)
    with pytest.raises(AuthServiceUnavailable):
        auth.session_id.validate()
    # a proactive revalidation that finds /auth down still sends the request
    time.sleep(0.06)
    assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert any(r.levelname == "WARNING" and "is busy" in r.getMessage() for r in caplog.records)
    server.clear_faults()
    time.sleep(0.06)
    assert http.get(server.url + "/api/v2/sensors").status_code == 200


# -- load -------------------------------------------------------------------------


def test_load_with_expiry_rotation_revocation_and_503s(server: TaniumServer) -> None:
    """8 threads x 150 requests while the server expires, rotates, revokes and fails."""
    with TaniumSessionAuth.from_credentials(server.url, USER, PASSWORD) as auth:
        report = run_load(server, auth, threads=8, per_thread=150)
    assert report.errors == {}
    assert report.statuses == {200: 1200}
    assert report.deaths > 0 and report.events["503"] > 0
    # each death costs at most one validation and one login, however many threads saw it
    assert report.validations <= report.deaths + 1
    assert report.logins <= report.deaths + 1
    # no request is prepared with a token the client had already replaced; only those
    # already on the wire when another thread learned of a death reach the server late
    assert report.tokens > report.deaths
    assert report.sent_superseded == 0
    assert report.used_after_rejection <= report.threads * report.deaths
