"""The token exchange as pure functions: build the request, parse the response.

No I/O happens here. Transports (urllib, requests, httpx, aiohttp) only move the bytes these
functions produce and consume, so every HTTP stack gets the same validation and the same errors.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from ._log import logger
from .credentials import Credentials
from .errors import InvalidClientError, TokenEndpointError, TokenResponseError
from .token import DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME, Token

__all__ = [
    "API_VERSION",
    "TOKEN_REQUEST_BODY",
    "TokenRequest",
    "TransportResponse",
    "build_token_request",
    "parse_retry_after",
    "parse_token_response",
]

API_VERSION = "1"  # sent as X-API-Version on token and API requests, per Navro's docs
TOKEN_REQUEST_BODY = b"grant_type=client_credentials&scope=openid"
MAX_RETRY_AFTER = 3600.0  # seconds; a larger Retry-After is clamped (the deadline still rules)
_MAX_ERROR_TEXT = 200  # characters of a server-sent error code/description kept in messages


@dataclass(frozen=True)
class TokenRequest:
    """An HTTP request for a token. Its ``repr`` hides the Authorization header."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class TransportResponse:
    """What a transport hands back: status, headers (names lower-cased) and the raw body."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    @classmethod
    def build(cls, status_code: int, headers: Any, body: bytes) -> TransportResponse:
        """Normalise any mapping or list of pairs of headers to lower-case names."""
        items = headers.items() if hasattr(headers, "items") else headers
        return cls(int(status_code), {str(k).lower(): str(v) for k, v in items}, bytes(body))


def build_token_request(credentials: Credentials, *, secret: Optional[str] = None) -> TokenRequest:
    """The client-credentials request exactly as Navro documents it.

    ``secret`` is the secret to send when the caller has read it already (a secret source is
    read once per token request); by default the credentials' current secret.
    """
    if secret is None:
        secret = credentials.client_secret
    pair = f"{credentials.client_id}:{secret}".encode()
    return TokenRequest(
        method="POST",
        url=credentials.token_url,
        headers={
            "X-API-Version": API_VERSION,
            "Authorization": "Basic " + base64.b64encode(pair).decode("ascii"),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
        body=TOKEN_REQUEST_BODY,
    )


def parse_retry_after(value: Optional[str], *, now_wall: float) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date).

    Returns ``None`` for anything unusable, never a negative or infinite number; values are
    clamped to ``[0, MAX_RETRY_AFTER]``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: Optional[float]
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = None
        if parsed is not None:
            try:
                seconds = parsed.timestamp() - now_wall
            except (OverflowError, ValueError, OSError):
                seconds = None
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _clean_text(value: object) -> Optional[str]:
    """A server-sent string made safe for a message: printable, bounded."""
    if not isinstance(value, str):
        return None
    text = "".join(ch if ch.isprintable() else "?" for ch in value)[:_MAX_ERROR_TEXT]
    return text or None


def _json_object(body: bytes) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


_capped_lifetime_logged = False


def _lifetime(raw: Any, status: int) -> float:
    global _capped_lifetime_logged
    if raw is None:
        return DEFAULT_TOKEN_LIFETIME
    if isinstance(raw, bool):
        raise TokenResponseError("token response has a non-numeric expires_in", status_code=status)
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            raise TokenResponseError(
                "token response has a non-numeric expires_in", status_code=status
            ) from None
    if not isinstance(raw, (int, float)):
        raise TokenResponseError("token response has a non-numeric expires_in", status_code=status)
    try:
        lifetime = float(raw)
    except OverflowError:
        lifetime = math.inf
    if math.isnan(lifetime) or lifetime <= 0:
        raise TokenResponseError(
            "token response has an expires_in that is not a positive number", status_code=status
        )
    if lifetime > MAX_TOKEN_LIFETIME:
        if not _capped_lifetime_logged:
            _capped_lifetime_logged = True
            logger.warning(
                "token expires_in of %.6g s is implausible; capping it at %d s",
                lifetime,
                MAX_TOKEN_LIFETIME,
            )
        lifetime = MAX_TOKEN_LIFETIME
    return lifetime


def _usable_access_token(value: Any) -> bool:
    # A token is sent in a header: anything outside visible ASCII could corrupt the request.
    return isinstance(value, str) and bool(value) and all(0x21 <= ord(ch) <= 0x7E for ch in value)


def parse_token_response(
    response: TransportResponse, *, requested_at: float, requested_at_wall: float
) -> Token:
    """Turn a token endpoint response into a :class:`Token` or raise a typed error.

    ``requested_at``/``requested_at_wall`` are the instants the request was sent: expiry is
    counted from them, not from when the answer arrived.

    Raises :class:`InvalidClientError` (401), :class:`TokenEndpointError` (other non-2xx) or
    :class:`TokenResponseError` (a 2xx that is not a usable token).
    """
    status = response.status_code
    if 200 <= status < 300:
        return _parse_success(response, requested_at, requested_at_wall)
    data = _json_object(response.body) or {}
    error = _clean_text(data.get("error"))
    description = _clean_text(data.get("error_description"))
    if status == 401:
        raise InvalidClientError(status_code=status, error=error, error_description=description)
    retry_after = parse_retry_after(response.headers.get("retry-after"), now_wall=requested_at_wall)
    if 300 <= status < 400:
        message = (
            f"Navro token endpoint answered HTTP {status} (a redirect); token requests are "
            "never redirected, since that would send the client secret elsewhere"
        )
        raise TokenEndpointError(message, status_code=status, retryable=False)
    message = f"Navro token endpoint answered HTTP {status}"
    if error:
        message += f" ({error}" + (f": {description}" if description else "") + ")"
    raise TokenEndpointError(
        message,
        status_code=status,
        error=error,
        error_description=description,
        retry_after=retry_after,
    )


def _parse_success(
    response: TransportResponse, requested_at: float, requested_at_wall: float
) -> Token:
    status = response.status_code
    data = _json_object(response.body)
    if data is None:
        head = response.body.lstrip()[:1]
        if head == b"<":
            what = "an HTML page"
        elif not response.body.strip():
            what = "an empty body"
        else:
            what = "a body that is not a JSON object"
        raise TokenResponseError(
            f"Navro token endpoint answered HTTP {status} with {what} instead of a token",
            status_code=status,
        )
    access_token = data.get("access_token")
    if not _usable_access_token(access_token):
        problem = "no access_token" if not access_token else "an unusable access_token"
        raise TokenResponseError(f"token response has {problem}", status_code=status)
    assert isinstance(access_token, str)
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        shown = (
            _clean_text(token_type) if isinstance(token_type, str) else type(token_type).__name__
        )
        raise TokenResponseError(
            f"token response has token_type {shown!r}; only Bearer is supported",
            status_code=status,
        )
    lifetime = _lifetime(data.get("expires_in"), status)
    scope = data.get("scope")
    return Token(
        access_token,
        expires_in=lifetime,
        requested_at=requested_at,
        requested_at_wall=requested_at_wall,
        token_type="Bearer",
        scope=scope if isinstance(scope, str) else None,
    )
