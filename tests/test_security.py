"""Security: origin scoping, redirects, transport, secret hygiene, hostile answers."""

from __future__ import annotations

import contextlib
import pickle
import time
import warnings
from typing import Callable

import pytest
import requests
from urllib3.exceptions import InsecureRequestWarning

from requests_tanium_session import (
    InvalidToken,
    LoginError,
    LogoutError,
    NotLoggedInError,
    SessionId,
    TaniumAuthError,
    TaniumSessionAuth,
)
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

from .conftest import Servers, leaked

MakeAuth = Callable[..., TaniumSessionAuth]
TOKEN = "25-1659-" + "ab" * 64


def _prepared(url: str, method: str = "GET") -> requests.PreparedRequest:
    return requests.Request(method, url).prepare()


def _offline_auth(url: str) -> TaniumSessionAuth:
    auth = TaniumSessionAuth(url, TOKEN, revalidate_after=3600)
    return auth


# -- origin scoping ---------------------------------------------------------------

SAME = [
    "https://tanium.example.com/api/v2/sensors",
    "https://tanium.example.com",
    "https://tanium.example.com:443/api",
    "https://TANIUM.Example.com/api",
    "HTTPS://tanium.example.com/api",
    "https://tanium.example.com/?q=https://evil.test/",
    "https://tanium.example.com/other/prefix",
]
FOREIGN = [
    "https://evil.test/api",
    "http://tanium.example.com/api",
    "https://tanium.example.com:8443/api",
    "https://tanium.example.com./api",
    "https://tanium.example.com.evil.test/api",
    "https://tanium.example.com@evil.test/api",
    "https://tanium.example.com:443@evil.test/api",
    "https://user@tanium.example.com/api",
    "https://user:pw@tanium.example.com/api",
    "https://evil.test/https://tanium.example.com/",
    "https://evil.test/?next=https://tanium.example.com/",
    "https://xtanium.example.com/api",
    "https://tanium.example.co/api",
]


@pytest.mark.parametrize("url", SAME)
def test_same_origin_gets_header_and_hook(url: str) -> None:
    with _offline_auth("https://tanium.example.com") as auth:
        r = auth(_prepared(url))
        assert r.headers["session"] == TOKEN
        assert r.hooks["response"] == [auth.handle_response]


@pytest.mark.parametrize("url", FOREIGN)
def test_foreign_origin_is_left_exactly_as_it_was(url: str) -> None:
    with _offline_auth("https://tanium.example.com") as auth:
        r = _prepared(url)
        before = (r.url, dict(r.headers), {k: list(v) for k, v in r.hooks.items()}, r.body)
        assert auth(r) is r
        after = (r.url, dict(r.headers), {k: list(v) for k, v in r.hooks.items()}, r.body)
        assert after == before and "session" not in r.headers


def test_explicit_default_port_in_config_is_the_same_origin() -> None:
    with _offline_auth("https://tanium.example.com:443/") as auth:
        assert auth(_prepared("https://tanium.example.com/x")).headers["session"] == TOKEN


def test_unicode_host_is_matched_as_requests_encodes_it() -> None:
    with _offline_auth("https://bücher.example") as auth:
        for url in (
            "https://bücher.example/x",
            "https://xn--bcher-kva.example/x",
            "https://BÜCHER.example/x",
        ):
            assert auth(_prepared(url)).headers.get("session") == TOKEN, url
        assert "session" not in auth(_prepared("https://bucher.example/x")).headers


def test_url_prefix_scopes_by_origin_not_path() -> None:
    with _offline_auth("https://tanium.example.com/tanium") as auth:
        assert auth.http_client.url == "https://tanium.example.com/tanium"
        assert auth(_prepared("https://tanium.example.com/tanium/api")).headers["session"] == TOKEN
        assert auth(_prepared("https://tanium.example.com/elsewhere")).headers["session"] == TOKEN


def test_ip_spellings_are_other_origins() -> None:
    with _offline_auth("http://127.0.0.1:8080") as auth:
        assert auth(_prepared("http://127.0.0.1:8080/x")).headers["session"] == TOKEN
        for url in (
            "http://localhost:8080/x",
            "http://127.1:8080/x",
            "http://2130706433:8080/x",
            "http://[::1]:8080/x",
        ):
            assert "session" not in auth(_prepared(url)).headers, url


