"""One token acquisition as a sans-IO generator.

:func:`acquisition_flow` decides everything (shared store first, the refresh lock, retries with
backoff inside the deadline, logging) and only *yields* what it needs done: send a request,
sleep, call the store. The drivers in :mod:`navro_adapters._drivers` perform those actions with
threads, with asyncio, or through an HTTP client's own auth flow; every path shares every
decision and none can drift from another (the pattern of httpx's ``auth_flow``).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional, Tuple, Union

from ._log import logger
from ._telemetry import QUIET_FLIGHT, FlightObserver
from .clock import Clock
from .credentials import Credentials
from .errors import InvalidClientError, NavroAuthError, TokenStoreError, TokenTimeoutError
from .protocol import TokenRequest, build_token_request, parse_token_response
from .retry import RetryBudget, RetryPolicy
from .store import TokenStore
from .token import RefreshPolicy, Token, TokenState

STORE_POLL_FIRST = 0.02  # seconds between store reads while another process refreshes...
STORE_POLL_MAX = 0.25  # ...doubling up to this, so waiting never busy-loops the store


@dataclass(frozen=True)
class Send:
    """Send this token request; the answer (a TransportResponse) is sent back into the flow."""

    request: TokenRequest
    timeout: float


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class StoreCall:
    method: str  # a TokenStore method name
    args: Tuple[Any, ...]


@dataclass(frozen=True)
class Wait:
    """Wait for another caller's acquisition (a provider flight); its outcome is sent back."""

    flight: Any
    timeout: float


@dataclass(frozen=True)
class Spawn:
    """Run ``flow`` (a flight's own acquisition) in the background: a thread or a task."""

    flight: Any
    flow: Generator[Any, Any, None]


Action = Union[Send, Sleep, StoreCall, Wait, Spawn]
Flow = Generator[Action, Any, Token]


@dataclass
class FlowContext:
    """What one acquisition needs to know; built by the provider for each flight."""

    credentials: Credentials
    refresh_policy: RefreshPolicy
    retry_policy: RetryPolicy
    clock: Clock
    rng: random.Random
    is_rejected: Callable[[Token], bool]
    store: Optional[TokenStore] = None
    store_wait: float = 0.0
    store_clock_skew: float = 0.0
    #: True for a refresh ahead (callers still hold a valid token): only a FRESH token from a
    #: peer ends it; a stale one is what we already have.
    refresh: bool = False
    on_send: Callable[[], None] = lambda: None
    #: what this acquisition reports (spans, metrics, events); quiet by default
    observer: FlightObserver = QUIET_FLIGHT

    def __post_init__(self) -> None:
        self.owner = uuid.uuid4().hex
        self.key = ""  # the store key this flight locks; the first _use_secret sets it
        self._use_secret(self.credentials.client_secret)

    def _use_secret(self, secret: str) -> None:
        self.request = build_token_request(self.credentials, secret=secret)
        self.secret_digest = secret_digest(secret)
        #: where the token is saved: the key of the secret that obtained it
        self.save_key = self.credentials.cache_key_for(secret)
        self.key = self.key or self.save_key

    def reload_secret(self) -> bool:
        """After the endpoint refused the secret: read its source again, and use the secret
        from now on if it changed (a reset in the Navro Hub, then the mounted file updated)."""
        if not self.credentials.secret_changes:
            return False
        secret = self.credentials.client_secret
        if secret_digest(secret) == self.secret_digest:
            return False
        self._use_secret(secret)
        return True


