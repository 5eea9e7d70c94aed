"""Origins: the Tanium base URL, checked once, and whether a URL as sent is its origin.

An origin is ``(scheme, host, port)``, compared on the URL ``requests`` (or httpx,
aiohttp) will actually send: scheme and host lower-cased, the host encoded as
``requests`` encodes it, default ports filled in. Nothing else is normalised.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Optional
from urllib.parse import SplitResult, urlsplit

import requests
from urllib3.util import parse_url

__all__ = [
    "DEFAULT_PORTS",
    "Origin",
    "OriginMatcher",
    "is_loopback",
    "origin_name",
    "origin_of",
    "parse_base_url",
    "shown_url",
]

#: ``(scheme, host, port)``: scheme and host lower-cased, the port always filled in.
Origin = tuple[str, str, int]

#: A base URL's path must not end so (the REST root is added to the base, not given).
API_SUFFIX = "/api/v2"

#: Ports implied by each scheme.
DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ``::1`` and exactly ``localhost`` (nothing that asks DNS)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> Optional[Origin]:
    """The origin of a prepared URL, or None when it has none we could match.

    Userinfo in front of the host gives None: such a URL is never the Tanium origin.
    """
    try:
        parts = parse_url(url)
    except Exception:
        return None
    scheme = (parts.scheme or "").lower()
    if parts.auth is not None or not parts.host or scheme not in DEFAULT_PORTS:
        return None
    port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    return (scheme, parts.host.lower(), port)


def _split(url: object) -> SplitResult:
    """``url`` split, once it is a well-formed base URL; ``ValueError`` names what is not."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if not url or url != url.strip() or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ValueError("url must be a non-empty URL without whitespace")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises for a bad port
    except ValueError:
        raise ValueError("url is not a valid URL (bad host or port)") from None
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise ValueError("url must start with https:// (or http:// for a local server)")
    if "@" in parts.netloc:
        raise ValueError("url must not contain userinfo (user:password@)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("url must not contain a query or a fragment")
    if not parts.hostname:
        raise ValueError("url must name a host")
    return parts


def _prepared(scheme: str, parts: SplitResult) -> str:
    """The URL as ``requests`` will send it (the host encoded as it encodes hosts)."""
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(f"{scheme}://{parts.netloc}{parts.path}", None)
    except requests.RequestException:
        raise ValueError("url has a host that requests cannot encode") from None
    return str(prepared.url)


def parse_base_url(url: object, allow_http: bool = False) -> tuple[str, Origin]:
    """The normalised base URL (no trailing slash) and its origin; ``ValueError`` if bad.

    ``http://`` is refused for hosts other than loopback unless ``allow_http``.
    """
    parts = _split(url)
    scheme = parts.scheme.lower()
    prepared = _prepared(scheme, parts)
    origin = origin_of(prepared)
    if origin is None:
        raise ValueError("url is not a valid URL")
    if scheme == "http" and not allow_http and not is_loopback(origin[1]):
        raise ValueError(
            "url uses http:// for a host that is not loopback; use https:// or pass allow_http=True"
        )
    host, port = origin[1], parts.port
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = urlsplit(prepared).path.rstrip("/")
    if path.lower().endswith(API_SUFFIX):
        base = f"{scheme}://{netloc}{path[: -len(API_SUFFIX)]}"
        raise ValueError(
            f"url ends in /api/v2: give the server's base URL and the library adds /auth "
            f"and /api/v2/... itself; use {base} instead"
        )
    return f"{scheme}://{netloc}{path}", origin


def shown_url(url: object) -> str:
    """``url`` as messages, events and log lines name it: scheme, host, port and path,
    never userinfo, a query string or a fragment (they may carry secrets)."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def origin_name(origin: Origin) -> str:
    """``scheme://host:port``: how stores and messages name an origin."""
    scheme, host, port = origin
    return f"{scheme}://{host}:{port}"


class OriginMatcher:
    """Tells whether a URL, as sent, has one origin: a prefix test, then a parse."""

    __slots__ = ("origin", "prefixes")

    def __init__(self, origin: Origin) -> None:
        scheme, host, port = origin
        prefixes = [f"{scheme}://{host}:{port}/"]
        if port == DEFAULT_PORTS[scheme]:
            prefixes.append(f"{scheme}://{host}/")
        self.origin = origin
        self.prefixes = tuple(prefixes)

    def __call__(self, url: str) -> bool:
        return url.startswith(self.prefixes) or origin_of(url) == self.origin
