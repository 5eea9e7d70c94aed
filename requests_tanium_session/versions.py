"""Server version probe (``GET /config/console.json``) and requirement checks."""

from __future__ import annotations

import logging
import operator
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Optional

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .exceptions import GetPlatformVersionWarning, VersionMismatchError

if TYPE_CHECKING:
    from .http_client import HttpClient

__all__ = [
    "check_requirement",
    "check_specifier",
    "get_server_version",
    "parse_specifier",
    "probe_version",
]

log = logging.getLogger(__name__)

#: Path of the unauthenticated console configuration carrying ``serverVersion``.
CONSOLE_PATH = "/config/console.json"

#: Largest console.json body read, in bytes.
MAX_CONSOLE_BYTES = 1 << 20


def get_server_version(http_client: HttpClient, timeout: float = 5) -> Version:
    """Read ``serverVersion`` from ``/config/console.json``.

    Raises ``ValueError`` when the answer carries no readable version and the
    ``requests`` exception on transport failure.
    """
    resp = http_client.request("GET", CONSOLE_PATH, timeout=timeout)
    with resp:
        if resp.status_code != 200:
            raise ValueError(f"GET {CONSOLE_PATH} answered {resp.status_code}")
        if len(resp.content) > MAX_CONSOLE_BYTES:
            raise ValueError(f"GET {CONSOLE_PATH} answered more than {MAX_CONSOLE_BYTES} bytes")
        try:
            data = resp.json()
        except ValueError:
            raise ValueError(f"GET {CONSOLE_PATH} did not answer JSON") from None
    raw = data.get("serverVersion") if isinstance(data, dict) else None
    if not isinstance(raw, str):
        raise ValueError(f"GET {CONSOLE_PATH} carries no serverVersion string")
    try:
        return Version(raw)
    except InvalidVersion:
        raise ValueError(f"GET {CONSOLE_PATH} carries a malformed serverVersion") from None


def probe_version(http_client: HttpClient, timeout: float = 5) -> Optional[Version]:
    """The server's version, or None after a ``GetPlatformVersionWarning``."""
    try:
        return get_server_version(http_client, timeout=timeout)
    except Exception as exc:  # any failure to read means "not checked", never a crash
        reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
        warnings.warn(
            f"could not read the version of {http_client.url}: {reason}; nothing was checked",
            GetPlatformVersionWarning,
            stacklevel=3,
        )
        return None


def _leading(version: Version, parts: int) -> Version:
    """``version`` cut to its first ``parts`` release numbers."""
    return Version(".".join(str(n) for n in version.release[:parts]))


def check_requirement(version: Version, req: Mapping[str, str], src: str = "server") -> None:
    """Check ``version`` against ``vmin``/``vmax``/``veq``; empty values are skipped.

    A requirement with fewer dotted parts compares only that many leading parts of
    ``version``: ``vmax="7.3"`` admits ``7.3.314.3424``.
    """
    tests: tuple[tuple[str, Callable[[Version, Version], bool], str], ...] = (
        ("vmin", operator.ge, ">="),
        ("vmax", operator.le, "<="),
        ("veq", operator.eq, "=="),
    )
    for key, ok, sign in tests:
        raw = req.get(key) or ""
        if not raw:
            continue
        try:
            want = Version(raw)
        except InvalidVersion:
            raise ValueError(f"version requirement {key}={raw!r} is not a version") from None
        have = _leading(version, len(want.release))
        if not ok(have, want):
            raise VersionMismatchError(
                f"{src} has version {version}, outside the requirement {key} {sign} {raw}"
            )


def parse_specifier(spec: str) -> SpecifierSet:
    """A ``SpecifierSet`` from ``spec``, or ``ValueError`` naming the bad text."""
    if not isinstance(spec, str):
        raise TypeError("requires_server must be a str such as '>=7.3,<8'")
    try:
        return SpecifierSet(spec)
    except InvalidSpecifier:
        raise ValueError(f"requires_server {spec!r} is not a version specifier") from None


def check_specifier(version: Version, spec: SpecifierSet, src: str = "server") -> None:
    """Raise ``VersionMismatchError`` unless ``version`` satisfies ``spec``."""
    if not spec.contains(version, prereleases=True):
        raise VersionMismatchError(f"{src} has version {version}, outside the requirement {spec}")
