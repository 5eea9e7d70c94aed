"""Session stores: one Tanium session shared by many processes and machines.

A store keeps one *record* per Tanium origin (JSON: token, confirmed-at wall time,
generation) and a *fleet lock*, the single flight of the whole fleet:

- :class:`MemoryStore`: this process only (what an auth does without a store).
- :class:`FileStore`: many processes on one machine; a ``0600`` file replaced
  atomically and an ``fcntl`` lock file beside it.
- :class:`RedisStore`: many machines (``redis``/Valkey, extra ``[redis]``); the record
  lives under a key that names the origin (never the token) with a TTL of
  ``expires_after``; the lock is ``SET NX PX`` with a lease, released only by its owner.

Whoever can read the store holds the session: keep files in a private directory, use
``rediss://`` and Redis ACLs. A store that fails degrades to this process alone with
one WARNING per outage; it never fails a request that could be sent. Tokens in the
store are never logged, and malformed records are treated as empty with a WARNING that
quotes none of them.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from ._effects import STORE_BUDGET
from ._worker import Worker, on_worker
from .protocol import MAX_JSON_BYTES, check_token
from .stats import DEGRADED, STORE_BACK, event_fields

__all__ = [
    "FileStore",
    "Fleet",
    "MemoryStore",
    "Record",
    "RedisStore",
    "SessionStore",
    "StoreHealth",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How often a waiter polls a fleet lock held elsewhere, in seconds.
POLL = 0.005

#: Seconds a failed store is skipped before one operation probes it again.
BACKOFF = 5.0

#: The longest a failing store is skipped between probes (the wait doubles per failure).
MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class Record:
    """What a store holds: the token, when it was confirmed (by the store's own clock:
    Redis ``TIME``, the machine's clock for a file), a generation, the origin it belongs
    to (a record of another origin is never adopted), and until when (the store's clock)
    the fleet leaves a busy ``/auth`` alone (``busy_until``).

    ``age`` and ``busy_left`` are not stored: they are read off the store's clock when
    the record is read, so it is judged without comparing two machines' wall clocks."""

    token: str
    confirmed_at: float
    generation: int
    origin: str = ""
    busy_until: float = 0.0
    age: float = field(default=0.0, compare=False)
    busy_left: float = field(default=0.0, compare=False)

    def __repr__(self) -> str:  # the token is a secret
        return (
            f"Record(confirmed_at={self.confirmed_at!r}, generation={self.generation!r}, "
            f"origin={self.origin!r}, busy_until={self.busy_until!r}, age={self.age!r})"
        )

    def dumps(self) -> bytes:
        """The record as JSON."""
        data = {
            "token": self.token,
            "confirmed_at": self.confirmed_at,
            "generation": self.generation,
            "origin": self.origin,
        }
        if self.busy_until:
            data["busy_until"] = self.busy_until
        return json.dumps(data).encode("utf-8")

    @classmethod
    def loads(cls, data: bytes, now: Optional[float] = None) -> Optional[Record]:
        """The record in ``data`` (aged by ``now``, the store's clock), or None when it
        is anything else (never raises)."""
        try:
            obj = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict):
            return None
        token, gen = obj.get("token"), obj.get("generation")
        at: Any = obj.get("confirmed_at")
        busy: Any = obj.get("busy_until", 0.0)
        if not (_number(at) and _number(busy)):
            return None
        if isinstance(gen, bool) or not isinstance(gen, int):
            return None
        origin = obj.get("origin", "")
        if not isinstance(origin, str):
            return None
        try:
            token = check_token(token)
        except (TypeError, ValueError):
            return None
        at, busy = float(at), float(busy)
        if now is None:
            return cls(token, at, gen, origin, busy)
        return cls(token, at, gen, origin, busy, now - at, busy - now if busy else 0.0)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class SessionStore(abc.ABC):
    """Where a fleet keeps its session: raw bytes of one record and a fleet lock.

    Subclasses implement :meth:`load`, :meth:`save`, :meth:`acquire` and
    :meth:`release`; any exception they raise, or a call that overruns its budget,
    counts as "the store is down".
    """

    #: A name for the origin, set by :meth:`bind` (keys and files name it, never the token).
    origin: str = ""

    #: Seconds the store is skipped after a failure before it is probed again (set it on
    #: an instance to change it); doubles while the probes fail, up to ``MAX_BACKOFF``.
    backoff: float = BACKOFF

    #: Whether a call may block (then it runs on a worker thread, within its budget).
    blocking: bool = True

    def bind(self, origin: str) -> None:
        """Called once by the auth that uses this store, with its origin's name."""
        if self.origin and self.origin != origin:
            raise ValueError(
                f"this store already serves {self.origin}; use one store per Tanium server"
            )
        self.origin = origin

    @abc.abstractmethod
    def load(self) -> Optional[bytes]:
        """The stored record's bytes, or None when there is none."""

    @abc.abstractmethod
    def save(self, data: bytes, ttl: float) -> None:
        """Replace the record; it may vanish after ``ttl`` seconds."""

    @abc.abstractmethod
    def acquire(self, lease: float, wait: float) -> Optional[object]:
        """Take the fleet lock within ``wait`` seconds: a handle, or None (not taken).

        A holder that dies frees the lock after ``lease`` seconds at the most.
        """

    @abc.abstractmethod
    def release(self, handle: object) -> Optional[bool]:
        """Give back the fleet lock taken as ``handle`` (only its owner's); False when
        it was no longer this owner's (expired, evicted or taken), else True or None."""

    def now(self) -> float:
        """The store's own clock, in seconds: what records are stamped and aged with.
        The machine's wall clock by default; a store shared by machines answers its
        server's clock (Redis ``TIME``), so no two machines' clocks are compared."""
        return time.time()

    def load_at(self) -> tuple[Optional[bytes], float]:
        """The record's bytes and :meth:`now` when they were read."""
        return self.load(), self.now()

    def after_fork(self) -> None:  # noqa: B027 - an optional hook: most stores hold nothing
        """Called in a child process after ``fork``: drop what the parent held."""


class MemoryStore(SessionStore):
    """This process only: auths that share one ``MemoryStore`` share one session."""

    blocking = False

    def __init__(self) -> None:
        self._data: Optional[bytes] = None
        self._lock = threading.Lock()

    def load(self) -> Optional[bytes]:
        return self._data

    def save(self, data: bytes, ttl: float) -> None:
        self._data = data

    def acquire(self, lease: float, wait: float) -> Optional[object]:
        return self._lock if self._lock.acquire(timeout=wait) else None

    def release(self, handle: object) -> Optional[bool]:
        if handle is not self._lock or not self._lock.locked():
            return False  # taken before a fork, or given back already
        self._lock.release()
        return True

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # a parent thread may hold it: nobody here will

    def __repr__(self) -> str:
        return "MemoryStore()"


def _private(path: Path, what: str, directory: bool = False) -> None:
    """Refuse ``path`` when another user owns it or group/others may read it."""
    _checked(path.stat(), path, what, directory=directory)


def _checked(
    info: os.stat_result, path: Path, what: str, directory: bool = False, regular: bool = False
) -> None:
    """Refuse what ``info`` describes unless it is this user's, closed to others, and a
    directory (or a regular file) when asked."""
    if regular and not stat.S_ISREG(info.st_mode):
        raise PermissionError(f"{what} {path} is not a regular file")
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{what} {path} belongs to another user")
    if directory and not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{what} {path} is not a directory")
    if info.st_mode & 0o077:
        fix = (
            f"keep the store in a private directory instead (mkdir -m 700 {path}/tanium)"
            if directory
            else "chmod go= it"
        )
        raise PermissionError(
            f"{what} {path} is open to group or others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"whoever can read the store holds the session: {fix}"
        )


class FileStore(SessionStore):
    """Many processes on one machine: a ``0600`` JSON file and a lock file beside it.

    Args:
        path: the record file. It and its directory must belong to this user and be
            closed to group and others (``PermissionError`` here otherwise); a missing
            directory is created ``0700`` (its parent must exist).
    """

    def __init__(self, path: Union[str, os.PathLike[str]]) -> None:
        self.path = Path(os.fspath(path)).absolute()
        with contextlib.suppress(FileExistsError):
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700)
        _private(self.path.parent, "directory", directory=True)
        if self.path.exists() or self.path.is_symlink():
            if self.path.is_symlink():
                raise PermissionError(f"store file {self.path} is a symbolic link")
            _private(self.path, "store file")
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def _directory(self) -> int:
        """The store's directory, opened without following a symbolic link and checked
        again at each use: a descriptor the files are opened relative to."""
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path.parent, flags)
        try:
            _checked(os.fstat(fd), self.path.parent, "directory", directory=True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open(self, dfd: int, name: str, flags: int) -> int:
        """``name`` in the directory: never through a link, never blocking (a FIFO), a
        regular file of this user closed to others, or ``PermissionError``."""
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(name, flags, 0o600, dir_fd=dfd)
        try:
            _checked(os.fstat(fd), self.path.parent / name, "store file", regular=True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def load(self) -> Optional[bytes]:
        dfd = self._directory()
        try:
            try:
                fd = self._open(dfd, self.path.name, os.O_RDONLY)
            except FileNotFoundError:
                return None
        finally:
            os.close(dfd)
        with os.fdopen(fd, "rb") as f:
            return f.read(MAX_JSON_BYTES + 1)

    def save(self, data: bytes, ttl: float) -> None:
        dfd = self._directory()
        tmp = f".{self.path.name}.{uuid.uuid4().hex}"
        try:
            fd = self._open(dfd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                # Atomic: readers see the old record or the new one. No fsync: a record
                # lost to a machine crash costs one validation, not a session.
                os.replace(tmp, self.path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
        finally:
            os.close(dfd)

    def acquire(self, lease: float, wait: float) -> Optional[object]:
        import fcntl

        dfd = self._directory()
        try:
            fd = self._open(dfd, self.lock_path.name, os.O_RDWR | os.O_CREAT)
        finally:
            os.close(dfd)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd  # the kernel frees it when this process dies
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(POLL)

    def release(self, handle: object) -> Optional[bool]:
        import fcntl

        assert isinstance(handle, int)
        try:
            fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            os.close(handle)
        return True

    def __repr__(self) -> str:
        return f"FileStore({str(self.path)!r})"


#: Deletes the lock only when it still holds the owner's value.
_RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


class RedisStore(SessionStore):
    """Many machines: a Redis (or Valkey) key per origin and a leased lock.

    Args:
        redis_client: a ``redis.Redis`` (extra ``[redis]``); use ``rediss://`` and ACLs.
        key: the record's key; default ``tanium-session:<origin>``. The lock is
            ``<key>:lock``. Neither ever contains the token.
    """

    def __init__(self, redis_client: Any, key: Optional[str] = None) -> None:
        try:
            import redis
        except ImportError:
            raise ImportError(
                'RedisStore needs redis-py: pip install "requests-tanium-session[redis]"'
            ) from None
        if not isinstance(redis_client, redis.Redis):
            raise TypeError("redis_client must be a redis.Redis")
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError("key must be a non-empty str")
        # Any: redis-py's annotations differ across the 5.x the package allows (pipeline()
        # untyped in 5.0, sync-or-async result unions); the tests drive a real server.
        self._client: Any = redis_client
        self._key = key

    @property
    def key(self) -> str:
        """The record's key."""
        return self._key or f"tanium-session:{self.origin}"

    def load(self) -> Optional[bytes]:
        return self.load_at()[0]

    def load_at(self) -> tuple[Optional[bytes], float]:
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self.key)
        pipe.time()
        data, (seconds, micros) = pipe.execute()
        if data is not None and not isinstance(data, bytes):
            data = str(data).encode("utf-8")
        return data, int(seconds) + int(micros) / 1e6

    def now(self) -> float:
        seconds, micros = self._client.time()
        return int(seconds) + int(micros) / 1e6

    def save(self, data: bytes, ttl: float) -> None:
        self._client.set(self.key, data, px=max(1, int(ttl * 1000)))

    def acquire(self, lease: float, wait: float) -> Optional[object]:
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while not self._client.set(f"{self.key}:lock", owner, nx=True, px=int(lease * 1000)):
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL)
        return owner

    def release(self, handle: object) -> Optional[bool]:
        return bool(self._client.eval(_RELEASE, 1, f"{self.key}:lock", str(handle)))

    def __repr__(self) -> str:
        return f"RedisStore(key={self.key!r})"


@dataclass(frozen=True)
class StoreHealth:
    """How a session store is doing, as the auth sees it (no I/O to read it).

    ``ok`` is False while the store is skipped after a failure; ``degraded_since`` is
    the wall-clock time of the failure that began the outage; ``last_error`` names
    the type of the last error (never its text, which may quote the store's address).
    """

    ok: bool
    degraded_since: Optional[float] = None
    last_error: Optional[str] = None


_HEALTHY = StoreHealth(True)


class Fleet:
    """A store as one auth uses it: every operation within a wall-clock budget, and
    outages degraded to this process alone.

    A failure or a time-out opens a circuit breaker: the store is skipped (no I/O, the
    request goes on alone) for ``store.backoff`` seconds, then one operation probes it
    (half-open). Only a success of the kind of operation that failed closes it (a store
    that reads but refuses writes stays skipped, without flapping); a failure opens it
    again for twice as long (up to ``MAX_BACKOFF``). One WARNING per outage, one INFO
    when it is back; a lock lost before it was given back is one WARNING.
    """

    def __init__(self, store: SessionStore, origin: str, lease: float, ttl: float) -> None:
        if not isinstance(store, SessionStore):
            raise TypeError("store must be a SessionStore (MemoryStore, FileStore, RedisStore)")
        store.bind(origin)
        self.store = store
        self.origin = origin
        self.lease = lease
        self.ttl = ttl
        self.after_fork()
        self._garbled = False
        self._lock_busy = False
        self._lock_lost = False
        #: Counted operations, named as the AuthStats fields they feed.
        self.counts = dict.fromkeys(("store_reads", "store_publishes", "store_outages"), 0)
        #: Called with ``(kind, cause)`` when the store degrades or comes back.
        self.on_event: Optional[Callable[[str, str], None]] = None

    def after_fork(self) -> None:
        """A closed breaker and fresh locks (in a child process: nothing of the parent's)."""
        self._guard = threading.Lock()
        self._health = _HEALTHY
        self._failing = ""  # the kind of operation that failed
        self._closed_until = 0.0  # monotonic: the store is skipped until then
        self._backoff = 0.0
        self._probing = False
        self.store.after_fork()

    @property
    def health(self) -> StoreHealth:
        """The store's health now."""
        return self._health

    # -- the breaker ------------------------------------------------------------------

    def _call(
        self,
        doing: str,
        budget: float,
        fn: Callable[[], T],
        late: Optional[Callable[[T], None]] = None,
    ) -> tuple[bool, Optional[T]]:
        """``(True, fn())`` within ``budget`` seconds, or ``(False, None)`` when the store
        failed, timed out or is skipped while the breaker is open."""
        with self._guard:
            if not self._health.ok:
                if self._probing or time.monotonic() < self._closed_until:
                    return False, None
                self._probing = True  # half-open: this call probes for every caller
        try:
            if not self.store.blocking:
                result = fn()
            else:

                def give_up(worker: Worker[T]) -> BaseException:
                    return TimeoutError(f"did not finish within {budget:g} s")

                result = on_worker(lambda worker: fn(), budget, give_up, late)
        except Exception as exc:
            self._failed(doing, exc)
            return False, None
        self._worked(doing)
        return True, result

    def _failed(self, doing: str, exc: BaseException) -> None:
        with self._guard:
            first = self._health.ok
            self._backoff = self.store.backoff if first else min(2 * self._backoff, MAX_BACKOFF)
            self._closed_until = time.monotonic() + self._backoff
            self._probing = False
            self._failing = doing
            since = time.time() if first else self._health.degraded_since
            self._health = StoreHealth(False, since, type(exc).__name__)
            if first:
                self.counts["store_outages"] += 1
        if first:
            cause = f"{type(exc).__name__} while {doing}"
            log.warning(
                "session store %r is unavailable (%s); going on with this process alone, "
                "trying it again in %.1f s",
                self.store,
                cause,
                self._backoff,
                extra=event_fields(DEGRADED, self.origin, cause, None),
            )
            self._notify(DEGRADED, cause)

    def _worked(self, doing: str) -> None:
        if self._health.ok:
            return
        with self._guard:
            was = self._health
            if doing != self._failing:  # another kind works: the failing one may not
                self._probing = False
                self._closed_until = time.monotonic() + self._backoff
                return
            self._health, self._probing, self._backoff = _HEALTHY, False, 0.0
        if not was.ok:
            cause = f"it answered again after {was.last_error}"
            log.info("session store %r is back", self.store,
                     extra=event_fields(STORE_BACK, self.origin, cause, None))  # fmt: skip
            self._notify(STORE_BACK, cause)

    def _count(self, name: str) -> None:
        with self._guard:
            self.counts[name] += 1

    def _notify(self, kind: str, cause: str) -> None:
        callback = self.on_event
        if callback is not None:
            callback(kind, cause)

    # -- operations -------------------------------------------------------------------

    def read(self, budget: float = STORE_BUDGET) -> Optional[Record]:
        """The record, aged by the store's clock, or None (empty, malformed or
        unavailable)."""
        worked, got = self._call("reading", budget, self.store.load_at)
        if worked:
            self._count("store_reads")
        data, now = got if got is not None else (None, 0.0)
        if data is None:
            return None
        record = Record.loads(data, now) if len(data) <= MAX_JSON_BYTES else None
        if record is None:
            if not self._garbled:
                self._garbled = True
                log.warning("session store %r holds something that is not a record; "
                            "treated as empty", self.store)  # fmt: skip
            return None
        self._garbled = False
        return record

    def publish(self, token: str, previous: Optional[Record], budget: float = STORE_BUDGET) -> None:
        """Write ``token`` as confirmed now (by the store's clock)."""
        generation = previous.generation + 1 if previous is not None else 1
        store = self.store

        def save() -> None:
            record = Record(token, store.now(), generation, self.origin)
            store.save(record.dumps(), self.ttl)

        if self._call("writing", budget, save)[0]:
            self._count("store_publishes")

    def publish_busy(self, previous: Record, pause: float, budget: float = STORE_BUDGET) -> None:
        """Tell the fleet to leave a busy ``/auth`` alone for ``pause`` seconds (the
        record otherwise as it was)."""
        store = self.store

        def save() -> None:
            record = Record(previous.token, previous.confirmed_at, previous.generation,
                            self.origin, store.now() + pause)  # fmt: skip
            store.save(record.dumps(), self.ttl)

        self._call("writing", budget, save)

    def acquire(
        self, wait: Optional[float] = None, budget: float = STORE_BUDGET
    ) -> Optional[object]:
        """Take the fleet lock, waiting at most ``wait`` seconds (default: a lease);
        None: going on without it."""
        wait = self.lease if wait is None else wait
        worked, handle = self._call(
            "locking", wait + budget, lambda: self.store.acquire(self.lease, wait), self._give_back
        )
        if worked and handle is None:
            if not self._lock_busy:
                self._lock_busy = True
                log.warning("the fleet lock of %r was not free within %.1f s; going on "
                            "without it", self.store, wait)  # fmt: skip
        elif worked:
            self._lock_busy = False
        return handle

    def release(self, handle: Optional[object], budget: float = STORE_BUDGET) -> None:
        """Give back a lock that :meth:`acquire` took (one WARNING when it was lost)."""
        if handle is None:
            return
        worked, given = self._call("unlocking", budget, lambda: self.store.release(handle))
        if worked and given is False:
            if not self._lock_lost:
                self._lock_lost = True
                log.warning(
                    "the fleet lock of %r was lost before it was given back (its lease "
                    "expired, or the store evicted or handed it over); another process may "
                    "have held it meanwhile: give the store noeviction and a longer lease",
                    self.store,
                )
        elif worked:
            self._lock_lost = False

    def _give_back(self, handle: object) -> None:
        """A lock taken after its caller stopped waiting: give it straight back."""
        with contextlib.suppress(Exception):
            self.store.release(handle)
