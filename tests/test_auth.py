"""TaniumSessionAuth over a real requests.Session, HTTP and TLS."""

from __future__ import annotations

import pickle
import time
from typing import Any, Callable

import pytest
import requests

from requests_tanium_session import (
    InvalidToken,
    LoginError,
    NotLoggedInError,
    SessionId,
    TaniumSession,
    TaniumSessionAuth,
)
from requests_tanium_session.testing import TaniumServer

from .conftest import Servers, concurrent_gets

MakeAuth = Callable[..., TaniumSessionAuth]


@pytest.fixture(params=["http", "tls"])
def any_server(request: pytest.FixtureRequest, servers: Servers) -> TaniumServer:
    """The same behaviour over HTTP and over TLS with a trustme CA."""
    if request.param == "http":
        return servers.start()
    srv: TaniumServer = request.getfixturevalue("tls_server")
    return srv


def _session_for(srv: TaniumServer, auth: TaniumSessionAuth) -> requests.Session:
    s = requests.Session()
    s.auth = auth
    if srv.ca_bundle:
        # requests #3829: a session-level verify loses to REQUESTS_CA_BUNDLE (set on this
        # machine) unless the session ignores the environment.
        s.trust_env = False
        s.verify = srv.ca_bundle
    return s


def _auth_for(srv: TaniumServer, **kwargs: object) -> TaniumSessionAuth:
    return TaniumSessionAuth(
        srv.url,
        srv.new_session(),
        verify=srv.ca_bundle or True,
        **kwargs,  # type: ignore[arg-type]
    )


def test_header_on_tanium_origin(any_server: TaniumServer) -> None:
    with _auth_for(any_server) as auth, _session_for(any_server, auth) as s:
        resp = s.get(any_server.url + "/api/v2/sensors")
        assert resp.status_code == 200
        assert resp.json()["data"][0]["name"] == "Computer Name"
        assert resp.request.headers["session"] == auth.session_id.token
        assert s.post(any_server.url + "/soap", data=b"<x/>").status_code == 200
    (got,) = list(any_server.received("/api/v2/sensors"))
    assert got.headers["session"] == auth.session_id.token
    assert any_server.count("/auth") == 0


def test_header_absent_on_another_port(any_server: TaniumServer, servers: Servers) -> None:
    other = servers.start()  # 127.0.0.1 too, another port, plain HTTP
    with _auth_for(any_server) as auth, _session_for(any_server, auth) as s:
        resp = s.get(other.url + "/api/v2/sensors")
    assert resp.status_code == 403
    assert "session" not in resp.request.headers
    assert resp.request.hooks["response"] == []
    (got,) = list(other.received())
    assert "session" not in got.headers


def test_login_error_propagates_out_of_get(any_server: TaniumServer) -> None:
    with _auth_for(any_server) as auth, _session_for(any_server, auth) as s:
        any_server.revoke(auth.session_id.token)
        with pytest.raises(LoginError) as info:
            s.get(any_server.url + "/api/v2/sensors")
        assert isinstance(info.value, InvalidToken)
        assert info.value.response is not None and info.value.response.status_code == 403
        with pytest.raises(NotLoggedInError):
            s.get(any_server.url + "/api/v2/sensors")
    assert any_server.count("/auth") == 1
    assert any_server.count("/api/v2/sensors") == 1


