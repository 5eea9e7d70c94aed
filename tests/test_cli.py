"""The ``tanium-session`` command, run as a subprocess against the local server."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import pytest
import requests

from requests_tanium_session import __version__
from requests_tanium_session.testing import TaniumServer

from .conftest import free_port

#: The installed console script, as users run it.
SCRIPT = str(Path(sys.executable).parent / "tanium-session")


def run(
    *args: str, env: Optional[dict[str, str]] = None, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TANIUM_")}
    base.update(env or {})
    return subprocess.run(
        [SCRIPT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=base,
        timeout=timeout,
    )


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def test_demo_tells_the_story() -> None:
    proc = run("demo", "--threads", "2", "--requests", "10")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "10/10 answered 200; /auth calls: 0" in out
    assert "/auth calls for it: 1" in out
    # a revocation recovered by from_credentials: one validation, one login, one resend
    assert "answered 200 after 1 resend" in out and "(1 validation)" in out
    assert "(1 login)" in out
    # a permission 403 told apart from a dead session
    assert "answered 403" in out and "permission answer" in out
    assert "InvalidToken" in out and "done:" in out
    assert out.rstrip().splitlines()[-1].startswith("done:")
    _no_traceback(proc)


def test_demo_rejects_bad_counts() -> None:
    proc = run("demo", "--threads", "0")
    assert proc.returncode == 2 and "at least 1" in proc.stderr
    _no_traceback(proc)


def test_validate_from_env(server: TaniumServer) -> None:
    token = server.new_session()
    proc = run("validate", env={"TANIUM_URL": server.url, "TANIUM_SESSION": token})
    assert proc.returncode == 0, proc.stderr
    assert "valid session for uid 1" in proc.stdout
    assert "7.3.314.3424" in proc.stdout and "rotated: no" in proc.stdout
    assert token not in proc.stdout + proc.stderr


def test_validate_json_and_rotation(server: TaniumServer) -> None:
    server.rotate_on_validate = True
    token = server.new_session()
    proc = run("validate", "--json", "--url", server.url, env={"TANIUM_SESSION": token})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info == {
        "ok": True, "url": server.url, "valid": True, "uid": 1, "api_token": False,
        "server_version": "7.3.314.3424", "rotated": True,
    }  # fmt: skip
    assert token not in proc.stdout


def test_validate_reads_the_session_from_the_prompt(server: TaniumServer) -> None:
    token = server.new_session()
    proc = run("validate", "--url", server.url, stdin=token + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "valid session" in proc.stdout and token not in proc.stdout + proc.stderr


def test_validate_api_token(server: TaniumServer) -> None:
    token = server.new_api_token()
    proc = run("validate", "--json", "--url", server.url, env={"TANIUM_SESSION": token})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["api_token"] is True
    assert server.count("/auth") == 0
    text = run("validate", "--url", server.url, env={"TANIUM_SESSION": token})
    assert text.stdout.startswith("valid API token at") and "uid None" not in text.stdout


def test_rejected_session_exits_1_with_one_line(server: TaniumServer) -> None:
    token = server.new_session()
    server.revoke(token)
    proc = run("validate", "--url", server.url, env={"TANIUM_SESSION": token})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "rejected" in proc.stderr
    assert token not in proc.stderr
    _no_traceback(proc)


@pytest.mark.parametrize(
    ("args", "env", "stdin", "words"),
    [
        (["validate"], {"TANIUM_SESSION": "1-2-ab"}, "", "TANIUM_URL"),
        (["validate", "--url", "http://127.0.0.1:1"], {}, "", "no session"),
        (["validate", "--url", "ftp://x"], {"TANIUM_SESSION": "1-2-ab"}, "", "url"),
        (
            ["validate", "--url", "http://tanium.example.com"],
            {"TANIUM_SESSION": "1-2-ab"},
            "",
            "--allow-http",
        ),
        (
            ["validate", "--url", "http://127.0.0.1:1"],
            {"TANIUM_SESSION": "bad value\x01"},
            "",
            "session",
        ),
    ],
    ids=["no-url", "no-session", "bad-url", "remote-http", "bad-session"],
)
def test_configuration_errors_exit_2(
    args: list[str], env: dict[str, str], stdin: str, words: str
) -> None:
    proc = run(*args, env=env, stdin=stdin)
    assert proc.returncode == 2
    assert words in proc.stderr
    assert "bad value" not in proc.stderr
    _no_traceback(proc)


def test_transport_error_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = run("validate", "--url", url, "--timeout", "2", env={"TANIUM_SESSION": "1-2-abc"})
    assert proc.returncode == 2 and "ConnectionError" in proc.stderr
    assert "refused; is this a Tanium server? check the URL" in proc.stderr
    assert "HTTPConnectionPool" not in proc.stderr and len(proc.stderr) < 160
    _no_traceback(proc)


def test_https_to_an_http_port_says_check_the_url(server: TaniumServer) -> None:
    url = server.url.replace("http://", "https://")
    proc = run("validate", "--url", url, env={"TANIUM_SESSION": server.new_session()})
    assert proc.returncode == 2
    assert "does not speak TLS there" in proc.stderr and "check the URL" in proc.stderr
    assert proc.stderr.count("\n") == 1 and len(proc.stderr) < 200
    _no_traceback(proc)


@pytest.mark.parametrize(
    "args",
    [["sekrit-1-2"], ["validate", "--json=sekrit-1-2"], ["-vsekrit-1-2", "validate"],
     ["logout", "--al=sekrit-1-2"], ["validate", "--timeout", "sekrit-1-2"]],
    ids=["subcommand", "json-value", "short-option", "abbreviation", "bad-number"],
)  # fmt: skip
def test_argument_errors_never_echo_a_value(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert "sekrit" not in proc.stderr + proc.stdout
    _no_traceback(proc)


def test_a_session_with_a_newline_names_its_source_and_says_strip(server: TaniumServer) -> None:
    session = server.new_session()
    proc = run("validate", "--url", server.url, env={"TANIUM_SESSION": session + "\n"})
    assert proc.returncode == 2
    assert "TANIUM_SESSION" in proc.stderr and "strip" in proc.stderr
    assert session not in proc.stderr
    _no_traceback(proc)


def test_a_second_logout_says_there_is_nothing_to_end(server: TaniumServer) -> None:
    env = {"TANIUM_SESSION": server.new_session()}
    assert run("logout", "--url", server.url, env=env).returncode == 0
    proc = run("logout", "--url", server.url, env=env)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "no longer knows this session" in proc.stderr and "nothing to end" in proc.stderr
    assert "refused to a logout" not in proc.stderr


def test_demo_json_is_one_object() -> None:
    proc = run("demo", "--json", "--requests", "8", "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["ok"] is True and info["done"].startswith("done: ")
    assert any("permission answer" in line for line in info["lines"])


@pytest.mark.parametrize(
    "args", [["--session", "1-2-abcdef"], ["--session=1-2-abcdef"], ["1-2-abcdef"]]
)
def test_session_is_never_taken_from_argv_nor_echoed(args: list[str]) -> None:
    proc = run("validate", *args)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
    assert "1-2-abcdef" not in proc.stderr + proc.stdout
    _no_traceback(proc)


def test_bad_ca_bundle_exits_2_with_one_line(server: TaniumServer) -> None:
    env = {"TANIUM_SESSION": server.new_session()}
    proc = run("validate", "--url", server.url, "--ca-bundle", "/nonexistent/ca.pem", env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "/nonexistent/ca.pem" in proc.stderr
    _no_traceback(proc)


@pytest.mark.parametrize("status", [404, 501])
def test_wrong_url_exits_2_asking_to_check_it(server: TaniumServer, status: int) -> None:
    server.inject("/auth", status=status, count=None)
    proc = run("validate", "--url", server.url, env={"TANIUM_SESSION": server.new_session()})
    assert proc.returncode == 2
    assert "is this a Tanium server? check the URL" in proc.stderr
    assert "expired or was revoked" not in proc.stderr
    _no_traceback(proc)


def test_json_failure_is_one_object(server: TaniumServer) -> None:
    token = server.new_session()
    server.revoke(token)
    proc = run("validate", "--json", "--url", server.url, env={"TANIUM_SESSION": token})
    assert proc.returncode == 1
    info = json.loads(proc.stdout)
    assert info["ok"] is False and info["status"] == 401 and "rejected" in info["error"]
    assert token not in proc.stdout
    proc = run("validate", "--json", env={"TANIUM_SESSION": token})  # no URL at all
    assert proc.returncode == 2 and json.loads(proc.stdout)["ok"] is False


def test_logout_json(server: TaniumServer) -> None:
    token = server.new_session()
    proc = run("logout", "--json", "--url", server.url, env={"TANIUM_SESSION": token})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"ok": True, "url": server.url, "all": False}
    proc = run("logout", "--json", "--url", server.url, env={"TANIUM_SESSION": token})
    assert proc.returncode == 1 and json.loads(proc.stdout)["ok"] is False


def test_common_options_work_before_and_after_the_subcommand(
    tls_server: TaniumServer, ca_bundle: str
) -> None:
    env = {"TANIUM_SESSION": tls_server.new_session()}
    after = run(
        "validate", "--url", tls_server.url, "-v", "--ca-bundle", ca_bundle, "--timeout", "3",
        env=env,
    )  # fmt: skip
    assert after.returncode == 0, after.stderr
    assert "DEBUG requests_tanium_session.session_id" in after.stderr
    before = run(
        "--verbose", "--ca-bundle", ca_bundle, "--url", tls_server.url, "validate", env=env
    )
    assert before.returncode == 0, before.stderr
    assert "DEBUG requests_tanium_session.session_id" in before.stderr
    insecure = run("validate", "--url", tls_server.url, "--insecure", env=env)
    assert insecure.returncode == 0


def test_ca_bundle_option_wins_over_requests_ca_bundle(
    tls_server: TaniumServer, ca_bundle: str
) -> None:
    env = {
        "TANIUM_SESSION": tls_server.new_session(),
        "REQUESTS_CA_BUNDLE": requests.certs.where(),
        "CURL_CA_BUNDLE": requests.certs.where(),
    }
    proc = run("validate", "--url", tls_server.url, "--ca-bundle", ca_bundle, env=env)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("command", ["demo", "serve", "validate", "logout"])
def test_every_option_has_help_text(command: str) -> None:
    import argparse

    from requests_tanium_session.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cmd = sub.choices[command]
    for action in cmd._actions:
        assert action.help, action.option_strings
    assert run(command, "--help").returncode == 0


def test_usage_error_exits_2() -> None:
    assert run().returncode == 2
    assert run("nonsense").returncode == 2


def test_logout_and_logout_all(server: TaniumServer) -> None:
    token = server.new_session()
    other = server.new_session()
    proc = run("logout", "--url", server.url, env={"TANIUM_SESSION": token})
    assert proc.returncode == 0, proc.stderr
    assert not server.is_valid(token) and server.is_valid(other)
    proc = run("logout", "--all", "--url", server.url, env={"TANIUM_SESSION": server.new_session()})
    assert proc.returncode == 0 and not server.is_valid(other)
    proc = run("logout", "--url", server.url, env={"TANIUM_SESSION": token})
    assert proc.returncode == 1


def test_tls_with_ca_bundle_and_insecure(tls_server: TaniumServer, ca_bundle: str) -> None:
    env = {"TANIUM_SESSION": tls_server.new_session()}
    ok = run("validate", "--url", tls_server.url, "--ca-bundle", ca_bundle, env=env)
    assert ok.returncode == 0, ok.stderr
    refused = run("validate", "--url", tls_server.url, env=env)
    assert refused.returncode == 2 and "SSLError" in refused.stderr
    insecure = run("validate", "--url", tls_server.url, "--insecure", env=env)
    assert insecure.returncode == 0
    assert insecure.stderr.count("verification is off") == 1


def test_verbose_shows_debug_without_secrets(server: TaniumServer) -> None:
    token = server.new_session()
    proc = run("--verbose", "validate", "--url", server.url, env={"TANIUM_SESSION": token})
    assert proc.returncode == 0
    assert "DEBUG" in proc.stderr and "/auth" in proc.stderr
    assert token not in proc.stderr + proc.stdout


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and __version__ in proc.stdout


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)
    for stream in (proc.stdin, proc.stdout):
        if stream:
            stream.close()


def _serve(*extra: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [SCRIPT, "serve", "--duration", "30", "--quiet", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info: dict[str, str] = {"text": ""}
    for line in proc.stdout:
        info["text"] += line
        if line.startswith("press Ctrl-C"):
            break
        key, _, value = line.partition(": ") if ": " in line else line.partition(" at ")
        info.setdefault(key.strip(), value.strip())
    return proc, info


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_serve_prints_url_session_and_api_token(tls: bool) -> None:
    proc, info = _serve(*(["--tls"] if tls else []))
    try:
        url = info["local Tanium server"]
        verify: object = info["CA bundle"] if tls else True
        assert url.startswith("https://" if tls else "http://")
        for key in ("session id", "API token"):
            resp = requests.get(
                url + "/api/v2/sensors", headers={"session": info[key]}, verify=verify
            )  # type: ignore[arg-type]
            assert resp.status_code == 200
        text = info["text"]
        assert f"export TANIUM_URL={url}" in text
        assert f"export TANIUM_SESSION={info['session id']}" in text
        assert "expire after 300 s idle" in text and "'admin'" in text
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("new-session\n")
        proc.stdin.flush()
        fresh = proc.stdout.readline().split(": ", 1)[1].strip()
        assert proc.stdout.readline().strip() == f"export TANIUM_SESSION={fresh}"
        assert fresh != info["session id"]
        resp = requests.get(url + "/api/v2/sensors", headers={"session": fresh}, verify=verify)  # type: ignore[arg-type]
        assert resp.status_code == 200
    finally:
        _stop(proc)
    if tls:
        bundle = Path(info["CA bundle"])
        assert not bundle.exists() and not bundle.parent.exists()  # removed at the stop
        assert bundle.parent != Path(tempfile.gettempdir())  # in a private directory


def test_serve_tls_bundle_lives_in_a_private_directory() -> None:
    proc, info = _serve("--tls")
    try:
        directory = Path(info["CA bundle"]).parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    finally:
        _stop(proc)


def test_serve_json_and_live_status() -> None:
    proc = subprocess.Popen(
        [SCRIPT, "serve", "--json", "--duration", "30"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdin is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) >= {"url", "session", "api_token", "user"}
        proc.stdin.write("new-session\n")
        proc.stdin.flush()
        assert set(json.loads(proc.stdout.readline())) == {"session"}
    finally:
        _stop(proc)
    status = subprocess.Popen(
        [SCRIPT, "serve", "--duration", "7"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    out, _ = status.communicate(timeout=30)
    lines = [line for line in out.splitlines() if line.startswith("status: ")]
    assert lines and "sessions" in lines[0] and "requests/s" in lines[0]


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "tanium-session"
    if not script.exists():
        pytest.skip("package not installed in this interpreter's environment")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and __version__ in proc.stdout


# -- login (issue 28) ---------------------------------------------------------------------


@pytest.mark.parametrize("route", ["auth", "rest"])
def test_login_prints_a_new_session_by_either_route(server: TaniumServer, route: str) -> None:
    env = {
        "TANIUM_URL": server.url,
        "TANIUM_USER": "admin",
        "TANIUM_PASSWORD": "local-tanium-password",
    }
    proc = run("login", "--login", route, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["login"] == route and server.is_valid(info["session"])
    assert server.count("/api/v2/session/login") == (1 if route == "rest" else 0)
    assert server.auth_calls["login"] == (1 if route == "auth" else 0)
    assert "local-tanium-password" not in proc.stdout + proc.stderr
    text = run("login", "--login", route, env=env)
    assert f"export TANIUM_SESSION={server.issued[-1]}" in text.stdout


def test_login_refused_is_rejected_and_shows_no_password(server: TaniumServer) -> None:
    env = {"TANIUM_URL": server.url, "TANIUM_USER": "admin", "TANIUM_PASSWORD": "not-the-pass"}
    proc = run("login", "--login", "rest", env=env)
    assert proc.returncode == 1 and "credentials were refused" in proc.stderr
    assert "not-the-pass" not in proc.stdout + proc.stderr
    _no_traceback(proc)


def test_login_without_credentials_or_with_an_unknown_route(server: TaniumServer) -> None:
    proc = run("login", env={"TANIUM_URL": server.url})
    assert proc.returncode == 2 and "TANIUM_USER" in proc.stderr
    proc = run("login", "--login", "secret-route", env={"TANIUM_URL": server.url})
    assert proc.returncode == 2 and "secret-route" not in proc.stderr
    _no_traceback(proc)
