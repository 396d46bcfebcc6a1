"""What the adapters for requests-style sessions (requests, niquests) share, library-free.

Both libraries attach an auth as a callable on a ``PreparedRequest`` that cannot see its
session, resend after a 401 from a response hook, and expose the same body types; this module
holds the parts of that which import neither library, so neither adapter imports the other's.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from .errors import TransportError

__all__ = ["REPLAYABLE_BODIES", "bind_session_hint", "without_hook"]

#: Bodies a prepared request holds in memory and can send again; a generator or a file was
#: consumed by the first send.
REPLAYABLE_BODIES = (bytes, bytearray, str)


def without_hook(
    hooks: Dict[str, List[Callable[..., Any]]], hook: Callable[..., Any]
) -> Dict[str, List[Callable[..., Any]]]:
    """A request's hooks less ``hook``, also where it was registered bound to arguments
    (``functools.partial``): a copy resent without it is resent only once."""
    return {
        event: [h for h in registered if h is not hook and getattr(h, "func", None) is not hook]
        for event, registered in hooks.items()
    }


def bind_session_hint(failure: TransportError, went_through: str) -> TransportError:
    """``failure`` (same class, same ``retryable``) saying that token requests went through
    ``went_through`` and how to send them through the caller's session instead: an auth
    attached to a session cannot see that session's ``verify``, ``cert`` or ``proxies``."""
    return type(failure)(
        f"{failure.message}; token requests went through {went_through}: pass"
        " NavroAuth(credentials, session=your_session) to use its verify, cert and proxies",
        retryable=failure.retryable,
    )
