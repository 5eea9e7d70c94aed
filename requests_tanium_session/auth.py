"""TaniumSessionAuth (a ``requests.auth.AuthBase``) and TaniumSession (a ``requests.Session``)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Optional, TypedDict, Union
from urllib.parse import urljoin, urlparse

import requests
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar
from requests.utils import requote_uri, rewind_body
from urllib3.exceptions import InsecureRequestWarning

from .http_client import Closing, HttpClient, OriginMatcher
from .protocol import (
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_LOGOUT_TIMEOUT,
    DEFAULT_REFRESH_STATUS_CODES,
    DEFAULT_REVALIDATE_AFTER,
    ENV_SESSION,
    ENV_URL,
    GATEWAY_PATH,
    HEADER,
    MAX_ANSWER_BYTES,
    SOAP_PATH,
    Default,
    check_seconds,
    check_token,
)
from .session_id import CredentialLogin, SessionId
from .state import StateView
from .stats import AuthEvent
from .stores import SessionStore
from .versions import SpecCheck, parse_specifier, read_version, unreadable

__all__ = ["TaniumSession", "TaniumSessionAuth"]

log = logging.getLogger(__name__)

_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

_RESENT = "_tanium_resent"  # attribute on a PreparedRequest: this is our one resend


def _replayable(req: requests.PreparedRequest) -> bool:
    body = req.body
    if body is None or isinstance(body, (bytes, str)):
        return True
    return isinstance(getattr(req, "_body_position", None), int)


def _release(r: requests.Response) -> None:
    with contextlib.suppress(Exception):  # a broken body still gets its connection closed
        r.content  # noqa: B018 -- read, so it stays on the response
    r.close()


if TYPE_CHECKING:
    from typing_extensions import Unpack


class AuthOptions(TypedDict, total=False):
    """The keyword arguments of :class:`TaniumSessionAuth`, for the factories and
    :class:`TaniumSession` (so editors and ``mypy`` catch a misspelt one)."""

    http_client: HttpClient
    session_id: SessionId
    revalidate_after: float
    expires_after: float
    login_timeout: float
    logout_timeout: float
    refresh_status_codes: Collection[int]
    refresh: Optional[Callable[[], str]]
    on_token_update: Optional[Callable[[str], None]]
    verify: Union[bool, str]
    cert: Union[str, tuple[str, str], None]
    proxies: Optional[Mapping[str, str]]
    allow_http: bool
    ver_check: Optional[bool]
    requires_server: Optional[str]
    store: Optional[SessionStore]
    on_event: Optional[Callable[[AuthEvent], None]]


_WRONG_CLIENT = (
    "TaniumSessionAuth is the auth for requests; for httpx use "
    "requests_tanium_session.httpx.TaniumAuth, for aiohttp "
    "requests_tanium_session.aiohttp.TaniumMiddleware"
)


def _warn_retried_statuses(adapter: Any, codes: Collection[int], stacklevel: int = 2) -> None:
    """Warn when ``adapter``'s urllib3 ``Retry`` has any of ``codes`` in its
    ``status_forcelist``: urllib3 would resend the dead token instead of letting the
    auth recover."""
    forced = sorted(set(getattr(getattr(adapter, "max_retries", None), "status_forcelist",
                                None) or ()) & set(codes))  # fmt: skip
    if forced:
        warnings.warn(
            f"this adapter's Retry has {', '.join(map(str, forced))} in status_forcelist: "
            "urllib3 resends the same (dead) session and the auth never recovers; "
            "remove them (keep 502, 503, 504)",
            UserWarning,
            stacklevel=stacklevel,
        )


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ValueError(f"environment variable {name} is missing or empty")
    return value


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


class TaniumSessionAuth(StateView, Closing, AuthBase):
    """Puts the Tanium ``session`` header on requests to one Tanium origin.

    Revalidates the session through ``/auth`` when it has gone stale, recovers from
    401/403 answers by itself where it can, and raises ``LoginError`` where it cannot.
    Requests to any other origin pass through untouched. One instance may serve many
    threads and many ``requests.Session`` objects.

    Args:
        url: the Tanium server, ``https://host[:port][/prefix]``.
        session: a session id or API token.
        http_client: a ready :class:`HttpClient` instead of ``url`` (and its options).
        session_id: a ready :class:`SessionId` instead of ``url`` and ``session``;
            timings passed explicitly next to it override its own.
        revalidate_after: seconds after a confirmation before validating again (0:
            before every request).
        expires_after: idle seconds after which the session counts as expired.
        login_timeout: wall-clock seconds of one ``/auth`` validate or login.
        logout_timeout: wall-clock seconds of one logout.
        refresh_status_codes: statuses from the Tanium origin that trigger recovery.
            Keep them out of a ``Retry``'s ``status_forcelist``.
        refresh: a callable returning a new session id, called when the session is
            found dead.
        on_token_update: called with the new token whenever it changes.
        verify: True, False or a CA bundle path, for ``/auth`` calls.
        cert: a client certificate for ``/auth`` calls.
        proxies: proxies for ``/auth`` calls.
        allow_http: allow ``http://`` for a host that is not loopback.
        ver_check: deprecated: the ``SessionId`` this class builds has no version
            requirement, so it checks nothing (``True`` warns); use
            ``requires_server``.
        requires_server: a version specifier (``">=7.3,<8"``) checked at the first
            request.
        store: a :class:`~requests_tanium_session.stores.SessionStore` shared with
            other processes or machines (``FileStore``, ``RedisStore``); None: this
            process alone.

    Raises:
        TypeError, ValueError: malformed arguments (messages never show a secret).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        session: Optional[str] = None,
        *,
        http_client: Optional[HttpClient] = None,
        session_id: Optional[SessionId] = None,
        revalidate_after: float = DEFAULT_REVALIDATE_AFTER,
        expires_after: float = DEFAULT_EXPIRES_AFTER,
        login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
        logout_timeout: float = DEFAULT_LOGOUT_TIMEOUT,
        refresh_status_codes: Collection[int] = DEFAULT_REFRESH_STATUS_CODES,
        refresh: Optional[Callable[[], str]] = None,
        on_token_update: Optional[Callable[[str], None]] = None,
        verify: Union[bool, str] = True,
        cert: Union[str, tuple[str, str], None] = None,
        proxies: Optional[Mapping[str, str]] = None,
        allow_http: bool = False,
        ver_check: Optional[bool] = None,
        requires_server: Optional[str] = None,
        store: Optional[SessionStore] = None,
        on_event: Optional[Callable[[AuthEvent], None]] = None,
    ) -> None:
        if refresh is not None and not callable(refresh):
            raise TypeError("refresh must be a callable returning a new session id")
        if inspect.iscoroutinefunction(refresh):
            raise TypeError(
                "refresh is a coroutine function: requests cannot await it; give "
                "TaniumSessionAuth a plain function (or use the httpx AsyncClient or aiohttp "
                "front-end)"
            )
        if on_token_update is not None and not callable(on_token_update):
            raise TypeError("on_token_update must be a callable taking the new token")
        codes = frozenset(refresh_status_codes)
        if not all(isinstance(c, int) and 400 <= c < 600 for c in codes):
            raise ValueError("refresh_status_codes must be HTTP error statuses (400-599)")
        requires = parse_specifier(requires_server) if requires_server is not None else None
        if ver_check:
            warnings.warn(
                "ver_check checks nothing on TaniumSessionAuth (its SessionId has no version "
                'requirement): use requires_server=">=7.3" to check the server',
                DeprecationWarning,
                stacklevel=2,
            )
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
        for name, value in timing.items():
            check_seconds(name, value, zero_ok=name == "revalidate_after")
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
                if not isinstance(value, Default):
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
            try:
                sid = SessionId(
                    http_client,
                    session,
                    login_timeout=login_timeout,
                    logout_timeout=logout_timeout,
                    expires_after=expires_after,
                    ver_check=ver_check is not False,
                )
            except BaseException:
                if self._owns_client:
                    http_client.close()
                raise
            sid.revalidate_after = revalidate_after
        if store is not None:
            sid.use_store(store)
        self._sid = sid
        self.refresh_status_codes = codes
        self.refresh = refresh
        self.on_token_update = on_token_update
        self._requires = requires
        self._init_runtime()
        if on_event is not None:
            self.on_event = on_event
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
        sid = self._sid
        self._state = sid.state
        self._fresh = self._state.fresh  # bound once: the hot path calls it per request
        self._flights = sid.flights
        self._matches = OriginMatcher(sid.http_client.origin)
        self._prefixes = self._matches.prefixes
        self._hook = self.handle_response
        self._policy = sid.policy
        #: SOAP and gateway URLs: their 2xx answers are read or left unconfirmed.
        self._special = (sid.url + SOAP_PATH, sid.url + GATEWAY_PATH)
        if self._requires is not None:
            self._policy.require(SpecCheck(self._requires, sid.url))
        self._gate = self._policy.gate  # a server requirement is unchecked or unmet
        self._told_retried = False  # the status_forcelist WARNING was given
        sid.on_token_update = self._token_updated

    # -- construction helpers -----------------------------------------------------

    @classmethod
    def from_env(cls, **kwargs: Unpack[AuthOptions]) -> TaniumSessionAuth:
        """Build from ``TANIUM_URL`` and ``TANIUM_SESSION``; ``ValueError`` names a missing one."""
        url = _env(ENV_URL)
        session = _env(ENV_SESSION)
        try:
            check_token(session, ENV_SESSION)
        except ValueError as exc:
            hint = "; strip the surrounding whitespace" if session != session.strip() else ""
            raise ValueError(f"environment variable {exc}{hint}") from None
        return cls(url, session, **kwargs)

    @classmethod
    def from_credentials(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        domain: str = "",
        secondary: str = "",
        persistent: bool = False,
        **kwargs: Unpack[AuthOptions],
    ) -> TaniumSessionAuth:
        """Log in with ``POST /auth`` (base64 ``username``/``password`` headers) and use
        the same login as ``refresh``, so the session survives expiry and revocation.
        ``persistent=True`` asks for a one-week session (``persistent: 1``).

        Raises ``LoginError`` when the credentials are refused; the rest as the
        constructor.
        """
        if "refresh" in kwargs or "session" in kwargs or "session_id" in kwargs:
            raise TypeError("from_credentials() makes its own session and refresh")
        try:  # a misspelt argument is refused before any login
            inspect.signature(cls).bind_partial(**kwargs)
        except TypeError as exc:
            raise TypeError(f"from_credentials(): {exc}") from None
        options: dict[str, Any] = dict(kwargs)
        timeout = check_seconds(
            "login_timeout", options.get("login_timeout", DEFAULT_LOGIN_TIMEOUT)
        )
        client = options.pop("http_client", None)
        owns = client is None
        if client is None:
            client = HttpClient(
                url,
                verify=options.pop("verify", True),
                cert=options.pop("cert", None),
                proxies=options.pop("proxies", None),
                allow_http=options.pop("allow_http", False),
            )
        try:
            login = CredentialLogin(client, username, password, domain, secondary, persistent)
            fresh_for = options.get("revalidate_after", DEFAULT_REVALIDATE_AFTER)
            ttl = options.get("expires_after", DEFAULT_EXPIRES_AFTER)
            session = login.first_session(timeout, options.get("store"), fresh_for, ttl)
            auth = cls(session=session, http_client=client, refresh=login, **options)
        except BaseException:
            if owns:
                client.close()
            raise
        login.bind(auth.session_id)
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
    def store(self) -> Optional[SessionStore]:
        """The session store shared with other processes, or None."""
        return self._sid.store

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
        return self._matches(url)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = r.url
        # The prefix test is is_tanium_url's own fast path, inlined: this runs per request.
        try:
            if not url or not (url.startswith(self._prefixes) or self.is_tanium_url(url)):
                return r
        except AttributeError:  # not a requests.PreparedRequest: httpx's, most likely
            raise TypeError(_WRONG_CLIENT) from None
        if self._flights.in_callbacks and self._flights.in_callback():
            return r  # a login made from inside refresh() or on_token_update()
        if self._gate:
            self._check_server()
        r.headers[HEADER] = self._fresh() or self._current_token()
        r.hooks["response"].append(self._hook)
        return r

    def _current_token(self) -> str:
        token: str = self._sid._run(self._policy.current(self._flights, self.refresh))
        return token

    def _check_server(self) -> None:
        policy = self._policy
        try:
            self._sid._run(policy.check_server(self._flights, read_version, self._unreadable))
        finally:
            self._gate = policy.gate

    def _unreadable(self, exc: BaseException) -> None:
        unreadable(self._sid.url, exc, stacklevel=8)

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
                if url.startswith(self._special):  # SOAP or the gateway: rare
                    return self._special_answer(r, url, sent, kwargs)
                self._state.confirm(sent)
            return r
        if r.is_redirect:
            self._guard_redirect(r, req)
            return r
        if sent is None or status not in self.refresh_status_codes:
            return r
        if not self._told_retried:
            self._retried(r)
        return self._recovered(r, sent, kwargs, f"answered {status}")

    def _retried(self, r: requests.Response) -> None:
        """One WARNING when urllib3 already retried this 401/403 (``status_forcelist``)."""
        history = getattr(getattr(getattr(r, "raw", None), "retries", None), "history", ())
        if any(getattr(h, "status", None) in self.refresh_status_codes for h in history):
            self._told_retried = True
            log.warning(
                "urllib3 retried a %s from %s before the auth saw it: a Retry with 401/403 "
                "in status_forcelist resends the same session; remove them so the auth "
                "can recover",
                r.status_code,
                self._sid.url,
            )

    def _recovered(
        self, r: requests.Response, sent: str, kwargs: dict[str, Any], what: str
    ) -> requests.Response:
        try:
            token = self._recover(r, sent, what)
            return r if token is None else self._resend(r, token, kwargs)
        except BaseException:
            _release(r)  # nobody else will read it: give its connection back
            raise

    def _special_answer(
        self, r: requests.Response, url: str, sent: str, kwargs: dict[str, Any]
    ) -> requests.Response:
        """A 2xx from the gateway (confirms nothing) or from SOAP (read, unless streamed:
        an in-band auth failure is judged as a 401/403)."""
        path = url.split("?", 1)[0]
        if path == self._special[1]:
            return r
        if path != self._special[0] or kwargs.get("stream"):
            self._state.confirm(sent)
            return r
        length = r.headers.get("content-length", "")
        body = None if length.isdigit() and int(length) > MAX_ANSWER_BYTES else r.content
        if not self._policy.soap(self._flights, sent, body):
            return r
        return self._recovered(r, sent, kwargs, "answered 200 with an in-band auth failure")

    def _guard_redirect(self, r: requests.Response, *reqs: requests.PreparedRequest) -> None:
        target = redirect_target(r)
        if target is None or not self.is_tanium_url(target):
            for req in reqs:
                req.headers.pop(HEADER, None)
            log.debug("redirect from %s leaves the Tanium origin: session header removed", r.url)

    def _recover(self, r: requests.Response, sent: str, what: str) -> Optional[str]:
        """Decide what a 401/403 to a request that carried ``sent`` means.

        Returns the token to resend with, or None when the answer stands (a
        permission answer). Raises when the session cannot be recovered.
        """
        after = self._flights.started  # only a check begun after this answer can judge it
        cause = f"{r.request.method} {r.url} {what}"
        flow = self._policy.recover(self._flights, sent, cause, r, self.refresh, after)
        new: Optional[str] = self._sid._run(flow)
        return new

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
        self._policy.resent()
        new.history.append(r)
        new.request = prep
        if 200 <= new.status_code < 300:
            self._state.confirm(token)
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
        for key in (
            "_policy",
            "_special",
            "_hook",
            "on_token_update",
            "_state",
            "_fresh",
            "_flights",
        ):
            state.pop(key, None)
        if isinstance(state.get("refresh"), CredentialLogin):
            state["refresh"] = None  # credentials stay in this process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.on_token_update = None
        self._init_runtime()


