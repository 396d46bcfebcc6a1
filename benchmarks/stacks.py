"""The stacks under test: ours, a no-auth baseline per HTTP library, and the peers.

A stack is an HTTP client plus an auth layer, driven by threads (sync clients) or by tasks
(asyncio clients). Each is wrapped in a *driver* exposing one call: ``GET /v1/ping`` and
report ``(status, id of the Authorization value sent, error class name)``. Drivers never
expose a token: the Authorization value is only turned into a small integer id, in memory, to
tell when a stack switched tokens.

Peers are configured as their documentation shows, with what Navro needs:
``X-API-Version: 1`` on the token request (a session/client header, the only way each offers),
``scope=openid`` and HTTP Basic client authentication (the default of each). Their default
expiry margins are scaled to the token lifetime in use (see
:data:`benchmarks.config.PEER_DEFAULT_TOKEN_LIFETIME`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, Optional, Protocol, Tuple

from navro_adapters import Credentials

from .config import BenchConfig
from .hooks import API_VERSION_HEADER, API_VERSION_VALUE

__all__ = [
    "STACKS",
    "AsyncDriver",
    "AuthIds",
    "CallResult",
    "StackSpec",
    "SyncDriver",
    "Target",
    "make_async_driver",
    "make_sync_driver",
    "missing_modules",
    "reset_process_caches",
    "spec_by_key",
]

#: ``(HTTP status or 0 when no response arrived, id of the Authorization sent or 0, error name)``
CallResult = Tuple[int, int, str]

PEER_EARLY_EXPIRY = 30.0  # seconds: requests-auth and httpx-auth default
PEER_AUTHLIB_LEEWAY = 60.0  # seconds: Authlib default
API_HEADERS = {API_VERSION_HEADER: API_VERSION_VALUE}


@dataclass(frozen=True)
class StackSpec:
    """What a stack is; ``baseline`` names the no-auth stack on the same HTTP library."""

    key: str
    label: str
    role: str  # "ours", "baseline" or "peer"
    kind: str  # "threads" or "tasks"
    baseline: Optional[str]
    needs: Tuple[str, ...]  # importable modules; a missing one makes the stack "missing"
    note: str = ""


STACKS: Tuple[StackSpec, ...] = (
    StackSpec("baseline-requests", "no auth: requests", "baseline", "threads", None, ("requests",)),
    StackSpec(
        "navro-requests", "navro requests", "ours", "threads", "baseline-requests", ("requests",)
    ),
    StackSpec(
        "peer-requests-auth",
        "requests-auth",
        "peer",
        "threads",
        "baseline-requests",
        ("requests", "requests_auth"),
    ),
    StackSpec(
        "peer-authlib-requests",
        "Authlib OAuth2Session",
        "peer",
        "threads",
        "baseline-requests",
        ("requests", "authlib"),
    ),
    StackSpec(
        "navro-authlib-requests",
        "navro authlib (requests)",
        "ours",
        "threads",
        "baseline-requests",
        ("requests", "authlib", "navro_adapters.authlib"),
    ),
    StackSpec("baseline-httpx", "no auth: httpx", "baseline", "threads", None, ("httpx",)),
    StackSpec("navro-httpx", "navro httpx (sync)", "ours", "threads", "baseline-httpx", ("httpx",)),
    StackSpec(
        "peer-httpx-auth",
        "httpx-auth (sync)",
        "peer",
        "threads",
        "baseline-httpx",
        ("httpx", "httpx_auth"),
    ),
    StackSpec(
        "navro-authlib-httpx",
        "navro authlib (httpx sync)",
        "ours",
        "threads",
        "baseline-httpx2",
        ("authlib", "httpx2", "navro_adapters.authlib"),
    ),
    StackSpec("baseline-httpx2", "no auth: httpx2", "baseline", "threads", None, ("httpx2",)),
    StackSpec(
        "baseline-httpx-async", "no auth: httpx async", "baseline", "tasks", None, ("httpx",)
    ),
    StackSpec(
        "navro-httpx-async",
        "navro httpx (async)",
        "ours",
        "tasks",
        "baseline-httpx-async",
        ("httpx",),
    ),
    StackSpec(
        "peer-httpx-auth-async",
        "httpx-auth (async)",
        "peer",
        "tasks",
        "baseline-httpx-async",
        ("httpx", "httpx_auth"),
    ),
    StackSpec(
        "baseline-httpx2-async", "no auth: httpx2 async", "baseline", "tasks", None, ("httpx2",)
    ),
    StackSpec(
        "navro-authlib-async",
        "navro authlib (async)",
        "ours",
        "tasks",
        "baseline-httpx2-async",
        ("authlib", "httpx2", "navro_adapters.authlib"),
    ),
    StackSpec(
        "peer-authlib-async",
        "Authlib AsyncOAuth2Client",
        "peer",
        "tasks",
        "baseline-httpx2-async",
        ("authlib", "httpx2"),
    ),
    StackSpec("baseline-aiohttp", "no auth: aiohttp", "baseline", "tasks", None, ("aiohttp",)),
    StackSpec("navro-aiohttp", "navro aiohttp", "ours", "tasks", "baseline-aiohttp", ("aiohttp",)),
    StackSpec(
        "navro-aiohttp-token-session",
        "navro aiohttp, token_session=",
        "ours",
        "tasks",
        "baseline-aiohttp",
        ("aiohttp",),
    ),
    StackSpec("baseline-niquests", "no auth: niquests", "baseline", "threads", None, ("niquests",)),
    StackSpec(
        "navro-niquests",
        "navro niquests (sync)",
        "ours",
        "threads",
        "baseline-niquests",
        ("niquests", "navro_adapters.niquests"),
    ),
    StackSpec(
        "baseline-niquests-async",
        "no auth: niquests async",
        "baseline",
        "tasks",
        None,
        ("niquests",),
    ),
    StackSpec(
        "navro-niquests-async",
        "navro niquests (async)",
        "ours",
        "tasks",
        "baseline-niquests-async",
        ("niquests", "navro_adapters.niquests"),
    ),
)


def spec_by_key(key: str) -> StackSpec:
    for spec in STACKS:
        if spec.key == key:
            return spec
    raise KeyError(key)


def missing_modules(spec: StackSpec) -> Tuple[str, ...]:
    """The modules of ``spec.needs`` that cannot be found (nothing is imported)."""
    missing = []
    for name in spec.needs:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return tuple(missing)


@dataclass(frozen=True)
class Target:
    """Where and how a driver talks to the sandbox."""

    credentials: Credentials
    ping_url: str
    fixed_authorization: str  # "Bearer <token>" valid for the whole run: for the baselines
    token_ttl: float  # lifetime of the tokens the sandbox issues now (scales peer margins)
    config: BenchConfig


class AuthIds:
    """Maps each distinct Authorization value to a small integer (0: none). Thread-safe."""

    def __init__(self) -> None:
        self._ids: Dict[str, int] = {}
        self._lock = threading.Lock()

    def id_of(self, value: Optional[str]) -> int:
        if not value:
            return 0
        found = self._ids.get(value)
        if found is None:
            with self._lock:
                found = self._ids.setdefault(value, len(self._ids) + 1)
        return found


class SyncDriver(Protocol):
    ids: AuthIds

    def warm(self) -> CallResult: ...

    def call(self) -> CallResult: ...

    def close(self) -> None: ...


class AsyncDriver(Protocol):
    ids: AuthIds

    async def warm(self) -> CallResult: ...

    async def call(self) -> CallResult: ...

    async def aclose(self) -> None: ...


# -- sync drivers -------------------------------------------------------------------------------


class _SyncDriverBase:
    """What both sync drivers share: an optional priming step before the first call, and
    extra closers (private token sessions) run before the client itself closes."""

    ids: AuthIds

    def __init__(
        self,
        target: Target,
        prime: Optional[Callable[[], object]],
        closers: Tuple[Callable[[], object], ...],
    ) -> None:
        self.url = target.ping_url
        self.ids = AuthIds()
        self._prime = prime
        self._closers = closers

    def call(self) -> CallResult:
        raise NotImplementedError

    def warm(self) -> CallResult:
        if self._prime is not None:
            self._prime()
        return self.call()

    def _close_extras(self) -> None:
        for closer in self._closers:
            closer()


class RequestsDriver(_SyncDriverBase):
    """Threads sharing one ``requests.Session`` (pool sized for them)."""

    def __init__(
        self,
        session: Any,
        target: Target,
        *,
        prime: Optional[Callable[[], object]] = None,
        closers: Tuple[Callable[[], object], ...] = (),
    ) -> None:
        import requests.adapters

        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=target.config.pool_size
        )
        session.mount("http://", adapter)
        super().__init__(target, prime, closers)
        self.session = session
        self.timeout = target.config.request_timeout

    def call(self) -> CallResult:
        try:
            response = self.session.get(self.url, timeout=self.timeout)
            response.content  # noqa: B018 - read the body, as a caller would
            sent = response.request.headers.get("Authorization")
            return response.status_code, self.ids.id_of(sent), ""
        except Exception as exc:
            return 0, 0, type(exc).__name__

    def close(self) -> None:
        self._close_extras()
        self.session.close()


class HttpxDriver(_SyncDriverBase):
    """Threads sharing one httpx/httpx2 ``Client``."""

    def __init__(
        self,
        client: Any,
        target: Target,
        *,
        prime: Optional[Callable[[], object]] = None,
        closers: Tuple[Callable[[], object], ...] = (),
    ) -> None:
        super().__init__(target, prime, closers)
        self.client = client

    def call(self) -> CallResult:
        try:
            response = self.client.get(self.url)
            sent = response.request.headers.get("authorization")
            return response.status_code, self.ids.id_of(sent), ""
        except Exception as exc:
            return 0, 0, type(exc).__name__

    def close(self) -> None:
        self._close_extras()
        self.client.close()


def _requests_session(headers: Optional[Dict[str, str]] = None) -> Any:
    import requests

    session = requests.Session()
    if headers:
        session.headers.update(headers)
    return session


def _httpx_kwargs(module: Any, target: Target) -> Dict[str, Any]:
    size = target.config.pool_size
    return {
        "limits": module.Limits(max_connections=size, max_keepalive_connections=size),
        "timeout": target.config.request_timeout,
    }


def reset_process_caches() -> None:
    """Empty the peers' process-wide token caches, so each scenario starts without a token."""
    for name in ("requests_auth", "httpx_auth"):
        module = sys.modules.get(name)
        if module is not None:
            module.OAuth2.token_cache.clear()


