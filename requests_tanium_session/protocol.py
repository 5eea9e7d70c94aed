"""Tanium's session protocol, without I/O: how to ask, and how to judge an answer.

Every front-end (the ``requests`` adapter, the httpx flows) builds its calls here and
hands what came back to a judge here; nothing else knows a path, a header or a status
rule. A judge never raises: it returns a :class:`Verdict`, so the caller raises outside
any ``except`` block and no raw answer hangs on an exception's ``__context__``.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Optional

from .exceptions import AuthServiceUnavailable, InvalidToken, LoginError, TaniumAuthError

__all__ = [
    "API_TOKEN_PREFIX",
    "AUTH_PATH",
    "CLOUD_SUFFIXES",
    "CONSOLE_PATH",
    "DEFAULT_EXPIRES_AFTER",
    "DEFAULT_LOGIN_TIMEOUT",
    "DEFAULT_LOGOUT_TIMEOUT",
    "DEFAULT_REFRESH_STATUS_CODES",
    "DEFAULT_REVALIDATE_AFTER",
    "ENV_DOMAIN",
    "ENV_PASSWORD",
    "ENV_SESSION",
    "ENV_URL",
    "ENV_USER",
    "HEADER",
    "LOGIN_ROUTES",
    "REST_LOGIN_PATH",
    "Call",
    "Kind",
    "Verdict",
    "check_seconds",
    "check_token",
    "console_call",
    "is_api_token",
    "is_cloud",
    "judge_logout",
    "judge_soap",
    "judge_token",
    "judge_version",
    "login_body",
    "login_call",
    "logout_call",
    "parse_retry_after",
    "rest_login_call",
    "special_paths",
    "token_shaped",
    "uid_of",
    "validate_call",
    "verdict_error",
]

# -- the wire -------------------------------------------------------------------

#: Request header carrying the session id or API token.
HEADER: Final = "session"

#: Validates, logs in (credentials) and logs out session ids.
AUTH_PATH: Final = "/auth"

#: Tells whether an API token lives (``GET`` with the ``session`` header).
CURRENT_PATH: Final = "/api/v2/session/current"

#: The SOAP endpoint: failures come in-band, in a 200.
SOAP_PATH: Final = "/soap"

#: The API Gateway (GraphQL): its 2xx answers do not confirm the session.
GATEWAY_PATH: Final = "/plugin/products/gateway/graphql"

#: Logs in with JSON credentials, answering ``{"data": {"session": ...}}``.
REST_LOGIN_PATH: Final = "/api/v2/session/login"

#: Hosts of Tanium Cloud, which takes API tokens only (``tk-<customer>.titankube.com``,
#: ``tk-<customer>-api.titankube.com``, ``<customer>-api.cloud.tanium.com``).
CLOUD_SUFFIXES: Final = (".titankube.com", ".cloud.tanium.com")

#: Credential login routes: ``POST /auth`` with headers, or the REST login.
LOGIN_ROUTES: Final = ("auth", "rest")

#: Unauthenticated console configuration carrying ``serverVersion``.
CONSOLE_PATH: Final = "/config/console.json"

#: Prefix of Tanium API tokens.
API_TOKEN_PREFIX: Final = "token-"

#: Environment variables read by ``from_env()`` and the command line.
ENV_URL: Final = "TANIUM_URL"
ENV_SESSION: Final = "TANIUM_SESSION"
ENV_USER: Final = "TANIUM_USER"
ENV_PASSWORD: Final = "TANIUM_PASSWORD"
ENV_DOMAIN: Final = "TANIUM_DOMAIN"

#: Headers whose values are secrets: redacted wherever a request is kept.
SECRET_HEADERS: Final = frozenset(
    {"session", "username", "password", "authorization", "proxy-authorization", "cookie"}
)

#: What a redacted value reads.
REDACTED: Final = "<redacted>"

# -- defaults, each defined once ------------------------------------------------


#: Seconds after a confirmation before the token is validated again (0: every time).
DEFAULT_REVALIDATE_AFTER: Final = 5.0

#: Seconds of idleness after which a session counts as expired (the server's 300 - 5).
DEFAULT_EXPIRES_AFTER: Final = 295.0

#: Wall-clock seconds for one validate or login call, body included.
DEFAULT_LOGIN_TIMEOUT: Final = 5.0

#: Wall-clock seconds for one logout call, body included.
DEFAULT_LOGOUT_TIMEOUT: Final = 5.0

#: Statuses from the Tanium origin that make the adapter check the session.
DEFAULT_REFRESH_STATUS_CODES: Final = (401, 403)

# -- limits ------------------------------------------------------------------------

#: Longest token accepted, from a caller or from the server.
MAX_TOKEN_LENGTH: Final = 4096

#: Largest JSON answer read from the REST session endpoints.
MAX_JSON_BYTES: Final = 1 << 16

#: Largest ``console.json`` read.
MAX_CONSOLE_BYTES: Final = 1 << 20

#: Shortest token accepted from the server.
MIN_ANSWER_LENGTH: Final = 16

#: Statuses that mean "try again later" besides 5xx (except 501).
TRANSIENT_STATUSES: Final = frozenset({408, 429})

#: Statuses that mean "this is not a Tanium endpoint": check the URL.
NOT_TANIUM_STATUSES: Final = frozenset({404, 405, 501})

_INPUT_RE = re.compile(rf"[!-~]{{1,{MAX_TOKEN_LENGTH}}}")
_ANSWER_RE = re.compile(rf"[A-Za-z0-9._~+/=-]{{{MIN_ANSWER_LENGTH},{MAX_TOKEN_LENGTH}}}")
_SESSION_ID_RE = re.compile(r"(\d+)-\d+-[0-9A-Fa-f]+")
_API_TOKEN_RE = re.compile(r"token-[0-9A-Fa-f]+")


# -- values ----------------------------------------------------------------------------


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), or
    None when there is none or it is unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def check_seconds(name: str, value: object, zero_ok: bool = False) -> float:
    """``value`` as a finite number of seconds (> 0, or >= 0 with ``zero_ok``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        limit = "0 or more" if zero_ok else "greater than 0"
        raise ValueError(f"{name} must be finite and {limit}")
    return float(value)


# -- tokens --------------------------------------------------------------------------


def check_token(value: object, what: str = "session") -> str:
    """Return ``value`` as a plain ``str`` if it is a well-formed token.

    Raises ``TypeError``/``ValueError`` whose message never shows the value.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    value = str.__str__(value)  # a str subclass is stored as a plain str
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_TOKEN_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_TOKEN_LENGTH} characters")
    if _INPUT_RE.fullmatch(value) is None:
        raise ValueError(f"{what} must be printable ASCII without whitespace or control characters")
    return value


def special_paths(base_url: str) -> dict[str, str]:
    """The paths under ``base_url`` whose 2xx answers are not a plain confirmation:
    ``{path: SOAP_PATH or GATEWAY_PATH}``."""
    prefix = base_url.split("://", 1)[-1].partition("/")[2]
    prefix = "/" + prefix if prefix else ""
    return {prefix + SOAP_PATH: SOAP_PATH, prefix + GATEWAY_PATH: GATEWAY_PATH}


def is_cloud(host: str) -> bool:
    """True for a Tanium Cloud host (it takes API tokens only)."""
    return host.lower().rstrip(".").endswith(CLOUD_SUFFIXES)


def is_api_token(token: str) -> bool:
    """True for a Tanium API token (``token-…``), False for a session id."""
    return token.startswith(API_TOKEN_PREFIX)


def uid_of(token: str) -> Optional[int]:
    """The user id of a ``uid-counter-hex`` session id, else None."""
    match = _SESSION_ID_RE.fullmatch(token)
    return int(match.group(1)) if match else None


def token_shaped(answer: str, sent: Optional[str]) -> bool:
    """True when ``answer`` may be adopted as a token: 16-4096 characters of
    ``[A-Za-z0-9._~+/=-]``, and a session id when ``sent`` is one (a token when it is
    an API token)."""
    if _ANSWER_RE.fullmatch(answer) is None:
        return False
    if sent is not None:
        if _SESSION_ID_RE.fullmatch(sent):
            return _SESSION_ID_RE.fullmatch(answer) is not None
        if _API_TOKEN_RE.fullmatch(sent):
            return _API_TOKEN_RE.fullmatch(answer) is not None
    return True


# -- how to ask ----------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request to the Tanium server: method, path, headers or JSON, body cap."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    json: Any = field(default=None, repr=False)
    limit: int = MAX_TOKEN_LENGTH  # largest body read; a longer one is malformed
    #: How the answer says "ok": ``text`` (the token as text), ``alive`` (any 2xx: the
    #: token sent lives) or ``json`` (``{"data": {"session": ...}}``).
    shape: str = "text"
    sent: Optional[str] = field(default=None, repr=False)  # the token it carries


def validate_call(token: str) -> Call:
    """Validate ``token``: ``POST /auth`` for session ids, ``GET /api/v2/session/current``
    for API tokens (a 2xx: alive)."""
    if is_api_token(token):
        return Call("GET", CURRENT_PATH, headers={HEADER: token}, limit=MAX_JSON_BYTES,
                    shape="alive", sent=token)  # fmt: skip
    return Call("POST", AUTH_PATH, headers={HEADER: token}, sent=token)


def login_headers(
    username: str, password: str, domain: str = "", secondary: str = "", persistent: bool = False
) -> dict[str, str]:
    """Headers of a credential login; ``ValueError``/``TypeError`` never show a value."""
    for name, value in (("username", username), ("password", password)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if not value:
            raise ValueError(f"{name} must not be empty")
    headers = {
        "username": base64.b64encode(username.encode("utf-8")).decode("ascii"),
        "password": base64.b64encode(password.encode("utf-8")).decode("ascii"),
    }
    for name, value in (("domain", domain), ("secondary", secondary)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if value:
            if value != value.strip():
                raise ValueError(f"{name} must not start or end with whitespace")
            if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
                raise ValueError(f"{name} must be printable ASCII")
            headers[name] = value
    if not isinstance(persistent, bool):
        raise TypeError("persistent must be True or False")
    if persistent:
        headers["persistent"] = "1"  # a one-week session (documented for 6.x)
    return headers


def _plain(name: str, value: object, required: bool = False) -> str:
    """``value`` as a credential field: a str, and printable ASCII where it travels in
    a header; never shown in a message."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{name} must not be empty")
    return value


