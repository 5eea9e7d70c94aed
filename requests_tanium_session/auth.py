"""TaniumSessionAuth (a ``requests.auth.AuthBase``) and TaniumSession (a ``requests.Session``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import warnings
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Optional, Union
from urllib.parse import urljoin, urlparse

import requests
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar
from requests.utils import requote_uri, rewind_body

from ._answer import (
    CONFIRM,
    DONE,
    ENCODED_READ_CHUNK,
    INSPECT,
    READ_CHUNK,
    announced_too_long,
    next_step,
)
from ._face import (
    CommonOptions,
    Core,
    SyncFace,
    TaniumAuthBase,
    check_options,
    core_of,
    warn_unverified,
    wrong_client,
)
from ._origin import OriginMatcher, is_loopback, shown_url
from .http_client import HttpClient, cut_short, redact_request
from .protocol import (
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_LOGOUT_TIMEOUT,
    DEFAULT_REFRESH_STATUS_CODES,
    DEFAULT_REVALIDATE_AFTER,
    GATEWAY_PATH,
    HEADER,
    MAX_ANSWER_BYTES,
    SOAP_PATH,
)
from .session_id import SessionId, over
from .stats import AuthEvent
from .stores import SessionStore

__all__ = ["TaniumSession", "TaniumSessionAuth"]

log = logging.getLogger(__name__)

_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

_RESENT = "_tanium_resent"  # attribute on a PreparedRequest: this is our one resend

if TYPE_CHECKING:
    from typing_extensions import Unpack


# -- the wire: one capped read, put back -----------------------------------------------


class _Replayed:
    """A urllib3 response whose first decoded bytes the auth read: ``read()`` and
    ``stream()`` serve them again, then the rest (and an error met while reading, at
    the point it was met). Everything else is the response's own."""

    def __init__(
        self,
        raw: Any,
        kept: list[bytes],
        rest: Optional[Iterator[bytes]] = None,
        error: Optional[BaseException] = None,
    ) -> None:
        self._raw = raw
        self._kept = deque(kept)
        self._rest = rest
        self._error = error

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_raw":
            raise AttributeError(name)
        return getattr(self._raw, name)

    def kept(self) -> bytes:
        """What the auth read and nobody has taken yet."""
        return b"".join(self._kept)

    def _next(self) -> bytes:
        if self._kept:
            return self._kept.popleft()
        if self._rest is not None:
            for chunk in self._rest:
                if chunk:
                    return chunk
            self._rest = None
        error, self._error = self._error, None
        if error is not None:
            raise error
        return b""

    def stream(self, amt: Optional[int] = None, decode_content: Any = None) -> Iterator[bytes]:
        """As urllib3's ``stream()`` (decoded)."""
        while chunk := self._next():
            yield chunk

    def read(self, amt: Optional[int] = None, *args: Any, **kwargs: Any) -> bytes:
        """As urllib3's ``read()`` (decoded)."""
        out = bytearray()
        while amt is None or len(out) < amt:
            chunk = self._next()
            if not chunk:
                break
            out += chunk
        if amt is not None and len(out) > amt:
            self._kept.appendleft(bytes(out[amt:]))
            del out[amt:]
        return bytes(out)

    def close(self) -> None:
        """Close the response (its connection, unless it was read to the end)."""
        self._rest = None
        self._raw.close()


def _peek(r: requests.Response) -> Optional[bytes]:
    """Read ``r``'s body as the one capped read rules (see :mod:`._answer`): the body
    when it is at most ``MAX_ANSWER_BYTES`` decoded (its connection then goes back),
    else None; either way the caller reads it whole afterwards."""
    if r._content_consumed:  # type: ignore[attr-defined]  # read already (a hook)
        content = r.content or b""
        return content if len(content) <= MAX_ANSWER_BYTES else None
    if announced_too_long(r.headers.get("content-length")):
        return None
    raw = r.raw
    encoding = r.headers.get("content-encoding", "identity").lower()
    amount = READ_CHUNK if encoding in ("identity", "") else ENCODED_READ_CHUNK
    if hasattr(raw, "stream"):
        source: Iterator[bytes] = raw.stream(amount, decode_content=True)
    else:  # a file-like raw (another adapter)
        source = iter(partial(raw.read, amount), b"")
    kept: list[bytes] = []
    size = 0
    try:
        for chunk in source:
            kept.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                r.raw = _Replayed(raw, kept, source)
                return None
    except Exception as exc:  # the caller meets it where it was met
        r.raw = _Replayed(raw, kept, error=exc)
        return None
    cut = cut_short(r)  # urllib3 1.26 takes a dropped connection for the end
    if cut is not None:
        r.raw = _Replayed(raw, kept, error=cut)
        return None
    body = b"".join(kept)
    r.raw = _Replayed(raw, [body])
    r._content, r._content_consumed = body, True  # type: ignore[attr-defined]
    return body


