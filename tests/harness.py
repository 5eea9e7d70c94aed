"""The contract suite's harness: one scenario, every front-end.

A :class:`Front` builds an auth of its kind and sends requests through it (requests:
``TaniumSessionAuth`` on a plain ``requests.Session``; httpx sync and async through
``auth.client()``/``auth.async_client()``; aiohttp through ``client_session()``), so a
test is written once and the ``front`` fixture (``conftest.py``) runs it four times.
Only this module knows how each front-end is driven.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import types
from typing import Any, Optional, Union

import aiohttp
import httpx
import requests

from requests_tanium_session import TaniumSessionAuth
from requests_tanium_session.aiohttp import TaniumMiddleware
from requests_tanium_session.httpx import TaniumAuth
from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

USER, PASSWORD = DEFAULT_USER[0], DEFAULT_USER[1]
SENSORS = "/api/v2/sensors"
DENIED = "/api/v2/denied"
LOGIN_HEADERS = ("username", "password")
PASSWORD_B64 = base64.b64encode(PASSWORD.encode()).decode()

Auth = Union[TaniumSessionAuth, TaniumAuth, TaniumMiddleware]
Outcome = Any  # a response (``status_code``, ``text``, ``history``) or the exception raised


class _Hop:
    """A response of aiohttp, as the tests read the others' (``status_code``, …)."""

    def __init__(self, response: aiohttp.ClientResponse, text: str = "") -> None:
        self.status_code = response.status
        self.text = text
        self.url = response.url
        self.request = types.SimpleNamespace(
            url=response.request_info.url, headers=response.request_info.headers
        )
        self.history = [_Hop(h) for h in response.history]


