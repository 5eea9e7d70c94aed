"""The ``tanium-session`` command: demo, validate, logout, serve.

Exit codes: 0 success, 1 the server rejected the session, 2 usage, configuration or
transport error. A session id is never read from the command line (other users can
see argv in ``ps``): it comes from ``TANIUM_SESSION`` or a hidden prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import io
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Optional, TextIO

import requests
from urllib3.exceptions import InsecureRequestWarning

from . import __version__
from .auth import TaniumSessionAuth
from .exceptions import InvalidToken, LoginError, LogoutError, TaniumAuthError
from .http_client import HttpClient
from .protocol import (
    AUTH_PATH,
    DEFAULT_LOGIN_TIMEOUT,
    ENV_DOMAIN,
    ENV_PASSWORD,
    ENV_SESSION,
    ENV_URL,
    ENV_USER,
    LOGIN_ROUTES,
    check_token,
    transport_reason,
)
from .session_id import SessionId
from .versions import get_server_version

if TYPE_CHECKING:
    from .testing.server import TaniumServer

__all__ = ["main"]

EXIT_OK, EXIT_REJECTED, EXIT_ERROR = 0, 1, 2


class _Fail(Exception):
    """An expected failure: printed as one line, no traceback."""

    def __init__(self, message: str, code: int = EXIT_ERROR, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class _PipeClosed(Exception):
    """Standard output was closed by its reader (``| head``): stop quietly."""


def _out(text: str, stream: Optional[TextIO] = None) -> None:
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except BrokenPipeError:
        # Whatever is still buffered goes nowhere, and no later write (at exit
        # included) raises again; the main thread stops, a helper thread goes quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (stream or sys.stdout).fileno())
        os.close(devnull)
        if threading.current_thread() is threading.main_thread():
            raise _PipeClosed from None


def _n(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless it is one: "1 login", "2 logins"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# -- demo -------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    if not args.json:
        return _story(args)
    lines = io.StringIO()
    with contextlib.redirect_stdout(lines):
        code = _story(args)
    text = lines.getvalue().splitlines()
    _out(json.dumps({"ok": code == EXIT_OK, "lines": text, "done": text[-1] if text else ""}))
    return code


def _story(args: argparse.Namespace) -> int:
    from .testing.server import DEFAULT_USER, TaniumServer

    threads, count = args.threads, args.requests
    if threads < 1 or count < 1:
        raise _Fail("--threads and --requests must be at least 1")
    gap = 0.3
    user, password = DEFAULT_USER[0], DEFAULT_USER[1]
    with TaniumServer() as server:
        _out(f"local Tanium server at {server.url} (version {server.version})")
        api = server.url + "/api/v2/sensors"
        # Everything here is on loopback: no proxy from the environment applies.
        auth = TaniumSessionAuth.from_credentials(server.url, user, password, revalidate_after=gap)
        with auth, requests.Session() as http:
            http.trust_env = False
            http.auth = auth
            _out(f"0. logged in as {user!r} with from_credentials (1 /auth login)")
            server.reset_counts()

            _out(f"1. burst: {_n(count, 'request')} from {_n(threads, 'thread')} through one auth")
            ok = _burst(http, api, threads, count)
            _out(f"   {ok}/{count} answered 200; /auth calls: {server.count(AUTH_PATH)}")

            _out(f"2. idle for {gap + 0.1:.1f} s (revalidate_after={gap} s), then one request")
            time.sleep(gap + 0.1)
            before = server.count(AUTH_PATH)
            status = http.get(api).status_code
            _out(f"   answered {status}; /auth calls for it: {server.count(AUTH_PATH) - before}")

            _out("3. an administrator revokes the session, then one request")
            server.revoke(auth.token or "")
            calls = dict(server.auth_calls)
            resp = http.get(api)
            validations = server.auth_calls["validate"] - calls.get("validate", 0)
            logins = server.auth_calls["login"] - calls.get("login", 0)
            _out(
                f"   answered {resp.status_code} after {_n(len(resp.history), 'resend')}: the "
                f"old session was rejected ({_n(validations, 'validation')}) and "
                f"from_credentials logged in again ({_n(logins, 'login')})"
            )

            _out("4. a request the user may not make (GET /api/v2/denied)")
            before_auth = server.count(AUTH_PATH)
            denied = http.get(server.url + "/api/v2/denied")
            _out(
                f"   answered {denied.status_code}; one /auth check "
                f"({server.count(AUTH_PATH) - before_auth}) found the session alive, so this "
                "is a permission answer, returned as it is"
            )
        code = _demo_without_refresh(server, api)
        total = sum(n for path, n in server.counts.items() if path.startswith("/api/"))
        answered = sum(
            n
            for (path, st), n in server.statuses.items()
            if st == 200 and path == "/api/v2/sensors"
        )
        calls = server.auth_calls
        _out(
            f"done: {_n(total, 'API request')} ({answered} answered 200), "
            f"{_n(calls['validate'], 'validation')} and {_n(calls['login'], 'login')} in all; "
            "1 revocation recovered, 1 permission 403 told apart"
        )
    return code


def _demo_without_refresh(server: TaniumServer, api: str) -> int:
    _out("5. the same revocation with a bare session id and no refresh")
    with TaniumSessionAuth(server.url, server.new_session()) as auth, requests.Session() as http:
        http.trust_env = False
        http.auth = auth
        server.revoke(auth.token or "")
        try:
            http.get(api)
        except LoginError as exc:
            _out(f"   {type(exc).__name__} (a LoginError): {exc}")
            return EXIT_OK
    _out("   unexpected: the request succeeded")
    return EXIT_ERROR


def _burst(http: requests.Session, url: str, threads: int, count: int) -> int:
    done = [0] * threads
    shares = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]

    def work(i: int) -> None:
        for _ in range(shares[i]):
            if http.get(url).status_code == 200:
                done[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done)


# -- validate and logout ------------------------------------------------------


def _read_session() -> str:
    value = os.environ.get(ENV_SESSION, "")
    if value:
        return value
    if sys.stdin is None:
        raise _Fail(f"no session: set {ENV_SESSION} or enter it at the prompt")
    if sys.stdin.isatty():
        value = getpass.getpass("Tanium session: ")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise _Fail(f"no session: set {ENV_SESSION} or enter it at the prompt")
    return value


def _client(args: argparse.Namespace) -> HttpClient:
    url = args.url or os.environ.get(ENV_URL, "")
    if not url:
        raise _Fail(f"no server: pass --url or set {ENV_URL}")
    verify: Any = True
    if args.insecure:
        _out("warning: TLS certificate verification is off (--insecure)", sys.stderr)
        warnings.simplefilter("ignore", InsecureRequestWarning)
        verify = False
    elif args.ca_bundle:
        if not os.path.exists(args.ca_bundle):
            raise _Fail(f"--ca-bundle: no such file or directory: {args.ca_bundle}")
        verify = args.ca_bundle
    try:
        return HttpClient(url, verify=verify, allow_http=args.allow_http)
    except ValueError as exc:
        raise _Fail(str(exc).replace("allow_http=True", "--allow-http")) from None


def _session_id(args: argparse.Namespace, client: HttpClient) -> SessionId:
    if args.timeout <= 0:
        raise _Fail("--timeout must be greater than 0")
    session = _read_session()
    try:
        check_token(session, ENV_SESSION if os.environ.get(ENV_SESSION) else "the session")
    except ValueError as exc:
        hint = "; strip the surrounding whitespace" if session != session.strip() else ""
        raise _Fail(f"{exc}{hint}") from None
    return SessionId(
        client,
        session,
        login_timeout=args.timeout,
        logout_timeout=args.timeout,
        ver_check=False,
    )


def _validate(args: argparse.Namespace) -> dict[str, Any]:
    with _client(args) as client:
        sid = _session_id(args, client)
        before = sid.generation
        sid.validate(cause="tanium-session validate")
        try:
            version: Optional[str] = str(get_server_version(client, timeout=args.timeout))
        except (ValueError, requests.RequestException):
            version = None
        api = sid.uid is None
        info = {
            "ok": True,
            "url": client.url,
            "valid": True,
            "uid": sid.uid,
            "api_token": api,
            "server_version": version,
            "rotated": sid.generation != before,
        }
    what = "valid API token" if api else f"valid session for uid {info['uid']}"
    info["text"] = [
        f"{what} at {client.url}",
        f"server version: {version or 'unknown'}",
        f"rotated: {'yes' if info['rotated'] else 'no'}",
    ]
    return info


def _logout(args: argparse.Namespace) -> dict[str, Any]:
    with _client(args) as client:
        sid = _session_id(args, client)
        who = "API token" if sid.uid is None else f"uid {sid.uid}"
        if args.all:
            sid.logout_all(cause="tanium-session logout --all")
            text = f"every session of {who} at {client.url} ended"
        else:
            sid.logout(cause="tanium-session logout")
            text = f"session of {who} at {client.url} ended"
    return {"ok": True, "url": client.url, "all": bool(args.all), "text": [text]}


def _read_credentials() -> tuple[str, str]:
    """The user and password: ``TANIUM_USER``/``TANIUM_PASSWORD``, or prompts (the
    password hidden)."""
    user = os.environ.get(ENV_USER, "")
    password = os.environ.get(ENV_PASSWORD, "")
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if not user and interactive:
        user = input("Tanium user: ").strip()
    if not password and interactive:
        password = getpass.getpass("Tanium password: ")
    if not user or not password:
        raise _Fail(
            f"no credentials: set {ENV_USER} and {ENV_PASSWORD}, or enter them at the prompts"
        )
    return user, password


def _login(args: argparse.Namespace) -> dict[str, Any]:
    if args.timeout <= 0:
        raise _Fail("--timeout must be greater than 0")
    user, password = _read_credentials()
    with _client(args) as client:  # checks the URL and the CA bundle, as everywhere
        url, verify = client.url, client.verify
    with TaniumSessionAuth.from_credentials(
        url, user, password, domain=os.environ.get(ENV_DOMAIN, ""), login=args.login,
        verify=verify, allow_http=args.allow_http, login_timeout=args.timeout,
    ) as auth:  # fmt: skip
        session = auth.token or ""
    route = "POST /api/v2/session/login" if args.login == "rest" else "POST /auth"
    return {
        "ok": True,
        "url": url,
        "login": args.login,
        "session": session,
        "text": [
            f"logged in at {url} with {route}",
            f"session id: {session}",
            f"  export {ENV_SESSION}={session}",
        ],
    }


def _report(args: argparse.Namespace) -> int:
    """Run validate/logout; one JSON object or text lines, whatever happens."""
    try:
        info = args.run(args)
    except Exception as exc:
        code, message, status = _judge(exc)
        if args.json:
            _out(json.dumps({"ok": False, "error": message, "status": status}))
        else:
            _out(f"tanium-session: {message}", sys.stderr)
        return code
    text = info.pop("text")
    if args.json:
        _out(json.dumps(info))
    else:
        for line in text:
            _out(line)
    return EXIT_OK


def _judge(exc: Exception) -> tuple[int, str, Optional[int]]:
    """Exit code, one safe line and the HTTP status for an exception."""
    if isinstance(exc, _Fail):
        return exc.code, str(exc), exc.status
    response = getattr(exc, "response", None)
    status = response.status_code if response is not None else None
    if isinstance(exc, LogoutError) and response is not None and status in (401, 403):
        return (
            EXIT_REJECTED,
            f"rejected: {response.url} answered {status}: the server no longer knows this "
            "session (already logged out, expired or revoked); there is nothing to end",
            status,
        )
    if isinstance(exc, InvalidToken) or (
        isinstance(exc, LogoutError) and status is not None and 400 <= status < 500
    ):
        return EXIT_REJECTED, f"rejected: {exc}", status
    if isinstance(exc, TaniumAuthError):
        return EXIT_ERROR, f"{type(exc).__name__}: {exc}", status
    if isinstance(exc, requests.RequestException):
        return EXIT_ERROR, _transport(exc), status
    if isinstance(exc, (TypeError, ValueError)):
        return EXIT_ERROR, str(exc), None
    if isinstance(exc, OSError):
        return EXIT_ERROR, f"{type(exc).__name__}: {exc.strerror or exc}", None
    raise exc


def _transport(exc: requests.RequestException) -> str:
    """One short line for a transport failure (the auth's own calls already say what
    failed and what to check; anything else gets the same words)."""
    text = str(exc)
    if "Max retries exceeded" in text or "Caused by" in text:  # urllib3's wrapped text
        url = getattr(exc.request, "url", None) or "the server"
        text = f"{url}: {transport_reason(text)}"
    return f"{type(exc).__name__}: {text}"


# -- serve ------------------------------------------------------------------

_SERVE_COMMANDS = ("new-session", "new-token", "help", "quit")
_SERVE_HELP = """\
commands on standard input: 'new-session' (a fresh session id), 'new-token' (a fresh
API token), 'help', 'quit'; Ctrl-C also stops the server"""


def _serve(args: argparse.Namespace) -> int:
    from .testing.server import DEFAULT_EXPIRATION, DEFAULT_USER, TaniumServer

    context = None
    bundle: Optional[str] = None
    if args.tls:
        try:
            from .testing.tls import local_tls
        except ImportError:  # pragma: no cover - the module itself imports nothing extra
            raise _Fail("--tls needs trustme (the 'test' extra)") from None
        # A private directory (0700): nobody else can put another CA where users were
        # told to find this one, during the run or after it.
        private = tempfile.mkdtemp(prefix="tanium-ca-")
        bundle = os.path.join(private, "ca.pem")
        try:
            context = local_tls(bundle)
        except ImportError:
            shutil.rmtree(private)
            raise _Fail("--tls needs trustme (the 'test' extra)") from None
    server = TaniumServer(ssl_context=context, port=args.port)
    try:
        server.start()
    except OSError as exc:
        if bundle:
            shutil.rmtree(os.path.dirname(bundle))
        raise _Fail(f"cannot listen on port {args.port}: {exc.strerror}") from None
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # clean up on terminate too
    try:
        session = server.new_session()
        if args.json:
            info = {"url": server.url, "session": session, "api_token": server.new_api_token(),
                    "ca_bundle": bundle, "user": DEFAULT_USER[0], "password": DEFAULT_USER[1],
                    "expires_after": DEFAULT_EXPIRATION,
                    "env": _environment(server.url, session, bundle)}  # fmt: skip
            _out(json.dumps(info))
        else:
            _greet(server, session, bundle)
        threading.Thread(target=_commands, args=(server, stop, args.json), daemon=True).start()
        if not args.quiet and not args.json:
            tty = sys.stdout.isatty()
            threading.Thread(target=_status, args=(server, stop, tty), daemon=True).start()
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.stop()
        if bundle:
            shutil.rmtree(os.path.dirname(bundle), ignore_errors=True)
    return EXIT_OK


def _environment(url: str, session: str, bundle: Optional[str]) -> dict[str, str]:
    """The variables every example in the docs reads its values from."""
    from .testing.server import DEFAULT_USER

    env = {ENV_URL: url, ENV_SESSION: session, ENV_USER: DEFAULT_USER[0],
           ENV_PASSWORD: DEFAULT_USER[1]}  # fmt: skip
    if bundle:  # requests reads the first, httpx and aiohttp (OpenSSL) the second
        env.update(REQUESTS_CA_BUNDLE=bundle, SSL_CERT_FILE=bundle)
    env["NO_PROXY"] = "127.0.0.1,localhost"  # keep proxies off the local server
    return env


def _greet(server: TaniumServer, session: str, bundle: Optional[str]) -> None:
    """What ``serve`` prints first: where, what to export, how to log in."""
    from .testing.server import DEFAULT_EXPIRATION, DEFAULT_USER

    _out(f"local Tanium server at {server.url}")
    if bundle:
        _out(f"CA bundle: {bundle}")
    _out(f"session id: {session}")
    _out(f"API token: {server.new_api_token()}")
    _out("")
    _out("use it from a shell (values for this local server only):")
    for name, value in _environment(server.url, session, bundle).items():
        _out(f"  export {name}={value}")
    _out(
        f"log in with user {DEFAULT_USER[0]!r}, password {DEFAULT_USER[1]!r} "
        f"(TaniumSessionAuth.from_env() reads them from {ENV_USER} and {ENV_PASSWORD})"
    )
    _out(
        f"sessions expire after {DEFAULT_EXPIRATION:.0f} s idle; type 'new-session' "
        "here for a fresh one"
    )
    _out(_SERVE_HELP)
    _out("press Ctrl-C to stop")


def _status(server: TaniumServer, stop: threading.Event, tty: bool) -> None:
    """A live status line: rewritten every second on a terminal, else a line every
    5 seconds when something changed."""
    every = 1.0 if tty else 5.0
    last_requests, last = 0, ""
    while not stop.wait(every):
        calls = server.auth_calls
        total = sum(server.counts.values())
        line = (
            f"status: {_n(server.session_count, 'session')}, "
            f"{_n(calls['validate'], 'validation')}, {_n(calls['login'], 'login')}, "
            f"{(total - last_requests) / every:.1f} requests/s"
        )
        last_requests = total
        if tty:
            print("\r" + line.ljust(79), end="", flush=True)
        elif line != last:
            _out(line)
        last = line


def _commands(server: TaniumServer, stop: threading.Event, as_json: bool = False) -> None:
    """Answer the line commands of ``serve`` until standard input ends."""
    stdin = sys.stdin
    if stdin is None:
        return
    for line in stdin:
        command = line.strip()
        if command == "new-session":
            session = server.new_session()
            if as_json:
                _out(json.dumps({"session": session}))
            else:
                _out(f"session id: {session}")
                _out(f"  export {ENV_SESSION}={session}")
        elif command == "new-token":
            token = server.new_api_token()
            _out(json.dumps({"api_token": token}) if as_json else f"API token: {token}")
        elif command == "quit":
            stop.set()
            return
        elif command:  # help, or a mistyped command (not echoed: it may be a secret)
            known = command == "help"
            if as_json:
                _out(json.dumps({"help": _SERVE_HELP.replace("\n", " "),
                                 "commands": list(_SERVE_COMMANDS), "ok": known}))  # fmt: skip
            else:
                _out(_SERVE_HELP if known else f"unknown command; {_SERVE_HELP}")


# -- wiring -------------------------------------------------------------------


#: What an unrecognized option may be shown as: a plain option name. Anything else
#: (argparse 3.13 hands back "-1-23-abc" for "-v1-23-abc") may be a secret's fragment.
_OPTION_NAME = re.compile(r"--[a-z]+(?:-[a-z]+)*|-[a-zA-Z]")
#: A value argparse quotes in its message, either way repr() quotes it.
_QUOTED = re.compile(r"""(: |argument )(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors never echo an argument's value."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            heads = [a.split("=", 1)[0] for a in extras if a.startswith("-")]
            names = sorted({h for h in heads if _OPTION_NAME.fullmatch(h)})
            others = len(extras) - sum(1 for h in heads if _OPTION_NAME.fullmatch(h))
            shown = ", ".join(names) if names else "none"
            self.error(
                f"unrecognized arguments: options {shown}; {others} other value(s) not shown "
                f"(a session is read from {ENV_SESSION} or a prompt, never from arguments)"
            )
        return parsed

    def error(self, message: str) -> NoReturn:
        if "unrecognized arguments" not in message:  # (those are named without values)
            # "invalid choice: 'x'", "ignored explicit argument 'x'", "invalid float
            # value: 'x'": whatever was typed may be a secret.
            message = _QUOTED.sub(r"\1(value not shown)", message)
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _common() -> _Parser:
    """Options that work before and after the subcommand."""
    common = _Parser(add_help=False, allow_abbrev=False)
    s = argparse.SUPPRESS
    common.add_argument("-v", "--verbose", action="store_true", default=s, help="show DEBUG logs")
    common.add_argument("--json", action="store_true", default=s, help="one JSON object on stdout")
    return common


def _connection() -> _Parser:
    """Options of the commands that talk to a Tanium server."""
    conn = _Parser(add_help=False, allow_abbrev=False)
    s = argparse.SUPPRESS
    conn.add_argument("--url", default=s, help=f"Tanium server URL (default: {ENV_URL})")
    conn.add_argument("--ca-bundle", default=s, help="CA bundle that verifies the server")
    conn.add_argument("--insecure", action="store_true", default=s, help="do not verify TLS")
    conn.add_argument(
        "--timeout",
        type=float,
        default=s,
        help=f"seconds per call (default {DEFAULT_LOGIN_TIMEOUT:g})",
    )
    conn.add_argument("--allow-http", action="store_true", default=s, help="allow http:// hosts")
    return conn


_DEFAULTS: dict[str, Any] = {
    "verbose": False,
    "url": None,
    "ca_bundle": None,
    "insecure": False,
    "timeout": float(DEFAULT_LOGIN_TIMEOUT),
    "allow_http": False,
    "json": False,
}


def _parser() -> argparse.ArgumentParser:
    common, conn = _common(), _connection()
    parser = _Parser(
        prog="tanium-session",
        allow_abbrev=False,
        description="Tanium session tools for requests users.",
        parents=[common, conn],
        epilog="exit codes: 0 ok, 1 the server rejected the session, "
        "2 usage, configuration or transport error",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser(
        "demo", parents=[common], help="run a short story against the built-in server",
        allow_abbrev=False,
    )  # fmt: skip
    demo.add_argument("--threads", type=int, default=4, help="threads of the burst (default 4)")
    demo.add_argument(
        "--requests", type=int, default=40, help="requests of the burst, in all (default 40)"
    )
    demo.set_defaults(main=_demo)

    for name, run, text in (
        ("validate", _validate, f"check a session ({ENV_SESSION} or a prompt)"),
        ("logout", _logout, f"end a session ({ENV_SESSION} or a prompt)"),
        ("login", _login, f"log in for a new session ({ENV_USER}, {ENV_PASSWORD} or prompts)"),
    ):
        cmd = sub.add_parser(name, parents=[common, conn], help=text, allow_abbrev=False)
        cmd.set_defaults(main=_report, run=run)
        if name == "logout":
            cmd.add_argument("--all", action="store_true", help="end every session of the user")
        if name == "login":
            cmd.add_argument(
                "--login", choices=LOGIN_ROUTES, default="auth",
                help="the login route: auth (POST /auth, the default) or rest "
                "(POST /api/v2/session/login)",
            )  # fmt: skip

    serve = sub.add_parser(
        "serve", parents=[common], help="run the local Tanium server in the foreground",
        allow_abbrev=False,
    )  # fmt: skip
    serve.add_argument("--quiet", action="store_true", help="no live status line")
    serve.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any)")
    serve.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway CA")
    serve.add_argument("--duration", type=float, default=0, help=argparse.SUPPRESS)
    serve.set_defaults(main=_serve)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    for name, value in _DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.main(args)
        return code
    except KeyboardInterrupt:
        return EXIT_ERROR
    except _PipeClosed:
        return EXIT_ERROR
    except Exception as exc:
        code, message, _ = _judge(exc)
        _out(f"tanium-session: {message}", sys.stderr)
        return code
