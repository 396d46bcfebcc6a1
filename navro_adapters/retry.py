"""How token requests are retried: exponential backoff with full jitter, inside a deadline.

Connection errors, timeouts, 429 and 5xx are retried; 400, 401 and malformed answers are not.
``Retry-After`` is honoured, but never past the total deadline: if the server asks for a wait
that would end after it, the error surfaces at once rather than leaving callers hanging.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional

from .errors import ConfigurationError, NavroAuthError, TokenEndpointError

__all__ = ["DEFAULT_ATTEMPT_TIMEOUT", "DEFAULT_DEADLINE", "RetryBudget", "RetryPolicy"]

DEFAULT_ATTEMPT_TIMEOUT = 10.0  # seconds for one token request
DEFAULT_DEADLINE = 30.0  # seconds for a whole token acquisition, retries included
_MIN_ATTEMPT_TIMEOUT = 0.05  # seconds; less than this left in the deadline is not worth a try


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings for token requests.

    ``attempt_timeout`` bounds one request, ``deadline`` the whole acquisition (no caller waits
    longer than it), ``max_attempts`` the number of requests. The n-th retry waits a random time
    in ``[0, min(backoff_max, backoff_base * 2**n))`` (full jitter), or ``Retry-After`` if longer.
    """

    max_attempts: int = 5
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    deadline: float = DEFAULT_DEADLINE

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigurationError("max_attempts", "must be an integer")
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts", "must be at least 1")
        for name in ("backoff_base", "backoff_max", "attempt_timeout", "deadline"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigurationError(name, "must be a number")
            if not math.isfinite(value) or value < 0:
                raise ConfigurationError(name, "must be a finite number >= 0")
        if self.attempt_timeout <= 0 or self.deadline <= 0:
            raise ConfigurationError("attempt_timeout/deadline", "must be greater than 0")


class RetryBudget:
    """What is left of one acquisition's attempts and deadline. Pure: time is passed in."""

    __slots__ = ("_rng", "attempts", "deadline_at", "policy")

    def __init__(self, policy: RetryPolicy, started_at: float, rng: random.Random) -> None:
        self.policy = policy
        self.deadline_at = started_at + policy.deadline
        self.attempts = 0
        self._rng = rng

    def remaining(self, now: float) -> float:
        return self.deadline_at - now

    def attempt_timeout(self, now: float) -> float:
        """Timeout for the next attempt; counts the attempt."""
        self.attempts += 1
        return max(_MIN_ATTEMPT_TIMEOUT, min(self.policy.attempt_timeout, self.remaining(now)))

    def delay_after(self, error: NavroAuthError, now: float) -> Optional[float]:
        """Seconds to wait before the next attempt, or ``None`` to give up with ``error``."""
        if not error.retryable or self.attempts >= self.policy.max_attempts:
            return None
        ceiling = min(
            self.policy.backoff_max, self.policy.backoff_base * (2 ** (self.attempts - 1))
        )
        delay = self._rng.uniform(0.0, ceiling)
        retry_after = error.retry_after if isinstance(error, TokenEndpointError) else None
        if retry_after is not None:
            delay = max(delay, retry_after)
        if now + delay + _MIN_ATTEMPT_TIMEOUT > self.deadline_at:
            return None
        return delay
