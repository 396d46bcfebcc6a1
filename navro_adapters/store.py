"""The token store protocol: one token, and the right to refresh it, shared between processes.

A :class:`~navro_adapters.TokenProvider` keeps its in-memory copy as the fast path and turns to
its store only when that copy is missing, stale or invalidated, never on every request. A store
holds JSON-able records (:meth:`Token.to_record`) with absolute wall-clock instants, and a lock
per key whose holder is the one process allowed to fetch. Any exception a store raises is
caught by the provider, logged as a warning, and the provider carries on without the store:
a store is never a single point of failure.

Every method has a sync and an async form; the provider calls the sync ones from threads and
the async ones from coroutines, so an async store never blocks an event loop.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Protocol, runtime_checkable

__all__ = ["TokenRecord", "TokenStore"]

TokenRecord = Dict[str, Any]


@runtime_checkable
class TokenStore(Protocol):
    def load(self, key: str) -> Optional[TokenRecord]:
        """The record stored under ``key``, or ``None`` (missing, expired, unreadable)."""

    def save(self, key: str, record: TokenRecord, ttl: float) -> None:
        """Store ``record`` under ``key``; it may be dropped after ``ttl`` seconds."""

    def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        """Take the refresh lock for ``key`` if free; it expires by itself after ``ttl`` s."""

    def unlock(self, key: str, owner: str) -> None:
        """Release the refresh lock if ``owner`` still holds it (compare-and-delete)."""

    async def aload(self, key: str) -> Optional[TokenRecord]: ...

    async def asave(self, key: str, record: TokenRecord, ttl: float) -> None: ...

    async def atry_lock(self, key: str, owner: str, ttl: float) -> bool: ...

    async def aunlock(self, key: str, owner: str) -> None: ...
