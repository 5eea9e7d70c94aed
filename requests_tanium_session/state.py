"""TokenState: the token, when it was last confirmed, its generation and why it ended.

No I/O. Every change happens under ``lock``; reads on the hot path (:meth:`fresh`,
:attr:`current`) take no lock: they read attributes that are only ever replaced whole.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from time import monotonic
from typing import Optional

from .protocol import API_TOKEN_PREFIX, DEFAULT_REVALIDATE_AFTER

__all__ = ["TokenState"]


class TokenState:
    """A token and its clock (``time.monotonic()``).

    "Confirmed" means the token was set, the server answered ``200`` to a validation
    of it, or a request carrying it got a ``2xx`` from the Tanium origin.
    """

    def __init__(self, token: Optional[str], lock: threading.Lock) -> None:
        self.lock = lock
        self.current: Optional[str] = token  #: the live token, or None (no I/O)
        self.generation = 0  #: bumps whenever the token changes or dies
        self.ok_seq = 0  #: number of the last validation the server answered 200
        self.ended = "no session was set"  #: why there is no live token
        self.got_mono = monotonic()  #: when this process got its token (monotonic)
        #: Tokens that died here lately: never to be taken back (from refresh or a store).
        self.dead: deque[str] = deque(maxlen=8)
        self._revalidate_after = float(DEFAULT_REVALIDATE_AFTER)
        self._stamp(monotonic())

    @property
    def revalidate_after(self) -> float:
        """Seconds after a confirmation during which the token counts as fresh."""
        return self._revalidate_after

    @revalidate_after.setter
    def revalidate_after(self, value: float) -> None:
        self._revalidate_after = value
        self._stamp(self.confirmed_at)

    def _stamp(self, at: float) -> None:
        # Two plain floats replaced whole: readers never see a half-done update. An API
        # token has an absolute lifetime, not an idle one: it never goes stale (a
        # 401/403 with it is still judged).
        self.confirmed_at = at
        token = self.current
        idle = token is None or not token.startswith(API_TOKEN_PREFIX)
        self._fresh_for = self._revalidate_after if idle else math.inf
        self.stale_at = at + self._fresh_for

    def fresh(self) -> Optional[str]:
        """The token if confirmed less than ``revalidate_after`` ago, else None."""
        tok = self.current
        if tok is not None and monotonic() < self.stale_at:
            return tok
        return None

    def age(self) -> Optional[float]:
        """Seconds since the last confirmation; None without a live token."""
        return None if self.current is None else monotonic() - self.confirmed_at

    def confirm(self, token: str) -> None:
        """A request carrying ``token`` succeeded (two float stores, no lock)."""
        if token == self.current:
            at = monotonic()
            self.confirmed_at = at
            self.stale_at = at + self._fresh_for

    def adopt(self, token: str, at: Optional[float] = None, got: Optional[float] = None) -> bool:
        """Take ``token``, confirmed now (or at monotonic time ``at``; obtained at
        monotonic time ``got``); True when it differs from the current one."""
        with self.lock:
            return self._set(token, at, got)

    def held_for(self) -> float:
        """Seconds since this process got its token (infinite without one)."""
        return math.inf if self.current is None else monotonic() - self.got_mono

    def answered(self, sent: str, token: str, seq: int) -> tuple[Optional[str], bool]:
        """The server confirmed ``sent`` as ``token`` in validation ``seq``.

        Returns the token to use and whether it changed. When another token was set
        meanwhile (or the session ended), that one wins and ``token`` is ignored.
        """
        with self.lock:
            if self.current != sent:
                return self.current, False
            self.ok_seq = max(self.ok_seq, seq)
            return token, self._set(token)

    def kill(self, token: str, why: str) -> bool:
        """End ``token`` if it is still the current one; True when it was."""
        with self.lock:
            if self.current != token:
                return False
            self.current = None
            self.ended = why
            self.generation += 1
            self.dead.append(token)
            return True

    def _set(self, token: str, at: Optional[float] = None, got: Optional[float] = None) -> bool:
        changed = token != self.current
        self.current = token
        self._stamp(monotonic() if at is None else at)
        if changed:
            self.generation += 1
            self.got_mono = monotonic() if got is None else got
        return changed