def login_body(username: str, password: str, domain: str = "") -> dict[str, str]:
    """The JSON body of a REST login; ``ValueError``/``TypeError`` never show a value."""
    body = {"username": _plain("username", username, True),
            "password": _plain("password", password, True)}  # fmt: skip
    body["domain"] = _plain("domain", domain)
    if domain != domain.strip():
        raise ValueError("domain must not start or end with whitespace")
    return body


def rest_login_call(body: Mapping[str, str]) -> Call:
    """Log in with credentials: ``POST /api/v2/session/login`` with a JSON body."""
    return Call("POST", REST_LOGIN_PATH, json=dict(body), limit=MAX_JSON_BYTES, shape="json")


def login_call(headers: Mapping[str, str]) -> Call:
    """Log in with credentials: ``POST /auth`` with the headers of :func:`login_headers`."""
    return Call("POST", AUTH_PATH, headers=dict(headers))


def logout_call(token: str, every: bool = False) -> Call:
    """End this session (``logout: 0``) or every session of its user (``logout: 1``);
    a session id only (API tokens are revoked in the console or the token API)."""
    flag = "1" if every else "0"
    return Call("POST", AUTH_PATH, headers={HEADER: token, "logout": flag}, sent=token)


def console_call() -> Call:
    """Read ``/config/console.json`` (no auth)."""
    return Call("GET", CONSOLE_PATH, limit=MAX_CONSOLE_BYTES, shape="json")


