"""The token provider: a lock-guarded cache in front of one token request at a time.

Data flows one way: an adapter asks the provider for a token; the provider answers from memory
when it can, and otherwise lets exactly one caller (a thread or a task) start an acquisition
(a *flight*) that every other caller waits on. Decisions are made under a ``threading.Lock``
that is only ever held for a few attribute reads and writes, never across I/O or an ``await``,
so the same provider serves threads, coroutines and several event loops at once.

Freshness follows :class:`~navro_adapters.token.RefreshPolicy`: a FRESH token is returned at
once, lock-free; a STALE one is returned at once too, while the first caller to see it starts a
refresh in the background; only when no valid token is left do callers wait.
"""

from __future__ import annotations

import os
import random
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generator, Optional, Tuple, Union

from . import _runtime
from ._drivers import DEADLOCK, AsyncPerformer, SyncPerformer, drive_async, drive_sync
from ._flight import ABANDONED, Flight, Outcome
from ._flow import Flow, FlowContext, Spawn, Wait, acquisition_flow, secret_digest
from ._log import logger
from ._pickling import Reduced, construct, not_picklable
from ._telemetry import QUIET_FLIGHT, FlightObserver, Telemetry
from .clock import SYSTEM_CLOCK, Clock
from .credentials import Credentials
from .errors import ConfigurationError, NavroAuthError, TokenTimeoutError
from .events import EventCallback
from .retry import RetryPolicy
from .store import TokenStore
from .token import RefreshPolicy, Token
from .transport import AsyncTransport, SyncTransport, UrllibTransport

__all__ = ["ProviderStats", "TokenProvider"]

RETRY_REFRESH_AFTER_FAILURE = 1.0  # seconds before a failed refresh-ahead is tried again (at most)
STORE_CLOCK_SKEW = 5.0  # seconds taken off the life of a token read from a shared store
_WAIT_GRACE = 0.5  # seconds a waiter allows past the flight's own deadline before giving up
_REJECTED_REMEMBERED = 32  # fingerprints of invalidated tokens kept, so a store never returns one
# After a fetch fails (a rejected secret, or retries used up), callers with no valid token get
# that error at once for a back-off, instead of each sending another token request:
FAILURE_BACKOFF_FIRST = 1.0  # seconds after the first failure...
FAILURE_BACKOFF_MAX = 30.0  # ...doubling with each consecutive failure up to this
SECRET_CHECK_INTERVAL = 1.0  # seconds between reads of a secret source while backing off
# The attach-to-answer time the margins adapt to is the largest seen in the current window or
# the one before it: a slow spell is remembered for one to two windows, then forgotten.
LATENCY_WINDOW = 30.0  # seconds


class _Backoff:
    """The last failure, served to callers until ``until`` (or until the secret changes)."""

    __slots__ = ("digest", "error", "next_check", "until")

    def __init__(self, error: NavroAuthError, until: float, digest: Optional[str]) -> None:
        self.error = error
        self.until = until
        self.digest = digest  # of the secret that failed; None if it could not be read
        self.next_check = 0.0


@dataclass
class ProviderStats:
    """Counters for tests, benchmarks and the demo (not a metrics system)."""

    token_requests: int = 0  # requests sent to the token endpoint, retries included
    acquisitions: int = 0  # flights completed with a token
    failures: int = 0  # flights completed with an error
    refreshes_ahead: int = 0  # flights started while the token was still valid
    invalidations: int = 0  # invalidate() calls that dropped the cached token


# Each cached token with the two instants that decide its state, read as one atomic tuple:
# (fresh_until, usable_until, token).
_Entry = Tuple[float, float, Token]

