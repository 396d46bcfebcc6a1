"""A token store in Redis, shared by every process and host of a fleet.

The token is stored with a server-side expiry (``SET key value PX ms``), so Redis drops it
when it ends; the refresh lock is ``SET lockkey owner NX PX ms``, which expires by itself if
its holder dies, and is released by a compare-and-delete script so a holder whose lock
expired and was taken over never deletes its successor's lock.

redis-py is imported when the first :class:`RedisStore` is constructed, not with this module:
``import navro_adapters`` stays light, and works without redis-py installed. Constructing a
:class:`RedisStore` then raises an :class:`ImportError` naming the extra to install.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import weakref
from typing import Any, Awaitable, Callable, Optional, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .._log import logger
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

# Compare-and-delete: only the owner that set the lock may release it.
UNLOCK_SCRIPT = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end"
)

_T = TypeVar("_T")


class _RedisPy:
    """redis-py's pieces, imported on first use so ``import navro_adapters`` stays light."""

    def __init__(self) -> None:
        try:
            import redis
            import redis.asyncio
            from redis.asyncio.retry import Retry as AsyncRetry
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise ImportError(
                f"RedisStore needs redis-py; install it with: {INSTALL_HINT}"
            ) from exc
        self.Redis: Any = redis.Redis
        self.AsyncRedis: Any = redis.asyncio.Redis
        self.RedisError: Any = redis.RedisError
        self.Retry: Any = Retry
        self.AsyncRetry: Any = AsyncRetry
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

    ``client_or_url`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL, a ``redis.Redis``
    or a ``redis.asyncio.Redis``. From a URL both clients are built lazily, with short socket
    timeouts and no client-side retries; the async one once per event loop, since a redis-py
    asyncio connection belongs to the loop it was opened on. Explicit clients are used as
    given (set their timeouts: the store waits as long as they do). Without an async client,
    the async methods run the sync client on a worker thread; with only an async client, the
    sync methods fail with :class:`~navro_adapters.errors.TokenStoreError` (the provider then
    fetches directly).

    Keys are ``key_prefix + "token:" + key`` and ``key_prefix + "lock:" + key``. Every method
    raises :class:`~navro_adapters.errors.TokenStoreError` when Redis fails.
    """

    def __init__(
        self,
        client_or_url: Any,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        async_client: Any = None,
    ) -> None:
        self._redis_py = _require_redis()
        if not isinstance(key_prefix, str):
            raise ConfigurationError("key_prefix", "must be a string")
        self.key_prefix = key_prefix
        self._url: Optional[str] = None
        self._client: Any = None
        self._async_client: Any = async_client
        if isinstance(client_or_url, str):
            if not client_or_url.strip():
                raise ConfigurationError("client_or_url", "must be a Redis URL or client")
            self._url = client_or_url.strip()
        elif isinstance(client_or_url, self._redis_py.AsyncRedis):
            if async_client is not None:
                raise ConfigurationError("async_client", "given twice")
            self._async_client = client_or_url
        elif client_or_url is not None:
            self._client = client_or_url
        elif async_client is None:
            raise ConfigurationError("client_or_url", "must be a Redis URL or client")
        self._build_lock = threading.Lock()
        self._async_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._corrupt_logged = False

    def __repr__(self) -> str:
        where = _redact(self._url) if self._url is not None else "client"
        return f"RedisStore({where!r}, key_prefix={self.key_prefix!r})"

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
        """``SET lock owner NX PX ttl``: taken if free; Redis frees it after ``ttl`` seconds."""
        return bool(
            self._sync(
                "try_lock",
                lambda client: client.set(
                    self._lock_key(key), owner, nx=True, px=_milliseconds(ttl)
                ),
            )
        )

    def unlock(self, key: str, owner: str) -> None:
        """Delete the lock only if ``owner`` still holds it (one atomic script)."""
        self._sync(
            "unlock", lambda client: client.eval(UNLOCK_SCRIPT, 1, self._lock_key(key), owner)
        )

    async def aload(self, key: str) -> Optional[TokenRecord]:
        if not self._has_async():
            return await asyncio.to_thread(self.load, key)
        raw = await self._async("load", lambda client: client.get(self._token_key(key)))
        return self._decode(raw)

    async def asave(self, key: str, record: TokenRecord, ttl: float) -> None:
        if not self._has_async():
            await asyncio.to_thread(self.save, key, record, ttl)
            return
        value = json.dumps(record, separators=(",", ":"))
        await self._async(
            "save", lambda client: client.set(self._token_key(key), value, px=_milliseconds(ttl))
        )

    async def atry_lock(self, key: str, owner: str, ttl: float) -> bool:
        if not self._has_async():
            return await asyncio.to_thread(self.try_lock, key, owner, ttl)
        return bool(
            await self._async(
                "try_lock",
                lambda client: client.set(
                    self._lock_key(key), owner, nx=True, px=_milliseconds(ttl)
                ),
            )
        )

    async def aunlock(self, key: str, owner: str) -> None:
        if not self._has_async():
            await asyncio.to_thread(self.unlock, key, owner)
            return
        await self._async(
            "unlock", lambda client: client.eval(UNLOCK_SCRIPT, 1, self._lock_key(key), owner)
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync client this store built from its URL (explicit clients are yours)."""
        with self._build_lock:
            client, self._client = (self._client, None) if self._url is not None else (None, None)
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the async client this store built for the running loop, if any."""
        with self._build_lock:
            client = self._async_by_loop.pop(asyncio.get_running_loop(), None)
        if client is not None:
            closer = getattr(client, "aclose", None) or client.close
            await closer()

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
        if self._url is None:
            raise TokenStoreError(
                "this RedisStore has only an async client; use it from coroutines"
            )
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

    def _has_async(self) -> bool:
        return self._async_client is not None or self._url is not None

    def _async_client_for_loop(self) -> Any:
        if self._async_client is not None:
            return self._async_client
        assert self._url is not None
        loop = asyncio.get_running_loop()
        with self._build_lock:  # loops on several threads may build their clients at once
            client = self._async_by_loop.get(loop)
            if client is None:
                try:
                    redis_py = self._redis_py
                    client = redis_py.AsyncRedis.from_url(
                        self._url,
                        socket_timeout=SOCKET_TIMEOUT,
                        socket_connect_timeout=SOCKET_CONNECT_TIMEOUT,
                        retry=redis_py.AsyncRetry(redis_py.NoBackoff(), COMMAND_RETRIES),
                    )
                except ValueError as exc:
                    raise TokenStoreError(f"invalid Redis URL {_redact(self._url)!r}") from exc
                self._async_by_loop[loop] = client
        return client

    def _sync(self, operation: str, command: Callable[[Any], _T]) -> _T:
        client = self._sync_client()
        try:
            return command(client)
        except (self._redis_py.RedisError, OSError) as exc:
            raise TokenStoreError(f"redis {operation} failed: {type(exc).__name__}") from exc

    async def _async(self, operation: str, command: Callable[[Any], Awaitable[_T]]) -> _T:
        client = self._async_client_for_loop()
        try:
            return await command(client)
        except (self._redis_py.RedisError, OSError, asyncio.TimeoutError) as exc:
            raise TokenStoreError(f"redis {operation} failed: {type(exc).__name__}") from exc