class Front:
    """One front-end: how to build its auth and send requests through it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.opened: list[Any] = []  # closed by the ``front`` fixture after each test

    def close_opened(self) -> None:
        """Close every auth this front-end built for the test that just ended."""
        while self.opened:
            self.opened.pop().close()

    def __repr__(self) -> str:
        return self.name

    @property
    def httpx(self) -> bool:
        return self.name.startswith("httpx")

    @property
    def aiohttp(self) -> bool:
        return self.name == "aiohttp"

    @property
    def is_async(self) -> bool:
        """Its requests run in tasks: a blocking ``refresh`` would stop them all."""
        return self.name in ("httpx-async", "aiohttp")

    @property
    def timeout_error(self) -> type[Exception]:
        """What a waiter raises at its deadline: the front-end's own type."""
        if self.aiohttp:
            return aiohttp.ServerTimeoutError
        return httpx.TimeoutException if self.httpx else requests.exceptions.ReadTimeout

    @property
    def transport_error(self) -> type[Exception]:
        if self.aiohttp:
            return aiohttp.ClientError
        return httpx.TransportError if self.httpx else requests.ConnectionError

    def broken(self) -> Exception:
        """A transport error of this front-end, as a ``refresh`` might raise it."""
        if self.aiohttp:
            return aiohttp.ClientConnectionError("no route")
        if self.httpx:
            return httpx.ConnectError("no route")
        return requests.ConnectionError("no route")

    def auth(self, url: str, session: Optional[str] = None, **kwargs: Any) -> Auth:
        built: Auth = self.auth_class(url, session, **kwargs)
        self.opened.append(built)
        return built

    @property
    def auth_class(self) -> Any:
        """The auth class of this front-end."""
        if self.aiohttp:
            return TaniumMiddleware
        return TaniumAuth if self.httpx else TaniumSessionAuth

    def transport(self, *, ca_bundle: str, context: Any, proxy: str) -> dict[str, Any]:
        """The options that give this front-end's own calls a CA and a proxy."""
        if self.aiohttp:
            return {"ssl": context, "proxy": proxy}
        if self.httpx:
            return {"verify": context, "proxy": proxy}
        return {"verify": ca_bundle, "proxies": {"http": proxy, "https": proxy}}

    def from_credentials(self, url: str, username: str, password: str, **kwargs: Any) -> Auth:
        if self.aiohttp:
            built: Auth = asyncio.run(
                TaniumMiddleware.from_credentials(url, username, password, **kwargs)
            )
        else:
            built = self.auth_class.from_credentials(url, username, password, **kwargs)
        self.opened.append(built)
        return built

    def token(self, auth: Auth) -> Optional[str]:
        """The token, validated first when stale (``validated_token()``/``atoken()``)."""
        if self.is_async:
            assert not isinstance(auth, TaniumSessionAuth)
            return asyncio.run(auth.atoken())
        assert not isinstance(auth, TaniumMiddleware)
        return auth.validated_token()

    def get(self, auth: Auth, url: str, n: int = 1, **options: Any) -> list[Outcome]:
        """``n`` GETs of ``url`` released together (threads or tasks); each outcome."""
        follow = options.pop("follow", True)
        trust_env = options.pop("trust_env", True)
        if self.name == "httpx-async":
            return asyncio.run(self._aget(auth, url, n, follow, trust_env))
        if self.aiohttp:
            return asyncio.run(self._aiohttp_get(auth, url, n, follow, trust_env))
        gate = threading.Barrier(n)
        outcomes: list[Outcome] = [None] * n
        client = None
        if self.httpx:
            assert isinstance(auth, TaniumAuth)
            client = auth.client(follow_redirects=follow, trust_env=trust_env, timeout=10)

        def one(i: int) -> None:
            gate.wait()
            try:
                if client is not None:
                    outcomes[i] = client.get(url)
                else:
                    with requests.Session() as s:
                        s.trust_env = trust_env
                        s.auth = auth
                        outcomes[i] = s.get(url, allow_redirects=follow, timeout=10)
            except Exception as exc:
                outcomes[i] = exc

        workers = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if client is not None:
            client.close()
        return outcomes

    async def _aget(
        self, auth: Auth, url: str, n: int, follow: bool, trust_env: bool
    ) -> list[Outcome]:
        assert isinstance(auth, TaniumAuth)
        ready = asyncio.Event()
        started = 0
        async with auth.async_client(
            follow_redirects=follow, trust_env=trust_env, timeout=10
        ) as client:

            async def one() -> Outcome:
                nonlocal started
                started += 1
                if started == n:
                    ready.set()
                await ready.wait()
                try:
                    return await client.get(url)
                except Exception as exc:
                    return exc

            return list(await asyncio.gather(*(one() for _ in range(n))))

    async def _aiohttp_get(
        self, auth: Auth, url: str, n: int, follow: bool, trust_env: bool
    ) -> list[Outcome]:
        assert isinstance(auth, TaniumMiddleware)
        ready = asyncio.Event()
        started = 0
        async with auth.client_session(trust_env=trust_env) as session:

            async def one() -> Outcome:
                nonlocal started
                started += 1
                if started == n:
                    ready.set()
                await ready.wait()
                try:
                    async with session.get(url, allow_redirects=follow) as response:
                        return _Hop(response, await response.text())
                except Exception as exc:
                    return exc

            return list(await asyncio.gather(*(one() for _ in range(n))))

    def one(self, auth: Auth, url: str, **options: Any) -> Any:
        """One GET; its response, or the exception it raised, raised."""
        outcome = self.get(auth, url, **options)[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


FRONTS = [Front("requests"), Front("httpx-sync"), Front("httpx-async"), Front("aiohttp")]


def statuses(outcomes: list[Outcome]) -> list[Any]:
    return [o.status_code if hasattr(o, "status_code") else type(o).__name__ for o in outcomes]


def stale(server: TaniumServer, front: Front, **kwargs: Any) -> Auth:
    """An auth whose session is already stale (``revalidate_after=0``)."""
    kwargs.setdefault("revalidate_after", 0)
    return front.auth(server.url, server.new_session(), **kwargs)


SOAP = "/soap"
GATEWAY = "/plugin/products/gateway/graphql"
SOAP_BODY = b"<soap:Envelope><soap:Body><GetObject/></soap:Body></soap:Envelope>"


def _post(front: Front, auth: Auth, url: str, body: bytes = SOAP_BODY) -> Any:
    """One POST of ``body`` to ``url`` through ``front``; its response (as ``one``)."""
    if front.aiohttp:
        assert isinstance(auth, TaniumMiddleware)

        async def go() -> Any:
            async with auth.client_session() as s, s.post(url, data=body) as r:
                return _Hop(r, await r.text())

        return asyncio.run(go())
    if front.httpx:
        assert isinstance(auth, TaniumAuth)
        if front.name == "httpx-async":

            async def ago() -> Any:
                async with auth.async_client() as c:
                    return await c.post(url, content=body)

            return asyncio.run(ago())
        with auth.client() as c:
            return c.post(url, content=body)
    with requests.Session() as s:
        s.auth = auth
        return s.post(url, data=body, timeout=10)


class Fetched:
    """What one request through a front-end gave back: status, the body as the chosen
    reader read it, and how many answers came before it (``history``)."""

    def __init__(self, status: int, body: bytes, history: int) -> None:
        self.status, self.body, self.history = status, body, history

    def __repr__(self) -> str:
        return f"Fetched({self.status}, {len(self.body)} bytes, history={self.history})"


READERS = ("read", "text", "iter")


def fetch(
    front: Front,
    auth: Auth,
    url: str,
    *,
    method: str = "GET",
    data: Optional[bytes] = None,
    read: str = "read",
    pool: Optional[int] = None,
) -> Fetched:
    """One request of ``method`` to ``url`` through ``front``, its body read by
    ``read``: ``"read"`` (``content``/``read()``), ``"text"`` or ``"iter"`` (the
    front-end's streaming iterator); ``pool`` bounds the client's connections."""
    if front.aiohttp:
        assert isinstance(auth, TaniumMiddleware)
        return asyncio.run(_fetch_aiohttp(auth, url, method, data, read, pool))
    if front.httpx:
        assert isinstance(auth, TaniumAuth)
        limits = httpx.Limits(max_connections=pool) if pool else httpx.Limits()
        if front.is_async:
            return asyncio.run(_fetch_httpx_async(auth, url, method, data, read, limits))
        with auth.client(limits=limits, timeout=10) as client:
            if read == "iter":
                with client.stream(method, url, content=data) as r:
                    body = b"".join(r.iter_bytes(1 << 16))
            else:
                r = client.request(method, url, content=data)
                body = r.text.encode() if read == "text" else r.read()
            return Fetched(r.status_code, body, len(r.history))
    assert isinstance(auth, TaniumSessionAuth)
    with requests.Session() as s:
        s.auth = auth
        if pool:
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=pool, pool_block=True)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
        r = s.request(method, url, data=data, stream=read == "iter", timeout=10)
        if read == "iter":
            body = b"".join(r.iter_content(1 << 16))
        else:
            body = r.text.encode() if read == "text" else r.content
        return Fetched(r.status_code, body, len(r.history))


