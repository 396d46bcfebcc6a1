"""navro-adapters: drop-in authentication for Navro's payouts API on every popular HTTP stack.

The core (this package's top level) never imports an HTTP library. Adapters live in their own
modules and import theirs: ``navro_adapters.requests``, ``navro_adapters.niquests``,
``navro_adapters.httpx``, ``navro_adapters.aiohttp``, ``navro_adapters.authlib``.
"""

from ._version import __version__
from .auth import RequestAuth
from .clock import Clock, SystemClock
from .credentials import ENVIRONMENTS, Credentials, OriginScope
from .errors import (
    ConfigurationError,
    InvalidClientError,
    NavroAuthError,
    TokenEndpointError,
    TokenResponseError,
    TokenStoreError,
    TokenTimeoutError,
    TransportError,
)
from .events import TokenEvent
from .protocol import (
    API_VERSION,
    TokenRequest,
    TransportResponse,
    build_token_request,
    parse_retry_after,
    parse_token_response,
)
from .provider import ProviderStats, TokenProvider
from .retry import RetryPolicy
from .store import TokenStore
from .stores import FileStore, RedisStore
from .token import RefreshPolicy, Token, TokenState
from .transport import AsyncTransport, SyncTransport, UrllibTransport

__all__ = [
    "API_VERSION",
    "ENVIRONMENTS",
    "FileStore",
    "RedisStore",
    "AsyncTransport",
    "Clock",
    "ConfigurationError",
    "Credentials",
    "InvalidClientError",
    "NavroAuthError",
    "OriginScope",
    "ProviderStats",
    "RefreshPolicy",
    "RequestAuth",
    "RetryPolicy",
    "SyncTransport",
    "SystemClock",
    "Token",
    "TokenEndpointError",
    "TokenEvent",
    "TokenProvider",
    "TokenRequest",
    "TokenResponseError",
    "TokenState",
    "TokenStore",
    "TokenStoreError",
    "TokenTimeoutError",
    "TransportError",
    "TransportResponse",
    "UrllibTransport",
    "__version__",
    "build_token_request",
    "parse_retry_after",
    "parse_token_response",
]
