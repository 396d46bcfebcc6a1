"""Shared token stores: one token per fleet instead of one per process.

:class:`FileStore` shares through a file for the processes of one host; :class:`RedisStore`
through Redis for processes on any number of hosts. Both implement
:class:`~navro_adapters.store.TokenStore`; pass one as ``TokenProvider(..., store=...)``.
"""

from __future__ import annotations

from .file import FileStore
from .redis import RedisStore

__all__ = ["FileStore", "RedisStore"]
