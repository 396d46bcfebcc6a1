"""What the adapters for requests-style sessions (requests, niquests) share, library-free.

Both libraries attach an auth as a callable on a ``PreparedRequest`` that cannot see its
session, resend after a 401 from a response hook, and expose the same request and body types;
this module holds the parts of that which import neither library (they only use the
attributes both share), so neither adapter imports the other's.
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any, Callable, Dict, List
from urllib.parse import urlsplit

from .auth import AUTHORIZATION, RequestAuth, bearer_token_of
from .errors import TransportError
from .protocol import TokenRequest, TransportResponse
from .token import Token
from .transport import UrllibTransport

__all__ = [
    "REPLAYABLE_BODIES",
    "UnboundTransport",
    "bind_session_hint",
    "resend_with_new_token",
    "resent",
    "retry_request",
    "without_hook",
]

#: Bodies a prepared request holds in memory and can send again; a generator or a file was
#: consumed by the first send.
REPLAYABLE_BODIES = (bytes, bytearray, str)


def resend_with_new_token(rule: RequestAuth, response: Any) -> bool:
    """:meth:`RequestAuth.resend_after` for a session's answer: the token its request carried
    (from the ``Authorization`` header it was sent with) and whether that body can be resent."""
    sent = response.request
    if sent is None or sent.headers is None:
        return False
    authorization = sent.headers.get(AUTHORIZATION)
    return rule.resend_after(
        response.status_code,
        bearer_token_of(authorization if isinstance(authorization, str) else None),
        replayable=sent.body is None or isinstance(sent.body, REPLAYABLE_BODIES),
    )


def retry_request(sent: Any, token: Token, hook: Callable[..., Any]) -> Any:
    """A copy of the prepared request ``sent`` carrying ``token``, without ``hook``: resent
    once at most. Every other header, and the cookies, as they were sent."""
    retry = sent.copy()
    retry.hooks = without_hook(sent.hooks, hook)
    retry.headers[AUTHORIZATION] = token.authorization
    return retry


def resent(first: Any, second: Any, retry: Any) -> Any:
    """``second``, the answer to ``retry`` (``first``'s request resent), as the session's
    answer: ``first`` in its history, ``retry`` as its request."""
    second.history.append(first)
    second.request = retry
    return second


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


def _proxied(url: str) -> bool:
    """Whether urllib sends a request to ``url`` through a proxy from the environment."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or "")


class UnboundTransport:
    """Token requests of an auth given no session: the standard library's transport, whose TLS
    and proxy failures say how to send them through your ``library`` session instead (an auth
    cannot see the session it is attached to)."""

    def __init__(self, library: str) -> None:
        self.urllib = UrllibTransport()
        self.went_through = f"the standard library (urllib), not your {library} session"

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        try:
            return self.urllib(request, timeout=timeout)
        except TransportError as failure:
            if failure.retryable and not _proxied(request.url):
                raise
            raise bind_session_hint(failure, self.went_through) from failure

    async def asend(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        """The same on a worker thread: the event loop never blocks."""
        return await asyncio.to_thread(self, request, timeout=timeout)

    def __repr__(self) -> str:
        return "UnboundTransport(urllib)"
