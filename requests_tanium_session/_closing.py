"""``with obj:`` for the objects that hold something to release."""

from __future__ import annotations

from types import TracebackType
from typing import Optional, TypeVar

__all__ = ["Closing"]

_C = TypeVar("_C", bound="Closing")


class Closing:
    """``with obj:`` calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        """Release what this object holds."""

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
