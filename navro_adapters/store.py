"""The token store protocol: one token, and the right to refresh it, shared between processes.

A :class:`~navro_adapters.TokenProvider` keeps its in-memory copy as the fast path and turns to
its store only when that copy is missing, stale or invalidated, never on every request. A store
holds JSON-able records (:meth:`Token.to_record`) with absolute wall-clock instants, and a lock
per key whose holder is the one process allowed to fetch. A store signals a failure by raising
:class:`~navro_adapters.errors.TokenStoreError` (whose message carries no token or secret); the
provider logs it as a warning and carries on without the store: a store is never a single
point of failure.

The protocol is sync only. Sync callers run store calls on their own thread; for async callers
the provider runs each call on a worker thread (``asyncio.to_thread``, bounded by a timeout),
so a store never blocks an event loop. A store must therefore be thread-safe, and must not
tie a lock to the thread that took it: ``unlock`` may come from another thread than
``try_lock``.
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
        """Release the refresh lock if ``owner`` still holds it; never a successor's lock."""
