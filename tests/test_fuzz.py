"""Property and stateful tests (Hypothesis).

Budget: the ``ci`` profile (default) keeps each property to a few dozen examples; run
``HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py`` for a longer local run.
"""

from __future__ import annotations

import re
import string
import threading
from collections.abc import Iterator
from typing import Optional
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from requests_tanium_session import (
    HttpClient,
    LoginError,
    SessionId,
    TaniumAuthError,
    TaniumSessionAuth,
)
from requests_tanium_session.session_id import check_token
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

PRINTABLE = set(map(chr, range(0x21, 0x7F)))

# -- session strings -------------------------------------------------------------


@given(st.text(max_size=64) | st.text(alphabet=string.printable, max_size=64))
def test_check_token_accepts_exactly_printable_ascii(value: str) -> None:
    good = 0 < len(value) <= 4096 and set(value) <= PRINTABLE
    try:
        assert check_token(value) == value
        assert good
    except ValueError as exc:
        assert not good
        if value.strip():
            assert value not in str(exc)


@given(st.integers(min_value=4000, max_value=5000))
def test_check_token_length_limit(n: int) -> None:
    value = "a" * n
    if n <= 4096:
        assert check_token(value) == value
    else:
        with pytest.raises(ValueError):
            check_token(value)


# -- URLs and origins --------------------------------------------------------------

hosts = st.sampled_from(
    ["tanium.example.com", "TANIUM.example.com", "tanium.example.com.", "evil.test",
     "tanium.example.com.evil.test", "127.0.0.1", "bücher.example", "xn--bcher-kva.example"]
)  # fmt: skip
ports = st.sampled_from([None, 443, 80, 8443])
schemes = st.sampled_from(["https", "http", "HTTPS"])
userinfo = st.sampled_from(
    ["", "user@", "user:pw@", "tanium.example.com@", "tanium.example.com:443@"]
)
paths = st.sampled_from(
    ["", "/", "/api/v2/sensors", "/x?y=https://tanium.example.com/", "//evil.test/"]
)


def _oracle(prepared_url: str, config: tuple[str, str, int]) -> bool:
    """An independent decision: urllib.parse on the URL requests will send."""
    parts = urlsplit(prepared_url)
    if parts.username is not None or "@" in parts.netloc:
        return False
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    host = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    return (scheme, host.lower(), port) == config


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(schemes, userinfo, hosts, ports, paths, hosts, ports)
def test_header_only_for_the_configured_origin(
    scheme: str, user: str, host: str, port: Optional[int], path: str,
    cfg_host: str, cfg_port: Optional[int],
) -> None:  # fmt: skip
    netloc = f"{user}{host}" + (f":{port}" if port else "")
    cfg = f"https://{cfg_host}" + (f":{cfg_port}" if cfg_port else "")
    try:
        auth = TaniumSessionAuth(cfg, "1-2-" + "ab" * 8, revalidate_after=3600)
    except ValueError:
        return  # e.g. a trailing-dot host is refused by requests' IDNA encoder? then skip
    with auth:
        try:
            r = requests.Request("GET", f"{scheme}://{netloc}{path}").prepare()
        except (requests.RequestException, ValueError):
            return
        expected = _oracle(str(r.url), auth.http_client.origin)
        auth(r)
        assert ("session" in r.headers) is expected


@given(st.text(max_size=80))
def test_any_url_string_is_accepted_or_refused_clearly(url: str) -> None:
    try:
        client = HttpClient(url)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    with client:
        assert client.url.startswith(("https://", "http://"))
        assert not client.url.endswith("/")
        _, host, port = client.origin
        assert host == host.lower() and port > 0


# -- server answers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server() -> Iterator[TaniumServer]:
    with TaniumServer(record=0) as server:
        yield server


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(max_size=300)
    | st.text(max_size=100).map(str.encode)
    | st.from_regex(r"\A[0-9]{1,3}-[0-9]{1,5}-[0-9a-f]{8,64}\Z").map(str.encode)
    | st.from_regex(r"\A[A-Za-z0-9._~+/=-]{10,40}\Z").map(str.encode)
)
def test_any_auth_answer_is_adopted_only_when_well_formed(
    shared_server: TaniumServer, body: bytes
) -> None:
    shared_server.clear_faults()
    with HttpClient(shared_server.url) as client:
        token = shared_server.new_session()
        sid = SessionId(client, token)
        shared_server.inject("/auth", status=200, body=body)
        try:
            got = sid.validate()
        except LoginError:
            assert sid.logged_in and sid.token == token  # kept, fresh: no call
            return
        text = body.decode("ascii")
        assert got == text and sid.token == text
        # token-shaped, and a session id answered by a session id
        assert re.fullmatch(r"[A-Za-z0-9._~+/=-]{16,4096}", text)
        assert re.fullmatch(r"\d+-\d+-[0-9A-Fa-f]+", text)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504, 599]))