def _discard(r: requests.Response) -> None:
    """Close a response the auth will not return: what was read stays its content,
    nothing more is read (an unending body ends here)."""
    raw = r.raw
    if not r._content_consumed:  # type: ignore[attr-defined]
        r._content = raw.kept() if isinstance(raw, _Replayed) else b""
        r._content_consumed = True  # type: ignore[attr-defined]
    if raw is not None:
        raw.close()  # the connection too, unless the body was read to its end
        release = getattr(raw, "release_conn", None)
        if release is not None:
            release()  # and its place in the pool goes back


def _shown(r: requests.Response) -> requests.Response:
    """A copy of ``r`` to carry on an exception: its request (and every request in its
    history) without the session or any other secret."""
    shown = requests.Response()
    shown.__dict__.update(r.__dict__)
    request = r.request.copy()
    redact_request(request)
    shown.request = request
    shown.history = [_shown(h) for h in r.history]
    return shown


def _replayable(req: requests.PreparedRequest) -> bool:
    body = req.body
    if body is None or isinstance(body, (bytes, str)):
        return True
    return isinstance(getattr(req, "_body_position", None), int)


class AuthOptions(CommonOptions, total=False):
    """The keyword arguments of :class:`TaniumSessionAuth`, for the factories and
    :class:`TaniumSession` (so editors and ``mypy`` catch a misspelt one)."""

    http_client: HttpClient
    session_id: SessionId
    refresh: Optional[Callable[[], str]]
    verify: Union[bool, str]
    cert: Union[str, tuple[str, str], None]
    proxies: Optional[Mapping[str, str]]
    ver_check: Optional[bool]


_MINE = "TaniumSessionAuth is the auth for requests"
_Response = requests.Response


#: Refused async responses being closed (a task must be referenced until it is done).
_CLOSING: set[asyncio.Task[Any]] = set()


