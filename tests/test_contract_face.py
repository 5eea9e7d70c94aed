"""The contract, continued: one public face for every front-end (issue 26).

``token`` reads without I/O everywhere and has a setter everywhere; ``validated_token()``
(sync) and ``await atoken()`` (async) validate first; ``session=None`` with ``refresh``
logs in at the first request; ``logout``/``logout_all``; ``on_token_update`` however it
is set; the timing properties, ``store``, ``url``, ``with``, ``from_env`` and pickling;
and nothing the library raises holds a secret anywhere a user can reach.
"""

from __future__ import annotations

import gc
import http.server
import pickle
import ssl
import threading
import warnings
from collections.abc import Iterator
from typing import Any, Optional

import pytest
import requests
import urllib3

from requests_tanium_session import (
    AuthServiceUnavailable,
    InvalidToken,
    MemoryStore,
    NotLoggedInError,
    TaniumSessionAuth,
)
from requests_tanium_session.testing import TaniumServer

from .harness import (
    PASSWORD,
    PASSWORD_B64,
    SENSORS,
    USER,
    Front,
    exposed,
    logout,
    secrets_in,
    stale,
    statuses,
)

# -- the token -------------------------------------------------------------------------


def test_token_reads_without_io(server: TaniumServer, front: Front) -> None:
    session = server.new_session()
    auth = stale(server, front)  # revalidate_after=0: every use would validate
    auth.token = session
    assert auth.token == session and auth.token == session
    assert server.count("/auth") == 0
    server.revoke(session)
    assert auth.token == session and auth.logged_in  # nothing asked, nothing known


def test_validated_token_and_atoken_validate_when_stale(server: TaniumServer, front: Front) -> None:
    auth = stale(server, front)
    server.rotate_on_validate = True
    before = auth.token
    after = front.token(auth)  # validated_token() or await atoken()
    assert after != before and auth.token == after and server.auth_calls["validate"] == 1


def test_the_token_setter_adopts_a_new_session(server: TaniumServer, front: Front) -> None:
    seen: list[str] = []
    auth = front.auth(server.url, server.new_session(), on_token_update=seen.append)
    new = server.new_session()
    auth.token = new
    assert seen == [new] and auth.token == new
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert next(server.received(SENSORS)).headers["session"] == new
    with pytest.raises(ValueError, match="whitespace") as info:
        auth.token = "bad token"
    assert "bad token" not in str(info.value)


def test_the_setter_revives_a_dead_auth(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session())
    logout(front, auth)
    assert auth.token is None and not auth.logged_in
    auth.token = server.new_session()
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]


def test_no_session_with_refresh_logs_in_at_the_first_request(
    server: TaniumServer, front: Front
) -> None:
    auth = front.auth(server.url, None, refresh=server.new_session)
    assert auth.token is None and not auth.logged_in
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert auth.token is not None and server.is_valid(auth.token)


def test_no_session_and_no_refresh_is_refused(server: TaniumServer, front: Front) -> None:
    with pytest.raises(ValueError, match="session is required"):
        front.auth(server.url, None)


def test_a_dead_session_names_what_this_front_end_has(server: TaniumServer, front: Front) -> None:
    auth = front.auth(server.url, server.new_session())
    logout(front, auth)
    with pytest.raises(NotLoggedInError) as info:
        front.token(auth)
    message = str(info.value)
    assert "refresh=" in message and "from_credentials()" in message and "auth.token" in message
    auth.token = server.new_session()  # what the message says works here
    assert front.token(auth) == auth.token


# -- logout and logout_all ---------------------------------------------------------------


def test_logout_ends_this_session(server: TaniumServer, front: Front) -> None:
    session, other = server.new_session(), server.new_session()
    auth = front.auth(server.url, session)
    logout(front, auth)
    assert not auth.logged_in and not server.is_valid(session) and server.is_valid(other)
    with pytest.raises(NotLoggedInError):
        logout(front, auth)


