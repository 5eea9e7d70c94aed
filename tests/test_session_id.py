"""SessionId against the local server: validate, rotation, clock, logout, death, threads."""

from __future__ import annotations

import logging
import pickle
import threading
import time
from typing import Any

import pytest
import requests

from requests_tanium_session import (
    AuthServiceUnavailable,
    HttpClient,
    InvalidToken,
    LoginError,
    LogoutError,
    NotLoggedInError,
    SessionId,
)
from requests_tanium_session.testing import TaniumServer

from .conftest import free_port

BAD_SESSIONS: list[tuple[str, Any, type[Exception]]] = [
    ("none", None, TypeError),
    ("int", 12345, TypeError),
    ("bytes", b"1-2-abc", TypeError),
    ("empty", "", ValueError),
    ("space", "1-2-ab cd", ValueError),
    ("only-space", "   ", ValueError),
    ("tab", "1-2-ab\tcd", ValueError),
    ("crlf", "1-2-abcd\r\nX-Evil: 1", ValueError),
    ("lf", "1-2-abcd\n", ValueError),
    ("nul", "1-2-ab\x00cd", ValueError),
    ("del", "1-2-ab\x7fcd", ValueError),
    ("non-ascii", "1-2-abcdé", ValueError),
    ("very-long", "1-2-" + "a" * 5000, ValueError),
    ("just-over", "a" * 4097, ValueError),
]


@pytest.mark.parametrize(
    ("value", "kind"), [(v, k) for _, v, k in BAD_SESSIONS], ids=[n for n, _, _ in BAD_SESSIONS]
)
def test_bad_session_values_are_refused_without_echo(
    client: HttpClient, value: Any, kind: type[Exception]
) -> None:
    with pytest.raises(kind) as info:
        SessionId(client, value)
    message = str(info.value)
    assert "session" in message
    if isinstance(value, str) and value.strip():
        assert value not in message and value.strip() not in message
        assert repr(value) not in repr(info.value)


def test_longest_allowed_session_is_accepted(client: HttpClient) -> None:
    sid = SessionId(client, "a" * 4096)
    assert sid.logged_in and sid.uid is None


def test_setter_refuses_bad_values_and_keeps_the_old_token(sid: SessionId) -> None:
    before = sid.token
    with pytest.raises(ValueError):
        sid.token = "bad token"
    assert sid.token == before


def test_validate_returns_same_token_and_counts_one_call(
    server: TaniumServer, sid: SessionId
) -> None:
    token = sid.token
    assert sid.validate() == token
    assert server.count("/auth") == 1
    assert sid.token == token and sid.logged_in


def test_rotation_is_adopted_and_announced(server: TaniumServer, client: HttpClient) -> None:
    old = server.new_session()
    sid = SessionId(client, old)
    seen: list[str] = []
    sid.on_token_update = seen.append
    server.rotate_on_validate = True
    new = sid.validate()
    assert new != old and sid.token == new
    assert seen == [new]
    assert server.is_valid(new) and not server.is_valid(old)


def test_no_auth_call_before_revalidate_after(server: TaniumServer, sid: SessionId) -> None:
    sid.revalidate_after = 60
    for _ in range(20):
        sid.token  # noqa: B018
    assert server.count("/auth") == 0


def test_exactly_one_auth_call_after_revalidate_after(server: TaniumServer, sid: SessionId) -> None:
    sid.revalidate_after = 0.2
    time.sleep(0.21)
    for _ in range(5):
        sid.token  # noqa: B018
    assert server.count("/auth") == 1
    assert sid.last_used is not None and sid.last_used < 0.2


def test_confirmed_at_construction(sid: SessionId) -> None:
    assert sid.last_used is not None and sid.last_used < 1
    assert not sid.expired
    assert sid.expires_in is not None and 290 < sid.expires_in <= 295


def test_expired_follows_expires_after(sid: SessionId) -> None:
    sid.expires_after = 0.01
    time.sleep(0.02)
    assert sid.expired


