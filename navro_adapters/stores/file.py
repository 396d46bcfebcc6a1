"""A token store in a file, shared by the processes of one host (POSIX or Windows).

Layout, beside the token file ``path``:

* ``path`` holds every key's token as one JSON object,
  ``{"version": 1, "tokens": {key: {"record": {...}, "drop_at": <epoch s>}}}``. Several
  identities may share one file; the record is :meth:`Token.to_record` (access token, type,
  scope and absolute wall-clock instants), never the client secret. It is rewritten whole, by
  ``os.replace`` of an fsynced temporary file in the same directory, so a reader sees the old
  file or the new one and never half of one.
* ``path + ".lock"`` is a short mutex, held only while the token file is read, modified and
  replaced, or while a refresh lock changes hands.
* ``path + ".refresh-<hash of key>.lock"`` is the refresh lock of one key, taken by
  ``try_lock`` without waiting and held until ``unlock``; beside it, ``.owner`` records its
  holder's owner id and expiry.

Both locks are `filelock <https://py-filelock.readthedocs.io>`_'s OS locks (``flock`` on
POSIX, ``msvcrt.locking`` on Windows), which the OS drops when their holder dies, even by
SIGKILL, so a crashed refresher never blocks its peers. A holder still alive past its ttl
(hung, stopped, or one that lost track of its lock) is taken over: a fresh lock file replaces
its own, which it keeps as an orphaned inode nobody else opens. Windows cannot replace a file
that is open, so there such a takeover fails as a store error and the caller fetches directly.

Every file is created with mode 0600 whatever the umask. A corrupt or truncated token file is
read as empty, logged once, and overwritten by the next save. Only local filesystems are
supported: ``flock`` on NFS or SMB shares is emulated or absent.

A child forked while its parent holds a refresh lock does not hold it. With filelock 4.0 or
later the parent keeps it; older releases unlock it when the child drops its copy, which
costs at most one extra token request.

filelock is imported when the first :class:`FileStore` is constructed, not with this module;
without it, construction raises an :class:`ImportError` naming the extra to install.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import stat
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Tuple, Type, Union

from .._log import logger
from .._pickling import Reduced, construct
from ..errors import ConfigurationError, TokenStoreError
from ..store import TokenRecord

if TYPE_CHECKING:
    from filelock import BaseFileLock

__all__ = ["FILE_MODE", "FileStore"]

FILE_MODE = 0o600  # owner read/write only: the file holds bearer tokens
FORMAT_VERSION = 1  # the "version" field of the token file
MUTEX_TIMEOUT = 2.0  # seconds to wait for the short mutex before failing as a store error
MUTEX_POLL = 0.002  # seconds between attempts at the short mutex
INSTALL_HINT = "pip install 'navro-adapters[file]'"

_OPEN_FLAGS = (
    getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


class _FileLockLib:
    """filelock's pieces, imported on first use so ``import navro_adapters`` stays light."""

    def __init__(self) -> None:
        try:
            import filelock
        except ImportError as exc:
            raise ImportError(f"FileStore needs filelock; install it with: {INSTALL_HINT}") from exc
        lock_class: Type[BaseFileLock] = filelock.FileLock
        # Elsewhere FileLock is a soft lock, which outlives a dead holder.
        if not issubclass(lock_class, (filelock.UnixFileLock, filelock.WindowsFileLock)):
            raise NotImplementedError(
                "FileStore needs OS file locks (fcntl or msvcrt), which this platform lacks; "
                "use navro_adapters.RedisStore instead"
            )
        self.FileLock = lock_class
        self.Timeout: Type[Exception] = filelock.Timeout


_filelock: Optional[_FileLockLib] = None


def _require_filelock() -> _FileLockLib:
    global _filelock
    if _filelock is None:
        _filelock = _FileLockLib()
    return _filelock


