"""A token store in Redis, shared by every process and host of a fleet.

The token is stored with a server-side expiry (``SET key value PX ms``), so Redis drops it
when it ends. The refresh lock is redis-py's own :class:`redis.lock.Lock`: taken as
``SET lockkey owner NX PX ms``, so it expires by itself if its holder dies, and released by
redis-py's token-checked script, so a holder whose lock expired and was taken over never
deletes its successor's lock.

redis-py is imported when the first :class:`RedisStore` is constructed, not with this module:
``import navro_adapters`` stays light, and works without redis-py installed. Constructing a
:class:`RedisStore` then raises an :class:`ImportError` naming the extra to install.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import threading
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .._log import logger
from .._pickling import Reduced, construct, not_picklable
from ..errors import ConfigurationError, TokenStoreError
from ..store import TokenRecord

__all__ = ["DEFAULT_KEY_PREFIX", "RedisStore"]

DEFAULT_KEY_PREFIX = "navro-adapters:"
INSTALL_HINT = "pip install 'navro-adapters[redis]'"
# Clients built from a URL fail fast: a slow or unreachable Redis costs a caller at most about
# this long per store call, after which the provider logs a warning and fetches directly.
SOCKET_TIMEOUT = 0.5  # seconds for a command's reply
SOCKET_CONNECT_TIMEOUT = 0.5  # seconds to connect
COMMAND_RETRIES = 0  # redis-py's own retries would multiply the stall; the provider copes

_T = TypeVar("_T")


class _RedisPy:
    """redis-py's pieces, imported on first use so ``import navro_adapters`` stays light."""

    def __init__(self) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.exceptions import LockError
            from redis.retry import Retry
        except ImportError as exc:
            raise ImportError(
                f"RedisStore needs redis-py; install it with: {INSTALL_HINT}"
            ) from exc
        self.Redis: Any = redis.Redis
        self.RedisError: Any = redis.RedisError
        self.LockError: Any = LockError
        self.Retry: Any = Retry
        self.NoBackoff: Any = NoBackoff


_redis_py: Optional[_RedisPy] = None


def _require_redis() -> _RedisPy:
    global _redis_py
    if _redis_py is None:
        _redis_py = _RedisPy()
    return _redis_py


