"""The installed httpx flavours (httpx, httpx2 or both), and token transports on their clients.

httpx2 is the maintained successor of httpx with the same API under another import name; the
adapter in :mod:`navro_adapters.httpx` serves both, so this module finds each installed
flavour once, at import. ``httpx2.alias_httpx()`` makes ``import httpx`` return httpx2: the two
names are then one module and one flavour. Only public API of either is used.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, Dict, Generator, List, Tuple, Type

from ._drivers import ClientSends, sends
from ._flow import Send
from .errors import ConfigurationError, TransportError
from .protocol import TokenRequest, TransportResponse
from .provider import TokenProvider
from .token import Token
from .transport import transport_failure

__all__ = ["FLAVOURS", "REPLAYABLE_STREAMS", "AsyncHttpxTransport", "Flavour", "HttpxTransport"]

INSTALL_HINT = (
    "navro_adapters.httpx needs httpx or httpx2: "
    "pip install 'navro-adapters[httpx]' (or 'navro-adapters[httpx2]')"
)
_FLAVOUR_NAMES = ("httpx", "httpx2")  # httpx first: the name most code imports today


class Flavour:
    """One installed httpx-compatible library: the types the adapter checks against."""

    __slots__ = ("errors", "module", "name")

    def __init__(self, name: str, module: ModuleType) -> None:
        self.name = name
        self.module = module
        # InvalidURL is not an HTTPError; OSError covers TLS or proxy set-up outside httpx.
        errors = (module.HTTPError, module.InvalidURL, OSError)
        self.errors: Tuple[Type[BaseException], ...] = errors

    def failure(self, exc: BaseException) -> TransportError:
        """Our error for an httpx exception (never its text: it may hold a URL)."""
        return transport_failure(exc, timed_out=isinstance(exc, self.module.TimeoutException))


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
#: A ByteStream holds the whole body in memory and can be sent again; generator and multipart
#: file bodies cannot (a non-seekable file would go out truncated).
REPLAYABLE_STREAMS: Tuple[type, ...] = tuple(f.module.ByteStream for f in FLAVOURS)


def _flavour_of(client: Any, kind: str) -> Flavour:
    for found in FLAVOURS:
        if isinstance(client, getattr(found.module, kind)):
            return found
    raise ConfigurationError(kind.lower(), f"must be an httpx.{kind} or httpx2.{kind}")


def _send_options(request: TokenRequest, timeout: float) -> Dict[str, Any]:
    # Never the client's auth (it may be ours), never a redirect (it would carry the secret).
    options = {"headers": dict(request.headers), "content": request.body, "timeout": timeout}
    return {**options, "auth": None, "follow_redirects": False}


def answer_of(response: Any) -> TransportResponse:
    """An httpx response (read) as the core's TransportResponse."""
    return TransportResponse.build(response.status_code, response.headers.items(), response.content)


def token_request(request: Any, send: Send, trace: Callable[..., Any]) -> Any:
    """``send`` as a request of the same flavour as ``request`` (so its client takes it), with
    its timeout and a ``trace`` callback, both httpx's documented request extensions."""
    timeout = dict.fromkeys(("connect", "read", "write", "pool"), send.timeout)
    token, options = send.request, {"timeout": timeout, "trace": trace}
    headers = dict(token.headers)
    return type(request)(
        token.method, token.url, headers=headers, content=token.body, extensions=options
    )


def relay(provider: TokenProvider, request: Any) -> Generator[Any, Any, Token]:
    """A token from ``provider``, each token request yielded to ``request``'s client and its
    answer passed on: for the sync auth flow's ``yield from``."""
    steps = sends(provider.token_flow(), provider.sync_performer())
    try:
        send = next(steps)
        while True:
            client = ClientSends()
            try:
                answer = yield token_request(request, send, client.record)
            except GeneratorExit:
                client.abandon(steps)
            send = client.answer(steps, answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class _OnClient:
    kind = "Client"

    def __init__(self, client: Any) -> None:
        self.flavour = _flavour_of(client, self.kind)
        self.client = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.flavour.name})"


class HttpxTransport(_OnClient):
    """Sync token requests through ``client`` (its proxies, TLS and pool), with httpx's own
    ``Client.request``, so a subclass's token logic (Authlib's) is never involved."""

    def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        try:
            sent = self.flavour.module.Client.request(
                self.client, request.method, request.url, **_send_options(request, timeout)
            )
        except self.flavour.errors as exc:
            raise self.flavour.failure(exc) from exc
        return answer_of(sent)


class AsyncHttpxTransport(_OnClient):
    """Async token requests through ``client``, from the event loop it belongs to."""

    kind = "AsyncClient"

    async def __call__(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        try:
            sent = await self.flavour.module.AsyncClient.request(
                self.client, request.method, request.url, **_send_options(request, timeout)
            )
        except self.flavour.errors as exc:
            raise self.flavour.failure(exc) from exc
        return answer_of(sent)
