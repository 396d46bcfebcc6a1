"""Property-based tests of expiry handling: any lifetime, any margins, any clock step."""

from __future__ import annotations

import random
import time
from typing import List, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from navro_adapters import (
    Credentials,
    NavroAuthError,
    RefreshPolicy,
    RetryPolicy,
    Token,
    TokenProvider,
    TokenState,
)

from .fakes import FakeClock, ScriptedTransport, error_response, token_response

CREDS = Credentials(
    "client-1", "s3cr3t-value-never-logged", "acme", token_url="http://127.0.0.1:9/t"
)

lifetimes = st.one_of(
    st.none(),  # missing expires_in: the documented 300 s
    st.sampled_from([0.001, 0.5, 1, 2, 300, 3600, 86400, 1e9]),
    st.floats(min_value=0.001, max_value=1e6, allow_nan=False),
)
policies = st.builds(
    RefreshPolicy,
    refresh_fraction=st.floats(0, 5),
    expiry_fraction=st.floats(0, 5),
    min_refresh_margin=st.floats(0, 1000),
    max_refresh_margin=st.floats(0, 1000),
    min_expiry_margin=st.floats(0, 1000),
    max_expiry_margin=st.floats(0, 1000),
    # The oracle below is the static state; jitter and latency have properties of their own.
    refresh_jitter=st.just(0.0),
)


class _Transport(ScriptedTransport):
    """Answers with the lifetime under test; can be told to fail the next request."""

    def __init__(self, lifetime: Optional[float]) -> None:
        super().__init__()
        self.lifetime = lifetime
        self.fail_next = False
        self.counter = 0

    def next_response(self):  # type: ignore[no-untyped-def]
        self.counter += 1
        if self.fail_next:
            self.fail_next = False
            return error_response(400, {"error": "invalid_request"})
        if self.lifetime is None:
            return error_response(200, {"access_token": f"t{self.counter}", "token_type": "Bearer"})
        return token_response(f"t{self.counter}", expires_in=self.lifetime)


def settle(p: TokenProvider) -> None:
    """Wait for a background refresh (started on a thread) to publish its outcome."""
    deadline = time.monotonic() + 5
    while p._flight is not None:
        assert time.monotonic() < deadline, "a flight never finished"
        time.sleep(0.0005)


def boundaries(policy: RefreshPolicy, token: Token) -> List[float]:
    fresh_until, usable_until = policy.deadlines(token)
    points = [fresh_until, usable_until, token.expires_at]
    return [x + d for x in points for d in (-1e-6, 0.0, 1e-6)]


@given(
    lifetime=lifetimes,
    policy=policies,
    steps=st.lists(st.floats(0, 2e5), max_size=8),
    hit=st.data(),
)
@settings(max_examples=150)
def test_expiry_invariants(
    lifetime: Optional[float], policy: RefreshPolicy, steps: List[float], hit: st.DataObject
) -> None:
    clock = FakeClock()
    transport = _Transport(lifetime)
    p = TokenProvider(
        CREDS, transport=transport, clock=clock, refresh_policy=policy, rng=random.Random(0)
    )
    for step in steps:
        cached = p.token
        before = len(transport.calls)
        state = policy.state(cached, clock.monotonic()) if cached else None
        token = p.get_token()
        settle(p)
        now = clock.monotonic()
        # Never an expired token.
        assert now < token.expires_at
        assert policy.state(token, now) is not TokenState.EXPIRED or token is not cached
        if state is TokenState.FRESH:
            assert len(transport.calls) == before, "fetched while a FRESH token existed"
            assert token is cached
        if state is None or state is TokenState.EXPIRED:
            assert len(transport.calls) == before + 1, "no fetch although no valid token existed"
        # Jump to a random point, or to just around a boundary of the current token.
        if hit.draw(st.booleans()) and p.token is not None:
            target = hit.draw(st.sampled_from(boundaries(policy, p.token)))
            clock.advance(max(0.0, target - clock.monotonic()))
        else:
            clock.advance(step)


class ProviderMachine(RuleBasedStateMachine):
    """get / invalidate / advance clock / fail next fetch, keeping every invariant."""

    @initialize(lifetime=lifetimes, policy=policies)
    def setup(self, lifetime: Optional[float], policy: RefreshPolicy) -> None:
        self.clock = FakeClock()
        self.policy = policy
        self.transport = _Transport(lifetime)
        self.provider = TokenProvider(
            CREDS,
            transport=self.transport,
            clock=self.clock,
            refresh_policy=policy,
            retry_policy=RetryPolicy(max_attempts=1),
            rng=random.Random(0),
        )
        self.seen: List[Token] = []

    @rule()
    def get(self) -> None:
        cached = self.provider.token
        before = len(self.transport.calls)
        fresh = (
            cached is not None
            and self.policy.state(cached, self.clock.monotonic()) is TokenState.FRESH
        )
        try:
            token = self.provider.get_token()
        except NavroAuthError:
            assert not fresh, "an error although a FRESH token was cached"
            settle(self.provider)
            return
        settle(self.provider)
        assert self.clock.monotonic() < token.expires_at, "returned an expired token"
        if fresh:
            assert token is cached and len(self.transport.calls) == before
        self.seen.append(token)

    @precondition(lambda self: bool(self.seen))
    @rule(data=st.data())
    def invalidate(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(self.seen))
        current = self.provider.token
        dropped = self.provider.invalidate(token)
        assert dropped == (current is not None and current.access_token == token.access_token)
        if dropped:
            assert self.provider.token is None

    @rule(seconds=st.floats(0, 1e5))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.provider.token is not None)
    @rule(data=st.data())
    def advance_to_boundary(self, data: st.DataObject) -> None:
        token = self.provider.token
        assert token is not None
        target = data.draw(st.sampled_from(boundaries(self.policy, token)))
        self.clock.advance(max(0.0, target - self.clock.monotonic()))

    @rule()
    def fail_next_fetch(self) -> None:
        self.transport.fail_next = True

    @invariant()
    def never_two_fetches_in_flight(self) -> None:
        if hasattr(self, "transport"):
            assert self.transport.max_in_flight <= 1


ProviderMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestProviderMachine = ProviderMachine.TestCase