_TIMINGS = ["revalidate_after", "expires_after", "login_timeout", "logout_timeout"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (name, value)
        for name in _TIMINGS
        for value in (0, -1, float("inf"), float("nan"))
        if (name, value) != ("revalidate_after", 0)  # 0 is allowed: validate every time
    ],
)
def test_timing_attributes_are_validated(sid: SessionId, name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        setattr(sid, name, value)


def test_revalidate_after_zero_validates_before_every_use(
    server: TaniumServer, sid: SessionId
) -> None:
    sid.revalidate_after = 0
    for _ in range(3):
        sid.token  # noqa: B018
    assert server.auth_calls["validate"] == 3


def test_timing_attributes_reject_non_numbers(sid: SessionId) -> None:
    with pytest.raises(TypeError):
        sid.revalidate_after = "5"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        SessionId(sid.http_client, "1-1-aa", login_timeout=True)


def test_logout_then_logout_again(server: TaniumServer, sid: SessionId) -> None:
    token = sid.token
    sid.logout()
    assert not sid.logged_in and sid.last_used is None and sid.expired
    assert not server.is_valid(token)
    with pytest.raises(NotLoggedInError):
        sid.logout()
    with pytest.raises(NotLoggedInError):
        sid.token  # noqa: B018
    with pytest.raises(NotLoggedInError):
        sid.validate()
    assert server.count("/auth") == 1


def test_logout_all_ends_every_session_of_the_user(
    server: TaniumServer, client: HttpClient
) -> None:
    other = server.new_session()
    stranger = server.new_session(uid=7)
    sid = SessionId(client, server.new_session())
    sid.logout_all()
    assert not sid.logged_in
    assert not server.is_valid(other)
    assert server.is_valid(stranger)
    assert [r.headers.get("logout") for r in server.received("/auth")] == ["1"]


def test_logout_refused_drops_token(server: TaniumServer, sid: SessionId) -> None:
    server.revoke(sid.token)
    with pytest.raises(LogoutError) as info:
        sid.logout()
    assert info.value.response is not None and info.value.response.status_code == 401
    assert not sid.logged_in


def test_logout_transient_keeps_token(server: TaniumServer, sid: SessionId) -> None:
    server.inject("/auth", status=500)
    with pytest.raises(LogoutError):
        sid.logout()
    assert sid.logged_in
    sid.logout()
    assert not sid.logged_in


def test_rejected_token_is_dead_and_costs_no_more_calls(
    server: TaniumServer, sid: SessionId
) -> None:
    token = sid.token
    server.revoke(token)
    with pytest.raises(InvalidToken) as info:
        sid.validate()
    assert info.value.response is not None and info.value.response.status_code == 401
    assert not sid.logged_in and sid.last_used is None
    for _ in range(3):
        with pytest.raises(NotLoggedInError):
            sid.token  # noqa: B018
        with pytest.raises(NotLoggedInError):
            sid.login()
    assert server.count("/auth") == 1


def test_setter_revives_a_dead_object(server: TaniumServer, sid: SessionId) -> None:
    server.revoke(sid.token)
    with pytest.raises(InvalidToken):
        sid.validate()
    fresh = server.new_session()
    seen: list[str] = []
    sid.on_token_update = seen.append
    sid.token = fresh
    assert sid.logged_in and sid.token == fresh and seen == [fresh]
    assert sid.validate() == fresh


def test_other_4xx_is_a_definitive_rejection(server: TaniumServer, sid: SessionId) -> None:
    server.inject("/auth", status=400)
    with pytest.raises(InvalidToken):
        sid.validate()
    assert not sid.logged_in


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_transient_answers_keep_the_token(
    server: TaniumServer, sid: SessionId, status: int
) -> None:
    token = sid.token
    server.inject("/auth", status=status, count=None)
    with pytest.raises(AuthServiceUnavailable) as info:
        sid.validate()
    assert info.value.retryable
    assert info.value.response is not None and info.value.response.status_code == status
    assert sid.logged_in
    server.clear_faults()
    assert sid.validate() == token


def test_503_is_retried_inside_before_giving_up(server: TaniumServer, sid: SessionId) -> None:
    server.inject("/auth", status=503, count=None)
    with pytest.raises(AuthServiceUnavailable):
        sid.validate()
    assert server.count("/auth") == 3  # one call and the two retries of the default Retry


def test_one_503_is_absorbed_by_the_internal_retry(server: TaniumServer, sid: SessionId) -> None:
    server.inject("/auth", status=503, count=1)
    assert sid.validate() == sid.token
    assert server.count("/auth") == 2


def test_connection_refused_is_the_requests_exception(server: TaniumServer) -> None:
    with HttpClient(f"http://127.0.0.1:{free_port()}") as dead:
        sid = SessionId(dead, server.new_session())
        with pytest.raises(requests.exceptions.ConnectionError) as info:
            sid.validate()
        assert type(info.value) is requests.exceptions.ConnectionError
        assert sid.logged_in


def test_slow_auth_raises_timeout_and_keeps_token(server: TaniumServer, client: HttpClient) -> None:
    sid = SessionId(client, server.new_session(), login_timeout=0.1)
    server.inject("/auth", delay=0.5, passthrough=True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        sid.validate()
    assert sid.logged_in
    assert sid.validate()


def test_dropped_connection_propagates_and_recovers(server: TaniumServer, sid: SessionId) -> None:
    server.inject("/auth", drop=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        sid.validate()
    assert sid.logged_in and sid.validate() == sid.token


BAD_BODIES = {
    "empty": b"",
    "whitespace": b"   \n",
    "html": b"<html><body>login</body></html>",
    "html-no-space": b"<html>",
    "crlf": b"1-2-abc\r\nSet-Cookie: x=1",
    "trailing-newline": b"1-2-abc\n",
    "nul": b"1-2-a\x00b",
    "too-long": b"a" * 4097,
    "one-mb": b"b" * (1 << 20),
    "not-utf8": b"\xff\xfe\xfd",
    "non-ascii": "1-2-é".encode(),
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_malformed_200_bodies_are_refused_and_token_kept(
    server: TaniumServer, sid: SessionId, body: bytes
) -> None:
    token = sid.token
    server.inject("/auth", status=200, body=body, headers={"Content-Type": "text/plain"})
    with pytest.raises(LoginError) as info:
        sid.validate()
    assert type(info.value) is LoginError
    assert sid.logged_in and sid.token == token


def test_stale_token_under_32_threads_makes_one_auth_call(
    server: TaniumServer, sid: SessionId
) -> None:
    sid.revalidate_after = 0.01
    time.sleep(0.02)
    server.inject("/auth", delay=0.2, passthrough=True)
    barrier = threading.Barrier(32)
    results: list[str] = []
    errors: list[BaseException] = []

    def read() -> None:
        barrier.wait()
        try:
            results.append(sid.token)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert server.count("/auth") == 1
    assert len(results) == 32 and len(set(results)) == 1


def test_waiting_threads_share_the_leaders_exception(server: TaniumServer, sid: SessionId) -> None:
    sid.revalidate_after = 0.01
    time.sleep(0.02)
    server.revoke_user()
    server.inject("/auth", delay=0.2, passthrough=True)
    barrier = threading.Barrier(16)
    kinds: list[type[BaseException]] = []

    def read() -> None:
        barrier.wait()
        try:
            sid.token  # noqa: B018
        except LoginError as exc:
            kinds.append(type(exc))

    threads = [threading.Thread(target=read) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.count("/auth") == 1
    assert len(kinds) == 16 and set(kinds) <= {InvalidToken, NotLoggedInError}


def test_uid_and_token_headers(server: TaniumServer, sid: SessionId) -> None:
    assert sid.uid == 1
    assert sid.token_headers == {"session": sid.token}
    api = SessionId(sid.http_client, server.new_api_token())
    assert api.uid is None


def test_api_tokens_use_session_current_not_auth(server: TaniumServer, client: HttpClient) -> None:
    token = server.new_api_token()
    sid = SessionId(client, token)
    assert sid.validate() == token
    sid.revalidate_after = 0
    assert sid.token == token  # an API token never goes stale: no second call
    assert server.count("/auth") == 0
    assert server.count("/api/v2/session/current") == 1


def test_api_token_rejection_names_the_likely_causes(
    server: TaniumServer, client: HttpClient
) -> None:
    sid = SessionId(client, server.new_api_token(trusted=False))
    with pytest.raises(InvalidToken) as info:
        sid.validate()
    text = str(info.value)
    for word in ("expired", "revoked", "rotated", "trusted"):
        assert word in text


def test_class_methods() -> None:
    assert SessionId.get_name() == "session_id"
    assert SessionId.get_version_req() == {"vmin": "", "vmax": "", "veq": ""}
    assert SessionId.get_args() == ["session"]
    assert SessionId.get_args_required() == ["session"]
    assert SessionId.get_args_secure() == ["session"]


def test_repr_and_str_show_state_not_token(sid: SessionId) -> None:
    token = sid.token
    for text in (repr(sid), str(sid)):
        assert token not in text
        for part in ("SessionId", sid.url, "uid=1", "logged_in=True", "last_used=", "expires_in="):
            assert part in text


def test_cause_is_logged_and_unknown_kwargs_refused(
    sid: SessionId, caplog: pytest.LogCaptureFixture
) -> None:
    sid.validate(cause="checking before a long job")
    assert "checking before a long job" in caplog.text
    with pytest.raises(TypeError, match="bogus"):
        sid.validate(bogus=1)


def test_lvl_sets_the_module_logger_only_when_given(
    server: TaniumServer, client: HttpClient
) -> None:
    module_log = logging.getLogger("requests_tanium_session.session_id")
    before = module_log.level
    try:
        SessionId(client, server.new_session())
        assert module_log.level == before  # no lvl: logging configuration left alone
        SessionId(client, server.new_session(), lvl="warning")
        assert module_log.level == logging.WARNING
        with pytest.raises(ValueError):
            SessionId(client, server.new_session(), lvl="chatty")
    finally:
        module_log.setLevel(before)


def test_pickle_drops_the_token(sid: SessionId) -> None:
    token = sid.token
    data = pickle.dumps(sid)
    assert token.encode() not in data
    clone = pickle.loads(data)
    assert not clone.logged_in and clone.url == sid.url
    with pytest.raises(NotLoggedInError, match="unpickled"):
        clone.token  # noqa: B018


def test_on_token_update_errors_are_contained(server: TaniumServer, sid: SessionId) -> None:
    def broken(token: str) -> None:
        raise RuntimeError("boom")

    sid.on_token_update = broken
    fresh = server.new_session()
    sid.token = fresh
    assert sid.token == fresh


def test_confirm_by_another_token_does_not_refresh_clock() -> None:
    from requests_tanium_session.state import TokenState

    state = TokenState("1-1-" + "ab" * 16, threading.Lock())
    time.sleep(0.3)
    state.confirm("1-1-notthetoken")
    age = state.age()
    assert age is not None and age >= 0.3
    state.confirm("1-1-" + "ab" * 16)
    age = state.age()
    assert age is not None and age < 0.3
