"""A new user's first hour, round three (issue 29): cut answers are never tokens, the
CLI holds on every Python, wrong clients are named, a coroutine refresh is refused at
the first request, unverified TLS warns, and no redirect hop from elsewhere carries
the session. Each through every front-end where it applies."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import warnings
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from urllib3.exceptions import InsecureRequestWarning

from requests_tanium_session import TaniumSessionAuth
from requests_tanium_session.aiohttp import TaniumMiddleware
from requests_tanium_session.cli import main
from requests_tanium_session.httpx import TaniumAuth
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

from .conftest import Servers, free_port
from .harness import SENSORS, Front, statuses

USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]
#: A session id the right shape: cut short, its first part still looks like one.
WHOLE = "1-2-" + "ab" * 64


# -- an answer cut short is never a token ------------------------------------------------


def test_a_cut_validation_answer_is_never_adopted(server: TaniumServer, front: Front) -> None:
    session = server.new_session()
    auth = front.auth(server.url, session, revalidate_after=0)
    server.inject("/auth", status=200, body=WHOLE.encode(), partial=True)
    # a stale check that meets a transport failure sends the kept session
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.count("/auth") == 1
    assert auth.token == session and auth.logged_in


def test_a_cut_login_answer_is_never_a_token(server: TaniumServer, front: Front) -> None:
    server.inject("/auth", status=200, body=WHOLE.encode(), partial=True, count=None)
    with pytest.raises(Exception) as info:
        front.from_credentials(server.url, USER, PASSWORD, login_timeout=2)
    cut = (front.transport_error, requests.exceptions.ChunkedEncodingError)
    assert isinstance(info.value, cut) or isinstance(info.value.__cause__, cut), repr(info.value)
    assert WHOLE[:20] not in str(info.value)


def test_the_auth_client_names_a_cut_answer(server: TaniumServer, client: Any) -> None:
    from requests_tanium_session import SessionId

    sid = SessionId(client, server.new_session())
    server.inject("/auth", status=200, body=WHOLE.encode(), partial=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="cut short"):
        sid.validate()
    assert sid.token != WHOLE


def test_a_cut_answer_the_auth_read_reaches_the_caller_as_an_error(server: TaniumServer) -> None:
    auth = TaniumSessionAuth(server.url, server.new_session())
    server.inject(SENSORS, status=403, body=b"x" * 50, partial=True)
    with requests.Session() as http, auth:
        http.auth = auth
        response = http.get(server.url + SENSORS, stream=True)
        assert response.status_code == 403  # alive: a permission answer, as it came
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            response.content  # noqa: B018  (whatever urllib3 does, as urllib3 2 does)


# -- the command line ---------------------------------------------------------------------


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


SECRET = "1-23-abcdef0123456789"


@pytest.mark.parametrize(
    "argv",
    [
        [f"-v{SECRET}", "validate"],
        ["validate", f"-v{SECRET}"],
        [f"--json={SECRET}", "validate"],
        ["validate", f"--timeout={SECRET}'x"],
        ["validate", "--timeout", f'{SECRET}"x'],
        ["validate", "--timeout", f"{SECRET}'x\"y"],
        ["login", f"--login={SECRET}'"],
        ["login", "--login", f'"{SECRET}'],
        [f"-{SECRET}", "validate"],
        ["validate", f"--{SECRET}"],
        ["validate", SECRET],
    ],
    ids=lambda argv: f"case{len(''.join(argv))}",
)
def test_no_argument_error_echoes_a_value(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(argv, capsys)
    assert code == 2
    assert "abcdef" not in out + err and "1-23" not in out + err
    assert "error:" in err


def test_counts_read_as_english(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(["demo", "--threads", "1", "--requests", "1"], capsys)
    assert code == 0
    assert "1 request from 1 thread" in out
    assert "(1 validation)" in out and "(1 login)" in out and "after 1 resend" in out
    assert not re.search(r"\b1 (logins|validations|resends|threads|requests|sessions)\b", out)


def test_a_dead_proxy_is_named_not_the_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("HTTPS_PROXY", f"http://proxy-user:proxy-{PASSWORD}@127.0.0.1:{port}")
    monkeypatch.setenv("TANIUM_SESSION", WHOLE)
    code, out, err = _cli(["validate", "--url", "https://tanium.example.com"], capsys)
    assert code == 2
    assert f"through the proxy http://127.0.0.1:{port}" in err
    assert "proxy refused the connection" in err and "HTTPS_PROXY" in err
    assert "check the URL" not in err and PASSWORD not in err and WHOLE not in out + err


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "requests_tanium_session", "serve", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_serve_json_holds_for_every_line() -> None:
    proc = _serve("--json")
    out, err = proc.communicate("help\nnot-a-command secret-looking\nnew-session\nquit\n", 30)
    lines = out.splitlines()
    parsed = [__import__("json").loads(line) for line in lines]  # every line is JSON
    assert parsed[0]["env"].keys() >= {"TANIUM_URL", "TANIUM_SESSION", "TANIUM_USER",
                                       "TANIUM_PASSWORD"}  # fmt: skip
    assert parsed[1]["ok"] is True and "new-session" in parsed[1]["commands"]
    assert parsed[2]["ok"] is False and "secret-looking" not in lines[2]
    assert "session" in parsed[3]
    assert proc.returncode == 0 and err == ""


def test_serve_exports_every_variable_in_text() -> None:
    proc = _serve("--quiet")
    out, _ = proc.communicate("quit\n", 30)
    exported = dict(re.findall(r"^\s+export (\w+)=(\S+)", out, re.M))
    assert exported.keys() >= {"TANIUM_URL", "TANIUM_SESSION", "TANIUM_USER", "TANIUM_PASSWORD"}
    assert exported["TANIUM_USER"] == USER and exported["TANIUM_PASSWORD"] == PASSWORD


def test_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "requests_tanium_session", "demo"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # what `| head -1` reads
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 2
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# -- from_env: a session now, credentials when it dies -------------------------------------


def test_from_env_with_a_session_and_credentials_logs_in_when_it_dies(
    server: TaniumServer, front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = server.new_session()
    for name, value in (("TANIUM_URL", server.url), ("TANIUM_SESSION", session),
                        ("TANIUM_USER", USER), ("TANIUM_PASSWORD", PASSWORD)):  # fmt: skip
        monkeypatch.setenv(name, value)
    auth = front.auth_class.from_env()
    front.opened.append(auth)
    assert auth.token == session and server.auth_calls["login"] == 0  # the session first
    server.revoke(session)
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.auth_calls["login"] == 1 and auth.token != session


# -- the wrong client names the right class ---------------------------------------------------


def _aiohttp_with(middleware: Any, url: str) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as s, s.get(url) as r:
            await r.read()

    asyncio.run(go())


def _send(client: str, auth: Any, url: str) -> None:
    if client == "requests":
        requests.get(url, auth=auth, timeout=10)
    elif client == "httpx":
        with httpx.Client(auth=auth) as c:
            c.get(url)
    else:
        _aiohttp_with(auth, url)


PAIRS = [
    ("requests", "httpx", "requests_tanium_session.httpx.TaniumAuth"),
    ("requests", "aiohttp", "requests_tanium_session.aiohttp.TaniumMiddleware"),
    ("httpx", "requests", "requests_tanium_session.TaniumSessionAuth"),
    ("httpx", "aiohttp", "requests_tanium_session.aiohttp.TaniumMiddleware"),
    ("aiohttp", "requests", "requests_tanium_session.TaniumSessionAuth"),
    ("aiohttp", "httpx", "requests_tanium_session.httpx.TaniumAuth"),
]


@pytest.mark.parametrize("mine,given_to,use", PAIRS, ids=[f"{a}-to-{b}" for a, b, _ in PAIRS])
def test_an_auth_given_to_another_client_names_the_class_to_use(
    server: TaniumServer, mine: str, given_to: str, use: str
) -> None:
    cls: Any = {"requests": TaniumSessionAuth, "httpx": TaniumAuth, "aiohttp": TaniumMiddleware}
    auth = cls[mine](server.url, server.new_session())
    with auth, pytest.raises(TypeError) as info:
        _send(given_to, auth, server.url + SENSORS)
    assert use in str(info.value) and f"a {given_to} request" in str(info.value)
    assert server.count(SENSORS) == 0 and server.count("/auth") == 0


# -- a coroutine refresh on a sync httpx client ---------------------------------------------


def test_a_coroutine_refresh_is_refused_at_the_first_request_of_a_plain_client(
    server: TaniumServer,
) -> None:
    async def refresh() -> str:
        return server.new_session()

    auth = TaniumAuth(server.url, server.new_session(), refresh=refresh)  # fresh: no check
    with auth, httpx.Client(auth=auth) as client, pytest.raises(TypeError, match="AsyncClient"):
        client.get(server.url + SENSORS)
    assert server.count(SENSORS) == 0 and server.count("/auth") == 0
    auth.refresh = server.new_session  # a plain function: the same client works
    with httpx.Client(auth=auth) as client:
        assert client.get(server.url + SENSORS).status_code == 200


# -- unverified TLS warns in every front-end -------------------------------------------------


def test_unverified_tls_warns_once_per_auth(tls_server: TaniumServer, front: Front) -> None:
    off: dict[str, Any] = {"ssl": False} if front.aiohttp else {"verify": False}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auth = front.auth(tls_server.url, tls_server.new_session(), **off)
    unverified = [w for w in caught if issubclass(w.category, InsecureRequestWarning)]
    assert len(unverified) == 1 and tls_server.url in str(unverified[0].message)
    assert unverified[0].filename.endswith("harness.py")  # the line that built the auth
    assert auth.logged_in


def test_verified_and_plain_http_do_not_warn(server: TaniumServer, front: Front) -> None:
    off: dict[str, Any] = {"ssl": False} if front.aiohttp else {"verify": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        front.auth(server.url, server.new_session(), **off)  # http://: nothing to verify


# -- the session never rides a hop from elsewhere ---------------------------------------------


def test_a_redirect_hop_from_another_origin_carries_no_session(
    server: TaniumServer, servers: Servers, front: Front
) -> None:
    foreign = servers.start()
    auth = front.auth(server.url, server.new_session())
    foreign.redirect("/start", server.url + SENSORS)
    outcomes = front.get(auth, foreign.url + "/start")
    arrived = list(server.received(SENSORS))
    assert len(arrived) == 1 and "session" not in arrived[0].headers, outcomes
    assert all("session" not in r.headers for r in foreign.received())
    # and the next request of the same caller to the origin carries it again
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]


def test_the_tanium_middleware_is_innermost(server: TaniumServer, servers: Servers) -> None:
    other = servers.start()

    async def failover(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        request.url = request.url.with_port(other.port)  # a caller's failover elsewhere
        return await handler(request)

    tanium = TaniumMiddleware(server.url, server.new_session())

    async def go() -> int:
        async with tanium.client_session(middlewares=(failover,)) as session:  # noqa: SIM117
            async with session.get(server.url + SENSORS) as response:
                return int(response.status)

    with tanium:
        asyncio.run(go())
    assert [r.headers.get("session") for r in list(other.received(SENSORS))] == [None]
