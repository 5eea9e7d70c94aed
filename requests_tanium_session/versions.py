"""Server version probe (``GET /config/console.json``) and requirement checks."""

from __future__ import annotations

import logging
import operator
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Optional

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ._drive import run
from ._policy import server_version
from .exceptions import GetPlatformVersionWarning, VersionMismatchError
from .protocol import CONSOLE_PATH, DEFAULT_LOGIN_TIMEOUT, judge_version

if TYPE_CHECKING:
    from .http_client import HttpClient

__all__ = [
    "SpecCheck",
    "check_requirement",
    "check_specifier",
    "get_server_version",
    "parse_specifier",
    "probe_version",
    "read_version",
    "unreadable",
    "version_gate",
]

log = logging.getLogger(__name__)


def read_version(status: int, body: Optional[bytes]) -> Version:
    """The version in a ``console.json`` answer; ``ValueError`` saying why not."""
    raw, why = judge_version(status, body)
    if raw is None:
        raise ValueError(why)
    try:
        return Version(raw)
    except InvalidVersion:
        raise ValueError(f"GET {CONSOLE_PATH} carries a malformed serverVersion") from None


def get_server_version(http_client: HttpClient, timeout: float = DEFAULT_LOGIN_TIMEOUT) -> Version:
    """Read ``serverVersion`` from ``/config/console.json`` within ``timeout`` seconds.

    Raises ``ValueError`` when the answer carries no readable version and the
    ``requests`` exception on transport failure.
    """
    status, body = run(server_version(timeout), http_client.exchange, None)
    return read_version(status, body)


def unreadable(src: str, exc: BaseException, stacklevel: int = 3) -> None:
    """Warn that the version of ``src`` could not be read, so nothing was checked."""
    reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
    warnings.warn(
        f"could not read the version of {src}: {reason}; nothing was checked",
        GetPlatformVersionWarning,
        stacklevel=stacklevel + 1,
    )


def probe_version(
    http_client: HttpClient, timeout: float = DEFAULT_LOGIN_TIMEOUT
) -> Optional[Version]:
    """The server's version, or None after one ``GetPlatformVersionWarning``.

    Any failure to read (an answer without a version, a transport error) means "not
    checked", never a failure.
    """
    try:
        return get_server_version(http_client, timeout=timeout)
    except Exception as exc:
        unreadable(http_client.url, exc, stacklevel=4)
    return None


def version_gate(http_client: HttpClient, check: Callable[[Version], None], timeout: float) -> None:
    """Read the server's version and ``check`` it: the one rule of every version check.

    Unreadable: ``GetPlatformVersionWarning`` and nothing checked. Outside the
    requirement: ``check`` raises ``VersionMismatchError``.
    """
    version = probe_version(http_client, timeout=timeout)
    if version is not None:
        check(version)


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


class SpecCheck:
    """``requires_server``: a check of a version against a specifier, for the gate."""

    __slots__ = ("spec", "src")

    def __init__(self, spec: SpecifierSet, src: str) -> None:
        self.spec = spec
        self.src = src

    def __call__(self, version: Version) -> None:
        check_specifier(version, self.spec, src=self.src)