def _navro_authlib() -> Any:
    return importlib.import_module("navro_adapters.authlib")


def _scaled(default: float, target: Target) -> float:
    return default * target.config.peer_margin_scale(target.token_ttl)


def make_sync_driver(key: str, target: Target) -> SyncDriver:
    """A new driver for a thread-based stack (a new client, a new auth layer, no token)."""
    auth: Any  # each branch builds its own kind of client and auth layer
    client: Any
    creds = target.credentials
    fixed = {"Authorization": target.fixed_authorization, **API_HEADERS}
    if key.startswith(("baseline-niquests", "navro-niquests")):
        from . import niquests_stacks

        return niquests_stacks.make_sync_driver(key, target)
    if key == "baseline-requests":
        return RequestsDriver(_requests_session(fixed), target)
    if key == "navro-requests":
        from navro_adapters.requests import NavroAuth as RequestsAuth

        session = _requests_session()
        auth = RequestsAuth(creds)
        session.auth = auth
        return RequestsDriver(session, target, closers=(auth.close,))
    if key == "peer-requests-auth":
        import requests_auth

        session = _requests_session(API_HEADERS)
        session.auth = requests_auth.OAuth2ClientCredentials(
            creds.token_url,
            creds.client_id,
            creds.client_secret,
            scope="openid",
            session=_requests_session(API_HEADERS),  # the token request needs X-API-Version
            early_expiry=_scaled(PEER_EARLY_EXPIRY, target),
        )
        return RequestsDriver(session, target)
    if key == "peer-authlib-requests":
        from authlib.integrations.requests_client import OAuth2Session

        session = OAuth2Session(
            creds.client_id,
            creds.client_secret,
            scope="openid",
            token_endpoint=creds.token_url,
            grant_type="client_credentials",
            leeway=_scaled(PEER_AUTHLIB_LEEWAY, target),
        )
        session.headers.update(API_HEADERS)

        def prime() -> object:  # Authlib's documented first step for client credentials
            return session.fetch_token(creds.token_url, grant_type="client_credentials")

        return RequestsDriver(session, target, prime=prime)
    if key == "navro-authlib-requests":
        session = _navro_authlib().oauth2_session(creds)
        return RequestsDriver(session, target)
    if key == "baseline-httpx":
        import httpx

        return HttpxDriver(httpx.Client(headers=fixed, **_httpx_kwargs(httpx, target)), target)
    if key == "baseline-httpx2":
        import httpx2

        return HttpxDriver(httpx2.Client(headers=fixed, **_httpx_kwargs(httpx2, target)), target)
    if key == "navro-httpx":
        import httpx

        from navro_adapters.httpx import NavroAuth as HttpxAuth

        auth = HttpxAuth(creds)
        client = httpx.Client(auth=auth, **_httpx_kwargs(httpx, target))
        return HttpxDriver(client, target, closers=(auth.close,))
    if key == "peer-httpx-auth":
        import httpx
        import httpx_auth

        token_client = httpx.Client(headers=API_HEADERS)  # the token request needs the header
        auth = httpx_auth.OAuth2ClientCredentials(
            creds.token_url,
            creds.client_id,
            creds.client_secret,
            scope="openid",
            client=token_client,
            early_expiry=_scaled(PEER_EARLY_EXPIRY, target),
        )
        client = httpx.Client(auth=auth, headers=API_HEADERS, **_httpx_kwargs(httpx, target))
        return HttpxDriver(client, target, closers=(token_client.close,))
    if key == "navro-authlib-httpx":
        import httpx2

        client = _navro_authlib().oauth2_client(creds, **_httpx_kwargs(httpx2, target))
        return HttpxDriver(client, target)
    raise KeyError(f"not a thread-based stack: {key}")


