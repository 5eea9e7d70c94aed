"""HttpClient: URL checks, origin, the private session and its retries."""

from __future__ import annotations

import pytest
import requests
from urllib3.util import Retry

from requests_tanium_session import HttpClient, TaniumSessionAuth
from requests_tanium_session.testing import TaniumServer

GOOD = [
    ("https://tanium.example.com", "https://tanium.example.com", ("https", "tanium.example.com", 443)),
    ("https://Tanium.Example.COM/", "https://tanium.example.com", ("https", "tanium.example.com", 443)),
    ("HTTPS://h.example:443/", "https://h.example", ("https", "h.example", 443)),
    ("https://h.example:8443/tanium/", "https://h.example:8443/tanium", ("https", "h.example", 8443)),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080", ("http", "127.0.0.1", 8080)),
    ("http://localhost", "http://localhost", ("http", "localhost", 80)),
    ("http://[::1]:9000", "http://[::1]:9000", ("http", "[::1]", 9000)),
    ("https://bücher.example", "https://xn--bcher-kva.example", ("https", "xn--bcher-kva.example", 443)),
]  # fmt: skip


@pytest.mark.parametrize(("url", "norm", "origin"), GOOD, ids=[g[0] for g in GOOD])
def test_urls_are_normalised(url: str, norm: str, origin: tuple[str, str, int]) -> None:
    with HttpClient(url) as client:
        assert client.url == norm
        assert client.origin == origin


BAD = {
    "no-scheme": "tanium.example.com",
    "ftp": "ftp://tanium.example.com",
    "no-host": "https://",
    "query": "https://tanium.example.com/?a=1",
    "empty-query": "https://tanium.example.com/?",
    "fragment": "https://tanium.example.com/#x",
    "userinfo": "https://user:secret-pw@tanium.example.com",
    "user-only": "https://tanium.example.com@evil.test",
    "bad-port": "https://tanium.example.com:99999",
    "letters-port": "https://tanium.example.com:abc",
    "space": "https://tanium example.com",
    "crlf": "https://tanium.example.com/\r\nX: y",
    "empty": "",
    "http-remote": "http://tanium.example.com",
}


@pytest.mark.parametrize("url", list(BAD.values()), ids=list(BAD))
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError) as info:
        HttpClient(url)
    assert "url" in str(info.value)
    assert "secret-pw" not in str(info.value)


def test_url_type_is_checked() -> None:
    with pytest.raises(TypeError):
        HttpClient(None)  # type: ignore[arg-type]


def test_allow_http_permits_remote_http() -> None:
    with HttpClient("http://tanium.example.com", allow_http=True) as client:
        assert client.origin == ("http", "tanium.example.com", 80)


def test_default_retry_covers_post_and_gateway_errors() -> None:
    with HttpClient("https://tanium.example.com") as client:
        adapter = client.session.get_adapter("https://tanium.example.com/auth")
        retry = adapter.max_retries  # type: ignore[attr-defined]
        assert isinstance(retry, Retry)
        assert set(retry.status_forcelist or ()) == {502, 503, 504}
        assert retry.allowed_methods is None  # every method, POST included
        assert retry.is_retry("POST", 503)
        assert not retry.is_retry("POST", 401) and not retry.is_retry("POST", 403)


def test_retries_override(server: TaniumServer) -> None:
    with HttpClient(server.url, retries=Retry(total=0, raise_on_status=False)) as client:
        server.inject("/auth", status=503, count=1)
        assert client.request("POST", "/auth").status_code == 503
        assert server.count("/auth") == 1


def test_request_sends_no_auth_of_a_supplied_session(server: TaniumServer) -> None:
    supplied = requests.Session()
    supplied.auth = TaniumSessionAuth(server.url, server.new_session())
    with HttpClient(server.url, session=supplied) as client:
        resp = client.request("GET", "/config/console.json")
        assert resp.status_code == 200
        assert "session" not in resp.request.headers
    assert server.count("/auth") == 0
    supplied.close()


def test_supplied_session_is_not_closed(server: TaniumServer) -> None:
    supplied = requests.Session()
    client = HttpClient(server.url, session=supplied)
    client.close()
    assert supplied.get(server.url + "/config/console.json").status_code == 200
    supplied.close()
    with pytest.raises(ValueError, match="retries"):
        HttpClient(server.url, session=supplied, retries=2)


def test_request_does_not_follow_redirects(server: TaniumServer) -> None:
    server.redirect("/config/console.json", "/elsewhere")
    with HttpClient(server.url) as client:
        assert client.request("GET", "/config/console.json").status_code == 302
    with pytest.raises(ValueError):
        HttpClient(server.url).request("GET", "config")


def test_tls_with_ca_bundle(tls_server: TaniumServer, ca_bundle: str) -> None:
    with HttpClient(tls_server.url, verify=ca_bundle) as client:
        assert client.request("GET", "/config/console.json").status_code == 200
    with HttpClient(tls_server.url) as client, pytest.raises(requests.exceptions.SSLError):
        client.request("GET", "/config/console.json")


def test_repr() -> None:
    assert (
        repr(HttpClient("https://h.example")) == "HttpClient(url='https://h.example', verify=True)"
    )
