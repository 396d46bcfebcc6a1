"""The installed httpx flavours (httpx, httpx2 or both), and token transports on their clients.

httpx2 is the maintained successor of httpx with the same API under another import name; the
adapter in :mod:`navro_adapters.httpx` serves both, so this module finds each installed
flavour once, at import. ``httpx2.alias_httpx()`` makes ``import httpx`` return httpx2: the two
names are then one module and one flavour. Only public API of either is used.
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from . import _runtime
from ._drivers import response_of
from ._flow import Send
from ._pickling import Reduced, construct, not_picklable
from .errors import ConfigurationError, TransportError
from .protocol import TokenRequest, TransportResponse
from .transport import transport_failure

__all__ = ["FLAVOURS", "REPLAYABLE_STREAMS", "AsyncHttpxTransport", "Flavour", "HttpxTransport"]

_FLAVOUR_NAMES = ("httpx", "httpx2")  # httpx first: the name most code imports today


class Flavour:
    """One installed httpx-compatible library: the types the adapter checks against."""

    __slots__ = ("errors", "module", "name")
    errors: Tuple[Type[BaseException], ...]

    def __init__(self, name: str, module: ModuleType) -> None:
        self.name, self.module = name, module
        # InvalidURL is not an HTTPError; OSError covers TLS or proxy set-up outside httpx.
        self.errors = (module.HTTPError, module.InvalidURL, OSError)

    def failure(self, exc: BaseException) -> TransportError:
        """Our error for an httpx exception (never its text: it may hold a URL)."""
        return transport_failure(exc, timed_out=isinstance(exc, self.module.TimeoutException))


def _discover() -> List[Flavour]:
    found: Dict[int, Flavour] = {}  # by module: after alias_httpx() both names are one
    for name in _FLAVOUR_NAMES:
        with contextlib.suppress(ImportError):
            module = importlib.import_module(name)
            found.setdefault(id(module), Flavour(name, module))
    return list(found.values())


FLAVOURS: Tuple[Flavour, ...] = tuple(_discover())
if not FLAVOURS:
    raise ImportError("navro_adapters.httpx needs: pip install 'navro-adapters[httpx]' or [httpx2]")
#: A ByteStream holds the whole body in memory and can be sent again; generator and multipart
#: file bodies cannot (a non-seekable file would go out truncated).
REPLAYABLE_STREAMS: Tuple[type, ...] = tuple(f.module.ByteStream for f in FLAVOURS)


def _send_options(request: TokenRequest, timeout: float) -> Dict[str, Any]:
    # Never the client's auth (it may be ours), never a redirect (it would carry the secret).
    options = {"headers": dict(request.headers), "content": request.body, "timeout": timeout}
    return {**options, "auth": None, "follow_redirects": False}


def token_request(request: Any, send: Send, trace: Callable[..., Any]) -> Any:
    """``send`` as a request of the same flavour as ``request`` (so its client takes it), with
    its timeout and a ``trace`` callback, both httpx's documented request extensions."""
    timeout = dict.fromkeys(("connect", "read", "write", "pool"), send.timeout)
    token, options = send.request, {"timeout": timeout, "trace": trace}
    headers = dict(token.headers)
    return type(request)(
        token.method, token.url, headers=headers, content=token.body, extensions=options
    )


class _OnClient:
    kind = "Client"
    argument = "client"  # NavroAuth's keyword for such a client

    def __init__(self, client: Any = None, *, flavour: Optional[str] = None) -> None:
        kind = self.kind
        if client is None:
            found = [f for f in FLAVOURS if flavour in (None, f.name)]
        else:
            found = [f for f in FLAVOURS if isinstance(client, getattr(f.module, kind))]
        if not found:
            field = "flavour" if client is None else kind.lower()
            raise ConfigurationError(field, f"must be an installed httpx/httpx2 {kind} flavour")
        self.flavour, self.client, self.owns_client = found[0], client, client is None

    def __reduce__(self) -> Reduced:
        """Without a client of yours, pickles as its flavour; with one, raises
        ConfigurationError (an httpx client holds connections and locks)."""
        if not self.owns_client:
            raise not_picklable(
                self.argument,
                f"an httpx {self.kind}",
                f"build NavroAuth(..., {self.argument}=...) in the worker process",
            )
        return (construct, (type(self), (), {"flavour": self.flavour.name}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.flavour.name})"


class HttpxTransport(_OnClient):
    """Sync token requests through ``client`` (its proxies, TLS and pool), with httpx's own
    ``Client.request``, so a subclass's token logic (Authlib's) is never involved; without
    one, through a private ``Client`` of ``flavour`` made on first use (:meth:`close`)."""

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        if self.client is None:  # two racing first calls may both make one; either will do
            self.client = self.flavour.module.Client()
        try:
            sent = self.flavour.module.Client.request(
                self.client, request.method, request.url, **_send_options(request, timeout)
            )
        except self.flavour.errors as exc:
            raise self.flavour.failure(exc) from exc
        return response_of(sent)

    def close(self) -> None:
        """Close the private client, if one was made (a client you passed stays open)."""
        if self.owns_client and self.client is not None:
            self.client.close()


class AsyncHttpxTransport(_OnClient):
    """Async token requests through ``client``, from the event loop it belongs to; without
    one, through a short-lived private ``AsyncClient`` per request, made on a worker thread
    (loading CA certificates takes tens of ms), so any event loop may use the transport."""

    kind = "AsyncClient"
    argument = "async_client"

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        cls = self.flavour.module.AsyncClient
        try:
            options = _send_options(request, timeout)
            if self.client is not None:
                sent = await cls.request(self.client, request.method, request.url, **options)
            else:
                async with await _runtime.current().run_in_thread(cls) as private:
                    sent = await private.request(request.method, request.url, **options)
        except self.flavour.errors as exc:
            raise self.flavour.failure(exc) from exc
        return response_of(sent)
