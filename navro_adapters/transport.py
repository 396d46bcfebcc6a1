"""The transport protocol: send one token request, hand back status, headers and body.

A transport is any callable ``transport(request, timeout=...)`` returning a
:class:`~navro_adapters.protocol.TransportResponse` (or awaitable of one, for an async
transport). It raises :class:`~navro_adapters.errors.TransportError` (or
:class:`~navro_adapters.errors.TokenTimeoutError`) when no response arrived; an HTTP error
status is a response, not an exception. Adapters build transports on their own client so the
user's proxies, TLS settings and connection pools apply. The default is the standard library,
so the core works with no dependency at all.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from typing import Awaitable, Optional, Protocol

from .errors import TokenTimeoutError, TransportError
from .protocol import TokenRequest, TransportResponse

__all__ = ["AsyncTransport", "SyncTransport", "UrllibTransport"]


class SyncTransport(Protocol):
    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse: ...


class AsyncTransport(Protocol):
    def __call__(
        self, request: TokenRequest, *, timeout: float
    ) -> Awaitable[TransportResponse]: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirected token request would carry the Basic credentials elsewhere: never follow.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class UrllibTransport:
    """The default transport, on ``urllib.request`` (standard library only).

    Honours the usual proxy environment variables; ``ssl_context`` customises TLS.
    """

    def __init__(self, *, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        req = urllib.request.Request(
            request.url, data=request.body, headers=dict(request.headers), method=request.method
        )
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return TransportResponse.build(resp.status, resp.headers.items(), resp.read())
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except (OSError, http.client.HTTPException):
                body = b""
            return TransportResponse.build(exc.code, exc.headers.items(), body)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise TokenTimeoutError("token request timed out") from exc
            raise TransportError(f"token request failed: {_describe(exc.reason)}") from exc
        except (socket.timeout, TimeoutError) as exc:
            raise TokenTimeoutError("token request timed out") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"token request failed: {_describe(exc)}") from exc

    def __repr__(self) -> str:
        return "UrllibTransport()"


def _describe(reason: object) -> str:
    """A short description of a network failure (class name and errno text, no URL)."""
    if isinstance(reason, OSError) and reason.strerror:
        return f"{type(reason).__name__}: {reason.strerror}"
    return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)