def secret_digest(secret: str) -> str:
    """A short one-way digest, to tell whether a secret changed without keeping it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


def acquisition_flow(ctx: FlowContext) -> Flow:
    """Get a token: from the shared store if a peer has a good one, else from Navro."""
    if ctx.store is None:
        return (yield from _request_token(ctx))
    locked = False
    try:
        token = yield from _load(ctx, accept_stale=False)
        if token is not None:
            return token
        locked = yield StoreCall("try_lock", (ctx.key, ctx.owner, _lock_ttl(ctx)))
        if not locked:
            token, locked = yield from _wait_for_peer(ctx)
            if token is not None:
                return token
        if locked:
            # A peer may have saved a token between our load and our lock.
            token = yield from _load(ctx, accept_stale=False)
            if token is not None:
                yield from _store_quietly(ctx, "unlock", (ctx.key, ctx.owner))
                return token
    except TokenStoreError as exc:
        logger.warning("token store unavailable, fetching directly: %s", exc)
        ctx.observer.store_failed(exc)
        if locked:  # release what we hold so peers need not wait for the lock to expire
            yield from _store_quietly(ctx, "unlock", (ctx.key, ctx.owner))
        locked = False
        ctx.store = None
    try:
        token = yield from _request_token(ctx)
    except NavroAuthError:
        if locked:
            yield from _store_quietly(ctx, "unlock", (ctx.key, ctx.owner))
        raise
    if ctx.store is not None:
        ttl = max(0.001, token.expires_at_wall - ctx.clock.time())
        yield from _store_quietly(ctx, "save", (ctx.save_key, token.to_record(), ttl))
        if locked:
            yield from _store_quietly(ctx, "unlock", (ctx.key, ctx.owner))
    return token


def _lock_ttl(ctx: FlowContext) -> float:
    # Long enough for one whole acquisition; a holder that dies frees it by expiry.
    return ctx.retry_policy.deadline + 1.0


def _load(ctx: FlowContext, *, accept_stale: bool) -> Generator[Action, Any, Optional[Token]]:
    record = yield StoreCall("load", (ctx.key,))
    if record is None:
        return None
    token = Token.from_record(
        record,
        now_monotonic=ctx.clock.monotonic(),
        now_wall=ctx.clock.time(),
        clock_skew=ctx.store_clock_skew,
    )
    if token is None or ctx.is_rejected(token):
        return None
    state = ctx.refresh_policy.state(token, ctx.clock.monotonic())
    if state is TokenState.FRESH or (accept_stale and state is TokenState.STALE):
        logger.debug("token %s taken from the shared store", token.fingerprint)
        ctx.observer.store_hit(token)
        return token
    return None


def _wait_for_peer(ctx: FlowContext) -> Generator[Action, Any, Tuple[Optional[Token], bool]]:
    """A peer holds the refresh lock: poll for its token, take over if the lock frees."""
    give_up_at = ctx.clock.monotonic() + ctx.store_wait
    interval = STORE_POLL_FIRST
    while ctx.clock.monotonic() < give_up_at:
        yield Sleep(min(interval, max(0.0, give_up_at - ctx.clock.monotonic())))
        interval = min(interval * 2, STORE_POLL_MAX)
        token = yield from _load(ctx, accept_stale=not ctx.refresh)
        if token is not None:
            return token, False
        if (yield StoreCall("try_lock", (ctx.key, ctx.owner, _lock_ttl(ctx)))):
            return None, True
    logger.warning("no token from the shared store after %.1f s; fetching directly", ctx.store_wait)
    return None, False


def _store_quietly(
    ctx: FlowContext, method: str, args: Tuple[Any, ...]
) -> Generator[Action, Any, None]:
    """A store write whose failure must not fail the acquisition."""
    if ctx.store is None:
        return
    try:
        yield StoreCall(method, args)
    except TokenStoreError as exc:
        logger.warning("token store %s failed, carrying on without it: %s", method, exc)
        ctx.observer.store_failed(exc)


def _request_token(ctx: FlowContext) -> Flow:
    clock = ctx.clock
    started_at = clock.monotonic()
    budget = RetryBudget(ctx.retry_policy, started_at, ctx.rng)
    while True:
        timeout = budget.attempt_timeout(clock.monotonic())
        requested_at, requested_at_wall = clock.monotonic(), clock.time()
        attempt = ctx.observer.attempt(budget.attempts)
        try:
            ctx.on_send()
            response = yield Send(ctx.request, timeout)
            attempt.answered(response.status_code)
            token = parse_token_response(
                response, requested_at=requested_at, requested_at_wall=requested_at_wall
            )
            if ctx.refresh_policy.state(token, clock.monotonic()) is TokenState.EXPIRED:
                raise TokenTimeoutError(
                    "the token expired before it arrived: the round trip took longer than "
                    "its lifetime"
                )
        except NavroAuthError as error:
            attempt.failed(error)
            if (
                isinstance(error, InvalidClientError)
                and budget.attempts < ctx.retry_policy.max_attempts
                and ctx.reload_secret()
            ):
                logger.warning(
                    "Navro refused the client secret; its source has a new one, retrying"
                )
                continue
            delay = budget.delay_after(error, clock.monotonic())
            if delay is None:
                logger.warning(
                    "token request failed after %d attempt(s): %s", budget.attempts, error
                )
                ctx.observer.fetch_failed(error, budget.attempts, clock.monotonic() - started_at)
                raise
            logger.info(
                "token request attempt %d failed (%s); retrying in %.3f s",
                budget.attempts,
                error,
                delay,
            )
            yield Sleep(delay)
            continue
        except BaseException:  # closed or cancelled mid-request: no answer will come
            attempt.abandoned()
            raise
        attempt.succeeded(token)
        ctx.observer.fetched(token, budget.attempts, clock.monotonic() - started_at)
        logger.info(
            "fetched token %s (expires in %g s) in %d attempt(s)",
            token.fingerprint,
            token.expires_in,
            budget.attempts,
        )
        return token