def test_any_auth_status_ends_in_a_documented_outcome(
    shared_server: TaniumServer, status: int
) -> None:
    shared_server.clear_faults()
    with HttpClient(shared_server.url) as client:
        token = shared_server.new_session()
        sid = SessionId(client, token)
        shared_server.inject("/auth", status=status, body=b"", count=3)
        try:
            sid.validate()
            raise AssertionError("an empty body is never a token")
        except TaniumAuthError as exc:
            assert exc.response is not None
            dead = 400 <= status < 500 and status not in (404, 405, 408, 429)
            assert sid.logged_in is not dead
        finally:
            shared_server.clear_faults()


# -- the stateful test -------------------------------------------------------------------


class TaniumWorld(RuleBasedStateMachine):
    """Server events and client requests; the header never leaves, calls stay justified."""

    def __init__(self) -> None:
        super().__init__()
        self.server = TaniumServer().start()
        self.foreign = TaniumServer().start()
        # Staleness by the wall clock would add validations the rules did not ask for
        # (a busy machine takes seconds per run): time moves by the server's clock alone.
        self.auth = TaniumSessionAuth.from_credentials(
            self.server.url, DEFAULT_USER[0], DEFAULT_USER[1], revalidate_after=3600
        )
        self.http = requests.Session()
        self.http.auth = self.auth
        self.justified = 1  # the first login
        self.outcomes: list[str] = []

    @initialize()
    def start(self) -> None:
        self.server.reset_counts()
        self.justified = 0

    @rule(seconds=st.sampled_from([1, 60, 301]))
    def advance_clock(self, seconds: int) -> None:
        if seconds > self.server.session_expiration_seconds:
            self.justified += 2  # one check that finds it dead, one login
        self.server.clock.advance(seconds)

    @rule()
    def revoke(self) -> None:
        token = self.auth.token
        if token:
            self.server.revoke(token)
            self.justified += 2

    @rule()
    def toggle_rotation(self) -> None:
        self.server.rotate_on_validate = not self.server.rotate_on_validate

    @rule()
    def inject_503(self) -> None:
        self.server.inject("/api/v2/sensors", status=503)

    @rule()
    def redirect_away(self) -> None:
        self.justified += 1  # a redirect to another origin is judged like a 401: one check
        self.server.redirect("/api/v2/sensors", self.foreign.url + "/api/v2/sensors")

    @rule()
    def permission_denied(self) -> None:
        self.justified += 1
        self._request("/api/v2/denied")

    @rule(threads=st.integers(min_value=1, max_value=4))
    def requests_from_threads(self, threads: int) -> None:
        barrier = threading.Barrier(threads)

        def one() -> None:
            barrier.wait()
            self._request("/api/v2/sensors")

        workers = [threading.Thread(target=one) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    @precondition(lambda self: self.auth.session_id.logged_in)
    @rule()
    def validate(self) -> None:
        self.justified += 1
        try:
            self.auth.session_id.validate()
        except LoginError:
            self.justified += 1  # the next request will log in again

    def _request(self, path: str) -> None:
        try:
            status = self.http.get(self.server.url + path).status_code
            self.outcomes.append(str(status))
        except TaniumAuthError as exc:
            self.outcomes.append(type(exc).__name__)

    @invariant()
    def header_never_reaches_the_foreign_origin(self) -> None:
        assert all("session" not in r.headers for r in self.foreign.received())

    @invariant()
    def every_request_ends_in_a_documented_outcome(self) -> None:
        allowed = {"200", "403", "503", "LoginError", "InvalidToken", "NotLoggedInError"}
        assert set(self.outcomes) <= allowed

    @invariant()
    def auth_calls_are_justified(self) -> None:
        calls = sum(1 for r in self.server.received("/auth") if r.status not in (502, 503, 504))
        assert calls <= self.justified

    def teardown(self) -> None:
        self.http.close()
        self.auth.close()
        self.server.stop()
        self.foreign.stop()


TaniumWorld.TestCase.settings = settings(
    max_examples=max(5, settings().max_examples // 3),
    stateful_step_count=12,
    suppress_health_check=[HealthCheck.too_slow],
)
test_tanium_world = TaniumWorld.TestCase
