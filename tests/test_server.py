"""The local Tanium server is public API: its protocol, clock, faults and counters."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import requests
import trustme

from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

from .conftest import Servers


def _auth(server: TaniumServer, **headers: str) -> requests.Response:
    return requests.post(server.url + "/auth", headers=headers)


def test_console_json(server: TaniumServer) -> None:
    server.version = "7.4.1.2"
    assert requests.get(server.url + "/config/console.json").json()["serverVersion"] == "7.4.1.2"


def test_credential_login_validate_and_logout(server: TaniumServer) -> None:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    token = _auth(server, username=b64(DEFAULT_USER[0]), password=b64(DEFAULT_USER[1])).text
    assert token.startswith(f"{DEFAULT_USER[2]}-") and len(token.split("-")[2]) == 128
    assert _auth(server, username=b64(DEFAULT_USER[0]), password=b64("nope")).status_code == 401
    assert _auth(server, session=token).text == token
    assert _auth(server, session=token, logout="0").status_code == 200
    assert _auth(server, session=token).status_code == 401


def test_json_session_api(server: TaniumServer) -> None:
    api = server.url + "/api/v2/session"
    token = requests.post(
        api + "/login", json={"username": DEFAULT_USER[0], "password": DEFAULT_USER[1]}
    ).json()["data"]["session"]
    assert requests.post(api + "/validate", json={"session": token}).json() == {
        "data": {"session": token}
    }
    assert requests.post(api + "/logout", json={"session": token}).status_code == 200
    assert requests.post(api + "/validate", json={"session": token}).status_code == 403
    assert requests.post(api + "/login", json={"username": "x", "password": "y"}).status_code == 403


def test_protected_endpoints(server: TaniumServer) -> None:
    token = server.new_session()
    h = {"session": token}
    assert requests.get(server.url + "/api/v2/sensors", headers=h).status_code == 200
    soap = requests.post(server.url + "/soap", headers=h, data=b"<x/>")
    assert soap.headers["Content-Type"].startswith("text/xml")
    assert f"<session>{token}</session>".encode() in soap.content
    dead = requests.post(server.url + "/soap", data=b"<x/>")
    assert dead.status_code == 200 and b"403 Forbidden" in dead.content  # in-band
    assert requests.post(server.url + "/auth", headers=h).headers["Content-Type"] == (
        "text/plain; charset=us-ascii"
    )
    assert requests.get(server.url + "/api/v2/denied", headers=h).status_code == 403
    assert requests.get(server.url + "/api/v2/sensors").status_code == 403
    assert requests.get(server.url + "/api/v2/nothing", headers=h).status_code == 404
    server.denied_paths.add("/api/v2/sensors")
    assert requests.get(server.url + "/api/v2/sensors", headers=h).status_code == 403


def test_chunked_request_body_is_read(server: TaniumServer) -> None:
    token = server.new_session()
    resp = requests.post(
        server.url + "/api/v2/echo", headers={"session": token}, data=iter([b"ab", b"cd"])
    )
    assert resp.json()["data"]["body"] == "abcd"


def test_sliding_idle_expiry_on_the_clock(server: TaniumServer) -> None:
    token = server.new_session()
    server.clock.advance(200)
    assert server.is_valid(token)  # and that use slid the window
    requests.get(server.url + "/api/v2/sensors", headers={"session": token})
    server.clock.advance(200)
    assert server.is_valid(token)
    server.clock.advance(301)
    assert not server.is_valid(token)
    with pytest.raises(ValueError):
        server.clock.advance(-1)


def test_expire_revoke_restart_rotate(server: TaniumServer) -> None:
    a, b, c = server.new_session(), server.new_session(), server.new_session(uid=5)
    server.expire(a)
    assert not server.is_valid(a) and server.is_valid(b)
    assert server.revoke_user(1) == 1 and not server.is_valid(b) and server.is_valid(c)
    d = server.rotate(c)
    assert not server.is_valid(c) and server.is_valid(d)
    server.restart()
    assert not server.is_valid(d)


def test_api_tokens(server: TaniumServer) -> None:
    token = server.new_api_token(lifetime=10)
    assert (
        requests.get(server.url + "/api/v2/sensors", headers={"session": token}).status_code == 200
    )
    assert _auth(server, session=token).status_code == 401  # /auth never validates API tokens
    server.clock.advance(11)
    assert not server.is_valid(token)
    untrusted = server.new_api_token(trusted=False)
    assert (  # as real servers answer an invalid or untrusted API token
        requests.get(server.url + "/api/v2/sensors", headers={"session": untrusted}).status_code
        == 401
    )
    current = server.url + "/api/v2/session/current"
    assert requests.get(current, headers={"session": untrusted}).status_code == 401
    live = server.new_api_token()
    assert requests.get(current, headers={"session": live}).json() == {"data": {"id": 1}}


def test_faults_and_counters(server: TaniumServer) -> None:
    server.inject("/api/v2/sensors", status=502, count=2)
    server.redirect("/api/v2/old", "/api/v2/sensors", status=308)
    assert [requests.get(server.url + "/api/v2/sensors").status_code for _ in range(3)] == [
        502,
        502,
        403,
    ]
    assert (
        requests.get(server.url + "/api/v2/old", allow_redirects=False).headers["Location"]
        == "/api/v2/sensors"
    )
    assert server.count("/api/v2/sensors") == 3 and server.count("/api/v2/sensors", 502) == 2
    server.inject("/auth", drop=True)
    with pytest.raises(requests.ConnectionError):
        _auth(server, session="x")
    server.reset_counts()
    assert server.count("/auth") == 0 and list(server.received()) == []


def test_recorded_requests_hide_header_values_in_repr(server: TaniumServer) -> None:
    token = server.new_session()
    requests.get(server.url + "/api/v2/sensors", headers={"session": token})
    (rec,) = list(server.received())
    assert rec.headers["session"] == token and token not in repr(rec)


def test_tls_from_certfile(
    servers: Servers, tmp_path: Path, ca: trustme.CA, ca_bundle: str
) -> None:
    cert = ca.issue_cert("127.0.0.1")
    pem = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    with TaniumServer(certfile=str(pem)) as server:
        assert server.url.startswith("https://")
        resp = requests.get(server.url + "/config/console.json", verify=ca_bundle)
        assert resp.status_code == 200
