"""SessionId: pytan3's session-id authentication method, thread-safe and honest about time.

The pytan3 API over the parts every auth shares (:class:`~._face.Core`: the token and
its clock, the policy, the flights, the fleet), with an :class:`HttpClient` as its
wire. ``TaniumSessionAuth.session_id`` is a ``SessionId`` over the auth's own parts:
both see one token, one set of callbacks and one set of counters.

The verbs, each with one meaning:

- *validate*: ask the server whether the token lives (one ``/auth`` call, or
  ``GET /api/v2/session/current`` for an API token); ``login()`` is pytan3's name for
  the same thing.
- *adopt*: take a token as the current one, confirmed now (the ``token`` setter).
- *log out*: end this session (``logout: 0``) or every session of its user (``1``).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, ClassVar, Optional, Union

from ._face import Core, CoreView
from .http_client import HttpClient
from .protocol import (
    DEFAULT_EXPIRES_AFTER,
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_LOGOUT_TIMEOUT,
    DEFAULT_REVALIDATE_AFTER,
    HEADER,
    check_token,
    is_api_token,
)
from .versions import check_requirement, version_gate

__all__ = ["SessionId", "check_token", "is_api_token", "over"]

log = logging.getLogger(__name__)


def _level(lvl: Union[str, int]) -> int:
    if isinstance(lvl, int) and not isinstance(lvl, bool):
        return lvl
    if isinstance(lvl, str):
        value = logging.getLevelName(lvl.upper())
        if isinstance(value, int):
            return value
    raise ValueError(f"lvl must be a logging level name such as 'info', not {lvl!r}")


class SessionId(CoreView):
    """A Tanium session id (or API token) kept alive through ``/auth``.

    The pytan3 ``SessionId`` API (``get_name``, ``get_args*``, ``validate``, ``login``,
    ``logout``, ``token``, ``last_used``, ``expired``, …) with these differences:
    thread-safe single flight, ``time.monotonic()``, a dead state after a definitive
    rejection, wall-clock deadlines, and exceptions under ``TaniumAuthError``.

    Args:
        http_client: the :class:`HttpClient` of the Tanium server.
        session: a session id (``uid-counter-hex``) or API token (``token-…``):
            printable ASCII without whitespace, at most 4096 characters. It counts as
            confirmed now.
        login_timeout: wall-clock seconds for one validate or login call.
        logout_timeout: wall-clock seconds for one logout call.
        expires_after: idle seconds after which ``expired`` is True.
        ver_check: check ``get_version_req()`` against the server at construction
            (only when a requirement is set).
        lvl: a level for the ``requests_tanium_session.session_id`` logger; None (the
            default) leaves logging configuration alone.

    Raises:
        TypeError, ValueError: a malformed argument (the message never shows a value).
        VersionMismatchError: ``ver_check`` found the server outside the requirement.
    """

    def __init__(
        self,
        http_client: HttpClient,
        session: str,
        login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
        logout_timeout: float = DEFAULT_LOGOUT_TIMEOUT,
        expires_after: float = DEFAULT_EXPIRES_AFTER,
        ver_check: bool = True,
        lvl: Union[str, int, None] = None,
    ) -> None:
        if not isinstance(http_client, HttpClient):
            raise TypeError("http_client must be an HttpClient")
        token = check_token(session)
        if lvl is not None:
            log.setLevel(_level(lvl))
        self._http_client = http_client
        self._core = Core(
            http_client,
            token,
            revalidate_after=DEFAULT_REVALIDATE_AFTER,
            expires_after=expires_after,
            login_timeout=login_timeout,
            logout_timeout=logout_timeout,
        )
        if ver_check and any(self.get_version_req().values()):
            check = partial(check_requirement, req=self.get_version_req(), src=http_client.url)
            version_gate(http_client, check, timeout=self.login_timeout)

    # -- pytan3 class methods ---------------------------------------------------

    @classmethod
    def get_name(cls) -> str:
        """The name of this authentication method (pytan3-compatible)."""
        return "session_id"

    @classmethod
    def get_version_req(cls) -> dict[str, str]:
        """Server version requirements; empty values check nothing (pytan3-compatible)."""
        return {"vmin": "", "vmax": "", "veq": ""}

    @classmethod
    def get_args(cls) -> list[str]:
        """Arguments this method takes (pytan3-compatible)."""
        return ["session"]

    @classmethod
    def get_args_required(cls) -> list[str]:
        """Arguments that must be given (pytan3-compatible)."""
        return ["session"]

    @classmethod
    def get_args_secure(cls) -> list[str]:
        """Arguments whose prompts must hide the input: a session id is a bearer secret.

        pytan3 answers ``[]`` here; this package deliberately answers ``["session"]``.
        """
        return ["session"]

    # -- the token ------------------------------------------------------------------

    @property
    def http_client(self) -> HttpClient:
        """The client used for ``/auth``."""
        return self._http_client

    @property
    def token(self) -> str:
        """The current token, validated first when it has gone stale (pytan3's meaning;
        an auth's ``token`` does no I/O)."""
        core = self._core
        return core.state.fresh() or core.run(core.policy.revalidate(core.flights, "stale token"))

    @token.setter
    def token(self, value: str) -> None:
        core = self._core
        core.policy.adopt(value, core.flights)

    @property
    def last_used(self) -> Optional[float]:
        """Seconds since the token was last confirmed (a float); None without a live token."""
        return self._core.state.age()

    @property
    def expires_in(self) -> Optional[float]:
        """Seconds until the token counts as expired; None without a live token."""
        used = self.last_used
        return None if used is None else max(0.0, self.expires_after - used)

    @property
    def expired(self) -> bool:
        """True without a live token or when ``last_used >= expires_after``."""
        used = self.last_used
        return used is None or used >= self.expires_after

    @property
    def uid(self) -> Optional[int]:
        """User id: the first field of a ``uid-counter-hex`` token; None for API tokens."""
        return self._core.policy.uid

    @property
    def token_headers(self) -> dict[str, str]:
        """``{"session": token}``, validated first when stale (pytan3-compatible)."""
        return {HEADER: self.token}

    # -- server calls ---------------------------------------------------------

    def validate(self, **kwargs: Any) -> str:
        """Validate the token (one server call); adopt and return what the server answers.

        Only ``cause=`` is accepted (logged).

        Raises:
            InvalidToken: the server rejected the token (it is dropped).
            NotLoggedInError: there is no live token (no server call).
            AuthServiceUnavailable: 5xx/408/429; the token is kept.
            LoginError: a malformed answer, or a URL that is not a Tanium ``/auth``
                (the token is kept), or a call from inside a callback.
            requests.RequestException: transport failure, ``ReadTimeout`` at the deadline.
        """
        core = self._core
        token: str = core.run(core.policy.validate(core.flights, _cause(kwargs, "validate")))
        return token

    def login(self, **kwargs: Any) -> str:
        """Validate through ``/auth``; ``LoginError`` when rejected (pytan3-compatible).

        pytan3 raises ``NotImplementedError`` here; this package validates.
        """
        kwargs.setdefault("cause", "login")
        return self.validate(**kwargs)

    def logout(self, **kwargs: Any) -> None:
        """End this session (``logout: 0``); afterwards ``logged_in`` is False.

        Raises:
            LogoutError: any answer but 200 (on 5xx/408/429 the token is kept).
            NotLoggedInError: there is no live token.
        """
        self._core.run(self._core.policy.logout(False, _cause(kwargs, "logout")))

    def logout_all(self, **kwargs: Any) -> None:
        """End every session of this user (``logout: 1``); raises as :meth:`logout`."""
        self._core.run(self._core.policy.logout(True, _cause(kwargs, "logout all")))

    # -- display and pickling -------------------------------------------------

    def __repr__(self) -> str:
        used = self.last_used
        left = self.expires_in
        return (
            f"{type(self).__name__}(url={self.url!r}, uid={self.uid!r}, "
            f"logged_in={self.logged_in!r}, "
            f"last_used={None if used is None else round(used, 1)!r}, "
            f"expires_in={None if left is None else round(left, 1)!r})"
        )

    __str__ = __repr__

    _UNPICKLED: ClassVar[str] = "it was unpickled (tokens are never pickled); set .token"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "http_client": self._http_client,
            "login_timeout": self.login_timeout,
            "logout_timeout": self.logout_timeout,
            "expires_after": self.expires_after,
            "revalidate_after": self.revalidate_after,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._http_client = state["http_client"]
        self._core = Core(
            self._http_client,
            None,
            revalidate_after=state["revalidate_after"],
            expires_after=state["expires_after"],
            login_timeout=state["login_timeout"],
            logout_timeout=state["logout_timeout"],
        )
        self._core.state.ended = self._UNPICKLED


def _cause(kwargs: dict[str, Any], default: str) -> str:
    cause = kwargs.pop("cause", default)
    if kwargs:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
    return str(cause)


def over(core: Core, client: HttpClient) -> SessionId:
    """A ``SessionId`` over an auth's parts (``TaniumSessionAuth.session_id``)."""
    sid = SessionId.__new__(SessionId)
    sid._http_client = client
    sid._core = core
    return sid