# -- how to judge an answer ----------------------------------------------------------


class Kind(enum.Enum):
    """What an answer means."""

    OK = "ok"  # 200 with a well-formed token (``Verdict.token``)
    REJECTED = "rejected"  # the session or credentials are refused: drop the token
    NOT_TANIUM = "not tanium"  # 404/405/501: the URL is not a Tanium endpoint
    TRANSIENT = "transient"  # 5xx, 408, 429: try again later, keep the token
    MALFORMED = "malformed"  # a 200 that carries no well-formed token, or another status


@dataclass(frozen=True)
class Verdict:
    """The meaning of one answer; ``reason`` is safe to show (no secret, no body)."""

    kind: Kind
    reason: str
    token: Optional[str] = field(default=None, repr=False)


#: Said of an answer or a failure that suggests the URL is not a Tanium server's.
CHECK_URL = "is this a Tanium server? check the URL"


def transport_reason(text: str) -> str:
    """What a transport failure's (long, urllib3-wrapped) ``text`` means, in a few words."""
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return f"it does not speak TLS there (an http:// port?); {CHECK_URL}"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its certificate is not trusted (give a CA bundle: verify=...)"
    if "NameResolution" in text or "Name or service not known" in text:
        return f"the host name does not resolve; {CHECK_URL}"
    if "refused" in text:
        return f"the connection was refused; {CHECK_URL}"
    return f"no connection could be made; {CHECK_URL}"


