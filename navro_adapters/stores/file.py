"""A token store in a file, shared by the processes of one host (POSIX).

Layout, beside the token file ``path``:

* ``path`` holds every key's token as one JSON object,
  ``{"version": 1, "tokens": {key: {"record": {...}, "drop_at": <epoch s>}}}``. Several
  identities may share one file; the record is :meth:`Token.to_record` (access token, type,
  scope and absolute wall-clock instants), never the client secret. It is rewritten whole, by
  ``os.replace`` of an fsynced temporary file in the same directory, so a reader sees the old
  file or the new one and never half of one.
* ``path + ".lock"`` is a short mutex (``flock``) held only while the token file is read,
  modified and replaced, or while a refresh lock changes hands.
* ``path + ".refresh-<hash of key>.lock"`` is the refresh lock of one key. ``try_lock`` takes
  an exclusive ``flock`` on it without blocking and keeps that file descriptor open until
  ``unlock``; the kernel drops the lock when its holder dies (even by SIGKILL), so a crashed
  refresher never blocks its peers. The file also records the owner id and an expiry: a holder
  still alive past its ttl (hung, stopped, or one that lost track of its lock) is taken over by
  replacing the lock file, so its expired lock blocks nobody either.

Every file is created with mode 0600 whatever the umask. A corrupt or truncated token file is
read as empty, logged once, and overwritten by the next save.

Only local filesystems are supported: ``flock`` on NFS or SMB shares is emulated or absent.
On Windows (no ``fcntl``) constructing a FileStore raises :class:`NotImplementedError`; use
:class:`~navro_adapters.stores.RedisStore` there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Set, Union

from .._log import logger
from ..errors import ConfigurationError, TokenStoreError
from ..store import TokenRecord

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    _HAVE_FCNTL = False
else:
    _HAVE_FCNTL = True

__all__ = ["FILE_MODE", "FileStore"]

FILE_MODE = 0o600  # owner read/write only: the file holds bearer tokens
FORMAT_VERSION = 1  # the "version" field of the token file
MUTEX_TIMEOUT = 2.0  # seconds to wait for the short mutex before failing as a store error
MUTEX_POLL = 0.002  # seconds between attempts at the short mutex

_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass
class _HeldLock:
    """A refresh lock this process holds: the open descriptor *is* the lock."""

    owner: str
    fd: int


_stores: weakref.WeakSet[FileStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FileStore:
    """Share tokens between processes on one host through a file (see the module docstring).

    ``path`` is the token file; its directory must exist and be writable by every process
    of the fleet. Every method raises :class:`~navro_adapters.errors.TokenStoreError` on an
    I/O failure; the provider logs it and fetches directly. Thread-safe, fork-safe; the async
    methods run the file I/O on a worker thread and never block the event loop.
    """

    def __init__(self, path: Union[str, os.PathLike[str]]) -> None:
        if not _HAVE_FCNTL:
            raise NotImplementedError(
                "FileStore needs POSIX file locks (fcntl), which this platform lacks; "
                "use navro_adapters.RedisStore instead"
            )
        try:
            text = os.fspath(path)
        except TypeError:
            raise ConfigurationError("path", "must be a str or os.PathLike") from None
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError("path", "must be a non-empty file path")
        if os.path.isdir(text):
            raise ConfigurationError("path", "is a directory; give the token file's path")
        self.path = os.path.abspath(text)
        self._mutex_path = self.path + ".lock"
        self._held: Dict[str, _HeldLock] = {}  # by key; ownership is by owner id, not thread
        self._transient_fds: Set[int] = set()  # mutex descriptors open right now (for fork)
        self._fds_lock = threading.Lock()
        self._corrupt_logged = False
        _stores.add(self)

    def __repr__(self) -> str:
        return f"FileStore({self.path!r})"

    # -- the TokenStore protocol -----------------------------------------------------------------

    def load(self, key: str) -> Optional[TokenRecord]:
        """The record saved under ``key``, unless missing, past its ttl or unreadable."""
        # No mutex: writers replace the file atomically, so a read sees a whole version.
        entry = self._read_entries().get(key)
        if entry is None or entry["drop_at"] <= time.time():
            return None
        record: TokenRecord = dict(entry["record"])
        return record

    def save(self, key: str, record: TokenRecord, ttl: float) -> None:
        """Store ``record`` under ``key`` until ``ttl`` seconds from now (other keys kept)."""
        drop_at = time.time() + max(0.0, float(ttl))
        with self._mutex():
            entries = self._read_entries()
            now = time.time()
            entries = {k: v for k, v in entries.items() if v["drop_at"] > now}
            entries[key] = {"record": dict(record), "drop_at": drop_at}
            self._write_entries(entries)

    def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        """Take ``key``'s refresh lock without waiting; held until :meth:`unlock` or death.

        A lock whose holder died is free at once (the kernel releases it); one whose live
        holder is past its ``ttl`` is taken over.
        """
        lock_path = self._refresh_lock_path(key)
        expires_at = time.time() + max(0.0, float(ttl))
        with self._mutex():
            with self._fds_lock:
                held = self._held.get(key)
            if held is not None and held.owner == owner and self._is_current(held.fd, lock_path):
                self._write_lock_info(held.fd, owner, expires_at)
                return True
            fd = self._open_lock_file(lock_path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder_expires_at = self._read_lock_expiry(fd)
                os.close(fd)
                if holder_expires_at is not None and holder_expires_at > time.time():
                    return False
                # Its holder is alive but past its ttl: a fresh lock file, locked by us from
                # birth, replaces it; the old holder keeps an orphaned inode nobody else opens.
                logger.warning("taking over an expired refresh lock in %s", lock_path)
                fd = self._replace_lock_file(lock_path)
            except OSError as exc:
                os.close(fd)
                raise TokenStoreError(f"file store try_lock failed: {_describe(exc)}") from exc
            # Opened and locked under the mutex, so no takeover can have replaced the path.
            try:
                self._write_lock_info(fd, owner, expires_at)
            except TokenStoreError:
                _close_quietly(fd)  # releases the flock we just took
                raise
            with self._fds_lock:
                previous = self._held.pop(key, None)
                self._held[key] = _HeldLock(owner, fd)
        if previous is not None:  # our own lock that expired and was just taken over
            _close_quietly(previous.fd)
        return True

    def unlock(self, key: str, owner: str) -> None:
        """Release ``key``'s refresh lock if ``owner`` still holds it; otherwise do nothing."""
        with self._fds_lock:
            held = self._held.get(key)
            if held is None or held.owner != owner:
                return
            del self._held[key]
        # Closing the descriptor releases the flock; the file stays for the next holder. If the
        # lock was taken over, this descriptor is an orphaned inode and nobody else is touched.
        _close_quietly(held.fd)

    async def aload(self, key: str) -> Optional[TokenRecord]:
        return await asyncio.to_thread(self.load, key)

    async def asave(self, key: str, record: TokenRecord, ttl: float) -> None:
        await asyncio.to_thread(self.save, key, record, ttl)

    async def atry_lock(self, key: str, owner: str, ttl: float) -> bool:
        # A cancelled caller may leave the lock taken on the worker thread: it then expires
        # after ttl like any lock whose holder forgot it.
        return await asyncio.to_thread(self.try_lock, key, owner, ttl)

    async def aunlock(self, key: str, owner: str) -> None:
        await asyncio.to_thread(self.unlock, key, owner)

    # -- the token file ---------------------------------------------------------------------

    def _read_entries(self) -> Dict[str, Dict[str, Any]]:
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise TokenStoreError(f"file store read failed: {_describe(exc)}") from exc
        entries = _parse_entries(data)
        if entries is None:
            if not self._corrupt_logged:
                self._corrupt_logged = True
                logger.warning(
                    "token store file %s is corrupt or truncated; treating it as empty "
                    "(the next save rewrites it)",
                    self.path,
                )
            return {}
        return entries

    def _write_entries(self, entries: Dict[str, Dict[str, Any]]) -> None:
        payload = json.dumps(
            {"version": FORMAT_VERSION, "tokens": entries}, separators=(",", ":")
        ).encode("utf-8")
        temp_path = f"{self.path}.tmp-{secrets.token_hex(6)}"
        try:
            fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, FILE_MODE)
        except OSError as exc:
            raise TokenStoreError(f"file store save failed: {_describe(exc)}") from exc
        try:
            try:
                os.fchmod(fd, FILE_MODE)  # the umask may have removed bits we need
                _write_all(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp_path, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp_path)
            raise TokenStoreError(f"file store save failed: {_describe(exc)}") from exc
        _fsync_directory(os.path.dirname(self.path))
        self._corrupt_logged = False  # a later corruption is news again

    # -- locks ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        """The short cross-process mutex around read-modify-write and lock hand-overs."""
        fd = self._open_lock_file(self._mutex_path)
        with self._fds_lock:
            self._transient_fds.add(fd)
        try:
            give_up_at = time.monotonic() + MUTEX_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= give_up_at:
                        raise TokenStoreError(
                            f"file store busy: its lock was held for over {MUTEX_TIMEOUT:g} s"
                        ) from None
                    time.sleep(MUTEX_POLL)
                except OSError as exc:
                    raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc
            yield
        finally:
            with self._fds_lock:
                self._transient_fds.discard(fd)
            _close_quietly(fd)  # releases the flock

    def _refresh_lock_path(self, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return f"{self.path}.refresh-{digest}.lock"

    def _open_lock_file(self, lock_path: str) -> int:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, FILE_MODE)
        except OSError as exc:
            raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc
        try:
            info = os.fstat(fd)
            if info.st_uid == os.geteuid() and info.st_mode & 0o777 != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        except OSError as exc:
            _close_quietly(fd)
            raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc
        return fd

    def _replace_lock_file(self, lock_path: str) -> int:
        temp_path = f"{lock_path}.tmp-{secrets.token_hex(6)}"
        try:
            fd = os.open(temp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, FILE_MODE)
        except OSError as exc:
            raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc
        try:
            os.fchmod(fd, FILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new inode: nobody else has it
            os.replace(temp_path, lock_path)
        except OSError as exc:
            _close_quietly(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp_path)
            raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc
        return fd

    @staticmethod
    def _is_current(fd: int, lock_path: str) -> bool:
        """Whether ``fd`` is still the file at ``lock_path`` (not replaced by a takeover)."""
        try:
            mine, current = os.fstat(fd), os.stat(lock_path)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)

    @staticmethod
    def _write_lock_info(fd: int, owner: str, expires_at: float) -> None:
        info = json.dumps({"owner": owner, "pid": os.getpid(), "expires_at": expires_at})
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            _write_all(fd, info.encode("utf-8"))
        except OSError as exc:
            raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc

    @staticmethod
    def _read_lock_expiry(fd: int) -> Optional[float]:
        """The expiry its holder wrote, or ``None`` if unreadable (then it counts as expired)."""
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            data = os.read(fd, 4096)
            expires_at = json.loads(data.decode("utf-8"))["expires_at"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
            return None
        return float(expires_at)

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent's locks are the parent's; drop our copies of them."""
        self._fds_lock = threading.Lock()
        fds = [held.fd for held in self._held.values()] + list(self._transient_fds)
        self._held = {}
        self._transient_fds = set()
        for fd in fds:
            # Closing a copy never releases the parent's lock: it keeps its own descriptor.
            _close_quietly(fd)


def _parse_entries(data: bytes) -> Optional[Dict[str, Dict[str, Any]]]:
    """The valid entries of a token file, or ``None`` if the file is not one of ours."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        return None
    tokens = document.get("tokens")
    if not isinstance(tokens, dict):
        return None
    entries: Dict[str, Dict[str, Any]] = {}
    for key, entry in tokens.items():
        if not isinstance(entry, dict):
            continue
        record, drop_at = entry.get("record"), entry.get("drop_at")
        if (
            isinstance(record, dict)
            and isinstance(drop_at, (int, float))
            and not isinstance(drop_at, bool)
            and math.isfinite(drop_at)
        ):
            entries[key] = {"record": record, "drop_at": float(drop_at)}
    return entries


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; best effort (some filesystems refuse a directory fsync)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _describe(exc: OSError) -> str:
    """``EACCES (Permission denied)``-style text: the errno, not the whole exception."""
    if exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name} ({os.strerror(exc.errno)})"
    return type(exc).__name__