_providers: weakref.WeakSet[TokenProvider] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for provider in list(_providers):
        provider._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class TokenProvider:
    """Hands out Navro access tokens; share one per set of credentials.

    Thread-safe and async-safe: :meth:`get_token` from threads, :meth:`aget_token` from
    coroutines on any number of event loops, asyncio's or trio's (anyio on either), in any
    mix. At most one token request is in flight at a time, and every waiter gets its result or
    its error.

    Which client sends a token request, in this order (the one rule every adapter follows):
    this provider's own ``transport`` / ``async_transport`` when given; else the transport the
    caller passes (adapters pass the client they send on, or the one you named for token
    requests); else the standard library's :class:`~navro_adapters.UrllibTransport`. A sync
    transport used from a coroutine runs on a worker thread, so the event loop never blocks.
    ``store`` shares the token between processes (see :mod:`navro_adapters.store`); ``clock``
    and ``rng`` are injectable for tests (both paths sleep through the clock).

    Observability (see docs/observability.md): with ``opentelemetry-api`` importable, every
    token request attempt is a span and metric points, through ``tracer_provider`` /
    ``meter_provider`` or else the global ones; ``on_event`` is called with a
    :class:`~navro_adapters.TokenEvent` for each fetch, failure, refresh ahead, invalidation
    and store hit or failure. Neither ever runs on the fresh-token path.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        transport: Optional[SyncTransport] = None,
        async_transport: Optional[AsyncTransport] = None,
        refresh_policy: Optional[RefreshPolicy] = None,
        retry_policy: Optional[RetryPolicy] = None,
        store: Optional[TokenStore] = None,
        store_wait: Optional[float] = None,
        store_clock_skew: float = STORE_CLOCK_SKEW,
        clock: Optional[Clock] = None,
        rng: Optional[random.Random] = None,
        tracer_provider: object = None,
        meter_provider: object = None,
        on_event: Optional[EventCallback] = None,
    ) -> None:
        # First, before any other local exists: the arguments as given, all a pickle carries.
        self._arguments = {name: value for name, value in locals().items() if name != "self"}
        if not isinstance(credentials, Credentials):
            raise ConfigurationError(
                "credentials",
                f"must be navro_adapters.Credentials, not {type(credentials).__name__}",
            )
        self.credentials = credentials
        self.transport = transport
        self.async_transport = async_transport
        self._default_transport: Optional[SyncTransport] = None
        self.refresh_policy = refresh_policy or RefreshPolicy()
        self.retry_policy = retry_policy or RetryPolicy()
        self.store = store
        self.store_wait = self.retry_policy.deadline if store_wait is None else float(store_wait)
        self.store_clock_skew = store_clock_skew
        self.clock: Clock = clock or SYSTEM_CLOCK
        # A clock written before asleep joined the protocol sleeps for real on the async path.
        self._asleep: Callable[[float], Awaitable[None]] = getattr(
            self.clock, "asleep", _runtime.sleep
        )
        self._rng = rng or random.Random()
        self.stats = ProviderStats()
        self._lock = threading.Lock()
        self._entry: Optional[_Entry] = None
        self._flight: Optional[Flight] = None
        self._next_refresh_at = float("-inf")
        self._failures = 0  # consecutive failed fetches, for the back-off
        self._backoff: Optional[_Backoff] = None
        self._rejected: OrderedDict[str, None] = OrderedDict()
        # Attach-to-answer times reported by adapters (observe_latency); see LATENCY_WINDOW.
        self.observed_latency = 0.0  # seconds: what the margins adapt to now
        self._window_peak = 0.0
        self._window_ends = float("-inf")
        self._telemetry = Telemetry(
            self,
            credentials,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            on_event=on_event,
        )
        _providers.add(self)

    # -- the public surface ----------------------------------------------------------------

    @property
    def token(self) -> Optional[Token]:
        """The cached token, whatever its state (``None`` if there is none)."""
        entry = self._entry
        return entry[2] if entry is not None else None

    @property
    def fetching(self) -> bool:
        """Whether a token acquisition (a fetch or a refresh ahead) is under way right now."""
        return self._flight is not None

    def fresh_token(self, now: Optional[float] = None) -> Optional[Token]:
        """The cached token if it is FRESH, else ``None``; never waits, fetches or locks.

        The hot path for async adapters: ``provider.fresh_token() or await
        provider.aget_token()`` skips creating a coroutine on nearly every request. ``now`` is
        this provider's ``clock.monotonic()`` if the caller has just read it (an adapter that
        also times the request reads the clock once).
        """
        entry = self._entry
        if entry is None:
            return None
        if now is None:
            now = self.clock.monotonic()
        return entry[2] if now < entry[0] else None

    def get_token(self, *, transport: Optional[SyncTransport] = None) -> Token:
        """A valid token, from memory when possible. Blocks only when none is valid.

        ``transport`` sends the token request if this call has to make one and the provider
        has no transport of its own. Raises a :class:`~navro_adapters.errors.NavroAuthError`.
        """
        entry = self._entry
        if entry is not None and self.clock.monotonic() < entry[0]:
            return entry[2]
        return self._get_token_slow(transport)

    async def aget_token(self, *, transport: Optional[AsyncTransport] = None) -> Token:
        """:meth:`get_token` for coroutines: waits without blocking the event loop."""
        entry = self._entry
        if entry is not None and self.clock.monotonic() < entry[0]:
            return entry[2]
        return await self._aget_token_slow(transport)

    def invalidate(self, token: Union[Token, str]) -> bool:
        """Drop the cached token if it is still ``token`` (a Token or the access-token string).

        Compare-and-invalidate: a late 401 for an old token never throws away a newer one.
        Returns whether the cache was dropped. Cheap and non-blocking; safe from any thread
        or coroutine.
        """
        access_token = token.access_token if isinstance(token, Token) else token
        with self._lock:
            entry = self._entry
            if entry is None or entry[2].access_token != access_token:
                return False
            self._entry = None
            self._rejected[entry[2].fingerprint] = None
            while len(self._rejected) > _REJECTED_REMEMBERED:
                self._rejected.popitem(last=False)
            self.stats.invalidations += 1
        logger.info("token %s invalidated", entry[2].fingerprint)
        self._telemetry.invalidated(entry[2])
        return True

    def observe_latency(self, seconds: float, now: Optional[float] = None) -> None:
        """Report that an API answer came ``seconds`` after a token was attached to its request
        (adapters call this for every request they authenticate; waits in a client's pool
        count). With ``RefreshPolicy.adapt_to_latency`` a token is then attached only while it
        will outlive the largest such time seen lately (see :class:`RefreshPolicy`).

        ``now`` is the provider's ``clock.monotonic()`` if the caller has just read it. Lock-free
        unless the time is a new maximum; a report lost to a race is harmless.
        """
        if now is None:
            now = self.clock.monotonic()
        if now >= self._window_ends:
            # The last window's peak carries over, unless that window was long ago.
            recent = now < self._window_ends + LATENCY_WINDOW
            self.observed_latency = self._window_peak if recent else 0.0
            self._window_peak = 0.0
            self._window_ends = now + LATENCY_WINDOW
        if seconds > self._window_peak:
            self._window_peak = seconds
            if seconds > self.observed_latency:
                self._raise_latency(seconds)

    def observe_answer(self, attached_at: float) -> None:
        """:meth:`observe_latency` for a request whose token was attached at ``attached_at``
        (on this provider's ``clock.monotonic``) and which was answered just now."""
        now = self.clock.monotonic()  # read once: the answer's time and the window's
        seconds = now - attached_at
        if seconds <= self._window_peak and now < self._window_ends:
            return  # nearly every answer: no new peak, same window (one call, not two)
        self.observe_latency(seconds, now)

    def _raise_latency(self, seconds: float) -> None:
        with self._lock:
            if seconds <= self.observed_latency:
                return
            self.observed_latency = seconds
            entry = self._entry
            if entry is None or not self.refresh_policy.adapt_to_latency:
                return
            fresh_until, usable_until = self.refresh_policy.deadlines(entry[2], seconds)
            if usable_until >= entry[1]:
                return  # within the static margins: nothing changes
            # Only ever earlier: a refresh ahead already due stays due.
            self._entry = (min(entry[0], fresh_until), usable_until, entry[2])
        logger.debug(
            "API answers took up to %.2f s after a token was attached; serving token %s only "
            "while it outlives that",
            seconds,
            entry[2].fingerprint,
        )

    def clear(self) -> None:
        """Forget the cached token and any failure back-off (after rotating the secret)."""
        with self._lock:
            self._entry = None
            self._backoff = None
            self._failures = 0

    def __repr__(self) -> str:
        token = self.token
        shown = token.fingerprint if token is not None else None
        return f"TokenProvider(client_id={self.credentials.client_id!r}, token={shown!r})"

    def __reduce__(self) -> Reduced:
        """Pickle (for a worker process) as the constructor's arguments only: the copy is
        built by ``__init__``, with its own lock, an empty cache and zero stats, and fetches
        its own token; a cached token never travels. The credentials travel with their secret
        source as given. An argument that cannot travel (a transport or store holding a client)
        raises :class:`~navro_adapters.errors.ConfigurationError` saying what to do."""
        for name in ("tracer_provider", "meter_provider"):
            if self._arguments.get(name) is not None:
                raise not_picklable(
                    name,
                    f"an OpenTelemetry {name}",
                    "leave it out (the worker's global providers are used) or build the "
                    "TokenProvider in the worker process",
                )
        return (construct, (type(self), (), self._arguments))

    # -- deciding, under the lock --------------------------------------------------------------

    def _decide(self) -> Tuple[Optional[Token], Optional[Flight], bool]:
        """``(token to return now, flight to wait on, whether the caller must start it)``.

        Called with the lock held; does no I/O.
        """
        now = self.clock.monotonic()
        entry = self._entry
        if entry is not None and now < entry[0]:
            return entry[2], None, False
        flight = self._flight
        if entry is not None and now < entry[1]:  # STALE: serve it; one caller starts a refresh
            if flight is None and now >= self._next_refresh_at:
                flight = self._flight = self._new_flight(refresh=True)
                self.stats.refreshes_ahead += 1
                logger.debug("token %s is stale; refreshing ahead", entry[2].fingerprint)
                return entry[2], flight, True
            return entry[2], None, False
        if flight is not None:
            return None, flight, False
        flight = self._flight = self._new_flight(refresh=False)
        return None, flight, True

    def _new_flight(self, *, refresh: bool) -> Flight:
        give_up_at = self.clock.monotonic() + self.retry_policy.deadline + _WAIT_GRACE
        if self.store is not None:
            give_up_at += self.store_wait
        return Flight(refresh=refresh, give_up_at=give_up_at)

    def _sync_transport(self, via: Optional[SyncTransport]) -> SyncTransport:
        """The transport for a token request: ours, else the caller's, else the default."""
        chosen = self.transport or via
        if chosen is None:
            chosen = self._default_transport
            if chosen is None:
                chosen = self._default_transport = UrllibTransport()
        return chosen

    def _context(self, *, refresh: bool, observer: FlightObserver = QUIET_FLIGHT) -> FlowContext:
        return FlowContext(
            refresh=refresh,
            credentials=self.credentials,
            refresh_policy=self.refresh_policy,
            retry_policy=self.retry_policy,
            clock=self.clock,
            rng=self._rng,
            is_rejected=self._is_rejected,
            store=self.store,
            store_wait=self.store_wait,
            store_clock_skew=self.store_clock_skew,
            on_send=self._count_send,
            observer=observer,
        )

    def _count_send(self) -> None:
        self.stats.token_requests += 1

    def _is_rejected(self, token: Token) -> bool:
        return token.fingerprint in self._rejected

    def _complete(
        self, flight: Flight, outcome: Outcome, ctx: Optional[FlowContext] = None
    ) -> None:
        """Publish a flight's outcome: cache the token, then wake every waiter."""
        with self._lock:
            if self._flight is flight:
                self._flight = None
            token = outcome.token
            if token is not None and self._is_rejected(token):
                outcome = ABANDONED  # invalidated while in flight: waiters try again
            elif token is not None:
                fresh_until, usable_until = self._deadlines(token)
                self._entry = (fresh_until, usable_until, token)
                self.stats.acquisitions += 1
                self._failures, self._backoff = 0, None
                if self.clock.monotonic() >= fresh_until:
                    # A peer's stale token from the store: let the peer refresh, look again soon.
                    self._next_refresh_at = self.clock.monotonic() + RETRY_REFRESH_AFTER_FAILURE
            elif outcome.error is not None:
                self.stats.failures += 1
                if flight.refresh:
                    # The current token is still valid: keep serving it, try again later.
                    self._next_refresh_at = self.clock.monotonic() + self._refresh_backoff()
                else:
                    self._failures += 1
                    delay = min(
                        FAILURE_BACKOFF_MAX, FAILURE_BACKOFF_FIRST * 2 ** (self._failures - 1)
                    )
                    digest = ctx.secret_digest if ctx is not None else None
                    self._backoff = _Backoff(outcome.error, self.clock.monotonic() + delay, digest)
                    logger.info(
                        "token fetch failed; callers get that error for %.0f s (%s)",
                        delay,
                        type(outcome.error).__name__,
                    )
        flight.finish(outcome)

    def _deadlines(self, token: Token) -> Tuple[float, float]:
        """A new token's deadlines: adapted to the recent attach-to-answer time, jittered."""
        latency = max(self.observed_latency, self._window_peak)
        return self.refresh_policy.deadlines(token, latency, self._rng.random())

    def _refresh_backoff(self) -> float:
        entry = self._entry
        if entry is None:
            return 0.0
        left = entry[1] - self.clock.monotonic()
        return max(0.0, min(RETRY_REFRESH_AFTER_FAILURE, left / 4))

    def _raise_if_backing_off(self) -> None:
        """Raise the last failure during its back-off, unless a valid token is cached or the
        secret source now returns another secret (read at most once a second)."""
        backoff = self._backoff
        if backoff is None:
            return
        now = self.clock.monotonic()
        entry = self._entry
        if now >= backoff.until or (entry is not None and now < entry[1]):
            return
        if self.credentials.secret_changes and now >= backoff.next_check:
            backoff.next_check = now + SECRET_CHECK_INTERVAL
            if secret_digest(self.credentials.client_secret) != backoff.digest:
                with self._lock:
                    if self._backoff is backoff:
                        self._backoff = None
                logger.info("the client secret changed; fetching a token with it")
                return
        raise backoff.error

    def _result(self, outcome: Optional[Outcome]) -> Optional[Token]:
        """The token a waiter returns; raises the flight's error; ``None`` means try again."""
        if outcome is None:
            raise TokenTimeoutError("timed out waiting for a token")
        if outcome.error is not None:
            raise outcome.error
        return outcome.token

    # -- the one token flow, for every kind of caller --------------------------------------------

    def token_flow(self, *, lead_inline: bool = True, refresh_inline: bool = True) -> Flow:
        """The slow path of :meth:`get_token` as a sans-IO flow (see :mod:`._drivers`).

        A caller that starts an acquisition runs it itself (``lead_inline``) or has it spawned
        in the background and waits like everyone else; a stale token's refresh ahead is run
        by the caller that saw it stale (``refresh_inline``) or spawned while it is served.
        With both inline (the default) the flow's only I/O is what it yields: the way for an
        HTTP client's own auth flow to send token requests through that client.
        """
        while True:
            self._raise_if_backing_off()
            with self._lock:
                token, flight, start = self._decide()
            if flight is not None and start:
                # Observed from here, the caller's stack, wherever the flight then runs.
                lead = self._lead(flight, self._telemetry.flight(token))
                if not (refresh_inline if token is not None else lead_inline):
                    yield Spawn(flight, lead)
                else:
                    yield from lead
                    outcome = flight.outcome
                    if token is not None:  # refreshed ahead: the new token, else the valid one
                        return outcome.token if outcome and outcome.token else token
                    result = self._result(outcome)
                    if result is not None:
                        return result
                    continue
            if token is not None:
                return token
            assert flight is not None
            outcome = yield Wait(flight, flight.give_up_at - self.clock.monotonic())
            if outcome is DEADLOCK:  # this thread runs the loop that runs the flight
                return (yield from self._fetch_outside_flight())
            result = self._result(outcome)
            if result is not None:
                return result

    def _lead(
        self, flight: Flight, observer: FlightObserver = QUIET_FLIGHT
    ) -> Generator[Any, Any, None]:
        """Run ``flight``'s acquisition and publish its outcome, whoever drives it."""
        ctx: Optional[FlowContext] = None
        try:
            ctx = self._context(refresh=flight.refresh, observer=observer)
            token = yield from acquisition_flow(ctx)
        except NavroAuthError as exc:
            self._complete(flight, Outcome(error=exc), ctx)
        except BaseException:
            # Cancelled, closed or its loop shutting down: the waiters start over.
            self._complete(flight, ABANDONED)
            raise
        else:
            self._complete(flight, Outcome(token=token))

    def _fetch_outside_flight(self) -> Flow:
        observer = self._telemetry.flight(None)
        token = yield from acquisition_flow(self._context(refresh=False, observer=observer))
        fresh_until, usable_until = self._deadlines(token)
        with self._lock:
            self._entry = (fresh_until, usable_until, token)
        return token

    def sync_performer(self, via: Optional[SyncTransport] = None) -> SyncPerformer:
        """What performs this provider's actions on a thread (store, sleeps, waits)."""
        return SyncPerformer(self.store, self.clock.sleep, self._sync_transport(via))

    def async_performer(self, via: Optional[AsyncTransport] = None) -> AsyncPerformer:
        """What performs them on an event loop: our async transport, else our sync one on a
        thread, else the caller's async one, else the default on a thread."""
        own_sync = self.async_transport is None and self.transport is not None
        transport = self.async_transport or (None if own_sync else via)
        threads = None if transport is not None else self.sync_performer()
        return AsyncPerformer(self.store, self._asleep, transport, threads)

    def _get_token_slow(self, transport: Optional[SyncTransport]) -> Token:
        flow = self.token_flow(lead_inline=True, refresh_inline=False)
        performer = self.sync_performer(transport)
        assert performer.transport is not None
        token: Token = drive_sync(flow, performer.transport, performer)
        return token

    async def _aget_token_slow(self, transport: Optional[AsyncTransport]) -> Token:
        flow = self.token_flow(lead_inline=False, refresh_inline=False)
        token: Token = await drive_async(flow, self.async_performer(transport))
        return token

    # -- process lifecycle ----------------------------------------------------------------------

    def _reset_after_fork(self) -> None:
        """In a forked child: fresh lock, no inherited flight or tasks (they do not exist here)."""
        self._lock = threading.Lock()
        self._flight = None
        self._next_refresh_at = float("-inf")
