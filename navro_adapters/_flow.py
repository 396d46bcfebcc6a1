"""One token acquisition as a sans-IO generator, and the two drivers that run it.

:func:`acquisition_flow` decides everything (shared store first, the refresh lock, retries with
backoff inside the deadline, logging) and only *yields* what it needs done: send a request,
sleep, call the store. :func:`drive_sync` and :func:`drive_async` perform those actions with
threads or with asyncio. The sync and async paths therefore share every decision and cannot
drift apart (the pattern of httpx's ``auth_flow``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generator, Optional, Tuple, Union

from ._log import logger
from .clock import Clock
from .credentials import Credentials
from .errors import NavroAuthError, TokenStoreError, TokenTimeoutError, TransportError
from .protocol import TokenRequest, TransportResponse, build_token_request, parse_token_response
from .retry import RetryBudget, RetryPolicy
from .store import TokenStore
from .token import RefreshPolicy, Token, TokenState
from .transport import AsyncTransport, SyncTransport

STORE_POLL_FIRST = 0.02  # seconds between store reads while another process refreshes...
STORE_POLL_MAX = 0.25  # ...doubling up to this, so waiting never busy-loops the store
STORE_CALL_TIMEOUT = 2.0  # seconds for one async store call; a hung store is then skipped


@dataclass(frozen=True)
class Send:
    request: TokenRequest
    timeout: float


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class StoreCall:
    method: str  # a TokenStore method name
    args: Tuple[Any, ...]


Action = Union[Send, Sleep, StoreCall]
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

    def __post_init__(self) -> None:
        self.request = build_token_request(self.credentials)
        self.key = self.credentials.cache_key
        self.owner = uuid.uuid4().hex


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
        yield from _store_quietly(ctx, "save", (ctx.key, token.to_record(), ttl))
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


def _request_token(ctx: FlowContext) -> Flow:
    clock = ctx.clock
    budget = RetryBudget(ctx.retry_policy, clock.monotonic(), ctx.rng)
    while True:
        timeout = budget.attempt_timeout(clock.monotonic())
        requested_at, requested_at_wall = clock.monotonic(), clock.time()
        try:
            ctx.on_send()
            response = yield Send(ctx.request, timeout)
            token = parse_token_response(
                response, requested_at=requested_at, requested_at_wall=requested_at_wall
            )
            if ctx.refresh_policy.state(token, clock.monotonic()) is TokenState.EXPIRED:
                raise TokenTimeoutError(
                    "the token expired before it arrived: the round trip took longer than "
                    "its lifetime"
                )
        except NavroAuthError as error:
            delay = budget.delay_after(error, clock.monotonic())
            if delay is None:
                logger.warning(
                    "token request failed after %d attempt(s): %s", budget.attempts, error
                )
                raise
            logger.info(
                "token request attempt %d failed (%s); retrying in %.3f s",
                budget.attempts,
                error,
                delay,
            )
            yield Sleep(delay)
            continue
        logger.info(
            "fetched token %s (expires in %g s) in %d attempt(s)",
            token.fingerprint,
            token.expires_in,
            budget.attempts,
        )
        return token


def _wrap(action: Action, exc: Exception) -> NavroAuthError:
    """An exception from a transport or store, as one of ours (its cause kept by the caller)."""
    what = type(exc).__name__
    if isinstance(action, StoreCall):
        return TokenStoreError(f"{action.method} raised {what}")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return TokenTimeoutError("token request timed out")
    return TransportError(f"token request failed: {what}")


class _Runner:
    """Feeds a flow the outcome of each action it yielded; shared by both drivers."""

    __slots__ = ("_flow", "token")

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self.token: Optional[Token] = None

    def next_action(self, value: Any, error: Optional[NavroAuthError]) -> Optional[Action]:
        """The flow's next action, or ``None`` once it has returned its token."""
        try:
            return self._flow.throw(error) if error is not None else self._flow.send(value)
        except StopIteration as stop:
            self.token = stop.value
            return None


def _as_error(action: Action, exc: Exception) -> NavroAuthError:
    if isinstance(exc, NavroAuthError):
        return exc
    error = _wrap(action, exc)
    error.__cause__ = exc
    return error


def drive_sync(
    flow: Flow,
    transport: SyncTransport,
    store: Optional[TokenStore],
    sleep: Callable[[float], None],
) -> Token:
    """Run a flow on the calling thread."""
    runner = _Runner(flow)
    value: Any = None
    error: Optional[NavroAuthError] = None
    while (action := runner.next_action(value, error)) is not None:
        value, error = None, None
        try:
            if isinstance(action, Send):
                value = _checked(transport(action.request, timeout=action.timeout))
            elif isinstance(action, Sleep):
                sleep(action.seconds)
            else:
                assert store is not None
                value = getattr(store, action.method)(*action.args)
        except Exception as exc:
            error = _as_error(action, exc)
    assert runner.token is not None
    return runner.token


async def drive_async(
    flow: Flow,
    transport: AsyncTransport,
    store: Optional[TokenStore],
    sleep: Callable[[float], Awaitable[None]],
) -> Token:
    """Run a flow on the running event loop; nothing here blocks it."""
    runner = _Runner(flow)
    value: Any = None
    error: Optional[NavroAuthError] = None
    while (action := runner.next_action(value, error)) is not None:
        value, error = None, None
        try:
            if isinstance(action, Send):
                # wait_for makes the per-attempt timeout a hard bound whatever the transport does.
                sent = transport(action.request, timeout=action.timeout)
                value = _checked(await asyncio.wait_for(sent, action.timeout))
            elif isinstance(action, Sleep):
                await sleep(action.seconds)
            else:
                assert store is not None
                # Stores are sync: the call runs on a worker thread, never on the loop.
                call = asyncio.to_thread(getattr(store, action.method), *action.args)
                value = await asyncio.wait_for(call, STORE_CALL_TIMEOUT)
        except Exception as exc:
            error = _as_error(action, exc)
    assert runner.token is not None
    return runner.token


def _checked(value: object) -> TransportResponse:
    if not isinstance(value, TransportResponse):
        raise TransportError(
            f"transport returned {type(value).__name__}, not a TransportResponse", retryable=False
        )
    return value
