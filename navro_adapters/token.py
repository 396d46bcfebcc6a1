"""Access tokens and the three states a cached token goes through.

A token is FRESH for most of its life, STALE near the end (still valid: it is served while one
refresh runs in the background) and EXPIRED shortly before its real expiry (never served).
The margins between the states are proportional to the token's lifetime, not fixed minutes:
Navro's tokens live 300 s, so google-auth's fixed 3m45s or azure-core's 5 min windows would make
every one of them look stale on arrival.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ._log import fingerprint
from .errors import ConfigurationError

__all__ = ["DEFAULT_TOKEN_LIFETIME", "MAX_TOKEN_LIFETIME", "RefreshPolicy", "Token", "TokenState"]

DEFAULT_TOKEN_LIFETIME = 300.0  # seconds, per Navro's docs; used when expires_in is missing
MAX_TOKEN_LIFETIME = 86400.0  # seconds; a larger expires_in is capped (and logged once)
MAX_SKEW_FRACTION = (
    0.1  # the clock-skew margin on a stored token never exceeds this share of its life
)


class TokenState(enum.Enum):
    FRESH = "fresh"  # serve it, nothing to do
    STALE = "stale"  # serve it, and make sure one refresh is under way
    EXPIRED = "expired"  # do not serve it; callers wait for a new one


class Token:
    """An access token as issued by Navro, with the instants that matter for caching.

    ``requested_at`` is when the token request was *sent*, on the provider's monotonic clock,
    so network time never makes a token look fresher than it is; ``requested_at_wall`` is the
    same instant on the wall clock, used only to share absolute expiry through a token store.
    ``repr``/``str`` show a fingerprint, never the token itself.
    """

    __slots__ = (
        "access_token",
        "authorization",
        "expires_in",
        "fingerprint",
        "requested_at",
        "requested_at_wall",
        "scope",
        "token_type",
    )

    def __init__(
        self,
        access_token: str,
        *,
        expires_in: float,
        requested_at: float,
        requested_at_wall: float,
        token_type: str = "Bearer",
        scope: Optional[str] = None,
    ) -> None:
        self.access_token = access_token
        self.token_type = token_type
        self.expires_in = float(expires_in)
        self.requested_at = float(requested_at)
        self.requested_at_wall = float(requested_at_wall)
        self.scope = scope
        #: The header value, built once: adapters set it on every request.
        self.authorization = f"Bearer {access_token}"
        self.fingerprint = fingerprint(access_token)

    @property
    def expires_at(self) -> float:
        """Expiry on the monotonic clock the token was requested with."""
        return self.requested_at + self.expires_in

    @property
    def expires_at_wall(self) -> float:
        """Expiry as a Unix timestamp (for token stores shared between processes)."""
        return self.requested_at_wall + self.expires_in

    def to_record(self) -> Dict[str, Any]:
        """A JSON-able record for a shared token store: absolute wall-clock instants only."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "scope": self.scope,
            "issued_at": self.requested_at_wall,
            "expires_at": self.expires_at_wall,
        }

    @classmethod
    def from_record(
        cls, record: Any, *, now_monotonic: float, now_wall: float, clock_skew: float = 0.0
    ) -> Optional[Token]:
        """Rebuild a token read from a shared store, or ``None`` if the record is unusable.

        The wall-clock instants are mapped onto this process's monotonic clock; ``clock_skew``
        (seconds, at most a tenth of the token's life so short tokens stay usable) is taken
        off the remaining life so a host whose clock runs behind never trusts a token past its
        real expiry.
        """
        if not isinstance(record, dict):
            return None
        access_token = record.get("access_token")
        issued_at = record.get("issued_at")
        expires_at = record.get("expires_at")
        if not isinstance(access_token, str) or not access_token:
            return None
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in (issued_at, expires_at)
        ):
            return None
        assert isinstance(issued_at, (int, float)) and isinstance(expires_at, (int, float))
        issued_life = float(expires_at) - float(issued_at)
        lifetime = issued_life - min(max(0.0, clock_skew), issued_life * MAX_SKEW_FRACTION)
        if lifetime <= 0 or lifetime > MAX_TOKEN_LIFETIME:
            return None
        age = max(0.0, now_wall - float(issued_at))
        token_type = record.get("token_type")
        scope = record.get("scope")
        return cls(
            access_token,
            expires_in=lifetime,
            requested_at=now_monotonic - age,
            requested_at_wall=float(issued_at),
            token_type=token_type if isinstance(token_type, str) else "Bearer",
            scope=scope if isinstance(scope, str) else None,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Token):
            return NotImplemented
        return self.access_token == other.access_token

    def __hash__(self) -> int:
        return hash(self.access_token)

    def __repr__(self) -> str:
        return (
            f"Token(fingerprint={self.fingerprint!r}, token_type={self.token_type!r}, "
            f"expires_in={self.expires_in:g})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class RefreshPolicy:
    """When a token turns STALE and EXPIRED, as fractions of its lifetime.

    For a lifetime ``L``: the refresh margin is ``L * refresh_fraction`` and the expiry margin
    ``L * expiry_fraction``, each clamped to ``[min_*, max_*]`` and then to at most ``L / 2``,
    so every token is served for at least the first half of its life whatever the settings
    (no refresh storms), and the expiry margin never exceeds the refresh margin.
    Defaults for a 300 s token: FRESH for 240 s, STALE for 45 s, EXPIRED for the last 15 s
    (before the jitter below moves each refresh ahead up to 30 s earlier).

    Two adjustments on top, both on by default:

    * ``adapt_to_latency``: a token is only attached while it will outlive the time the API
      has recently taken to answer after a token was attached (pool queues included: the
      provider keeps a decaying maximum of what adapters observe). When that time exceeds
      the expiry margin, both margins grow by the difference. The refresh margin never
      passes ``L / 2``, and the expiry margin stops short of it by the static margins'
      difference: the stale window, in which one refresh ahead runs while every caller goes
      on with the current token, never closes (a closed one makes every caller wait for each
      rotation's token request).
    * ``refresh_jitter``: each token's refresh ahead starts up to ``refresh_jitter`` times
      the refresh margin earlier, at random, so a fleet's processes that fetched in the same
      second do not all refresh in the same second (0 turns it off; at most 1; never before
      the first half of the token's life).
    """

    refresh_fraction: float = 0.2
    expiry_fraction: float = 0.05
    min_refresh_margin: float = 0.0
    max_refresh_margin: float = 600.0
    min_expiry_margin: float = 0.0
    max_expiry_margin: float = 30.0
    refresh_jitter: float = 0.5
    adapt_to_latency: bool = True

    def __post_init__(self) -> None:
        for name in (
            "refresh_fraction",
            "expiry_fraction",
            "min_refresh_margin",
            "max_refresh_margin",
            "min_expiry_margin",
            "max_expiry_margin",
            "refresh_jitter",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigurationError(name, "must be a number")
            if not math.isfinite(value) or value < 0:
                raise ConfigurationError(name, "must be a finite number >= 0")
        if self.refresh_jitter > 1:
            raise ConfigurationError("refresh_jitter", "must be at most 1 (the refresh margin)")
        if not isinstance(self.adapt_to_latency, bool):
            raise ConfigurationError("adapt_to_latency", "must be True or False")

    def margins(self, lifetime: float, latency: float = 0.0) -> Tuple[float, float]:
        """``(refresh_margin, expiry_margin)`` in seconds for a token of this lifetime, when
        API answers take up to ``latency`` seconds after a token is attached."""
        half = max(0.0, lifetime) / 2.0
        expiry = min(
            max(lifetime * self.expiry_fraction, self.min_expiry_margin), self.max_expiry_margin
        )
        refresh = min(
            max(lifetime * self.refresh_fraction, self.min_refresh_margin),
            self.max_refresh_margin,
        )
        expiry = min(expiry, half)
        refresh = min(max(refresh, expiry), half)
        if self.adapt_to_latency and latency > expiry:  # it must outlive the wait for an answer
            stale_window = refresh - expiry  # kept: the refresh ahead runs in it, nobody waits
            expiry = max(expiry, min(latency, half - stale_window))
            refresh = expiry + stale_window
        return refresh, expiry

    def deadlines(
        self, token: Token, latency: float = 0.0, jitter: float = 0.0
    ) -> Tuple[float, float]:
        """``(fresh_until, usable_until)`` on the token's monotonic clock. ``latency``: see
        :meth:`margins`; ``jitter`` (0 to 1, drawn by the caller) moves the refresh ahead
        earlier by that share of ``refresh_jitter`` times the refresh margin."""
        refresh, expiry = self.margins(token.expires_in, latency)
        # Earlier by the jitter, still never before the first half of the token's life.
        refresh = min(
            refresh * (1.0 + self.refresh_jitter * jitter), max(0.0, token.expires_in) / 2
        )
        return token.expires_at - refresh, token.expires_at - expiry

    def state(self, token: Token, now: float) -> TokenState:
        fresh_until, usable_until = self.deadlines(token)
        if now < fresh_until:
            return TokenState.FRESH
        if now < usable_until:
            return TokenState.STALE
        return TokenState.EXPIRED