def test_through_a_proxy_the_target_decides(
    server: TaniumServer, servers: Servers, make_auth: MakeAuth
) -> None:
    proxy = servers.start()  # answers absolute-URI requests itself (403), recording them
    other = servers.start()
    auth = make_auth()
    proxies = {"http": proxy.url}
    with requests.Session() as s:
        s.auth = auth
        s.get(server.url + "/api/v2/sensors", proxies=proxies)
        s.get(other.url + "/api/v2/sensors", proxies=proxies)
    to_tanium, to_other = list(proxy.received())
    assert to_tanium.headers["session"] == auth.session_id.token
    assert "session" not in to_other.headers
    assert server.count("/api/v2/sensors") == 0 and other.count("/api/v2/sensors") == 0


# -- redirects --------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_origin_drops_the_header(
    server: TaniumServer, servers: Servers, make_auth: MakeAuth, http: requests.Session, status: int
) -> None:
    evil = servers.start()
    http.auth = make_auth()
    server.redirect("/api/v2/sensors", evil.url + "/steal", status=status)
    resp = http.get(server.url + "/api/v2/sensors")
    assert [h.status_code for h in resp.history] == [status]
    (got,) = list(evil.received())
    assert got.path == "/steal" and "session" not in got.headers
    assert server.count("/auth") == 1  # judged like a 401 (issue 28): alive, so followed


@pytest.mark.parametrize(
    "location",
    [
        "{evil}/steal",
        "//127.0.0.1:{port}/steal",
        "////127.0.0.1:{port}/steal",
        "{evil_upper}/steal",
    ],
    ids=["absolute", "scheme-relative", "many-slashes", "upper-case"],
)
def test_redirect_spellings(
    server: TaniumServer,
    servers: Servers,
    make_auth: MakeAuth,
    http: requests.Session,
    location: str,
) -> None:
    evil = servers.start()
    http.auth = make_auth()
    target = location.format(evil=evil.url, port=evil.port, evil_upper=evil.url.upper())
    server.redirect("/api/v2/sensors", target)
    with contextlib.suppress(requests.RequestException):
        http.get(server.url + "/api/v2/sensors")  # requests may refuse an odd Location
    for got in evil.received():
        assert "session" not in got.headers
    for got in server.received():
        if got.path != "/api/v2/sensors":
            # wherever requests went on the Tanium server, it carried the live session
            assert got.headers.get("session") in (None, http.auth.session_id.token)  # type: ignore[union-attr]


def test_chain_that_leaves_and_comes_back_stays_stripped(
    server: TaniumServer, servers: Servers, make_auth: MakeAuth, http: requests.Session
) -> None:
    evil = servers.start()
    http.auth = make_auth()
    server.redirect("/api/v2/sensors", evil.url + "/bounce")
    evil.redirect("/bounce", server.url + "/api/v2/echo")
    resp = http.get(server.url + "/api/v2/sensors")
    assert [h.status_code for h in resp.history] == [302, 302]
    assert resp.status_code == 403  # back home without a session: refused, not recovered
    (bounce,) = list(evil.received())
    (home,) = list(server.received("/api/v2/echo"))
    assert "session" not in bounce.headers and "session" not in home.headers
    assert server.count("/auth") == 1  # the first hop away was judged once: alive


