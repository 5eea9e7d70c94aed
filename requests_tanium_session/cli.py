"""The ``tanium-session`` command: demo, validate, logout, serve.

Exit codes: 0 success, 1 the server rejected the session, 2 usage, configuration or
transport error. A session id is never read from the command line (other users can
see argv in ``ps``): it comes from ``TANIUM_SESSION`` or a hidden prompt.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any, Optional, TextIO

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning
from urllib3.util import Retry

from . import __version__
from .auth import TaniumSessionAuth
from .exceptions import LoginError, LogoutError, TaniumAuthError
from .http_client import HttpClient
from .session_id import SessionId
from .testing.server import TaniumServer
from .versions import get_server_version

__all__ = ["main"]

EXIT_OK, EXIT_REJECTED, EXIT_ERROR = 0, 1, 2


class _Fail(Exception):
    """An expected failure: printed as one line, no traceback."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _out(text: str, stream: Optional[TextIO] = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


# -- demo -------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    threads, count = args.threads, args.requests
    if threads < 1 or count < 1:
        raise _Fail("--threads and --requests must be at least 1")
    gap = 0.3
    with TaniumServer() as server:
        _out(f"local Tanium server at {server.url} (version {server.version})")
        session_id = server.new_session()
        # Everything here is on loopback: no proxy from the environment applies.
        http = requests.Session()
        http.trust_env = False
        retry = Retry(total=3, backoff_factor=0.05, status_forcelist=[502, 503, 504])
        http.mount("http://", HTTPAdapter(max_retries=retry))
        private = requests.Session()
        private.trust_env = False
        client = HttpClient(server.url, session=private)
        auth = TaniumSessionAuth(session=session_id, http_client=client, revalidate_after=gap)
        http.auth = auth
        api = server.url + "/api/v2/sensors"

        _out(f"1. burst: {count} requests from {threads} thread(s) through one auth")
        ok = _burst(http, api, threads, count)
        _out(f"   {ok}/{count} answered 200; /auth calls: {server.count('/auth')}")

        _out(f"2. idle for {gap + 0.1:.1f} s (revalidate_after={gap} s), then one request")
        time.sleep(gap + 0.1)
        before = server.count("/auth")
        status = http.get(api).status_code
        _out(f"   answered {status}; /auth calls for it: {server.count('/auth') - before}")

        _out("3. an administrator revokes the session, then one request")
        server.revoke(session_id)
        before = server.count("/auth")
        try:
            http.get(api)
            _out("   unexpected: the request succeeded")
            code = EXIT_ERROR
        except LoginError as exc:
            _out(f"   {type(exc).__name__}: {exc}")
            code = EXIT_OK
        _out(f"   /auth calls for it: {server.count('/auth') - before}")
        total = sum(n for path, n in server.counts.items() if path != "/auth")
        _out(f"done: {total} API requests, {server.count('/auth')} /auth calls in all")
        http.close()
        private.close()
    return code


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
    value = os.environ.get("TANIUM_SESSION", "")
    if value:
        return value
    if sys.stdin is None:
        raise _Fail("no session: set TANIUM_SESSION or enter it at the prompt")
    if sys.stdin.isatty():
        value = getpass.getpass("Tanium session: ")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise _Fail("no session: set TANIUM_SESSION or enter it at the prompt")
    return value


def _client(args: argparse.Namespace) -> HttpClient:
    url = args.url or os.environ.get("TANIUM_URL", "")
    if not url:
        raise _Fail("no server: pass --url or set TANIUM_URL")
    verify: Any = True
    if args.insecure:
        _out("warning: TLS certificate verification is off (--insecure)", sys.stderr)
        warnings.simplefilter("ignore", InsecureRequestWarning)
        verify = False
    elif args.ca_bundle:
        verify = args.ca_bundle
    return HttpClient(url, verify=verify, allow_http=args.allow_http)


def _session_id(args: argparse.Namespace, client: HttpClient) -> SessionId:
    return SessionId(
        client,
        _read_session(),
        login_timeout=args.timeout,
        logout_timeout=args.timeout,
        ver_check=False,
    )