# -- async drivers ------------------------------------------------------------------------------


class AsyncHttpxDriver:
    """Tasks sharing one httpx/httpx2 ``AsyncClient``."""

    def __init__(
        self,
        client: Any,
        target: Target,
        *,
        prime: Optional[Callable[[], Awaitable[object]]] = None,
        closers: Tuple[Callable[[], object], ...] = (),
    ) -> None:
        self.client = client
        self.url = target.ping_url
        self.ids = AuthIds()
        self._prime = prime
        self._closers = closers

    async def warm(self) -> CallResult:
        if self._prime is not None:
            await self._prime()
        return await self.call()

    async def call(self) -> CallResult:
        try:
            response = await self.client.get(self.url)
            sent = response.request.headers.get("authorization")
            return response.status_code, self.ids.id_of(sent), ""
        except Exception as exc:
            return 0, 0, type(exc).__name__

    async def aclose(self) -> None:
        for closer in self._closers:
            closer()
        await self.client.aclose()


class AiohttpDriver:
    """Tasks sharing one ``aiohttp.ClientSession``."""

    def __init__(
        self, session: Any, target: Target, middleware: Any = None, token_session: Any = None
    ) -> None:
        self.session = session
        self.url = target.ping_url
        self.ids = AuthIds()
        self.middleware = middleware  # the auth middleware, for the in-process hook timing
        self.token_session = token_session  # closed with the driver

    async def warm(self) -> CallResult:
        return await self.call()

    async def call(self) -> CallResult:
        try:
            async with self.session.get(self.url) as response:
                await response.read()
                sent = response.request_info.headers.get("Authorization")
                return response.status, self.ids.id_of(sent), ""
        except Exception as exc:
            return 0, 0, type(exc).__name__

    async def aclose(self) -> None:
        await self.session.close()
        if self.token_session is not None:
            await self.token_session.close()


