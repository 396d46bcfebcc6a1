"""What a provider tells an ``on_event`` callback: :class:`TokenEvent`.

For applications without OpenTelemetry: ``TokenProvider(..., on_event=callback)`` (or the same
provider option on any adapter) calls ``callback(event)`` for each thing worth counting or
alerting on. Events happen only off the fresh-token path (a fetch, a refresh ahead, a store
read, an invalidation), never per API request, and an event never holds a token or a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["EVENT_KINDS", "EventCallback", "TokenEvent"]

#: ``fetched``: Navro issued a token; ``fetch_failed``: a token request gave up (retries used
#: up, or an error not worth retrying); ``refresh_ahead``: a stale but valid token's refresh
#: began; ``invalidated``: a token was dropped after the API answered 401; ``store_hit``: the
#: token came from the shared store; ``store_failed``: a store call failed (the provider carries
#: on without the store).
EVENT_KINDS = frozenset(
    {"fetched", "fetch_failed", "refresh_ahead", "invalidated", "store_hit", "store_failed"}
)


@dataclass(frozen=True)
class TokenEvent:
    """One thing that happened to a provider's token; fields and repr never hold a secret.

    ``fingerprint`` is the token's short fingerprint when a token is involved (the one fetched,
    refreshed, dropped or read from the store). ``attempts`` counts the token requests sent
    (0 when none was); ``duration`` is in seconds, from the first request to the token or the
    failure (0.0 when nothing was sent). ``error_type`` is the class name of what failed:
    ``fetch_failed``'s NavroAuthError subclass, or the exception the store raised.
    """

    kind: str
    fingerprint: Optional[str] = None
    attempts: int = 0
    duration: float = 0.0
    error_type: Optional[str] = None


#: What ``on_event`` takes. It runs on the thread or event loop that drove the fetch: keep it
#: quick (count, log, enqueue). An exception from it is logged once per kind and swallowed.
EventCallback = Callable[[TokenEvent], None]