CHECK_PROXY = "check HTTPS_PROXY / HTTP_PROXY and NO_PROXY, or pass proxies="


def proxy_reason(text: str) -> str:
    """What a failure to go through a proxy (urllib3's ``text``) means, in a few words."""
    if "407" in text:
        return f"the proxy asks for credentials (407); {CHECK_PROXY}"
    if "Tunnel connection failed" in text:
        return f"the proxy refused the tunnel; {CHECK_PROXY}"
    if "NameResolution" in text or "Name or service not known" in text:
        return f"the proxy's host name does not resolve; {CHECK_PROXY}"
    if "refused" in text:
        return f"the proxy refused the connection; {CHECK_PROXY}"
    return f"the proxy could not be used; {CHECK_PROXY}"


def _status_verdict(status: int, what: str) -> Verdict:
    """Judge a non-200 status (the one status rule every call shares)."""
    if status in NOT_TANIUM_STATUSES:
        return Verdict(Kind.NOT_TANIUM, f"answered {status}: {CHECK_URL}")
    if status in TRANSIENT_STATUSES or status >= 500:
        return Verdict(Kind.TRANSIENT, f"answered {status}; try again later")
    if 400 <= status < 500:
        return Verdict(Kind.REJECTED, f"answered {status}: {what}")
    return Verdict(Kind.MALFORMED, f"answered an unexpected {status}")


def _json(body: bytes) -> Any:
    """Parsed JSON, or None when it is not (deep nesting included)."""
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _refused(call: Call) -> str:
    """What a 4xx to ``call`` means, in words."""
    if call.sent is None:
        return "the credentials were refused"
    if call.shape == "alive":
        return (
            "the API token was rejected: it may have expired, been revoked or rotated, "
            "or this client's address is not in its trusted list"
        )
    return "the session was rejected: it expired or was revoked"


def judge_token(call: Call, status: int, body: Optional[bytes]) -> Verdict:
    """Judge the answer to a validate or login ``call``.

    ``body`` is None when it was longer than ``call.limit``.
    """
    if call.shape == "alive":  # GET /api/v2/session/current: any 2xx means the token lives
        if 200 <= status < 300:
            return Verdict(Kind.OK, f"answered {status}", token=call.sent)
        return _status_verdict(status, _refused(call))
    if status != 200:
        return _status_verdict(status, _refused(call))
    if body is None:
        return Verdict(Kind.MALFORMED, "answered 200 with a body too long to be a token")
    value = _session_in_json(body) if call.shape == "json" else _text(body)
    if value is None or not token_shaped(value, call.sent):
        looks = body.lstrip()[:64].lower()
        if call.shape == "json":
            return Verdict(Kind.MALFORMED, "answered 200 without a session in its JSON")
        if looks.startswith((b"<!doctype html", b"<html", b"<?xml", b"{", b"[")):
            return Verdict(Kind.MALFORMED, f"answered 200 with a page, not a token: {CHECK_URL}")
        return Verdict(Kind.MALFORMED, "answered 200 with something that is not a token")
    return Verdict(Kind.OK, "answered 200", token=value)