class TaniumSession(requests.Session):
    """A ``requests.Session`` with a :class:`TaniumSessionAuth` built in.

    What it adds to ``session.auth = TaniumSessionAuth(...)``: relative URLs
    (``s.get("/api/v2/sensors")``) are joined to the Tanium URL, and
    ``rebuild_auth`` removes the ``session`` header from every redirect that leaves
    the Tanium origin, even one that another response hook produced (a plain
    ``session.auth`` only sees the redirects its own hook sees).

    Args:
        url, session: as :class:`TaniumSessionAuth`.
        auth: a ready :class:`TaniumSessionAuth` instead (left open on ``close()``).
        **auth_kwargs: passed to :class:`TaniumSessionAuth`.
    """

    #: What pickling keeps: requests' own attributes, the base URL and who owns the auth.
    __attrs__ = [*requests.Session.__attrs__, "base_url", "_owns_auth"]  # noqa: RUF012

    def __init__(
        self,
        url: Optional[str] = None,
        session: Optional[str] = None,
        *,
        auth: Optional[TaniumSessionAuth] = None,
        **auth_kwargs: Unpack[AuthOptions],
    ) -> None:
        if auth is None:
            auth = TaniumSessionAuth(url, session, **auth_kwargs)
            self._owns_auth = True
        elif not isinstance(auth, TaniumSessionAuth):
            raise TypeError("auth must be a TaniumSessionAuth")
        elif url is not None or session is not None or auth_kwargs:
            raise ValueError("pass auth= alone, or the TaniumSessionAuth arguments, not both")
        else:
            self._owns_auth = False
        super().__init__()
        self.auth: TaniumSessionAuth = auth
        self.base_url = auth.http_client.url

    @classmethod
    def from_env(cls, **kwargs: Unpack[AuthOptions]) -> TaniumSession:
        """Build from ``TANIUM_URL`` and ``TANIUM_SESSION``."""
        session = cls(auth=TaniumSessionAuth.from_env(**kwargs))
        session._owns_auth = True
        return session

    @classmethod
    def from_credentials(
        cls,
        url: str,
        username: str,
        password: str,
        *,
        domain: str = "",
        secondary: str = "",
        persistent: bool = False,
        **kwargs: Unpack[AuthOptions],
    ) -> TaniumSession:
        """Log in with credentials; the login also refreshes the session when it dies."""
        auth = TaniumSessionAuth.from_credentials(
            url, username, password, domain=domain, secondary=secondary,
            persistent=persistent, **kwargs,
        )  # fmt: skip
        session = cls(auth=auth)
        session._owns_auth = True
        return session

    def request(
        self, method: Union[str, bytes], url: Union[str, bytes], *args: Any, **kwargs: Any
    ) -> requests.Response:
        """As ``requests.Session.request``; a URL without a scheme is joined to the Tanium URL."""
        if isinstance(url, bytes):
            url = url.decode("utf-8")
        if not _ABSOLUTE.match(url):
            url = f"{self.base_url}/{url.lstrip('/')}"
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(
        self,
        url: Any,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> Any:
        """As ``requests`` does, except that a ``verify`` set on this session (a CA bundle
        path or False) is not replaced by ``REQUESTS_CA_BUNDLE`` (requests #3829)."""
        if verify is None and self.verify is not True:
            verify = self.verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

    def mount(self, prefix: Union[str, bytes], adapter: requests.adapters.BaseAdapter) -> None:
        """As ``requests`` does; warns when the adapter's urllib3 ``Retry`` retries a
        status this auth recovers from (a retry resends the same, dead token)."""
        auth = getattr(self, "auth", None)  # requests mounts its defaults before that
        if isinstance(auth, TaniumSessionAuth):
            _warn_retried_statuses(adapter, auth.refresh_status_codes, stacklevel=3)
        super().mount(prefix, adapter)

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        """As ``requests`` does, and remove the ``session`` header when leaving the origin."""
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        auth = self.auth
        target = prepared_request.url or ""
        if isinstance(auth, TaniumSessionAuth) and not auth.is_tanium_url(target):
            prepared_request.headers.pop(HEADER, None)

    def close(self) -> None:
        """Close the connections and, when this object made the auth, its ``/auth`` client."""
        super().close()
        if self._owns_auth:
            self.auth.close()
