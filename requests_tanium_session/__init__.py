"""requests-tanium-session: Tanium session authentication for ``requests``.

>>> session.auth = TaniumSessionAuth("https://tanium.example.com", session_id)
"""

import logging

from .auth import TaniumSession, TaniumSessionAuth
from .exceptions import (
    AuthServiceUnavailable,
    GetPlatformVersionWarning,
    InvalidToken,
    LoginError,
    LogoutError,
    NotLoggedInError,
    TaniumAuthError,
    VersionMismatchError,
)
from .http_client import HttpClient
from .session_id import SessionId
from .stats import AuthEvent, AuthStats
from .stores import FileStore, MemoryStore, RedisStore, SessionStore, StoreHealth

__version__ = "0.1.0"

__all__ = [
    "AuthEvent",
    "AuthServiceUnavailable",
    "AuthStats",
    "FileStore",
    "GetPlatformVersionWarning",
    "HttpClient",
    "InvalidToken",
    "LoginError",
    "LogoutError",
    "MemoryStore",
    "NotLoggedInError",
    "RedisStore",
    "SessionId",
    "SessionStore",
    "StoreHealth",
    "TaniumAuthError",
    "TaniumSession",
    "TaniumSessionAuth",
    "VersionMismatchError",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