def test_logout_all_ends_every_session_of_the_user(server: TaniumServer, front: Front) -> None:
    session, other = server.new_session(), server.new_session()
    auth = front.auth(server.url, session)
    logout(front, auth, every=True)
    assert not auth.logged_in and not server.is_valid(session) and not server.is_valid(other)
    assert next(server.received("/auth")).headers["logout"] == "1"


# -- callbacks, options and life cycle -------------------------------------------------------


@pytest.mark.parametrize("how", ["argument", "attribute"])
def test_on_token_update_however_it_is_set(server: TaniumServer, front: Front, how: str) -> None:
    seen: list[str] = []
    kwargs: dict[str, Any] = {"on_token_update": seen.append} if how == "argument" else {}
    auth = stale(server, front, **kwargs)
    if how == "attribute":
        auth.on_token_update = seen.append
    server.rotate_on_validate = True
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert seen == [auth.token] and len(seen) == 1


def test_on_token_update_set_on_the_session_id_is_the_auths(server: TaniumServer) -> None:
    seen: list[str] = []
    auth = TaniumSessionAuth(server.url, server.new_session(), revalidate_after=0)
    auth.session_id.on_token_update = seen.append
    assert auth.on_token_update == seen.append
    server.rotate_on_validate = True
    assert requests.get(server.url + SENSORS, auth=auth).status_code == 200
    assert seen == [auth.token]
    auth.close()


def test_the_same_options_and_life_cycle_everywhere(server: TaniumServer, front: Front) -> None:
    store = MemoryStore()
    with front.auth(server.url, server.new_session(), store=store, login_timeout=3) as auth:
        assert auth.url == server.url and auth.store is store
        assert auth.store_health is not None and auth.store_health.ok
        assert (auth.login_timeout, auth.logout_timeout, auth.expires_after) == (3, 5, 295)
        auth.revalidate_after = 0.5
        auth.login_timeout = 2
        assert (auth.revalidate_after, auth.login_timeout) == (0.5, 2)
        with pytest.raises(ValueError, match="login_timeout"):
            auth.login_timeout = -1
        assert auth.generation == 0 and auth.stats.validations == 0
        assert "token" not in repr(auth) and auth.token not in repr(auth)  # type: ignore[operator]


