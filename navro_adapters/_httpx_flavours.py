"""The installed httpx flavours (httpx, httpx2 or both) and token transports on their clients.

httpx2 is the maintained successor of httpx with the same API under another import name; the
adapter in :mod:`navro_adapters.httpx` serves both, so this module finds each installed
flavour once, at import. ``httpx2.alias_httpx()`` makes ``import httpx`` return httpx2: the two
names are then one module and one flavour. Only public API of either is used.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple, Type

from .errors import ConfigurationError, TransportError
from .protocol import TokenRequest, TransportResponse
from .transport import transport_failure

__all__ = ["FLAVOURS", "AsyncHttpxTransport", "Flavour", "HttpxTransport", "flavour_of_request"]

INSTALL_HINT = (
    "navro_adapters.httpx needs httpx or httpx2: "
    "pip install 'navro-adapters[httpx]' (or 'navro-adapters[httpx2]')"
)
_FLAVOUR_NAMES = ("httpx", "httpx2")  # httpx first: the name most code imports today


class Flavour:
    """One installed httpx-compatible library: the types the adapter checks against."""

    __slots__ = ("errors", "module", "name", "replayable_streams")

    def __init__(self, name: str, module: ModuleType) -> None:
        self.name = name
        self.module = module
        # A ByteStream holds the whole body in memory and can be sent again; generator and
        # multipart file bodies cannot (a non-seekable file would go out truncated).
        self.replayable_streams: Tuple[type, ...] = (module.ByteStream,)
        # InvalidURL is not an HTTPError; OSError covers TLS or proxy set-up outside httpx.
        self.errors: Tuple[Type[BaseException], ...] = (
            module.HTTPError,
            module.InvalidURL,
            OSError,
        )

    def failure(self, exc: BaseException) -> TransportError:
        """Our error for an httpx exception (never its text: it may hold a URL)."""
        return transport_failure(exc, timed_out=isinstance(exc, self.module.TimeoutException))

    def __repr__(self) -> str:
        return f"Flavour({self.name!r}, version={getattr(self.module, '__version__', '?')!r})"


def _discover() -> List[Flavour]:
    found: List[Flavour] = []
    for name in _FLAVOUR_NAMES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if all(flavour.module is not module for flavour in found):  # alias_httpx(): one module
            found.append(Flavour(name, module))
    return found


FLAVOURS: Tuple[Flavour, ...] = tuple(_discover())
if not FLAVOURS:
    raise ImportError(INSTALL_HINT)
_BY_REQUEST: Dict[type, Flavour] = {f.module.Request: f for f in FLAVOURS}


def flavour_of_request(request: Any) -> Optional[Flavour]:
    return _BY_REQUEST.get(type(request))


def _flavour_of(client: Any, flavour: Optional[str], *, sync: bool) -> Flavour:
    if client is None:
        for found in FLAVOURS:
            if flavour in (None, found.name):
                return found
        names = tuple(f.name for f in FLAVOURS)
        raise ConfigurationError("flavour", f"{flavour!r} is not installed (found {names})")
    for found in FLAVOURS:
        if isinstance(client, found.module.Client if sync else found.module.AsyncClient):
            return found
    kind = "Client" if sync else "AsyncClient"
    raise ConfigurationError(
        "client" if sync else "async_client", f"must be an httpx.{kind} or httpx2.{kind}"
    )


def _send_options(request: TokenRequest, timeout: float) -> Dict[str, Any]:
    # Never the client's auth (it may be ours), never a redirect (it would carry the secret).
    return {
        "headers": dict(request.headers),
        "content": request.body,
        "auth": None,
        "follow_redirects": False,
        "timeout": timeout,
    }


def _response(response: Any) -> TransportResponse:
    return TransportResponse.build(response.status_code, response.headers.items(), response.content)


class HttpxTransport:
    """Sync token requests through ``client`` (its proxies, TLS and pool; httpx's own
    ``Client.request``, so a subclass's token logic is bypassed), or through a private
    ``Client`` of ``flavour`` (default: the first installed), made on first use."""

    def __init__(self, client: Any = None, *, flavour: Optional[str] = None) -> None:
        self.flavour = _flavour_of(client, flavour, sync=True)
        self.owns_client = client is None
        self._client = client

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        client = self._client
        if client is None:  # two racing first calls may both build one; either will do
            client = self._client = self.flavour.module.Client()
        try:
            sent = self.flavour.module.Client.request(
                client, request.method, request.url, **_send_options(request, timeout)
            )
        except self.flavour.errors as exc:
            raise self.flavour.failure(exc) from exc
        return _response(sent)

    def close(self) -> None:
        """Close the private client, if one was made (a client you passed stays open)."""
        if self.owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def __repr__(self) -> str:
        owner = "private" if self.owns_client else "caller's"
        return f"HttpxTransport({self.flavour.name}, {owner} client)"


class AsyncHttpxTransport:
    """Async token requests through ``client`` (then only from the loop it belongs to), or
    through a short-lived private ``AsyncClient`` of ``flavour`` per request, built on a worker
    thread (loading CA certificates takes tens of ms), so it belongs to whichever loop asks."""

    def __init__(self, client: Any = None, *, flavour: Optional[str] = None) -> None:
        self.flavour = _flavour_of(client, flavour, sync=False)
        self._client = client

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        cls = self.flavour.module.AsyncClient
        try:
            if self._client is not None:
                sent = await cls.request(
                    self._client, request.method, request.url, **_send_options(request, timeout)
                )
                return _response(sent)
            private = await asyncio.get_running_loop().run_in_executor(None, cls)
            async with private:
                sent = await private.request(
                    request.method, request.url, **_send_options(request, timeout)
                )
                return _response(sent)
        except self.flavour.errors as exc:
            raise self.flavour.failure(exc) from exc

    def __repr__(self) -> str:
        owner = "caller's client" if self._client is not None else "a client per request"
        return f"AsyncHttpxTransport({self.flavour.name}, {owner})"
