"""TaniumAuth: Tanium session authentication for ``httpx.Client`` and ``httpx.AsyncClient``.

Needs the ``httpx`` extra: ``pip install "requests-tanium-session[httpx]"``.

Every decision is the one policy (:mod:`._policy`) the ``requests`` adapter drives too;
this module only moves bytes. The auth flow yields the caller's request and, after a
recovered 401/403, that request once more, nothing else: ``/auth``, login, validate,
logout and ``console.json`` calls go through a private client of this auth (no
redirects, no environment proxy for loopback, one wall-clock deadline, secrets
redacted on anything raised), so they never appear in the caller's ``history``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import ssl
from collections.abc import AsyncGenerator, Callable, Collection, Generator
from functools import partial
from typing import TYPE_CHECKING, Any, Optional, Union

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'requests_tanium_session.httpx needs httpx: pip install "requests-tanium-session[httpx]"'
    ) from exc

from ._drive import Worker, arun, on_worker, run
from ._front import FrontOptions, PolicyFront, Refresh
from ._policy import Answered, Credentials, Flow, first_session
from .http_client import DEFAULT_PORTS, is_loopback
from .protocol import (
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_LOGOUT_TIMEOUT,
    DEFAULT_REFRESH_STATUS_CODES,
    DEFAULT_REVALIDATE_AFTER,
    GATEWAY_PATH,
    HEADER,
    MAX_ANSWER_BYTES,
    REDACTED,
    SECRET_HEADERS,
    Call,
    login_headers,
    special_paths,
)
from .stats import AuthEvent
from .stores import SessionStore

__all__ = ["TaniumAuth"]

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)

Verify = Union[ssl.SSLContext, str, bool]


# -- the wire: protocol calls ----------------------------------------------------------


def _redacted(call: Call, url: str) -> httpx.Request:
    """``call`` as an ``httpx.Request`` with every secret replaced: what exceptions carry."""
    headers = {k: REDACTED if k.lower() in SECRET_HEADERS else v for k, v in call.headers.items()}
    content = REDACTED.encode() if call.json is not None else None
    return httpx.Request(call.method, url, headers=headers, content=content)


def _scrub(exc: BaseException, redacted: httpx.Request) -> None:
    if isinstance(exc, httpx.RequestError):
        exc.request = redacted


def _finish(response: httpx.Response, body: Optional[bytes], redacted: httpx.Request) -> Answered:
    response._content = body or b""  # readable, and closed
    response.request = redacted
    return Answered(response.status_code, body, str(response.url), response)


def _ssl_context(verify: Verify, cert: Union[str, tuple[str, str], None]) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise ValueError("with an SSLContext as verify, load the client certificate into it")
        return verify
    if isinstance(verify, bool):
        ctx = httpx.create_ssl_context(verify=verify)
    elif isinstance(verify, str) and verify:
        if os.path.isdir(verify):
            ctx = ssl.create_default_context(capath=verify)
        else:
            ctx = ssl.create_default_context(cafile=verify)
    else:
        raise TypeError("verify must be True, False, an ssl.SSLContext or a CA bundle path")
    if cert is not None:
        ctx.load_cert_chain(*((cert,) if isinstance(cert, str) else cert))
    return ctx


class _Wire:
    """Makes protocol calls for one origin, each through a client of its own (so any
    thread or event loop may make them and nothing is left open), never following
    redirects, environment proxies only for hosts that are not loopback."""

    def __init__(
        self, url: str, host: str, verify: Verify, cert: Any, proxy: Optional[str]
    ) -> None:
        self.url = url
        self._ssl = _ssl_context(verify, cert) if url.startswith("https:") else None
        self._options: dict[str, Any] = {
            # Made once: httpx would build (and load a CA bundle into) one per client.
            "verify": self._ssl or httpx.create_ssl_context(verify=False),
            "proxy": proxy,
            "trust_env": proxy is None and not is_loopback(host),
            "follow_redirects": False,
        }

    def exchange(self, call: Call, timeout: float) -> Answered:
        """Make ``call`` within ``timeout`` wall-clock seconds (connect, headers, body)."""

        def give_up(worker: Worker[Answered]) -> BaseException:
            response = worker.response
            if response is not None:
                response.close()  # the worker's read ends now
            return httpx.ReadTimeout(
                f"{call.method} {self.url}{call.path} did not finish within {timeout:g} s",
                request=_redacted(call, self.url + call.path),
            )

        return on_worker(partial(self._run, call, timeout), timeout, give_up)

    def _run(self, call: Call, timeout: float, worker: Worker[Answered]) -> Answered:
        redacted = _redacted(call, self.url + call.path)
        try:
            with httpx.Client(timeout=timeout, **self._options) as client:
                request = client.build_request(
                    call.method, self.url + call.path, headers=dict(call.headers), json=call.json
                )
                response = worker.response = client.send(request, stream=True)
                try:
                    body = _capped(response.iter_bytes(), call.limit)
                finally:
                    response.close()
            return _finish(response, body, redacted)
        except BaseException as exc:
            _scrub(exc, redacted)
            raise

    async def aexchange(self, call: Call, timeout: float) -> Answered:
        """The async twin of :meth:`exchange`."""
        redacted = _redacted(call, self.url + call.path)
        try:
            return await asyncio.wait_for(self._asend(call, timeout, redacted), timeout)
        except asyncio.TimeoutError:
            raise httpx.ReadTimeout(
                f"{call.method} {self.url}{call.path} did not finish within {timeout:g} s",
                request=redacted,
            ) from None

    async def _asend(self, call: Call, timeout: float, redacted: httpx.Request) -> Answered:
        try:
            async with httpx.AsyncClient(timeout=timeout, **self._options) as client:
                request = client.build_request(
                    call.method, self.url + call.path, headers=dict(call.headers), json=call.json
                )
                response = await client.send(request, stream=True)
                try:
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > call.limit:
                            return _finish(response, None, redacted)
                        chunks.append(chunk)
                finally:
                    await response.aclose()
                return _finish(response, b"".join(chunks), redacted)
        except BaseException as exc:
            _scrub(exc, redacted)
            raise


def _capped(chunks: Any, limit: int) -> Optional[bytes]:
    """At most ``limit`` bytes of ``chunks``, or None when there are more."""
    kept: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        kept.append(chunk)
    return b"".join(kept)


def _release(response: httpx.Response) -> Optional[bytes]:
    """Read an answer (capped) and close it, so a waiter never holds a connection; its
    body, or None when it was longer than the cap (what was read stays readable)."""
    kept: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                break
            kept.append(chunk)
    except httpx.HTTPError:
        pass  # a broken body: what arrived stays readable
    finally:
        response.close()
    response._content = body = b"".join(kept)
    return body if size <= MAX_ANSWER_BYTES else None


async def _arelease(response: httpx.Response) -> Optional[bytes]:
    kept: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                break
            kept.append(chunk)
    except httpx.HTTPError:
        pass
    finally:
        await response.aclose()
    response._content = body = b"".join(kept)
    return body if size <= MAX_ANSWER_BYTES else None


_SYNC_COROUTINE = (
    "refresh is a coroutine function: an httpx.Client cannot await it; use "
    "async_client() (an httpx.AsyncClient) or give TaniumAuth a plain function"
)


class HttpxOptions(FrontOptions, total=False):
    """:class:`TaniumAuth`'s keyword arguments for ``from_credentials``."""

    verify: Verify
    cert: Union[str, tuple[str, str], None]
    proxy: Optional[str]