def _redact(url: str) -> str:
    """The URL without its password, for repr and messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable url>"


def _milliseconds(ttl: float) -> int:
    return max(1, math.ceil(float(ttl) * 1000.0))


class RedisStore:
    """Share tokens between processes and hosts through Redis (redis-py 4.2+).

    ``client_or_url`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL or a sync
    ``redis.Redis``. From a URL the client is built lazily, with short socket timeouts and no
    client-side retries. An explicit client is used as given (set its timeouts: the store
    waits as long as it does). An asyncio client is refused: async callers need none, the
    provider runs store calls on a worker thread.

    Keys are ``key_prefix + "token:" + key`` and ``key_prefix + "lock:" + key``. Every method
    raises :class:`~navro_adapters.errors.TokenStoreError` when Redis fails. Thread-safe: a
    lock may be released from another thread than the one that took it.

    A store built from a URL pickles as its URL (password included, as given) and key prefix;
    the copy builds its own client and holds none of this process's locks. A store built
    with a client raises ConfigurationError on pickling (a ``redis.Redis`` cannot be pickled).
    """

    def __init__(self, client_or_url: Any, *, key_prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self._redis_py = _require_redis()
        if not isinstance(key_prefix, str):
            raise ConfigurationError("key_prefix", "must be a string")
        self.key_prefix = key_prefix
        self._url: Optional[str] = None
        self._client: Any = None
        if isinstance(client_or_url, str):
            if not client_or_url.strip():
                raise ConfigurationError("client_or_url", "must be a Redis URL or client")
            self._url = client_or_url.strip()
        elif client_or_url is None:
            raise ConfigurationError("client_or_url", "must be a Redis URL or client")
        elif inspect.iscoroutinefunction(getattr(client_or_url, "execute_command", None)):
            raise ConfigurationError(
                "client_or_url",
                "is an asyncio client; pass a redis.Redis (async callers need no async client)",
            )
        else:
            self._client = client_or_url
        self._build_lock = threading.Lock()
        # The redis-py Lock each key's refresh lock was taken with, and by which owner.
        self._held: Dict[str, Tuple[str, Any]] = {}
        self._held_lock = threading.Lock()
        self._corrupt_logged = False

    def __repr__(self) -> str:
        where = _redact(self._url) if self._url is not None else "client"
        return f"RedisStore({where!r}, key_prefix={self.key_prefix!r})"

    def __reduce__(self) -> Reduced:
        if self._url is None:
            raise not_picklable(
                "client_or_url",
                "a redis.Redis client",
                "give RedisStore a URL (it pickles as the URL and key prefix) or build the "
                "store in the worker process",
            )
        return (construct, (type(self), (self._url,), {"key_prefix": self.key_prefix}))

    # -- the TokenStore protocol -----------------------------------------------------------------

    def load(self, key: str) -> Optional[TokenRecord]:
        """The record under ``key``, or ``None`` (missing, expired by Redis, or unreadable)."""
        raw = self._sync("load", lambda client: client.get(self._token_key(key)))
        return self._decode(raw)

    def save(self, key: str, record: TokenRecord, ttl: float) -> None:
        """Store ``record``; Redis drops it after ``ttl`` seconds."""
        value = json.dumps(record, separators=(",", ":"))
        self._sync(
            "save", lambda client: client.set(self._token_key(key), value, px=_milliseconds(ttl))
        )

    def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        """Take the refresh lock if free, ``owner`` as its token; Redis frees it after ``ttl`` s."""

        def acquire(client: Any) -> Any:
            # thread_local=False: the unlock may run on another worker thread than this one.
            lock = client.lock(
                self._lock_key(key), timeout=_milliseconds(ttl) / 1000.0, thread_local=False
            )
            return lock if lock.acquire(blocking=False, token=owner) else None

        lock = self._sync("try_lock", acquire)
        if lock is None:
            return False
        with self._held_lock:
            self._held[key] = (owner, lock)
        return True

    def unlock(self, key: str, owner: str) -> None:
        """Release the lock ``owner`` took through this store, if Redis still has it as ``owner``'s.

        A lock that expired, and may now be a successor's, is left alone: redis-py's release
        deletes the key only if it still holds ``owner``'s token.
        """
        with self._held_lock:
            held = self._held.get(key)
            if held is None or held[0] != owner:
                return
            del self._held[key]
        lock = held[1]

        def release(_client: Any) -> None:
            with contextlib.suppress(self._redis_py.LockError):  # expired: nothing of ours left
                lock.release()

        self._sync("unlock", release)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client this store built from its URL (an explicit client is yours)."""
        if self._url is None:
            return
        with self._build_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _token_key(self, key: str) -> str:
        return f"{self.key_prefix}token:{key}"

    def _lock_key(self, key: str) -> str:
        return f"{self.key_prefix}lock:{key}"

    def _decode(self, raw: Any) -> Optional[TokenRecord]:
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw)
            record = json.loads(text)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            if not self._corrupt_logged:
                self._corrupt_logged = True
                logger.warning("token store entry in Redis is not a token record; ignoring it")
            return None
        self._corrupt_logged = False
        return record

    def _sync_client(self) -> Any:
        if self._client is not None:
            return self._client
        assert self._url is not None  # an explicit client is never dropped
        with self._build_lock:
            if self._client is None:
                try:
                    self._client = self._redis_py.Redis.from_url(
                        self._url,
                        socket_timeout=SOCKET_TIMEOUT,
                        socket_connect_timeout=SOCKET_CONNECT_TIMEOUT,
                        retry=self._redis_py.Retry(self._redis_py.NoBackoff(), COMMAND_RETRIES),
                    )
                except ValueError as exc:
                    raise TokenStoreError(f"invalid Redis URL {_redact(self._url)!r}") from exc
            return self._client

    def _sync(self, operation: str, command: Callable[[Any], _T]) -> _T:
        client = self._sync_client()
        try:
            return command(client)
        except (self._redis_py.RedisError, OSError) as exc:
            raise TokenStoreError(f"redis {operation} failed: {type(exc).__name__}") from exc