def _validate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        sid = _session_id(args, client)
        before = sid.generation
        sid.validate(cause="tanium-session validate")
        try:
            version: Optional[str] = str(get_server_version(client, timeout=args.timeout))
        except ValueError:
            version = None
        info = {
            "url": client.url,
            "valid": True,
            "uid": sid.uid,
            "api_token": sid.uid is None,
            "server_version": version,
            "rotated": sid.generation != before,
        }
    if args.json:
        _out(json.dumps(info))
    else:
        _out(f"valid session for uid {info['uid']} at {client.url}")
        _out(f"server version: {version or 'unknown'}")
        _out(f"rotated: {'yes' if info['rotated'] else 'no'}")
    return EXIT_OK


def _logout(args: argparse.Namespace) -> int:
    with _client(args) as client:
        sid = _session_id(args, client)
        if args.all:
            sid.logout_all(cause="tanium-session logout --all")
            _out(f"every session of uid {sid.uid} at {client.url} ended")
        else:
            sid.logout(cause="tanium-session logout")
            _out(f"session of uid {sid.uid} at {client.url} ended")
    return EXIT_OK


# -- serve ------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    context = None
    if args.tls:
        try:
            import trustme
        except ImportError:
            raise _Fail("--tls needs trustme (the 'test' extra)") from None
        from .testing.pytest_plugin import cert_context

        ca = trustme.CA()
        context = cert_context(ca.issue_cert("127.0.0.1", "localhost"))
        fd, bundle = tempfile.mkstemp(prefix="tanium-ca-", suffix=".pem")
        os.close(fd)
        ca.cert_pem.write_to_path(bundle)
    server = TaniumServer(ssl_context=context, port=args.port)
    try:
        server.start()
    except OSError as exc:
        raise _Fail(f"cannot listen on port {args.port}: {exc.strerror}") from None
    _out(f"local Tanium server at {server.url}")
    if context is not None:
        _out(f"CA bundle: {bundle}")
    _out(f"session id: {server.new_session()}")
    _out(f"API token: {server.new_api_token()}")
    _out("press Ctrl-C to stop")
    try:
        deadline = time.monotonic() + args.duration if args.duration else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return EXIT_OK


# -- wiring -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tanium-session", description="Tanium session tools for requests users."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show DEBUG logs")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a short story against the built-in server")
    demo.add_argument("--threads", type=int, default=4)
    demo.add_argument("--requests", type=int, default=40)
    demo.set_defaults(run=_demo)

    for name, run, text in (
        ("validate", _validate, "check a session (TANIUM_SESSION or a prompt)"),
        ("logout", _logout, "end a session (TANIUM_SESSION or a prompt)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--url", help="Tanium server URL (default: TANIUM_URL)")
        cmd.add_argument("--ca-bundle", help="CA bundle that verifies the server")
        cmd.add_argument("--insecure", action="store_true", help="do not verify TLS")
        cmd.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
        cmd.add_argument("--allow-http", action="store_true", help="allow http:// hosts")
        cmd.set_defaults(run=run)
        if name == "validate":
            cmd.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            cmd.add_argument("--all", action="store_true", help="end every session of the user")

    serve = sub.add_parser("serve", help="run the local Tanium server in the foreground")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--tls", action="store_true", help="serve HTTPS with a trustme CA")
    serve.add_argument("--duration", type=float, default=0, help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.run(args)
        return code
    except _Fail as exc:
        _out(f"tanium-session: {exc}", sys.stderr)
        return exc.code
    except (LoginError, LogoutError) as exc:
        status = exc.response.status_code if exc.response is not None else None
        if isinstance(exc, LoginError) or (status is not None and 400 <= status < 500):
            _out(f"tanium-session: rejected: {exc}", sys.stderr)
            return EXIT_REJECTED
        _out(f"tanium-session: {type(exc).__name__}: {exc}", sys.stderr)
        return EXIT_ERROR
    except (TaniumAuthError, requests.RequestException) as exc:
        _out(f"tanium-session: {type(exc).__name__}: {exc}", sys.stderr)
        return EXIT_ERROR
    except (TypeError, ValueError) as exc:
        _out(f"tanium-session: {exc}", sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
