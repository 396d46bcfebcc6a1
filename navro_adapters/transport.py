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

from ._pickling import Reduced, construct, not_picklable
from .errors import ConfigurationError, TokenTimeoutError, TransportError
from .protocol import TokenRequest, TransportResponse

__all__ = ["AsyncTransport", "SyncTransport", "UrllibTransport", "transport_failure"]

# OpenSSL reasons that mean a certificate was refused, ours or the server's: not transient.
_CERTIFICATE_REASONS = frozenset(
    {
        "CERTIFICATE_VERIFY_FAILED",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
    }
)
_MAX_CHAIN = 16  # exceptions followed through causes, contexts and wrapped arguments


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: causes, contexts, ``reason`` and exception arguments (how
    urllib, urllib3, requests, httpx and aiohttp each wrap the ssl module's error)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < _MAX_CHAIN:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        wrapped.extend(current.args)
        todo.extend(e for e in wrapped if isinstance(e, BaseException))
    return seen


# httpx's and httpcore's timeouts (ReadTimeout, PoolTimeout...) and trio's TooSlowError share
# no base class with the builtin one; their public class names say what they are.
_TIMEOUT_NAMES = ("Timeout", "TimeoutError", "TooSlowError")


def _is_timeout(error: BaseException) -> bool:
    return isinstance(error, (socket.timeout, TimeoutError)) or type(error).__name__.endswith(
        _TIMEOUT_NAMES
    )


def transport_failure(exc: BaseException, *, timed_out: bool = False) -> TransportError:
    """Our error for a token request that got no answer; the caller keeps ``exc`` as cause.

    A refused certificate is not transient: the error says it is a TLS certificate problem
    and is not retried. The message names exception classes and OpenSSL reasons only, never a
    URL (it may hold a query string), a header or a secret.
    """
    for error in _chain(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            # aiohttp's certificate error subclasses this one without setting verify_message.
            detail = getattr(error, "verify_message", None) or "verification failed"
            return TransportError(
                f"token request failed: TLS certificate problem ({detail}): the token "
                "endpoint's certificate is not trusted by the CA in use; give your HTTP client "
                "the right CA (verify=, ssl=, ssl_context= or ca_file=)",
                retryable=False,
            )
        if isinstance(error, ssl.SSLError) and error.reason in _CERTIFICATE_REASONS:
            return TransportError(
                f"token request failed: TLS certificate problem ({error.reason}): the token "
                "endpoint refused the handshake; check the client certificate (cert=)",
                retryable=False,
            )
    if timed_out or any(_is_timeout(error) for error in _chain(exc)):
        return TokenTimeoutError(f"token request timed out ({type(exc).__name__})")
    return TransportError(f"token request failed: {_describe(exc)}")


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

    Honours the proxy environment variables (``HTTPS_PROXY``, ``NO_PROXY``...);
    ``ssl_context`` customises TLS, or ``ca_file`` trusts a private CA (a PEM file) on top of
    nothing else (``ssl.create_default_context(cafile=...)``).

    Pickles as its arguments (the ``ca_file`` path, loaded again where it is unpickled); one
    built with ``ssl_context`` raises ConfigurationError on pickling (an ``ssl.SSLContext``
    cannot be pickled).
    """

    def __init__(
        self, *, ssl_context: Optional[ssl.SSLContext] = None, ca_file: Optional[str] = None
    ) -> None:
        if ssl_context is not None and ca_file is not None:
            raise ConfigurationError("ca_file", "pass ssl_context or ca_file, not both")
        self._ca_file = ca_file
        self._given_context = ssl_context is not None  # the caller's: it cannot be pickled
        if ca_file is not None:
            try:
                ssl_context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    "ca_file", f"cannot load {ca_file!r} ({type(exc).__name__})"
                ) from exc
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
            reason = exc.reason if isinstance(exc.reason, BaseException) else exc
            raise transport_failure(reason) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise transport_failure(exc) from exc

    def __reduce__(self) -> Reduced:
        if self._given_context:
            raise not_picklable(
                "ssl_context",
                "an ssl.SSLContext",
                "give UrllibTransport ca_file= (a path, which pickles) or build the transport "
                "in the worker process",
            )
        return (construct, (type(self), (), {"ca_file": self._ca_file}))

    def __repr__(self) -> str:
        return "UrllibTransport()"


def _describe(reason: object) -> str:
    """A short description of a network failure (class name and errno text, no URL)."""
    if isinstance(reason, OSError) and reason.strerror:
        return f"{type(reason).__name__}: {reason.strerror}"
    return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)
