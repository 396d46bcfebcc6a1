"""What every adapter shares, so each one only translates to its HTTP library.

:class:`AdapterCore` resolves the token source (a ``Credentials`` or a shared
``TokenProvider``), decides which requests may carry the token (origin scoping), and owns the
bounded 401 rule: invalidate exactly the token that was sent, then resend once.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Union

from .credentials import Credentials, OriginScope
from .errors import ConfigurationError
from .provider import TokenProvider

__all__ = [
    "API_VERSION_HEADER",
    "PROVIDER_OPTIONS",
    "AdapterCore",
    "AuthSource",
    "MAX_AUTH_ATTEMPTS",
    "split_provider_options",
]

API_VERSION_HEADER = "X-API-Version"
AUTHORIZATION = "Authorization"
MAX_AUTH_ATTEMPTS = 2  # the first send, and one resend after a 401 with a fresh token

AuthSource = Union[Credentials, TokenProvider]
ProviderFactory = Callable[[Credentials, Mapping[str, Any]], TokenProvider]

#: TokenProvider keywords an adapter accepts and passes on when it builds the provider itself.
PROVIDER_OPTIONS = frozenset(
    {"refresh_policy", "retry_policy", "store", "store_wait", "store_clock_skew", "clock", "rng"}
)


def split_provider_options(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Remove and return the :data:`PROVIDER_OPTIONS` found in ``kwargs``."""
    return {name: kwargs.pop(name) for name in PROVIDER_OPTIONS.intersection(kwargs)}


class AdapterCore:
    """Token source plus origin scope for one adapter instance.

    ``make_provider(credentials, options)`` builds the provider when ``source`` is
    ``Credentials`` (adapters pass a factory that supplies transports on their own HTTP client
    and hands ``options``, the caller's :data:`PROVIDER_OPTIONS`, to ``TokenProvider``); with a
    ``TokenProvider`` that provider, its transport and its policies are used as they are, so
    one token serves every adapter, and provider options are refused as contradictory.
    """

    __slots__ = ("_prefix", "credentials", "provider", "scope")

    def __init__(
        self,
        source: AuthSource,
        *,
        extra_origins: Iterable[str] = (),
        make_provider: Optional[ProviderFactory] = None,
        provider_options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        options = dict(provider_options or {})
        unknown = sorted(set(options) - PROVIDER_OPTIONS)
        if unknown:
            raise ConfigurationError(unknown[0], "is not an option of TokenProvider")
        if isinstance(source, TokenProvider):
            if options:
                raise ConfigurationError(
                    sorted(options)[0],
                    "only applies when the adapter builds its provider from Credentials; "
                    "set it on the TokenProvider you pass",
                )
            self.provider = source
        elif isinstance(source, Credentials):
            if make_provider is not None:
                self.provider = make_provider(source, options)
            else:
                self.provider = TokenProvider(source, **options)
        else:
            raise ConfigurationError(
                "credentials",
                "must be navro_adapters.Credentials or navro_adapters.TokenProvider, "
                f"not {type(source).__name__}",
            )
        self.credentials = self.provider.credentials
        self.scope = OriginScope(self.credentials.base_url, extra_origins)
        self._prefix = self.credentials.base_url + "/"

    def applies_to(self, url: str) -> bool:
        """Whether a request to ``url`` may carry the token (same origin as the API base)."""
        # Fast path: a URL under the configured base, written the same way, is in scope.
        if url.startswith(self._prefix) or url == self.credentials.base_url:
            return True
        return self.scope.allows(url)

    def __repr__(self) -> str:
        return f"AdapterCore(provider={self.provider!r}, scope={self.scope!r})"
