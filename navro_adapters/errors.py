"""The one exception hierarchy of navro-adapters.

Every error the library raises derives from :class:`NavroAuthError`, so callers can catch one
type at the boundary of their own code. Errors carry a ``retryable`` flag that the retry policy
reads, and wrap the underlying cause with ``raise ... from exc``. No message ever contains a
client secret or an access token: messages are built from status codes, field names and
RFC 6749 error codes only.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "ConfigurationError",
    "InvalidClientError",
    "NavroAuthError",
    "TokenEndpointError",
    "TokenResponseError",
    "TokenStoreError",
    "TokenTimeoutError",
    "TransportError",
]


class NavroAuthError(Exception):
    """Root of every error raised by navro-adapters.

    ``retryable`` tells whether sending the same token request again may succeed.
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: Optional[bool] = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigurationError(NavroAuthError, ValueError):
    """Invalid configuration, raised before anything is sent. ``field`` names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", retryable=False)
        self.field = field


class TransportError(NavroAuthError):
    """The token request could not be completed: connection refused, reset, DNS, TLS.

    Retryable by default; the original exception is kept as ``__cause__``.
    """

    retryable = True


class TokenTimeoutError(TransportError):
    """The token endpoint did not answer within the per-attempt timeout or the total deadline."""


class TokenEndpointError(NavroAuthError):
    """The token endpoint answered with an error status (other than 401).

    Keeps the HTTP ``status_code``, the RFC 6749 ``error`` and ``error_description`` when the
    body carried them, and ``retry_after`` (seconds) when the server sent ``Retry-After``.
    429 and 5xx are retryable; other 4xx are not.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error: Optional[str] = None,
        error_description: Optional[str] = None,
        retry_after: Optional[float] = None,
        retryable: Optional[bool] = None,
    ) -> None:
        if retryable is None:
            retryable = status_code == 429 or status_code >= 500
        super().__init__(message, retryable=retryable)
        self.status_code = status_code
        self.error = error
        self.error_description = error_description
        self.retry_after = retry_after


class InvalidClientError(TokenEndpointError):
    """The token endpoint answered 401: the client id or secret was rejected.

    Never retried: a secret reset in the Navro Hub invalidates the old secret for good.
    """

    def __init__(
        self,
        *,
        status_code: int = 401,
        error: Optional[str] = None,
        error_description: Optional[str] = None,
    ) -> None:
        message = (
            "Navro rejected the client credentials (HTTP 401"
            + (f", {error}" if error else "")
            + "): check the client id and secret. Resetting the client secret in the "
            "Navro Hub invalidates the old one, so update the secret your service uses."
        )
        super().__init__(
            message,
            status_code=status_code,
            error=error,
            error_description=error_description,
            retryable=False,
        )


class TokenResponseError(NavroAuthError):
    """The token endpoint answered 2xx with something that is not a usable token.

    Not retried: a server that sends a malformed token will most likely send it again.
    """

    def __init__(self, message: str, *, status_code: Optional[int] = None) -> None:
        super().__init__(message, retryable=False)
        self.status_code = status_code


class TokenStoreError(NavroAuthError):
    """A shared token store failed. The provider logs it and carries on without the store."""

    retryable = True