def _text(body: bytes) -> Optional[str]:
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        return None


def _session_in_json(body: bytes) -> Optional[str]:
    """``data.session`` of a REST answer (a bare ``session`` tolerated), or None."""
    data = _json(body)
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    value = data.get("session") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


_SOAP_FAILURES = (b"403", b"forbidden", b"rbacinsufficientprivilege")

#: ``<command>`` names (lower-cased prefix) that make a new session: the ``<session>``
#: of their answer is the caller's data, never a rotation of the caller's session.
_NEW_SESSION_COMMANDS = (b"newsession",)

#: Largest answer the auth reads itself: a 401/403 before its check (so a waiter holds
#: no connection), a SOAP 200 for in-band failures and a new ``<session>``.
MAX_ANSWER_BYTES: Final = 1 << 20


def _element(body: bytes, name: bytes) -> Optional[bytes]:
    """The text of the first ``<name>...</name>`` in ``body`` (two linear scans)."""
    start = body.find(b"<%s>" % name)
    if start < 0:
        return None
    start += len(name) + 2
    end = body.find(b"</%s>" % name, start)
    return None if end < 0 else body[start:end]


def judge_soap(body: bytes, sent: str) -> tuple[bool, Optional[str]]:
    """A SOAP 200: ``(failed, session)``, in time linear in its size. ``failed`` when
    its ``<command>`` reports an auth failure in-band (403/Forbidden for a dead session,
    RBACInsufficientPrivilege for a missing permission: one validation tells them
    apart); ``session`` is a token-shaped ``<session>`` that differs from ``sent``, when
    it is a rotation of it (never from a command that makes a new session), else None."""
    command = _element(body, b"command")
    said = (command or b"").strip().lower()
    if any(word in said for word in _SOAP_FAILURES):
        return True, None
    if said.startswith(_NEW_SESSION_COMMANDS):
        return False, None
    raw = _element(body, b"session")
    value = _text(raw) if raw is not None else None
    if value and value != sent and token_shaped(value, sent):
        return False, value
    return False, None


def judge_logout(status: int) -> Verdict:
    """Judge the answer to a logout: 200 ends the session, anything else refuses."""
    if status == 200:
        return Verdict(Kind.OK, "answered 200")
    return _status_verdict(status, "the logout was refused")


def judge_version(status: int, body: Optional[bytes]) -> tuple[Optional[str], str]:
    """``(serverVersion, "")`` from a ``console.json`` answer, or ``(None, why not)``."""
    if status != 200:
        return None, f"GET {CONSOLE_PATH} answered {status}"
    if body is None:
        return None, f"GET {CONSOLE_PATH} answered more than {MAX_CONSOLE_BYTES} bytes"
    data = _json(body)
    if not isinstance(data, dict):
        return None, f"GET {CONSOLE_PATH} did not answer a JSON object"
    raw = data.get("serverVersion")
    if not isinstance(raw, str):
        return None, f"GET {CONSOLE_PATH} carries no serverVersion string"
    return raw, ""


def verdict_error(
    call: Call, url: str, verdict: Verdict, kept: str, response: Any = None
) -> TaniumAuthError:
    """The exception for a verdict that is not OK; ``kept`` says what became of the token.

    Rejected: ``InvalidToken``; transient: ``AuthServiceUnavailable``; anything else
    (not a Tanium endpoint, malformed): ``LoginError``. The message names the method,
    the URL and the status, never a value.
    """
    what = f"{call.method} {url} {verdict.reason}"
    if verdict.kind is Kind.TRANSIENT:
        return AuthServiceUnavailable(f"{what}; {kept}", response=response)
    if verdict.kind is Kind.REJECTED:
        return InvalidToken(what, response=response)
    return LoginError(f"{what}; {kept}", response=response)
