"""What an answer to the caller's request means, and how much of it the auth may read.

One rule for every front-end, without I/O (:func:`next_step`, a small predicate in the
manner of urllib3's ``Retry.is_retry``), for an answer from the Tanium origin to a
request that carried the session:

- a 2xx confirms the session, except from the API Gateway (it confirms nothing) and
  from SOAP, whose answer is inspected (failures come in-band, in a 200);
- a status in ``refresh_status_codes``, or a redirect to another origin, makes the
  auth judge the session;
- anything else is the caller's.

One capped read per wire, with these semantics in every front-end:

- the auth reads at most :data:`~.protocol.MAX_ANSWER_BYTES` of a body, decoded, and
  nothing at all when ``Content-Length`` already says more; chunked and compressed
  bodies are counted as they are decoded (:class:`Decoder` for the wires that hand over
  raw bytes), so an unending body or a decompression bomb costs at most the cap;
- what it read is put back: the caller always gets the complete body it would have got
  without the auth (``read()``, ``text()``, streaming alike);
- a body read whole gives its connection back at once (a request waiting for another's
  validation holds no connection); a body the auth will not return (a 401/403 before
  the resend) is closed, never drained past the cap.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Collection
from typing import Optional

from .protocol import MAX_ANSWER_BYTES, SOAP_PATH

__all__ = [
    "CONFIRM",
    "DONE",
    "ENCODED_READ_CHUNK",
    "INSPECT",
    "READ_CHUNK",
    "RECOVER",
    "Decoder",
    "Next",
    "announced_too_long",
    "next_step",
]

#: Bytes asked for per read while the auth reads a body itself.
READ_CHUNK = 1 << 14
#: Bytes asked for per read of a compressed body, where the client may inflate each
#: read whole (urllib3 1.26 does): a KiB of a deflate bomb inflates to about a MiB.
ENCODED_READ_CHUNK = 1 << 10


class Next(enum.Enum):
    """What an answer from the Tanium origin asks of the auth."""

    DONE = "done"  # nothing: the answer is the caller's
    CONFIRM = "confirm"  # the session is alive: note it (no I/O)
    INSPECT = "inspect"  # a SOAP 2xx: read it (capped), judge it in-band
    RECOVER = "recover"  # judge the session: resend, permission answer, or raise


#: The steps, as module constants (the hot path compares them by identity).
DONE, CONFIRM, INSPECT, RECOVER = Next.DONE, Next.CONFIRM, Next.INSPECT, Next.RECOVER


def next_step(
    status: int, special: Optional[str], codes: Collection[int], away: bool = False
) -> Next:
    """The one answer rule. ``special``: ``SOAP_PATH`` or ``GATEWAY_PATH`` when the
    request went there, else None; ``codes``: the auth's ``refresh_status_codes``;
    ``away``: the answer is a redirect to another origin (a sign-in page, the way a
    gateway answers a dead token), judged like a 401."""
    if 200 <= status < 300:
        if special is None:
            return CONFIRM
        return INSPECT if special == SOAP_PATH else DONE
    if away and 300 <= status < 400:
        return RECOVER
    return RECOVER if status in codes else DONE


def announced_too_long(content_length: Optional[str]) -> bool:
    """True when a ``Content-Length`` header announces more than the auth may read."""
    return (
        content_length is not None
        and content_length.isdigit()
        and int(content_length) > MAX_ANSWER_BYTES
    )


class Decoder:
    """Decodes a raw body (identity, gzip or deflate) chunk by chunk, keeping at most
    ``cap`` decoded bytes: :meth:`feed` says False once the body is longer (or cannot
    be decoded), and no call ever inflates more than ``cap + 1`` bytes."""

    __slots__ = ("_kept", "_over", "_size", "_zlib", "cap", "raw")

    def __init__(self, wbits: Optional[int], cap: int = MAX_ANSWER_BYTES) -> None:
        self._zlib = zlib.decompressobj(wbits) if wbits is not None else None
        self._kept: list[bytes] = []
        self._size = 0
        self._over = False
        self.cap = cap
        self.raw = wbits == -zlib.MAX_WBITS

    @classmethod
    def of(cls, content_encoding: Optional[str], cap: int = MAX_ANSWER_BYTES) -> Optional[Decoder]:
        """A decoder for a ``Content-Encoding``; None for one it cannot decode (``br``,
        ``zstd``, several): such a body is not read by the auth at all."""
        encoding = (content_encoding or "").strip().lower()
        if encoding in ("", "identity"):
            return cls(None, cap)
        if encoding in ("gzip", "x-gzip"):
            return cls(zlib.MAX_WBITS | 16, cap)
        if encoding == "deflate":
            return cls(zlib.MAX_WBITS, cap)  # zlib-wrapped; raw deflate is tried on error
        return None

    def feed(self, raw: bytes) -> bool:
        """Decode one raw chunk; False once more than ``cap`` bytes came out, or the
        data cannot be decoded (then :attr:`body` is None)."""
        if self._over:
            return False
        if self._zlib is None:
            return self._keep(raw)
        room = self.cap - self._size
        try:
            out = self._zlib.decompress(raw, room + 1)
        except zlib.error:
            if self.raw or self._size:
                self._over = True
                return False
            self._zlib, self.raw = zlib.decompressobj(-zlib.MAX_WBITS), True  # raw deflate
            return self.feed(raw)
        return self._keep(out)

    def _keep(self, out: bytes) -> bool:
        room = self.cap - self._size
        self._kept.append(out[:room])
        self._size += len(out)
        self._over = self._size > self.cap
        return not self._over

    @property
    def prefix(self) -> bytes:
        """The decoded body so far, at most ``cap`` bytes."""
        return b"".join(self._kept)

    @property
    def body(self) -> Optional[bytes]:
        """The decoded body, or None once it was longer than the cap (or broken)."""
        return None if self._over else self.prefix
