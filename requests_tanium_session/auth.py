"""TaniumSessionAuth: the ``requests.auth.AuthBase`` adapter and its response hook."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any, Optional, Union
from urllib.parse import urljoin, urlparse

import requests
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar
from requests.utils import requote_uri, rewind_body
from urllib3.exceptions import InsecureRequestWarning

from .exceptions import (
    AuthServiceUnavailable,
    GetPlatformVersionWarning,
    LoginError,
    VersionMismatchError,
)
from .http_client import DEFAULT_PORTS, Closing, HttpClient, origin_of
from .session_id import (
    AUTH_PATH,
    SessionId,
    is_transient,
    read_token_answer,
)
from .versions import check_specifier, get_server_version, parse_specifier

__all__ = ["TaniumSessionAuth"]

log = logging.getLogger(__name__)

#: Statuses from the Tanium origin that make the hook check the session.
DEFAULT_REFRESH_STATUS_CODES = (401, 403)

#: Request header carrying the session id or API token.
HEADER = "session"

_RESENT = "_tanium_resent"  # attribute on a PreparedRequest: this is our one resend

_DEFAULTS: Mapping[str, Any] = {
    "revalidate_after": 5,
    "expires_after": 295,
    "login_timeout": 5,
    "logout_timeout": 5,
}


def _replayable(req: requests.PreparedRequest) -> bool:
    body = req.body
    if body is None or isinstance(body, (bytes, str)):
        return True
    return isinstance(getattr(req, "_body_position", None), int)


def _release(r: requests.Response) -> None:
    with contextlib.suppress(Exception):  # a broken body still gets its connection closed
        r.content  # noqa: B018 -- read, so it stays on the response
    r.close()


def redirect_target(resp: requests.Response) -> Optional[str]:
    """The URL ``requests`` will follow from ``resp``, prepared as it will be sent.

    Resolved the way ``Session.resolve_redirects`` resolves it; None when it cannot be.
    """
    try:
        location = resp.headers["location"].encode("latin1").decode("utf8")
        base = str(resp.url)
        if location.startswith("//"):
            location = f"{urlparse(base).scheme}:{location}"
        parsed = urlparse(location)
        url = parsed.geturl()
        url = requote_uri(url) if parsed.netloc else urljoin(base, requote_uri(url))
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        return prepared.url
    except Exception:
        return None


class _CredentialLogin:
    """Logs in with ``POST /auth`` and base64 ``username``/``password`` headers.

    Holds the password in memory only: it is never shown, logged or pickled.
    """

    __slots__ = ("_client", "_headers", "timeout")

    def __init__(
        self,
        client: HttpClient,
        username: str,
        password: str,
        domain: str = "",
        secondary: str = "",
        timeout: float = 5,
    ) -> None:
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
                if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
                    raise ValueError(f"{name} must be printable ASCII")
                headers[name] = value
        self._client = client
        self._headers = headers
        self.timeout = timeout

    def __call__(self) -> str:
        resp = self._client.request(
            "POST", AUTH_PATH, headers=self._headers, timeout=self.timeout, stream=True
        )
        with resp:
            status = resp.status_code
            if status == 200:
                return read_token_answer(resp, api=False)
            if is_transient(status):
                raise AuthServiceUnavailable(
                    f"POST {resp.url} answered {status} to a login; try again later",
                    response=resp,
                )
            raise LoginError(f"POST {resp.url} refused the credentials ({status})", response=resp)

    def __repr__(self) -> str:
        return f"<credential login at {self._client.url}>"

    def __reduce__(self) -> Any:
        raise TypeError("credentials are never pickled")


class TaniumSessionAuth(Closing, AuthBase):
    """Puts the Tanium ``session`` header on requests to one Tanium origin.

    Revalidates the session through ``/auth`` when it has gone stale, recovers from
    401/403 answers by itself where it can, and raises ``LoginError`` where it cannot.
    Requests to any other origin pass through untouched. One instance may serve many
    threads and many ``requests.Session`` objects.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        session: Optional[str] = None,
        *,
        http_client: Optional[HttpClient] = None,
        session_id: Optional[SessionId] = None,
        revalidate_after: float = 5,
        expires_after: float = 295,
        login_timeout: float = 5,
        logout_timeout: float = 5,
        refresh_status_codes: Collection[int] = DEFAULT_REFRESH_STATUS_CODES,
        refresh: Optional[Callable[[], str]] = None,
        on_token_update: Optional[Callable[[str], None]] = None,
        verify: Union[bool, str] = True,
        cert: Union[str, tuple[str, str], None] = None,
        proxies: Optional[Mapping[str, str]] = None,
        allow_http: bool = False,
        ver_check: bool = True,
        requires_server: Optional[str] = None,
    ) -> None:
        if refresh is not None and not callable(refresh):
            raise TypeError("refresh must be a callable returning a new session id")
        if on_token_update is not None and not callable(on_token_update):
            raise TypeError("on_token_update must be a callable taking the new token")
        codes = frozenset(refresh_status_codes)
        if not all(isinstance(c, int) and 400 <= c < 600 for c in codes):
            raise ValueError("refresh_status_codes must be HTTP error statuses (400-599)")
        requires = parse_specifier(requires_server) if requires_server is not None else None
        transport = verify is not True or cert is not None or proxies is not None or allow_http
        if transport and (http_client is not None or session_id is not None):
            raise ValueError(
                "verify, cert, proxies and allow_http configure a new HttpClient; "
                "set them on the HttpClient you pass instead"
            )
        timing = {
            "revalidate_after": revalidate_after,
            "expires_after": expires_after,
            "login_timeout": login_timeout,
            "logout_timeout": logout_timeout,
        }
        self._owns_client = False
        if session_id is not None:
            if not isinstance(session_id, SessionId):
                raise TypeError("session_id must be a SessionId")
            if url is not None or session is not None or http_client is not None:
                raise ValueError("pass session_id= alone, or url= and session=, not both")
            sid = session_id
            if on_token_update is None:
                on_token_update = sid.on_token_update  # keep the callback it came with
            # Only the timings given explicitly override the ready SessionId.
            for name, value in timing.items():
                if value != _DEFAULTS[name]:
                    setattr(sid, name, value)
        else:
            if http_client is None:
                if url is None:
                    raise ValueError("url is required (or http_client= or session_id=)")
                http_client = HttpClient(
                    url, verify=verify, cert=cert, proxies=proxies, allow_http=allow_http
                )
                self._owns_client = True
            elif url is not None:
                raise ValueError("pass url= or http_client=, not both")
            elif not isinstance(http_client, HttpClient):
                raise TypeError("http_client must be an HttpClient")
            if session is None:
                raise ValueError("session is required (a Tanium session id or API token)")
            sid = SessionId(
                http_client,
                session,
                login_timeout=login_timeout,
                logout_timeout=logout_timeout,
                expires_after=expires_after,
                ver_check=ver_check,
            )
            sid.revalidate_after = revalidate_after
        self._sid = sid
        self.refresh_status_codes = codes
        self.refresh = refresh
        self.on_token_update = on_token_update
        self._requires = requires
        self._init_runtime()
        client = sid.http_client
        if client.verify is False:
            warnings.warn(
                f"TLS certificate verification is off for {client.url}: anyone on the "
                "path can read the session id",
                InsecureRequestWarning,
                stacklevel=2,
            )

    def _init_runtime(self) -> None:
        """State that is rebuilt after unpickling: locks, the bound hook, prefixes."""
        self._origin = scheme, host, port = self._sid.http_client.origin
        prefixes = [f"{scheme}://{host}:{port}/"]
        if port == DEFAULT_PORTS[scheme]:
            prefixes.append(f"{scheme}://{host}/")
        self._prefixes = tuple(prefixes)
        self._hook = self.handle_response
        self._gate_lock = threading.Lock()
        self._gate = self._requires is not None  # a server requirement is still unchecked
        self._gate_error: Optional[str] = None
        self._sid.on_token_update = self._token_updated

    # -- construction helpers -----------------------------------------------------

    @classmethod
    def from_env(cls, **kwargs: Any) -> TaniumSessionAuth:
        """Build from ``TANIUM_URL`` and ``TANIUM_SESSION``."""
        values = []
        for name in ("TANIUM_URL", "TANIUM_SESSION"):
            value = os.environ.get(name, "")
            if not value:
                raise ValueError(f"environment variable {name} is missing or empty")
            values.append(value)
        return cls(values[0], values[1], **kwargs)

    @classmethod
    def from_credentials(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        domain: str = "",
        secondary: str = "",
        **kwargs: Any,
    ) -> TaniumSessionAuth:
        """Log in with ``POST /auth`` and use the same login to refresh the session."""
        if "refresh" in kwargs or "session" in kwargs or "session_id" in kwargs:
            raise TypeError("from_credentials() makes its own session and refresh")
        client = kwargs.pop("http_client", None)
        owns = client is None
        if client is None:
            client = HttpClient(
                url,
                verify=kwargs.pop("verify", True),
                cert=kwargs.pop("cert", None),
                proxies=kwargs.pop("proxies", None),
                allow_http=kwargs.pop("allow_http", False),
            )
        try:
            login = _CredentialLogin(
                client, username, password, domain, secondary, kwargs.get("login_timeout", 5)
            )
            auth = cls(session=login(), http_client=client, refresh=login, **kwargs)
        except BaseException:
            if owns:
                client.close()
            raise
        auth._owns_client = owns
        return auth

    # -- public state ---------------------------------------------------------

    @property
    def session_id(self) -> SessionId:
        """The ``SessionId`` holding the token."""
        return self._sid

    @property
    def http_client(self) -> HttpClient:
        """The client used for ``/auth``."""
        return self._sid.http_client

    @property
    def token(self) -> str:
        """The current token, revalidated (or refreshed) first when needed."""
        return self._current_token()

    @token.setter
    def token(self, value: str) -> None:
        self._sid.token = value

    def logout(self, **kwargs: Any) -> None:
        """End this session (``logout: 0``)."""
        self._sid.logout(**kwargs)

    def logout_all(self, **kwargs: Any) -> None:
        """End every session of this user (``logout: 1``)."""
        self._sid.logout_all(**kwargs)

    def close(self) -> None:
        """Close the ``/auth`` client when this object made it."""
        if self._owns_client:
            self._sid.http_client.close()

    # -- the request path ---------------------------------------------------------

    def is_tanium_url(self, url: str) -> bool:
        """True when the prepared ``url`` has the Tanium origin (scheme, host, port)."""
        return url.startswith(self._prefixes) or origin_of(url) == self._origin

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = r.url
        if not url or not self.is_tanium_url(url):
            return r
        if self._gate:
            self._check_server()
        r.headers[HEADER] = self._sid.fresh_token() or self._current_token()
        r.hooks["response"].append(self._hook)
        return r

    def _current_token(self) -> str:
        sid = self._sid
        try:
            return sid.token
        except AuthServiceUnavailable:
            kept = sid._token
            if kept is None:
                raise
            log.warning(
                "%s at %s is unavailable; sending with the kept session", AUTH_PATH, sid.url
            )
            return kept
        except LoginError:
            if self.refresh is None:
                raise
            return sid.renew(self.refresh, "the session is dead")

    def _check_server(self) -> None:
        with self._gate_lock:
            if self._gate and self._gate_error is None:
                assert self._requires is not None
                client = self._sid.http_client
                try:
                    version = get_server_version(client, timeout=self._sid.login_timeout)
                except ValueError as exc:
                    warnings.warn(
                        f"could not read the version of {client.url}: {exc}; "
                        "requires_server was not checked",
                        GetPlatformVersionWarning,
                        stacklevel=4,
                    )
                else:
                    try:
                        check_specifier(version, self._requires, src=client.url)
                    except VersionMismatchError as exc:
                        self._gate_error = str(exc)
                if self._gate_error is None:
                    self._gate = False
        if self._gate_error is not None:
            raise VersionMismatchError(self._gate_error)

    # -- the response path ----------------------------------------------------

    def handle_response(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        """Response hook: confirm on 2xx, guard redirects, recover from 401/403."""
        req = r.request
        url = req.url
        if not url or not self.is_tanium_url(url):
            return r
        sent = req.headers.get(HEADER)
        status = r.status_code
        if 200 <= status < 300:
            if sent is not None:
                self._sid.confirm(sent)
            return r
        if r.is_redirect:
            self._guard_redirect(r, req)
            return r
        if sent is None or status not in self.refresh_status_codes:
            return r
        try:
            return self._recover(r, sent, kwargs)
        except BaseException:
            _release(r)  # nobody else will read it: give its connection back
            raise

    def _guard_redirect(self, r: requests.Response, *reqs: requests.PreparedRequest) -> None:
        target = redirect_target(r)
        if target is None or not self.is_tanium_url(target):
            for req in reqs:
                req.headers.pop(HEADER, None)
            log.debug("redirect from %s leaves the Tanium origin: session header removed", r.url)

    def _recover(
        self, r: requests.Response, sent: str, kwargs: dict[str, Any]
    ) -> requests.Response:
        sid = self._sid
        after = sid.checks_started  # only a check begun after this answer can judge it
        req = r.request
        current = sid._token
        if current is not None and current != sent:
            log.debug("%s from %s: session replaced meanwhile; resending", r.status_code, r.url)
            return self._resend(r, current, kwargs)
        cause = f"{r.status_code} from {req.method} {r.url}"
        try:
            if current is None:
                raise sid._not_logged_in()
            new = sid.recheck(sent, after, cause)
        except AuthServiceUnavailable:
            log.warning("%s; %s is unavailable: answer returned as it is", cause, AUTH_PATH)
            return r
        except LoginError as exc:
            if self.refresh is None:
                raise type(exc)(
                    f"{req.method} {r.url} answered {r.status_code} and the session cannot be "
                    f"refreshed: {exc}",
                    response=r,
                ) from exc
            new = sid.renew(self.refresh, cause)
            return self._resend(r, new, kwargs)
        if new != sent:
            return self._resend(r, new, kwargs)
        log.debug("%s: the session is alive, so this is a permission answer", cause)
        return r

    def _resend(
        self, r: requests.Response, token: str, kwargs: dict[str, Any]
    ) -> requests.Response:
        req = r.request
        # requests copies the original request for any redirect that follows.
        req.headers[HEADER] = token
        connection = getattr(r, "connection", None)
        if getattr(req, _RESENT, False) or connection is None:
            return r
        if not _replayable(req):
            log.info("%s %s not resent: its body cannot be replayed", req.method, r.url)
            return r
        _release(r)
        prep = req.copy()
        jar = prep._cookies  # type: ignore[attr-defined]
        extract_cookies_to_jar(jar, req, r.raw)  # type: ignore[no-untyped-call]
        prep.prepare_cookies(jar)
        if isinstance(getattr(prep, "_body_position", None), int):
            rewind_body(prep)
        prep.headers[HEADER] = token
        setattr(prep, _RESENT, True)
        new: requests.Response = connection.send(prep, **kwargs)
        new.history.append(r)
        new.request = prep
        if 200 <= new.status_code < 300:
            self._sid.confirm(token)
        elif new.is_redirect:
            self._guard_redirect(new, prep, req)
        return new

    def _token_updated(self, token: str) -> None:
        callback = self.on_token_update
        if callback is not None:
            callback(token)

    # -- display and pickling -------------------------------------------------

    def __repr__(self) -> str:
        sid = self._sid
        return (
            f"{type(self).__name__}(url={sid.url!r}, uid={sid.uid!r}, "
            f"logged_in={sid.logged_in!r}, refresh={'set' if self.refresh else None})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_gate_lock", "_hook", "on_token_update"):
            state.pop(key, None)
        if isinstance(state.get("refresh"), _CredentialLogin):
            state["refresh"] = None  # credentials stay in this process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.on_token_update = None
        self._init_runtime()