def test_same_origin_redirect_keeps_the_header(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    auth = make_auth()
    http.auth = auth
    server.redirect("/api/v2/old", server.url + "/api/v2/sensors", status=301)
    resp = http.get(server.url + "/api/v2/old")
    assert resp.status_code == 200
    (got,) = list(server.received("/api/v2/sensors"))
    assert got.headers["session"] == auth.session_id.token


def test_redirect_after_a_resend_carries_the_new_token(
    server: TaniumServer, servers: Servers, make_auth: MakeAuth, http: requests.Session
) -> None:
    evil = servers.start()
    auth = make_auth()
    old = auth.session_id.token
    http.auth = auth
    server.rotate_on_validate = True
    server.inject("/api/v2/a", status=401)
    server.redirect("/api/v2/a", server.url + "/api/v2/sensors")
    resp = http.get(server.url + "/api/v2/a")
    assert resp.status_code == 200
    (got,) = list(server.received("/api/v2/sensors"))
    assert got.headers["session"] == auth.session_id.token != old
    server.inject("/api/v2/b", status=401)
    server.redirect("/api/v2/b", evil.url + "/steal")
    http.get(server.url + "/api/v2/b")
    assert all("session" not in r.headers for r in evil.received())


def test_malformed_location_never_carries_the_header(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session
) -> None:
    http.auth = make_auth()
    server.redirect("/api/v2/sensors", "http://[::1")
    seen: list[requests.PreparedRequest] = []

    def capture(r: requests.Response, **_: object) -> None:
        seen.append(r.request)  # runs after the auth's hook, before requests follows

    with pytest.raises((requests.RequestException, ValueError)):  # requests' own refusal
        http.get(server.url + "/api/v2/sensors", hooks={"response": capture})
    (req,) = seen
    assert "session" not in req.headers
    resp = requests.Response()
    resp.status_code = 302
    resp.headers["location"] = "http://[::1"
    resp.url = server.url + "/x"
    from requests_tanium_session.auth import redirect_target

    assert redirect_target(resp) is None


def test_401_from_another_origin_never_triggers_recovery(
    server: TaniumServer, servers: Servers, make_auth: MakeAuth, http: requests.Session
) -> None:
    evil = servers.start()
    calls: list[int] = []
    http.auth = make_auth(refresh=lambda: calls.append(1) or server.new_session())
    evil.inject("/api/v2/sensors", status=401)
    assert http.get(evil.url + "/api/v2/sensors").status_code == 401
    server.redirect("/api/v2/x", evil.url + "/api/v2/sensors")
    evil.inject("/api/v2/sensors", status=401)
    assert http.get(server.url + "/api/v2/x").status_code == 401
    # the redirect away was judged once (alive); the other origin's 401 never was
    assert calls == [] and server.count("/auth") == 1
    assert evil.count("/api/v2/sensors") == 2
    assert all("session" not in r.headers for r in evil.received())
    # even a foreign request that carries the header (the caller put it there) and the
    # hook (called directly) is never checked, refreshed or resent by the auth
    auth = http.auth
    assert isinstance(auth, TaniumSessionAuth)
    evil.inject("/api/v2/sensors", status=401)
    resp = requests.get(
        evil.url + "/api/v2/sensors",
        headers={"session": auth.session_id.token},
        hooks={"response": auth.handle_response},
    )
    assert resp.status_code == 401 and resp.history == []
    assert calls == [] and server.count("/auth") == 1 and evil.count("/api/v2/sensors") == 3


# -- transport ----------------------------------------------------------------------


def test_http_refused_for_remote_hosts() -> None:
    with pytest.raises(ValueError, match="allow_http"):
        TaniumSessionAuth("http://tanium.example.com", TOKEN)
    with TaniumSessionAuth("http://tanium.example.com", TOKEN, allow_http=True) as auth:
        assert auth.http_client.origin[0] == "http"


def test_verify_false_warns_once_per_auth_object(tls_server: TaniumServer) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auth = TaniumSessionAuth(tls_server.url, tls_server.new_session(), verify=False)
        ours = [w for w in caught if "verification is off" in str(w.message)]
        assert len(ours) == 1 and issubclass(ours[0].category, InsecureRequestWarning)
        with requests.Session() as s:
            s.auth = auth
            s.trust_env = False  # else REQUESTS_CA_BUNDLE replaces verify=False (requests #3829)
            s.verify = False
            for _ in range(3):
                assert s.get(tls_server.url + "/api/v2/sensors").status_code == 200
        ours = [w for w in caught if "verification is off" in str(w.message)]
        assert len(ours) == 1
        auth.close()


def test_tls_adapter_path_verifies_with_the_ca(tls_server: TaniumServer, ca_bundle: str) -> None:
    with TaniumSessionAuth(
        tls_server.url, tls_server.new_session(), verify=ca_bundle, revalidate_after=0.01
    ) as auth:
        with requests.Session() as s:
            s.auth = auth
            s.trust_env = False  # else REQUESTS_CA_BUNDLE replaces the pinned CA (requests #3829)
            s.verify = ca_bundle
            assert s.get(tls_server.url + "/api/v2/sensors").status_code == 200
        assert auth.session_id.validate()
    with (
        TaniumSessionAuth(tls_server.url, tls_server.new_session()) as auth,
        pytest.raises(requests.exceptions.SSLError),
    ):
        auth.session_id.validate()


# -- secret hygiene -------------------------------------------------------------------


def test_leak_guard_detects_a_leak() -> None:
    assert leaked("DEBUG something " + TOKEN, {TOKEN}) == 1
    assert leaked("DEBUG nothing here", {TOKEN}) == 0


def _texts(exc: BaseException) -> list[str]:
    out = [str(exc), repr(exc), repr(exc.args)]
    if exc.__cause__ is not None:
        out += _texts(exc.__cause__)
    return out


def test_no_secret_anywhere_across_scenarios(
    server: TaniumServer, servers: Servers, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    """Run every failure we can provoke; no token or password may show in any output."""
    errors: list[BaseException] = []
    shown: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auth = TaniumSessionAuth.from_credentials(server.url, DEFAULT_USER[0], DEFAULT_USER[1])
        sid = auth.session_id
        http.auth = auth
        shown += [repr(auth), str(auth), repr(sid), str(sid), repr(auth.http_client), repr(server)]
        shown += [repr(auth.refresh), repr(list(server.received()))]
        http.get(server.url + "/api/v2/sensors")
        http.get(server.url + "/api/v2/denied")
        server.rotate_on_validate = True
        server.inject("/api/v2/sensors", status=401)
        http.get(server.url + "/api/v2/sensors")
        server.revoke(sid.token)
        http.get(server.url + "/api/v2/sensors")
        plain = TaniumSessionAuth(server.url, server.new_session())
        for provoke in (
            lambda: (
                server.revoke(plain.session_id.token),
                requests.get(server.url + "/api/v2/sensors", auth=plain),
            ),
            lambda: requests.get(server.url + "/api/v2/sensors", auth=plain),
            lambda: plain.logout(),
            lambda: server.inject("/auth", status=503, count=None) and sid.validate(),
            lambda: sid.logout(),
            lambda: (
                (server.clear_faults(), server.inject("/auth", status=200, body=b"<html>"))
                and sid.validate()
            ),
            lambda: SessionId(auth.http_client, "1-2-abc\r\ndef"),
            lambda: TaniumSessionAuth.from_credentials(
                server.url, DEFAULT_USER[0], DEFAULT_USER[1] + "x"
            ),
            lambda: setattr(sid, "token", DEFAULT_USER[1] + " x"),
            lambda: SessionId(auth.http_client, server.new_api_token(trusted=False)).validate(),
        ):
            try:
                provoke()
            except (TaniumAuthError, ValueError, TypeError) as exc:
                errors.append(exc)
        server.clear_faults()
        data = pickle.dumps(auth)
        plain.close()
        auth.close()
    assert {type(e) for e in errors} >= {
        InvalidToken,
        NotLoggedInError,
        LogoutError,
        LoginError,
        ValueError,
    }
    secrets = set(server.issued) | {DEFAULT_USER[1], DEFAULT_USER[1] + "x"}
    texts = shown + [t for e in errors for t in _texts(e)] + [str(w.message) for w in caught]
    texts.append(caplog.text)
    for secret in secrets:
        assert not any(secret in t for t in texts)
        assert secret.encode() not in data


def test_control_characters_refused_before_requests_sees_them(server: TaniumServer) -> None:
    for bad in ("1-2-ab\r\nX-Injected: 1", "1-2-ab\x00", "1-2-ab\x0b"):
        with pytest.raises(ValueError) as info:
            TaniumSessionAuth(server.url, bad)
        assert "X-Injected" not in str(info.value)
    with pytest.raises(ValueError, match="domain"):
        TaniumSessionAuth.from_credentials(server.url, "u", "p", domain="CORP\r\nX: 1")
    auth = TaniumSessionAuth(server.url, server.new_session(), refresh=lambda: "1-2-ab\r\nX: 1")
    server.revoke(auth.session_id.token)
    with pytest.raises(LoginError) as err:
        requests.get(server.url + "/api/v2/sensors", auth=auth)
    assert "X: 1" not in str(err.value)
    auth.close()
    assert all("x-injected" not in r.headers for r in server.received())


# -- hostile server answers ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>Login</body></html>",
        b"   ",
        b"1-2-ab\r\nX: y",
        b"z" * (1 << 20),
        b"\xff\xfe",
    ],
    ids=["empty", "html", "whitespace", "crlf", "1mb", "not-utf8"],
)
def test_hostile_auth_bodies_through_the_adapter(
    server: TaniumServer, make_auth: MakeAuth, http: requests.Session, body: bytes
) -> None:
    auth = make_auth(revalidate_after=0.01)
    token = auth.session_id.token
    http.auth = auth
    server.inject("/auth", status=200, body=body, headers={"Content-Type": "text/html"})
    time.sleep(0.02)
    with pytest.raises(LoginError) as info:
        http.get(server.url + "/api/v2/sensors")
    assert "answered 200 with" in str(info.value)
    assert auth.session_id.logged_in and auth.token == token
    assert server.count("/api/v2/sensors") == 0
    assert http.get(server.url + "/api/v2/sensors").status_code == 200