def _refuse_async(r: Any) -> None:
    """Refuse a response of an async requests-alike (niquests ``AsyncSession``): this
    hook is synchronous, so its checks would block the event loop and its resend
    could not be awaited."""
    send = getattr(getattr(r, "connection", None), "send", None)
    if inspect.iscoroutinefunction(send):
        close = getattr(r, "close", None)
        if inspect.iscoroutinefunction(close):  # its connection goes back, not to the GC
            task = asyncio.get_running_loop().create_task(close())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)
        raise TypeError(
            f"{_MINE} and its sync look-alikes (niquests.Session); an async session "
            f"({type(r).__module__.partition('.')[0]}.AsyncSession) would block its event "
            "loop: use httpx.AsyncClient with requests_tanium_session.httpx.TaniumAuth, or "
            "aiohttp with requests_tanium_session.aiohttp.TaniumMiddleware"
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


def _parts(
    url: Optional[str],
    session: Optional[str],
    http_client: Optional[HttpClient],
    session_id: Optional[SessionId],
    transport: dict[str, Any],
) -> tuple[HttpClient, Optional[Core]]:
    """The ``/auth`` client, and the core of a ready ``session_id`` to share."""
    if http_client is None and session_id is None:
        if url is None:
            raise ValueError("url is required (or http_client= or session_id=)")
        return HttpClient(url, **transport), None
    if transport != _NO_TRANSPORT:
        raise ValueError(
            "verify, cert, proxies and allow_http configure a new HttpClient; "
            "set them on the HttpClient you pass instead"
        )
    if session_id is None:
        if url is not None:
            raise ValueError("pass url= or http_client=, not both")
        if not isinstance(http_client, HttpClient):
            raise TypeError("http_client must be an HttpClient")
        return http_client, None
    if not isinstance(session_id, SessionId):
        raise TypeError("session_id must be a SessionId")
    if url is not None or session is not None or http_client is not None:
        raise ValueError("pass session_id= alone, or url= and session=, not both")
    return session_id.http_client, core_of(session_id)


#: The transport options of a new HttpClient, as they are when none is given.
_NO_TRANSPORT: dict[str, Any] = {"verify": True, "cert": None, "proxies": None, "allow_http": False}


def _deprecated_ver_check(ver_check: Optional[bool]) -> None:
    if ver_check:
        warnings.warn(
            'ver_check checks nothing on TaniumSessionAuth: use requires_server=">=7.3" '
            "to check the server",
            DeprecationWarning,
            stacklevel=3,
        )


class TaniumSessionAuth(SyncFace, TaniumAuthBase, AuthBase):
    """Puts the Tanium ``session`` header on requests to one Tanium origin.

    Revalidates the session through ``/auth`` when it has gone stale, recovers from
    401/403 answers by itself where it can, and raises ``LoginError`` where it cannot.
    Requests to any other origin pass through untouched. One instance may serve many
    threads and many ``requests.Session`` objects.

    Args:
        url: the Tanium server, ``https://host[:port][/prefix]``.
        session: a session id or API token; None with ``refresh`` logs in at the
            first request.
        http_client: a ready :class:`HttpClient` instead of ``url`` (and its options).
        session_id: a ready :class:`SessionId` whose session this auth shares (the
            timings given here apply to it).
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
        ver_check: deprecated, checks nothing (``True`` warns); use ``requires_server``.
        requires_server: a version specifier (``">=7.3,<8"``) checked at the first
            request.
        store: a :class:`~requests_tanium_session.stores.SessionStore` shared with
            other processes or machines (``FileStore``, ``RedisStore``); None: this
            process alone.
        on_event: called with an ``AuthEvent`` when the session dies or is refreshed,
            and when the store degrades or comes back.

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
        options = check_options(
            refresh_status_codes=refresh_status_codes, refresh=refresh,
            on_token_update=on_token_update, on_event=on_event,
            requires_server=requires_server, store=store, sync_only="requests",
        )  # fmt: skip
        _deprecated_ver_check(ver_check)
        transport = {"verify": verify, "cert": cert, "proxies": proxies, "allow_http": allow_http}
        client, shared = _parts(url, session, http_client, session_id, transport)
        owns = client is not http_client and shared is None
        timings = {"revalidate_after": revalidate_after, "expires_after": expires_after,
                   "login_timeout": login_timeout, "logout_timeout": logout_timeout}  # fmt: skip
        try:
            self._assemble(client, session, options, timings, shared)
        except BaseException:
            if owns:
                client.close()
            raise
        self._client = client
        self._owns_client = owns
        self._sid = session_id
        self._init_runtime()
        if client.verify is False:
            warn_unverified(client.url)

    def _init_runtime(self) -> None:
        """What the request path reads on every call, bound once."""
        core = self._core
        self._state = core.state
        self._fresh = core.state.fresh  # the hot path calls it per request
        self._flights = core.flights
        self._policy = core.policy
        self._matches = OriginMatcher(core.origin)
        self._prefixes = self._matches.prefixes
        self._hook = self.handle_response
        #: The SOAP and gateway URLs: their 2xx answers are read or left unconfirmed.
        self._special = {core.url + SOAP_PATH: SOAP_PATH, core.url + GATEWAY_PATH: GATEWAY_PATH}
        self._special_prefixes = tuple(self._special)
        self._gate = core.policy.gate  # a server requirement is unchecked or unmet
        self._told_retried = False  # the status_forcelist WARNING was given

    # -- construction helpers -----------------------------------------------------

    @classmethod
    def from_env(cls, *, login: str = "auth", **kwargs: Unpack[AuthOptions]) -> TaniumSessionAuth:
        """Build from ``TANIUM_URL`` and ``TANIUM_SESSION``, or ``TANIUM_USER`` and
        ``TANIUM_PASSWORD`` (``TANIUM_DOMAIN``), logging in by ``login``'s route at the
        first request; ``ValueError`` names what is missing (never a value)."""
        return cls._from_environment(dict(kwargs, login=login))

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
        login: str = "auth",
        **kwargs: Unpack[AuthOptions],
    ) -> TaniumSessionAuth:
        """Log in now with ``POST /auth`` (base64 ``username``/``password`` headers;
        with a store, a fresh published session is taken instead) and again whenever
        the session dies, so it survives expiry and revocation. ``persistent=True``
        asks for a one-week session (``persistent: 1``). ``login="rest"`` logs in with
        ``POST /api/v2/session/login`` and JSON instead, for the first login and every
        renewal (never both routes).

        Raises ``LoginError`` when the credentials are refused; the rest as the
        constructor.
        """
        return cls._logged_in(
            url, username, password, domain=domain, secondary=secondary,
            persistent=persistent, options=dict(kwargs), login=login,
        )  # fmt: skip

    # -- public state ---------------------------------------------------------

    @property
    def session_id(self) -> SessionId:
        """A :class:`SessionId` over this auth's session (pytan3's API; its ``token``
        validates when stale)."""
        if self._sid is None:
            self._sid = over(self._core, self._client)
        return self._sid

    @property
    def http_client(self) -> HttpClient:
        """The client used for ``/auth``."""
        return self._client

    def close(self) -> None:
        """Close the ``/auth`` client when this object made it."""
        if self._owns_client:
            self._client.close()

    # -- the request path ---------------------------------------------------------

    def is_tanium_url(self, url: str) -> bool:
        """True when the prepared ``url`` has the Tanium origin (scheme, host, port)."""
        return self._matches(url)

    def __call__(
        self, r: requests.PreparedRequest, _handler: Any = None
    ) -> requests.PreparedRequest:
        url = r.url
        # The prefix test is is_tanium_url's own fast path, inlined: this runs per request.
        try:
            if not url or not (url.startswith(self._prefixes) or self.is_tanium_url(url)):
                return r
        except AttributeError:  # not a requests.PreparedRequest: httpx's, most likely
            raise wrong_client(_MINE, r) from None
        if self._flights.in_callbacks and self._flights.in_callback():
            return r  # a login made from inside refresh() or on_token_update()
        if self._gate:
            self._check_server()
        r.headers[HEADER] = self._fresh() or self._current_token()
        r.hooks["response"].append(self._hook)
        return r

    def _current_token(self) -> str:
        core = self._core
        token: str = core.run(core.policy.current(core.flights, self.refresh))
        return token

    def _check_server(self) -> None:
        core = self._core
        try:
            core.run(core.check_server(core.flights))
        finally:
            self._gate = core.policy.gate

    # -- the response path ----------------------------------------------------

    def handle_response(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        """Response hook: the one answer rule (a 2xx confirms, SOAP is inspected, a
        401/403 or a redirect to another origin recovers); the header never follows a
        redirect that leaves the origin."""
        if r.__class__ is not _Response:
            _refuse_async(r)
        req = r.request
        url = req.url
        if not url or not self.is_tanium_url(url):
            return r
        sent = req.headers.get(HEADER)
        if sent is None:
            return r
        away = None
        if 300 <= r.status_code < 400 and r.is_redirect:
            away = self._guard_redirect(r, req)
            if away is None:
                return r  # a redirect within the origin: requests follows it
        special = self._special.get(url.split("?", 1)[0]) if url.startswith(
            self._special_prefixes
        ) else None  # fmt: skip
        step = next_step(r.status_code, special, self.refresh_status_codes, away is not None)
        if step is CONFIRM:
            self._state.confirm(sent)
            return r
        if step is DONE:
            return r
        if step is INSPECT:
            if not self._policy.soap(self._flights, sent, _peek(r)):
                return r
            what = "answered 200 with an in-band auth failure"
        else:
            if not self._told_retried:
                self._retried(r)
            _peek(r)  # read whole when short: a waiting request holds no connection
            where = f" to {away} (another origin)" if away is not None else ""
            what = f"answered {r.status_code}{where}"
        return self._recovered(r, sent, kwargs, what)

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
                self.url,
            )

    def _recovered(
        self, r: requests.Response, sent: str, kwargs: dict[str, Any], what: str
    ) -> requests.Response:
        """Judge a 401/403 (or an in-band SOAP failure) and resend once when a token
        came of it; the answer as it came when the session is alive."""
        after = self._flights.started  # only a check begun after this answer can judge it
        cause = f"{r.request.method} {shown_url(r.url)} {what}"
        core = self._core
        try:
            flow = core.policy.recover(core.flights, sent, cause, _shown(r), self.refresh, after)
            token: Optional[str] = core.run(flow)
        except BaseException:
            _discard(r)  # nobody else will read it: give its connection back
            raise
        return r if token is None else self._resend(r, token, kwargs)

    def _guard_redirect(
        self, r: requests.Response, *reqs: requests.PreparedRequest
    ) -> Optional[str]:
        """Remove the header from ``reqs`` when ``r`` redirects away from the origin;
        the host it leads to (``host:port``), or None when it stays."""
        target = redirect_target(r)
        if target is not None and self.is_tanium_url(target):
            return None
        for req in reqs:
            req.headers.pop(HEADER, None)
        log.debug("redirect from %s leaves the Tanium origin: session header removed",
                  shown_url(r.url))  # fmt: skip
        return urlparse(target).netloc if target else "an unreadable location"

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
            log.info("%s %s not resent: its body cannot be replayed", req.method, shown_url(r.url))
            return r
        _discard(r)
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

    # -- pickling -------------------------------------------------------------

    def _pickled(self) -> dict[str, Any]:
        state = super()._pickled()
        client = self._client
        if self._owns_client:
            state.update(verify=client.verify, cert=client.cert, proxies=client.proxies,
                         allow_http=not is_loopback(client.origin[1]) and
                         client.origin[0] == "http")  # fmt: skip
        else:
            del state["url"]
            state["http_client"] = client
        return state


class TaniumSession(requests.Session):
    """A ``requests.Session`` with a :class:`TaniumSessionAuth` built in.

    What it adds to ``session.auth = TaniumSessionAuth(...)``: relative URLs
    (``s.get("/api/v2/sensors")``) are joined to the Tanium URL; the auth's ``verify``,
    ``cert`` and ``proxies`` apply to every request it sends, and a loopback Tanium
    server is reached without the environment's proxies, as ``/auth`` is; and
    ``rebuild_auth`` removes the ``session`` header from every redirect that leaves
    the Tanium origin, even one that another response hook produced (a plain
    ``session.auth`` only sees the redirects its own hook sees).

    Args:
        url: as :class:`TaniumSessionAuth`.
        session: as :class:`TaniumSessionAuth`.
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
        self.base_url = auth.url
        client = auth.http_client
        self.verify = client.verify
        self.cert = client.cert
        if client.proxies is not None:
            self.proxies.update(client.proxies)

    @classmethod
    def from_env(cls, *, login: str = "auth", **kwargs: Unpack[AuthOptions]) -> TaniumSession:
        """Build from the environment, as :meth:`TaniumSessionAuth.from_env`."""
        session = cls(auth=TaniumSessionAuth.from_env(login=login, **kwargs))
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
        login: str = "auth",
        **kwargs: Unpack[AuthOptions],
    ) -> TaniumSession:
        """Log in with credentials; the login also refreshes the session when it dies."""
        auth = TaniumSessionAuth.from_credentials(
            url, username, password, domain=domain, secondary=secondary,
            persistent=persistent, login=login, **kwargs,
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
        path or False) is not replaced by ``REQUESTS_CA_BUNDLE`` (requests #3829), and
        a loopback Tanium server is reached without the environment's proxies."""
        if verify is None and self.verify is not True:
            verify = self.verify
        chosen = {*self.proxies, *(proxies or {})}  # requests adds the environment's to proxies
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        auth = self.auth
        if (
            isinstance(auth, TaniumSessionAuth)
            and is_loopback(auth.http_client.origin[1])
            and auth.is_tanium_url(str(url or ""))
        ):
            settings["proxies"] = {k: v for k, v in settings["proxies"].items() if k in chosen}
        return settings

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