async def _fetch_httpx_async(
    auth: TaniumAuth, url: str, method: str, data: Optional[bytes], read: str, limits: Any
) -> Fetched:
    async with auth.async_client(limits=limits, timeout=10) as client:
        if read == "iter":
            async with client.stream(method, url, content=data) as r:
                body = b"".join([c async for c in r.aiter_bytes(1 << 16)])
        else:
            r = await client.request(method, url, content=data)
            body = r.text.encode() if read == "text" else await r.aread()
        return Fetched(r.status_code, body, len(r.history))


async def _fetch_aiohttp(
    auth: TaniumMiddleware, url: str, method: str, data: Optional[bytes], read: str,
    pool: Optional[int],
) -> Fetched:  # fmt: skip
    connector = aiohttp.TCPConnector(limit=pool or 100)
    timeout = aiohttp.ClientTimeout(total=10)
    session = auth.client_session(connector=connector, timeout=timeout)
    async with session, session.request(method, url, data=data) as r:
        if read == "iter":
            body = b"".join([c async for c in r.content.iter_chunked(1 << 16)])
        elif read == "text":
            body = (await r.text()).encode()
        else:
            body = await r.read()
            assert await r.read() == body  # a second read works too
        return Fetched(r.status, body, len(r.history))


def logout(front: Front, auth: Auth, every: bool = False) -> None:
    """``logout()``/``logout_all()``, or their async twins on async front-ends."""
    if front.is_async:
        assert not isinstance(auth, TaniumSessionAuth)
        asyncio.run(auth.alogout_all() if every else auth.alogout())
    else:
        assert not isinstance(auth, TaniumMiddleware)
        auth.logout_all() if every else auth.logout()


def exposed(exc: BaseException) -> str:
    """Everything reachable from ``exc`` that a user could print or log: ``str``,
    ``repr``, ``args``, ``request_info``, ``.request`` and ``.response.request``
    (headers and body), through the whole ``__cause__``/``__context__`` chain."""
    texts: list[str] = []
    seen: set[int] = set()
    todo: list[Optional[BaseException]] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        texts += [str(e), repr(e), repr(e.args), repr(getattr(e, "request_info", None))]
        response = getattr(e, "response", None)
        requests_ = [getattr(e, "request", None), getattr(response, "request", None)]
        texts += [repr(response), repr(getattr(response, "request_info", None))]
        for request in requests_:
            if request is not None:
                texts.append(repr(dict(getattr(request, "headers", {}) or {})))
                texts.append(repr(getattr(request, "body", None)))
                with contextlib.suppress(Exception):  # a request whose body is a stream
                    texts.append(repr(request.content))
        todo += [e.__cause__, e.__context__]
    return "\n".join(texts)


def secrets_in(text: str, *secrets: str) -> list[str]:
    """Which kinds of ``secrets`` appear in ``text`` (never the values themselves)."""
    return [f"secret #{i}" for i, s in enumerate(secrets) if s and s in text]