def test_from_env_everywhere(
    server: TaniumServer, front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = server.new_session()
    monkeypatch.setenv("TANIUM_URL", server.url)
    monkeypatch.setenv("TANIUM_SESSION", session)
    auth = front.auth_class.from_env(revalidate_after=1)
    assert auth.token == session and auth.revalidate_after == 1
    monkeypatch.setenv("TANIUM_SESSION", f" {session}\n")
    with pytest.raises(ValueError, match=r"TANIUM_SESSION.*strip") as info:
        front.auth_class.from_env()
    assert session not in str(info.value)


def test_pickling_keeps_the_configuration_never_the_token(
    server: TaniumServer, front: Front
) -> None:
    session = server.new_session()
    auth = front.auth(server.url, session, revalidate_after=2, requires_server=">=7")
    data = pickle.dumps(auth)
    assert session.encode() not in data
    clone = pickle.loads(data)
    assert type(clone) is type(auth) and clone.url == auth.url
    assert clone.revalidate_after == 2 and clone.token is None and not clone.logged_in
    with pytest.raises(NotLoggedInError, match="unpickled"):
        front.token(clone)
    clone.token = server.new_session()
    assert statuses(front.get(clone, server.url + SENSORS)) == [200]


def test_credentials_are_never_pickled(server: TaniumServer, front: Front) -> None:
    auth = front.from_credentials(server.url, USER, PASSWORD)
    data = pickle.dumps(auth)
    assert PASSWORD.encode() not in data and PASSWORD_B64.encode() not in data
    assert pickle.loads(data).refresh is None


# -- nothing raised holds a secret ---------------------------------------------------------------

MALFORMED = {
    "bad-status-line": b"HTTP/1.1 abc Not-A-Status\r\n\r\n",
    "bad-header": b"HTTP/1.1 200 OK\r\nNo-Colon-Here\r\nContent-Length: 0\r\n\r\n",
    "ssh-port": b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcde",
    "tls-port": b"\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03" + b"\x00" * 32,
}


def _caught(work: Any) -> Optional[BaseException]:
    try:
        work()
    except Exception as exc:
        return exc
    return None


def _raised(
    server: TaniumServer, front: Front, call: str, raw: bytes
) -> tuple[Optional[BaseException], str]:
    """Make ``call`` meet the answer ``raw``: what it raised (None: a lenient parser
    took the answer) and the secret it could leak."""
    if call == "login":
        server.inject("/auth", raw=raw, count=None)
        return _caught(lambda: front.from_credentials(server.url, USER, PASSWORD)), PASSWORD_B64
    if call == "api-check":
        token = server.new_api_token()
        auth = front.auth(server.url, token)
        server.revoke(token)
        server.inject("/api/v2/session/current", raw=raw, count=None)
    else:
        token = server.new_session()
        auth = front.auth(server.url, token)
        server.inject("/auth", raw=raw, count=None)
        if call == "logout":
            return _caught(lambda: logout(front, auth)), token
        server.revoke(token)  # a 403, then the check meets the malformed answer
    return _caught(lambda: front.one(auth, server.url + SENSORS)), token


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("call", ["validate", "login", "logout", "api-check"])
def test_malformed_answers_to_protocol_calls_hold_no_secret(
    server: TaniumServer, front: Front, call: str, raw: bytes
) -> None:
    exc, secret = _raised(server, front, call, raw)
    if exc is None:  # urllib3 reads a header without a colon as a defect and goes on
        assert front.name == "requests" and raw == MALFORMED["bad-header"]
        return
    assert not isinstance(exc, AssertionError)
    assert secrets_in(exposed(exc), secret, PASSWORD) == []


def test_a_failed_recovery_holds_no_session_in_request_or_response(
    server: TaniumServer, front: Front
) -> None:
    session = server.new_session()
    auth = front.auth(server.url, session)
    server.inject("/auth", status=503, count=None)
    server.inject(SENSORS, status=401)
    with pytest.raises(AuthServiceUnavailable) as info:
        front.one(auth, server.url + SENSORS)
    assert info.value.response is not None
    assert secrets_in(exposed(info.value), session) == []
    server.clear_faults()
    session = server.new_session()
    auth = front.auth(server.url, session)  # (the first is leaving a busy /auth alone)
    server.revoke(session)
    with pytest.raises(InvalidToken) as dead:
        front.one(auth, server.url + SENSORS)
    assert secrets_in(exposed(dead.value), session) == []


class _Refuse407(http.server.BaseHTTPRequestHandler):
    """A proxy that wants credentials it never accepts."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _refuse(self) -> None:
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="proxy"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_CONNECT = do_GET = do_POST = _refuse


@pytest.fixture
def proxy_407() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse407)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://proxy-user:proxy-{PASSWORD}@127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_proxy_that_answers_407_shows_no_proxy_password(
    tls_server: TaniumServer, front: Front, proxy_407: str, server_context: ssl.SSLContext
) -> None:
    import base64

    ca = ssl.create_default_context(cafile=tls_server.ca_bundle)
    options = front.transport(ca_bundle=tls_server.ca_bundle, context=ca, proxy=proxy_407)
    with pytest.raises(Exception) as info:
        front.from_credentials(tls_server.url, USER, PASSWORD, **options)
    pair = base64.b64encode(f"proxy-user:proxy-{PASSWORD}".encode()).decode()
    assert secrets_in(exposed(info.value), f"proxy-{PASSWORD}", pair, PASSWORD_B64) == []
    if urllib3.__version__.startswith("1."):
        # urllib3 1.26 tunnels with http.client, which leaves the 407 answer's socket to
        # the garbage collector (the exception's frames hold it): collect it here.
        del info
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