def _timeout_error(message: str) -> Exception:
    return httpx.ReadTimeout(message)


class TaniumAuth(PolicyFront, httpx.Auth):
    """An ``httpx.Auth`` that puts the Tanium ``session`` header on one origin's requests.

    The same policy as :class:`~requests_tanium_session.TaniumSessionAuth` (the same
    code decides): the header only to the exact origin; fresh for ``revalidate_after``
    after a confirmation (a 2xx confirms); one validation however many threads
    (``httpx.Client``) or tasks (``httpx.AsyncClient``) find it stale; a 401/403 is
    judged by one ``/auth`` check: resent once with a new token, returned as it is
    when the session is alive, or refreshed (``refresh``) or raised as ``LoginError``
    when it is dead.

    Args:
        url: the Tanium server, ``https://host[:port][/prefix]``.
        session: a session id or API token; None with ``refresh`` logs in lazily.
        revalidate_after: seconds after a confirmation before validating again.
        expires_after: idle seconds after which the session counts as expired.
        login_timeout: wall-clock seconds of one validate or login call.
        logout_timeout: wall-clock seconds of one logout call.
        refresh_status_codes: statuses from the origin that trigger recovery.
        refresh: returns a new session id; a plain callable (any client) or a
            coroutine function (``httpx.AsyncClient`` only).
        on_token_update: called with the new token whenever it changes.
        allow_http: allow ``http://`` for a host that is not loopback.
        requires_server: a version specifier checked at the first request.
        store: a session store shared with other processes or machines; its calls
            run on a worker thread in async flows.
        verify: TLS verification of this auth's own calls (``/auth``, login,
            validate, logout): True, False, an ``ssl.SSLContext`` or a CA bundle path;
            :meth:`client` and :meth:`async_client` use it too.
        cert: a client certificate for those calls (a path or ``(cert, key)``).
        proxy: a proxy URL for those calls; None: the environment's, except for a
            loopback server.
        on_event: called with an ``AuthEvent`` when the session dies or is
            refreshed, and when the store degrades or comes back.

    Raises:
        TypeError, ValueError: malformed arguments (messages never show a secret).
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        url: Optional[str] = None,
        session: Optional[str] = None,
        *,
        revalidate_after: float = DEFAULT_REVALIDATE_AFTER,
        expires_after: float = DEFAULT_EXPIRES_AFTER,
        login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
        logout_timeout: float = DEFAULT_LOGOUT_TIMEOUT,
        refresh_status_codes: Collection[int] = DEFAULT_REFRESH_STATUS_CODES,
        refresh: Union[Refresh, Credentials, None] = None,
        on_token_update: Optional[Callable[[str], None]] = None,
        allow_http: bool = False,
        requires_server: Optional[str] = None,
        store: Optional[SessionStore] = None,
        verify: Verify = True,
        cert: Union[str, tuple[str, str], None] = None,
        proxy: Optional[str] = None,
        on_event: Optional[Callable[[AuthEvent], None]] = None,
    ) -> None:
        origin = self._setup(
            url,
            session,
            revalidate_after=revalidate_after,
            expires_after=expires_after,
            login_timeout=login_timeout,
            logout_timeout=logout_timeout,
            refresh_status_codes=refresh_status_codes,
            refresh=refresh,
            on_token_update=on_token_update,
            allow_http=allow_http,
            requires_server=requires_server,
            store=store,
            on_event=on_event,
            passthrough=(httpx.TransportError,),
            timeout_error=_timeout_error,
        )
        scheme, host, port = origin
        #: ``(scheme, userinfo, host, port)``: the first fields of httpx's parsed URL.
        self._key = (scheme, "", host.strip("[]"), None if port == DEFAULT_PORTS[scheme] else port)
        self._wire = _Wire(self.url, host.strip("[]"), verify, cert, proxy)
        self._paths = special_paths(self.url)
        self._verify = verify

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
        **kwargs: Unpack[HttpxOptions],
    ) -> TaniumAuth:
        """Log in now (``POST /auth``, base64 headers; with a store, a fresh published
        session is taken instead) and again after every death, once however many
        requests are waiting. ``LoginError`` when the credentials are refused."""
        if "refresh" in kwargs or "session" in kwargs:
            raise TypeError("from_credentials() makes its own session and refresh")
        credentials = Credentials(login_headers(username, password, domain, secondary, persistent))
        auth = cls(url, refresh=credentials, **kwargs)
        policy = auth._policy
        flow = first_session(
            credentials.headers, policy.login_timeout, auth._state.revalidate_after,
            None if policy.fleet is None else policy.fleet.origin,
        )  # fmt: skip
        token: str = run(flow, auth._wire.exchange, auth._flights, policy.fleet)
        policy.start(token)
        return auth

    # -- public state ---------------------------------------------------------------

    @property
    def token(self) -> Optional[str]:
        """The current token, validated (or refreshed) first when stale; None when
        there is none and nothing can make one. Blocks: see :meth:`atoken`."""
        token = self._state.fresh()
        if token is not None:
            return token
        if self._no_token():
            return None
        found: str = self._run(self._policy.current(self._flights, self.refresh))
        return found

    async def atoken(self) -> Optional[str]:
        """:attr:`token` for async code: the calls run in this task."""
        token = self._state.fresh()
        if token is not None:
            return token
        if self._no_token():
            return None
        found: str = await self._arun(self._policy.current(self._aflights, self.refresh))
        return found

    def is_tanium_url(self, url: Union[str, httpx.URL]) -> bool:
        """True when ``url`` has the Tanium origin (scheme, host, port); no userinfo."""
        if isinstance(url, httpx.URL):
            # httpx's parsed form is one attribute away; the public properties decode
            # and re-encode on every read, which costs more than the rest of the flow.
            try:
                return bool(url._uri_reference[:4] == self._key)
            except (AttributeError, TypeError):  # another httpx: the public, slower way
                url = str(url)
        return self._matches(url)

    # -- clients ----------------------------------------------------------------

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` with ``auth=self``, ``base_url=url``, this auth's
        ``verify``, and a request hook that removes the header from every request not
        to the origin (redirect hops included: httpx carries custom headers across
        origins)."""
        if inspect.iscoroutinefunction(self.refresh):
            raise TypeError(_SYNC_COROUTINE)
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [self._strip, *hooks.get("request", [])]
        kwargs.setdefault("base_url", self.url)
        kwargs.setdefault("verify", self._wire._ssl or self._verify)
        return httpx.Client(auth=self, event_hooks=hooks, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` twin of :meth:`client`."""
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [self._astrip, *hooks.get("request", [])]
        kwargs.setdefault("base_url", self.url)
        kwargs.setdefault("verify", self._wire._ssl or self._verify)
        return httpx.AsyncClient(auth=self, event_hooks=hooks, **kwargs)

    def _strip(self, request: httpx.Request) -> None:
        if HEADER in request.headers and not self.is_tanium_url(request.url):
            del request.headers[HEADER]
            log.debug("request to %s leaves the Tanium origin: session header removed", request.url)

    async def _astrip(self, request: httpx.Request) -> None:
        self._strip(request)

    # -- logout -------------------------------------------------------------------

    def logout(self, client: Optional[httpx.Client] = None) -> None:
        """End this session (``logout: 0``); ``LogoutError`` on any answer but 200.

        The call goes through this auth's own client; ``client`` is accepted for
        compatibility and not used.
        """
        self._run(self._policy.logout(False, "logout"))

    async def alogout(self, client: Optional[httpx.AsyncClient] = None) -> None:
        """End this session from async code (as :meth:`logout`)."""
        await self._arun(self._policy.logout(False, "logout"))

    # -- the flows --------------------------------------------------------------

    def _run(self, flow: Flow) -> Any:
        return run(flow, self._wire.exchange, self._flights, self._policy.fleet)

    async def _arun(self, flow: Flow) -> Any:
        return await arun(flow, self._wire.aexchange, self._aflights, self._policy.fleet)

    def _cause(self, request: httpx.Request, response: httpx.Response) -> str:
        status = response.status_code
        what = "200 with an in-band auth failure" if status < 300 else str(status)
        return f"{request.method} {request.url} answered {what}"

    def _special(self, url: httpx.URL) -> Optional[str]:
        """SOAP_PATH or GATEWAY_PATH when ``url`` (of the origin) is one, else None."""
        try:
            return self._paths.get(url._uri_reference.path)  # see is_tanium_url
        except AttributeError:  # another httpx
            return self._paths.get(url.raw_path.split(b"?")[0].decode("ascii", "replace"))

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flights, state = self._flights, self._state
        token = state.fresh()
        if token is None or flights.in_callbacks or self._policy.gate:
            if flights.in_callback() or not self.is_tanium_url(request.url):
                yield request  # another origin, or a login made from inside refresh()
                return
            if inspect.iscoroutinefunction(self.refresh):  # at the first check, not a death
                raise TypeError(_SYNC_COROUTINE)
            token = self._run(self._begin(flights))
        elif not self.is_tanium_url(request.url):
            yield request
            return
        request.headers[HEADER] = token
        response = yield request
        status = response.status_code
        if 200 <= status < 300:
            if response._request is not request and not self.is_tanium_url(response.url):
                return  # another origin's, after a redirect
            special = self._special(request.url)
            if special is None:
                state.confirm(token)
                return
            after = flights.started
            if special == GATEWAY_PATH or not self._policy.soap(flights, token, _release(response)):
                return
        elif status not in self.refresh_status_codes or not self.is_tanium_url(response.url):
            return  # not a 401/403, or one from another origin after a redirect
        else:
            after = flights.started  # only a check begun after this answer can judge it
            _release(response)
        cause = self._cause(request, response)
        flow = self._policy.recover(flights, token, cause, response, self.refresh, after)
        new = self._run(flow)
        if new is None or not self._replayable(request):
            return
        request.headers[HEADER] = new
        self._policy.resent()
        again = yield request
        if 200 <= again.status_code < 300 and self.is_tanium_url(again.url):
            state.confirm(new)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flights, state = self._aflights, self._state
        token = state.fresh()
        if token is None or self._policy.gate or flights.in_callback():
            if flights.in_callback() or not self.is_tanium_url(request.url):
                yield request  # another origin, or a login made from inside refresh()
                return
            token = await self._arun(self._begin(flights))
        elif not self.is_tanium_url(request.url):
            yield request
            return
        request.headers[HEADER] = token
        response = yield request
        status = response.status_code
        if 200 <= status < 300:
            if response._request is not request and not self.is_tanium_url(response.url):
                return
            special = self._special(request.url)
            if special is None:
                state.confirm(token)
                return
            after = flights.started
            if special == GATEWAY_PATH or not self._policy.soap(
                flights, token, await _arelease(response)
            ):
                return
        elif status not in self.refresh_status_codes or not self.is_tanium_url(response.url):
            return
        else:
            after = flights.started  # only a check begun after this answer can judge it
            await _arelease(response)
        cause = self._cause(request, response)
        flow = self._policy.recover(flights, token, cause, response, self.refresh, after)
        new = await self._arun(flow)
        if new is None or not self._replayable(request):
            return
        request.headers[HEADER] = new
        self._policy.resent()
        again = yield request
        if 200 <= again.status_code < 300 and self.is_tanium_url(again.url):
            state.confirm(new)

    @staticmethod
    def _replayable(request: httpx.Request) -> bool:
        if isinstance(request.stream, httpx.ByteStream):
            return True
        log.info("%s %s not resent: its body cannot be replayed", request.method, request.url)
        return False

    def __getstate__(self) -> Any:
        raise TypeError("TaniumAuth is not pickled: it holds a live session")

    def __call__(self, request: Any) -> Any:
        """Refused: ``requests`` calls its auth like this, and this is httpx's."""
        raise TypeError(
            "TaniumAuth is the auth for httpx; for requests use "
            "requests_tanium_session.TaniumSessionAuth (or TaniumSession)"
        )
