"""What every adapter shares, so each one only translates to its HTTP library.

:class:`AdapterCore` resolves the token source (a ``Credentials`` or a shared
``TokenProvider``), decides which requests may carry the token (origin scoping), and owns the
bounded 401 rule: invalidate exactly the token that was sent, then resend once.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Union

from .credentials import Credentials, OriginScope
from .errors import ConfigurationError
from .provider import TokenProvider

__all__ = ["API_VERSION_HEADER", "AdapterCore", "AuthSource", "MAX_AUTH_ATTEMPTS"]

API_VERSION_HEADER = "X-API-Version"
AUTHORIZATION = "Authorization"
MAX_AUTH_ATTEMPTS = 2  # the first send, and one resend after a 401 with a fresh token

AuthSource = Union[Credentials, TokenProvider]


class AdapterCore:
    """Token source plus origin scope for one adapter instance.

    ``make_provider`` builds the provider when ``source`` is ``Credentials`` (adapters pass a
    factory that supplies a transport on their own HTTP client); with a ``TokenProvider`` that
    provider, and its transport, are used as they are so one token serves every adapter.
    """

    __slots__ = ("_prefix", "credentials", "provider", "scope")

    def __init__(
        self,
        source: AuthSource,
        *,
        extra_origins: Iterable[str] = (),
        make_provider: Optional[Callable[[Credentials], TokenProvider]] = None,
    ) -> None:
        if isinstance(source, TokenProvider):
            self.provider = source
        elif isinstance(source, Credentials):
            self.provider = make_provider(source) if make_provider else TokenProvider(source)
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