@dataclass
class _HeldLock:
    """A refresh lock this process holds, and the owner id that took it."""

    owner: str
    lock: BaseFileLock


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
    I/O failure; the provider logs it and fetches directly. Thread-safe (a lock may be
    released from another thread than the one that took it) and fork-safe. Pickles as its
    path: the copy holds none of this process's locks.
    """

    def __init__(self, path: Union[str, os.PathLike[str]]) -> None:
        self._lib = _require_filelock()
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
        self._mutex = self._new_mutex()
        self._held: Dict[str, _HeldLock] = {}  # by key; ownership is by owner id, not thread
        self._held_lock = threading.Lock()
        self._corrupt_logged = False
        _stores.add(self)

    def __repr__(self) -> str:
        return f"FileStore({self.path!r})"

    def __reduce__(self) -> Reduced:
        return (construct, (type(self), (self.path,), {}))

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
        with self._mutex_held():
            entries = self._read_entries()
            now = time.time()
            entries = {k: v for k, v in entries.items() if v["drop_at"] > now}
            entries[key] = {"record": dict(record), "drop_at": drop_at}
            self._write_entries(entries)

    def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        """Take ``key``'s refresh lock without waiting; held until :meth:`unlock` or death.

        A lock whose holder died is free at once (the OS releases it); one whose live holder
        is past its ``ttl`` is taken over. The owner holding it may renew its ``ttl``.
        """
        lock_path, owner_path = self._refresh_lock_path(key), self._owner_path(key)
        expires_at = time.time() + max(0.0, float(ttl))
        with self._mutex_held():
            with self._held_lock:
                held = self._held.get(key)
            if held is not None and held.owner == owner and _read_owner(owner_path)[0] == owner:
                _replace_lock_file(owner_path, _owner_info(owner, expires_at))
                return True
            # Not thread-local: the unlock may run on another thread than this one.
            lock = self._lib.FileLock(lock_path, mode=FILE_MODE, thread_local=False)
            if not self._acquire_now(lock):
                holder_expires_at = _read_owner(owner_path)[1]
                if holder_expires_at is None or holder_expires_at > time.time():
                    return False
                logger.warning("taking over an expired refresh lock in %s", lock_path)
                # Under the mutex nobody else opens the fresh file before we lock it.
                _replace_lock_file(lock_path, b"")
                if not self._acquire_now(lock):
                    return False
            try:
                self._restrict(lock_path)
                _replace_lock_file(owner_path, _owner_info(owner, expires_at))
            except TokenStoreError:
                _release_quietly(lock)
                raise
            with self._held_lock:
                previous = self._held.get(key)
                self._held[key] = _HeldLock(owner, lock)
        if previous is not None:  # ours, expired and taken over: it locks an orphaned inode
            _release_quietly(previous.lock)
        return True

    def unlock(self, key: str, owner: str) -> None:
        """Release ``key``'s refresh lock if ``owner`` still holds it; otherwise do nothing."""
        with self._held_lock:
            held = self._held.get(key)
            if held is None or held.owner != owner:
                return
            del self._held[key]
        # The file stays for the next holder. If the lock was taken over, this one locks an
        # orphaned inode and releasing it touches nobody else.
        _release_quietly(held.lock)

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
        try:
            _replace_file(self.path, payload, durable=True)
        except OSError as exc:
            raise TokenStoreError(f"file store save failed: {_describe(exc)}") from exc
        self._corrupt_logged = False  # a later corruption is news again

    # -- locks ------------------------------------------------------------------------------

    def _new_mutex(self) -> BaseFileLock:
        # Thread-local (filelock's default): each thread holds it through its own descriptor,
        # so threads exclude each other as processes do.
        return self._lib.FileLock(self._mutex_path, timeout=MUTEX_TIMEOUT, mode=FILE_MODE)

    @contextlib.contextmanager
    def _mutex_held(self) -> Iterator[None]:
        """The short cross-process mutex around read-modify-write and lock hand-overs."""
        mutex = self._mutex
        try:
            mutex.acquire(poll_interval=MUTEX_POLL)
        except self._lib.Timeout:
            raise TokenStoreError(
                f"file store busy: its lock was held for over {MUTEX_TIMEOUT:g} s"
            ) from None
        except (OSError, RuntimeError) as exc:
            raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc
        try:
            self._restrict(self._mutex_path)
            yield
        finally:
            _release_quietly(mutex)

    def _acquire_now(self, lock: BaseFileLock) -> bool:
        """One attempt at ``lock``: ``False`` if another holds it."""
        try:
            lock.acquire(blocking=False)
        except self._lib.Timeout:
            return False
        except (OSError, RuntimeError) as exc:  # RuntimeError: e.g. a filesystem without locks
            raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc
        return True

    def _refresh_lock_path(self, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return f"{self.path}.refresh-{digest}.lock"

    def _owner_path(self, key: str) -> str:
        return self._refresh_lock_path(key)[: -len(".lock")] + ".owner"

    @staticmethod
    def _restrict(path: str) -> None:
        """Make a file of ours 0600 again if something (a user, an old release) loosened it."""
        if not hasattr(os, "geteuid"):
            return  # Windows: no POSIX modes
        try:
            fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
            try:
                info = os.fstat(fd)
                if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != FILE_MODE:
                    os.fchmod(fd, FILE_MODE)
            finally:
                os.close(fd)
        except OSError as exc:
            raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent's locks are the parent's; drop our copies of them."""
        self._held_lock = threading.Lock()
        self._held = {}
        self._mutex = self._new_mutex()  # filelock 4 refuses a lock object inherited by fork


def _owner_info(owner: str, expires_at: float) -> bytes:
    return json.dumps({"owner": owner, "pid": os.getpid(), "expires_at": expires_at}).encode()


def _replace_lock_file(path: str, data: bytes) -> None:
    """A lock's file or its ``.owner`` file, replaced atomically (no fsync: nothing to keep)."""
    try:
        _replace_file(path, data, durable=False)
    except OSError as exc:
        raise TokenStoreError(f"file store lock failed: {_describe(exc)}") from exc


def _read_owner(owner_path: str) -> Tuple[Optional[str], Optional[float]]:
    """The owner id and expiry a refresh lock's holder wrote, or ``None`` for unreadable."""
    try:
        with open(owner_path, "rb") as file:
            info = json.loads(file.read().decode("utf-8"))
        owner, expires_at = info["owner"], info["expires_at"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
        return None, None
    return (owner if isinstance(owner, str) else None), float(expires_at)


def _release_quietly(lock: BaseFileLock) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        lock.release()


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


def _replace_file(path: str, data: bytes, *, durable: bool) -> None:
    """Replace ``path`` atomically by a 0600 file holding ``data``; fsynced if ``durable``."""
    temp_path = f"{path}.tmp-{secrets.token_hex(6)}"
    fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, FILE_MODE)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, FILE_MODE)  # the umask may have removed bits we need
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_path, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise
    if durable:
        _fsync_directory(os.path.dirname(path))


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


def _describe(exc: BaseException) -> str:
    """``EACCES (Permission denied)``-style text: the errno, not the whole exception."""
    errno_value = getattr(exc, "errno", None)
    if isinstance(errno_value, int):
        name = errno.errorcode.get(errno_value, str(errno_value))
        return f"{name} ({os.strerror(errno_value)})"
    return type(exc).__name__
