"""Exceptions raised by requests-tanium-session.

The tree::

    requests.exceptions.RequestException
    └── TaniumAuthError            base; .response / .request where there was one
        ├── LoginError             the session cannot be (re)established
        │   ├── InvalidToken       the server rejected the token on validate
        │   └── NotLoggedInError   there is no live token (logged out, or known dead)
        ├── LogoutError            the server refused a logout
        ├── AuthServiceUnavailable /auth answered 5xx, 408 or 429; the token is kept
        └── VersionMismatchError   server version outside the requirement (a ValueError)

    GetPlatformVersionWarning(UserWarning)   the version could not be read

Transport failures (connection refused, timeouts, TLS errors) are not wrapped: the
``requests`` exception propagates unchanged.

No message, ``str()``, ``repr()`` or ``args`` carries a token, password or header value.
Exceptions pickle with their type and message; ``.request`` and ``.response`` are
dropped on pickling because they may hold secrets.
"""

from __future__ import annotations

from typing import Any

from requests.exceptions import RequestException

__all__ = [
    "AuthServiceUnavailable",
    "GetPlatformVersionWarning",
    "InvalidToken",
    "LoginError",
    "LogoutError",
    "NotLoggedInError",
    "TaniumAuthError",
    "VersionMismatchError",
]


class TaniumAuthError(RequestException):
    """Base of every error this package raises; carries ``request``/``response``."""

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)

    @property
    def retryable(self) -> bool:
        """True when trying again later may succeed (see google-auth's ``retryable``)."""
        return False

    def __reduce__(self) -> tuple[Any, ...]:
        # The request and response stay behind: they carry the session header.
        return (type(self), tuple(self.args))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class LoginError(TaniumAuthError):
    """The session cannot be established or re-established."""


class InvalidToken(LoginError):
    """The server rejected the token (401, 403 or another 4xx) when asked to validate it."""


class NotLoggedInError(LoginError):
    """There is no live token: it was logged out, or is known to be dead."""


class LogoutError(TaniumAuthError):
    """The server did not answer a logout with 200."""


class AuthServiceUnavailable(TaniumAuthError):
    """``/auth`` answered 5xx, 408 or 429: a transient failure; the token is kept."""

    @property
    def retryable(self) -> bool:
        return True


class VersionMismatchError(TaniumAuthError, ValueError):
    """The server's version is outside the requirement."""


class GetPlatformVersionWarning(UserWarning):
    """The server's version could not be read, so no version check was made."""