def _aiohttp_session(target: Target, **kwargs: Any) -> Any:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=target.config.pool_size)
    timeout = aiohttp.ClientTimeout(total=target.config.request_timeout)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, **kwargs)


async def make_async_driver(key: str, target: Target) -> AsyncDriver:
    """A new driver for an asyncio stack; call it on the loop that will use the driver."""
    auth: Any  # each branch builds its own kind of client and auth layer
    client: Any
    creds = target.credentials
    fixed = {"Authorization": target.fixed_authorization, **API_HEADERS}
    if key.startswith(("baseline-niquests", "navro-niquests")):
        from . import niquests_stacks

        return await niquests_stacks.make_async_driver(key, target)
    if key == "baseline-httpx-async":
        import httpx

        client = httpx.AsyncClient(headers=fixed, **_httpx_kwargs(httpx, target))
        return AsyncHttpxDriver(client, target)
    if key == "baseline-httpx2-async":
        import httpx2

        client = httpx2.AsyncClient(headers=fixed, **_httpx_kwargs(httpx2, target))
        return AsyncHttpxDriver(client, target)
    if key == "navro-httpx-async":
        import httpx

        from navro_adapters.httpx import NavroAuth as HttpxAuth

        auth = HttpxAuth(creds)
        client = httpx.AsyncClient(auth=auth, **_httpx_kwargs(httpx, target))
        return AsyncHttpxDriver(client, target, closers=(auth.close,))
    if key == "peer-httpx-auth-async":
        import httpx
        import httpx_auth

        token_client = httpx.Client(headers=API_HEADERS)  # httpx-auth fetches with a sync client
        auth = httpx_auth.OAuth2ClientCredentials(
            creds.token_url,
            creds.client_id,
            creds.client_secret,
            scope="openid",
            client=token_client,
            early_expiry=_scaled(PEER_EARLY_EXPIRY, target),
        )
        client = httpx.AsyncClient(auth=auth, headers=API_HEADERS, **_httpx_kwargs(httpx, target))
        return AsyncHttpxDriver(client, target, closers=(token_client.close,))
    if key == "peer-authlib-async":
        import httpx2
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        peer = AsyncOAuth2Client(
            creds.client_id,
            creds.client_secret,
            scope="openid",
            token_endpoint=creds.token_url,
            grant_type="client_credentials",
            leeway=_scaled(PEER_AUTHLIB_LEEWAY, target),
            headers=API_HEADERS,
            **_httpx_kwargs(httpx2, target),
        )

        async def prime() -> object:  # Authlib's documented first step for client credentials
            return await peer.fetch_token(creds.token_url, grant_type="client_credentials")

        return AsyncHttpxDriver(peer, target, prime=prime)
    if key == "navro-authlib-async":
        import httpx2

        client = _navro_authlib().async_oauth2_client(creds, **_httpx_kwargs(httpx2, target))
        return AsyncHttpxDriver(client, target)
    if key == "baseline-aiohttp":
        return AiohttpDriver(_aiohttp_session(target, headers=fixed), target)
    if key in ("navro-aiohttp", "navro-aiohttp-token-session"):
        from navro_adapters.aiohttp import NavroAuthMiddleware

        # token_session=: the documented remedy for a saturated connector, a pool of its own
        token_session = _aiohttp_session(target) if key.endswith("token-session") else None
        middleware = NavroAuthMiddleware(creds, token_session=token_session)
        session = _aiohttp_session(target, middlewares=(middleware,))
        return AiohttpDriver(session, target, middleware, token_session)
    raise KeyError(f"not an asyncio stack: {key}")
