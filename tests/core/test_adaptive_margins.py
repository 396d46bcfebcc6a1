"""The two adjustments to the static margins: adapting to the attach-to-answer time, and the
refresh jitter. A fake clock and a scripted transport; no network."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from navro_adapters import ConfigurationError, Credentials, RefreshPolicy, Token, TokenProvider
from navro_adapters.provider import LATENCY_WINDOW

from .fakes import FakeClock, ScriptedTransport

CREDS = Credentials(
    "client-1", "s3cr3t-value-never-logged", "acme", token_url="http://127.0.0.1:9/t"
)
NO_JITTER = RefreshPolicy(refresh_jitter=0.0)


def provider(clock: FakeClock, policy: RefreshPolicy = NO_JITTER, seed: int = 7) -> TokenProvider:
    return TokenProvider(
        CREDS,
        transport=ScriptedTransport(),
        clock=clock,
        refresh_policy=policy,
        rng=random.Random(seed),
    )


def test_answers_within_the_static_margin_change_nothing() -> None:
    clock = FakeClock()
    p = provider(clock)
    token = p.get_token()
    p.observe_latency(10.0)  # under the 15 s expiry margin of a 300 s token
    clock.advance(284)
    assert p.get_token() is token  # still served (STALE) up to 15 s before it expires


def test_a_slow_answer_stops_a_token_being_served_before_it_would_expire_in_flight() -> None:
    clock = FakeClock()
    p = provider(clock)
    token = p.get_token()
    p.observe_latency(40.0)
    assert p.observed_latency == 40.0
    clock.advance(261)  # 39 s left: a request attached now would arrive after expiry
    assert p.get_token() is not token
    assert p.stats.token_requests == 2


def test_the_margin_never_grows_past_half_the_lifetime() -> None:
    clock = FakeClock()
    p = provider(clock)
    token = p.get_token()
    p.observe_latency(1000.0)
    clock.advance(149)
    assert p.get_token() is token  # fresh for the first half of its life whatever happens
    assert p.stats.token_requests == 1
    clock.advance(47)  # 196 s: past 300 - (150 - 45), the expiry margin's limit
    assert p.get_token() is not token


def test_at_the_cap_the_stale_window_stays_open() -> None:
    # The static margins of a 300 s token leave 45 s between refresh (60 s) and expiry (15 s)
    # margins: a refresh ahead runs there while callers go on. Grown to the cap, the refresh
    # margin is half the life and the expiry margin stops 45 s short of it.
    token = Token("tok", expires_in=300, requested_at=0.0, requested_at_wall=0.0)
    assert NO_JITTER.deadlines(token, latency=1000.0) == (150.0, 195.0)
    assert NO_JITTER.deadlines(token, latency=100.0) == (155.0, 200.0)  # below the cap: as is


def test_a_new_token_gets_the_adapted_margins_too() -> None:
    clock = FakeClock()
    p = provider(clock)
    p.get_token()
    p.observe_latency(40.0)
    clock.advance(261)
    second = p.get_token()  # fetched with 40 s answers on record
    clock.advance(261)  # 39 s left
    assert p.get_token() is not second


def test_a_slow_spell_is_forgotten_after_two_quiet_windows() -> None:
    clock = FakeClock()
    p = provider(clock)
    p.observe_latency(40.0)
    for _ in range(3):
        clock.advance(LATENCY_WINDOW)
        p.observe_latency(0.01)
    assert p.observed_latency < 1.0
    token = p.get_token()
    clock.advance(284)
    assert p.get_token() is token  # the static 15 s margin again


def test_adaptation_can_be_turned_off() -> None:
    clock = FakeClock()
    p = provider(clock, RefreshPolicy(adapt_to_latency=False, refresh_jitter=0.0))
    token = p.get_token()
    p.observe_latency(40.0)
    clock.advance(284)
    assert p.get_token() is token


def test_observe_answer_measures_on_the_providers_clock() -> None:
    clock = FakeClock()
    p = provider(clock)
    attached = clock.monotonic()
    clock.advance(2.5)
    p.observe_answer(attached)
    assert p.observed_latency == 2.5


def _fresh_for(seed: int, policy: RefreshPolicy) -> float:
    """How long a 300 s token from a provider seeded ``seed`` is served FRESH."""
    low, high = 0.0, 300.0
    while high - low > 0.01:  # bisect the instant a caller first sees it stale
        middle = (low + high) / 2
        probe = provider(FakeClock(), policy, seed)
        probe.get_token()
        probe.clock.advance(middle)  # type: ignore[attr-defined]
        if probe.fresh_token() is not None:
            low = middle
        else:
            high = middle
    return low


def test_the_refresh_jitter_spreads_refreshes_over_half_the_refresh_margin() -> None:
    fresh = [_fresh_for(seed, RefreshPolicy()) for seed in range(60)]
    assert all(209.9 <= value <= 240.0 for value in fresh)  # 60 s margin, up to 30 s earlier
    assert max(fresh) - min(fresh) > 20  # spread, not all in one second
    assert len({round(value) for value in fresh}) > 15


def test_without_jitter_every_token_turns_stale_at_the_same_age() -> None:
    fresh = {round(_fresh_for(seed, NO_JITTER), 1) for seed in range(10)}
    assert fresh == {240.0}


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_refresh_jitter_is_a_fraction(value: float) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RefreshPolicy(refresh_jitter=value)
    assert caught.value.field == "refresh_jitter"


@given(
    lifetime=st.floats(1, 100_000),
    latency=st.floats(0, 1_000_000),
    jitter=st.floats(0, 1),
    refresh_jitter=st.floats(0, 1),
)
def test_margins_hold_their_bounds_whatever_the_latency_and_jitter(
    lifetime: float, latency: float, jitter: float, refresh_jitter: float
) -> None:
    policy = RefreshPolicy(refresh_jitter=refresh_jitter)
    token = Token("tok", expires_in=lifetime, requested_at=0.0, requested_at_wall=0.0)
    fresh_until, usable_until = policy.deadlines(token, latency, jitter)
    static_fresh, static_usable = policy.deadlines(token)
    half = lifetime / 2
    tolerance = 1e-9 * lifetime
    assert half - tolerance <= fresh_until <= usable_until + tolerance  # fresh first, >= half life
    assert usable_until <= static_usable + tolerance  # adapting only ever shortens
    assert fresh_until <= static_fresh + tolerance
    stale_window = static_usable - static_fresh  # where a refresh ahead runs, nobody waiting
    assert usable_until - fresh_until >= stale_window - tolerance  # never closed by adapting
    if latency <= half - stale_window:  # never served while it would expire before the answer
        assert token.expires_at - usable_until >= latency - tolerance


def test_deadlines_keep_their_old_meaning_without_latency_or_jitter() -> None:
    token = Token("tok", expires_in=300, requested_at=0.0, requested_at_wall=0.0)
    assert RefreshPolicy().deadlines(token) == (240.0, 285.0)