def test_stale_token_is_revalidated_before_sending(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    http.auth = make_auth(revalidate_after=0.05)
    time.sleep(0.06)
    assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert server.count("/auth") == 1
    order = [r.path for r in server.received()]
    assert order == ["/auth", "/api/v2/sensors"]


def test_stale_and_dead_raises_before_sending(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth(revalidate_after=0.05)
    http.auth = auth
    server.revoke(auth.session_id.token)
    time.sleep(0.06)
    with pytest.raises(InvalidToken):
        http.get(server.url + "/api/v2/sensors")
    assert server.count("/api/v2/sensors") == 0


def test_continuous_traffic_makes_no_auth_calls(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    http.auth = make_auth(revalidate_after=0.15)
    deadline = time.monotonic() + 0.6  # spans four revalidate_after windows
    sent = 0
    while time.monotonic() < deadline:
        assert http.get(server.url + "/api/v2/sensors").status_code == 200
        sent += 1
    assert sent > 4
    assert server.count("/auth") == 0


def test_non_2xx_does_not_confirm(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth(revalidate_after=0.05)
    http.auth = auth
    time.sleep(0.03)
    http.get(server.url + "/api/v2/missing")  # 404 proves nothing about the session
    time.sleep(0.03)
    http.get(server.url + "/api/v2/sensors")
    assert server.count("/auth") == 1


def test_one_auth_serves_many_sessions_and_threads(
    server: TaniumServer, make_auth: MakeAuth
) -> None:
    statuses = concurrent_gets(
        server.url + "/api/v2/sensors", make_auth(), threads=8, per_thread=10
    )
    assert statuses == [200] * 80
    assert server.count("/auth") == 0


def test_from_env(server: TaniumServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANIUM_URL", server.url)
    monkeypatch.setenv("TANIUM_SESSION", server.new_session())
    with TaniumSessionAuth.from_env(revalidate_after=1) as auth:
        assert auth.session_id.revalidate_after == 1
        assert requests.get(server.url + "/api/v2/sensors", auth=auth).status_code == 200


@pytest.mark.parametrize("missing", ["TANIUM_URL", "TANIUM_SESSION"])
@pytest.mark.parametrize("empty", [True, False])
def test_from_env_names_the_missing_variable(
    monkeypatch: pytest.MonkeyPatch, missing: str, empty: bool
) -> None:
    monkeypatch.setenv("TANIUM_URL", "https://h.example")
    monkeypatch.setenv("TANIUM_SESSION", "1-2-abcdef")
    if empty:
        monkeypatch.setenv(missing, "")
    else:
        monkeypatch.delenv(missing)
    with pytest.raises(ValueError, match=missing) as info:
        TaniumSessionAuth.from_env()
    assert "abcdef" not in str(info.value)


def test_from_session_id_and_properties(server: TaniumServer, client: object) -> None:
    from requests_tanium_session import HttpClient

    with HttpClient(server.url) as hc:
        sid = SessionId(hc, server.new_session())
        auth = TaniumSessionAuth(session_id=sid, revalidate_after=2)
        assert auth.session_id is sid and sid.revalidate_after == 2
        assert auth.token == sid.token and auth.http_client is hc
        with pytest.raises(ValueError):
            TaniumSessionAuth(server.url, session_id=sid)
        auth.logout()
        assert not sid.logged_in


def test_constructor_errors(server: TaniumServer) -> None:
    with pytest.raises(ValueError, match="url"):
        TaniumSessionAuth(session="1-2-ab")
    with pytest.raises(ValueError, match="session"):
        TaniumSessionAuth(server.url)
    with pytest.raises(TypeError, match="refresh"):
        TaniumSessionAuth(server.url, "1-2-ab", refresh="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refresh_status_codes"):
        TaniumSessionAuth(server.url, "1-2-ab", refresh_status_codes=[200])


def test_close_and_context_manager(server: TaniumServer) -> None:
    with TaniumSessionAuth(server.url, server.new_session()) as auth:
        assert requests.get(server.url + "/api/v2/sensors", auth=auth).status_code == 200
        adapter = auth.http_client.session.get_adapter(server.url)
        auth.session_id.validate()
        assert adapter.poolmanager.pools  # type: ignore[attr-defined]
    assert not adapter.poolmanager.pools  # type: ignore[attr-defined]


def test_logout_all_via_auth(server: TaniumServer, make_auth: MakeAuth) -> None:
    auth = make_auth()
    other = server.new_session()
    auth.logout_all()
    assert not server.is_valid(other)
    assert auth.token is None
    with pytest.raises(NotLoggedInError):
        auth.validated_token()


def test_repr_and_pickle_hide_the_token(server: TaniumServer, make_auth: MakeAuth) -> None:
    auth = make_auth()
    token = auth.session_id.token
    assert token not in repr(auth) and token not in str(auth)
    data = pickle.dumps(auth)
    assert token.encode() not in data
    clone = pickle.loads(data)
    assert clone.session_id.url == auth.session_id.url and not clone.session_id.logged_in
    fresh = server.new_session()
    clone.token = fresh
    assert requests.get(server.url + "/api/v2/sensors", auth=clone).status_code == 200
    clone.close()


def test_api_token_through_the_adapter(server: TaniumServer, http: requests.Session) -> None:
    token = server.new_api_token()
    with TaniumSessionAuth(server.url, token, revalidate_after=0.01) as auth:
        http.auth = auth
        assert auth.session_id.uid is None
        time.sleep(0.02)
        assert http.get(server.url + "/api/v2/sensors").status_code == 200
        assert server.count("/api/v2/session/current") == 0  # never stale: no check
        server.revoke(token)
        with pytest.raises(LoginError) as info:
            http.get(server.url + "/api/v2/sensors")
        for word in ("expired", "revoked", "rotated", "trusted"):
            assert word in str(info.value)
        assert token not in str(info.value)
        assert server.count("/api/v2/session/current") == 1  # the 401 was judged
    assert server.count("/auth") == 0


def test_api_token_rejection_consults_refresh(server: TaniumServer, http: requests.Session) -> None:
    token = server.new_api_token()
    with TaniumSessionAuth(server.url, token, refresh=server.new_api_token) as auth:
        http.auth = auth
        server.revoke(token)
        resp = http.get(server.url + "/api/v2/sensors")
        assert resp.status_code == 200 and len(resp.history) == 1
        assert auth.session_id.token != token
    assert server.count("/auth") == 0


def test_ver_check_is_deprecated_and_checks_nothing(server: TaniumServer) -> None:
    """``ver_check=True`` cannot check anything here (the SessionId this class builds has
    no requirement): it says so and points to ``requires_server``."""
    with pytest.warns(DeprecationWarning, match="requires_server"):
        TaniumSessionAuth(server.url, server.new_session(), ver_check=True)
    TaniumSessionAuth(server.url, server.new_session(), ver_check=False)  # no warning
    TaniumSessionAuth(server.url, server.new_session())  # the default: no warning
    assert server.count("/config/console.json") == 0


# -- TaniumSession: its own requests take the auth's transport (issue 26) ------------------


def test_tanium_session_verifies_its_own_requests_with_the_private_ca(
    tls_server: TaniumServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    # The environment users have: a CA bundle that does not know the private CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    ca = tls_server.ca_bundle
    assert ca is not None
    with TaniumSession(
        tls_server.url, tls_server.new_session(), verify=ca, revalidate_after=0
    ) as s:
        assert s.get("/api/v2/sensors").status_code == 200  # the caller's own request
    assert tls_server.auth_calls["validate"] == 1  # and the auth's


def test_tanium_session_with_a_ready_auth_takes_its_ca(tls_server: TaniumServer) -> None:
    ca = tls_server.ca_bundle
    assert ca is not None
    auth = TaniumSessionAuth(tls_server.url, tls_server.new_session(), verify=ca)
    with auth, TaniumSession(auth=auth) as s:
        assert s.verify == ca and s.get("/api/v2/sensors").status_code == 200


def test_tanium_session_reaches_a_loopback_server_without_the_environment_proxy(
    server: TaniumServer, monkeypatch: pytest.MonkeyPatch, proxy: Any
) -> None:
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with TaniumSession(server.url, server.new_session(), revalidate_after=0) as s:
        assert s.get("/api/v2/sensors").status_code == 200
        assert proxy.seen == []  # neither its requests nor /auth went through the proxy
        # A proxy given on purpose is used.
        assert s.get("/api/v2/sensors", proxies={"http": url}).status_code == 200
    assert proxy.seen == ["/api/v2/sensors"]
    assert server.auth_calls["validate"] == 2
