"""Property-based and stateful tests: hostile token responses, hostile waits, and a state machine
that drives one provider from real threads and asyncio tasks at once.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import math
import random
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from navro_adapters import (
    Credentials,
    InvalidClientError,
    NavroAuthError,
    RefreshPolicy,
    RetryPolicy,
    TokenEndpointError,
    TokenProvider,
    TokenRequest,
    TokenResponseError,
    TokenState,
    TransportError,
    TransportResponse,
    parse_retry_after,
    parse_token_response,
)
from navro_adapters.protocol import MAX_RETRY_AFTER
from navro_adapters.retry import RetryBudget
from navro_adapters.token import MAX_TOKEN_LIFETIME, Token
from tests.core.fakes import FakeClock, error_response, token_response

from .helpers import SECRET

CREDS = Credentials("client-1", SECRET, "acme", token_url="http://127.0.0.1:9/t")
NOW = 1_700_000_000.0

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
token_keys = st.sampled_from(
    ["access_token", "token_type", "expires_in", "scope", "error", "error_description"]
)
token_like = st.dictionaries(
    st.one_of(token_keys, st.text(max_size=12)), json_values, max_size=6
) | st.fixed_dictionaries(
    {
        "access_token": st.one_of(json_values, st.text(min_size=1, max_size=80)),
        "token_type": st.one_of(st.just("Bearer"), st.just("bearer"), json_values),
        "expires_in": st.one_of(
            json_values,
            st.sampled_from(["abc", "-5", "0", "1e12", "1e400", "nan", "inf", " 300 ", ""]),
            st.sampled_from([-5, 0, 1, 300, 1e12, 10**40, 10**400]),
        ),
    }
)
statuses = st.one_of(
    st.sampled_from([200, 201, 204, 299, 301, 400, 401, 403, 404, 429, 500, 502, 503]),
    st.integers(min_value=100, max_value=599),
)
header_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["1", "-1", "0", "1e9", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT", ""]),
)


def _body(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode("utf-8")


def _check_parse(status: int, body: bytes, headers: Dict[str, str]) -> None:
    response = TransportResponse.build(status, headers, body)
    try:
        token = parse_token_response(response, requested_at=100.0, requested_at_wall=NOW)
    except InvalidClientError:
        assert status == 401
        return
    except TokenEndpointError as exc:
        assert not 200 <= status < 300
        retry_after = exc.retry_after
        assert retry_after is None or 0.0 <= retry_after <= MAX_RETRY_AFTER
        return
    except TokenResponseError:
        assert 200 <= status < 300
        return
    assert 200 <= status < 300
    assert isinstance(token, Token)
    assert token.access_token and all(0x21 <= ord(ch) <= 0x7E for ch in token.access_token)
    assert math.isfinite(token.expires_in) and 0 < token.expires_in <= MAX_TOKEN_LIFETIME
    fresh_until, usable_until = RefreshPolicy().deadlines(token)
    assert math.isfinite(fresh_until) and math.isfinite(usable_until)
    assert 100.0 < fresh_until <= usable_until <= token.expires_at
    if len(token.access_token) >= 8:  # shorter strings turn up in any text by chance
        assert token.access_token not in repr(token) and token.access_token not in str(token)


@settings(max_examples=300)
@given(status=statuses, document=st.one_of(token_like, json_values), retry_after=header_values)
def test_any_json_token_response_gives_a_token_or_a_typed_error(
    status: int, document: Any, retry_after: str
) -> None:
    _check_parse(status, _body(document), {"Retry-After": retry_after})


@settings(max_examples=300)
@given(status=statuses, body=st.binary(max_size=300))
def test_any_bytes_give_a_token_or_a_typed_error(status: int, body: bytes) -> None:
    _check_parse(status, body, {})


@settings(max_examples=100)
@given(depth=st.integers(min_value=1, max_value=100_000))
def test_deeply_nested_json_is_a_typed_error(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    _check_parse(200, body, {})
    _check_parse(200, b'{"access_token": ' + body + b"}", {})


@settings(max_examples=300)
@given(
    value=st.one_of(st.none(), header_values, st.text(max_size=200)),
    now_wall=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
)
def test_retry_after_of_any_form_is_a_finite_bounded_wait(
    value: Optional[str], now_wall: float
) -> None:
    wait = parse_retry_after(value, now_wall=now_wall)
    assert wait is None or (math.isfinite(wait) and 0.0 <= wait <= MAX_RETRY_AFTER)


@settings(max_examples=200)
@given(
    when=st.datetimes(
        min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)
    ),
    now_wall=st.floats(min_value=-1e11, max_value=1e11),
)
def test_retry_after_http_dates_are_bounded(when: datetime.datetime, now_wall: float) -> None:
    text = email.utils.format_datetime(when.replace(tzinfo=datetime.timezone.utc), usegmt=True)
    wait = parse_retry_after(text, now_wall=now_wall)
    assert wait is not None and 0.0 <= wait <= MAX_RETRY_AFTER


policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 10),
    backoff_base=st.floats(0, 100),
    backoff_max=st.floats(0, 100),
    attempt_timeout=st.floats(0.001, 100),
    deadline=st.floats(0.001, 1000),
)


@settings(max_examples=300)
@given(
    policy=policies,
    retry_after=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    status=st.sampled_from([429, 500, 503, 400]),
    elapsed=st.floats(min_value=0, max_value=2000),
    attempts=st.integers(0, 12),
    seed=st.integers(0, 2**32),
)
def test_delay_after_never_negative_infinite_or_past_the_deadline(
    policy: RetryPolicy,
    retry_after: Optional[float],
    status: int,
    elapsed: float,
    attempts: int,
    seed: int,
) -> None:
    budget = RetryBudget(policy, 0.0, random.Random(seed))
    for _ in range(attempts):
        budget.attempt_timeout(0.0)
    error = TokenEndpointError("x", status_code=status, retry_after=retry_after)
    delay = budget.delay_after(error, elapsed)
    if delay is not None:
        assert math.isfinite(delay) and delay >= 0.0
        assert elapsed + delay <= budget.deadline_at
    transport_delay = budget.delay_after(TransportError("x"), elapsed)
    assert transport_delay is None or (math.isfinite(transport_delay) and transport_delay >= 0)
    timeout = budget.attempt_timeout(elapsed)
    assert math.isfinite(timeout) and timeout > 0


@settings(max_examples=300)
@given(expires_in=st.one_of(json_values, st.text(max_size=30)))
def test_expires_in_of_any_form_never_crashes_the_refresh_policy(expires_in: Any) -> None:
    response = token_response("tok-abcdefgh", expires_in=expires_in)
    try:
        token = parse_token_response(response, requested_at=0.0, requested_at_wall=NOW)
    except TokenResponseError:
        return
    for now in (0.0, token.expires_in / 2, token.expires_in, token.expires_in * 2):
        assert RefreshPolicy().state(token, now) in set(TokenState)
    assert RefreshPolicy().state(token, token.expires_at) is TokenState.EXPIRED


# -- the state machine --------------------------------------------------------------------------

LIFETIME = 100.0  # fake seconds: FRESH for 80, STALE for 15, EXPIRED for the last 5
REAL_WAIT = 10.0  # real seconds any single wait in the machine may take before it is a failure


class Gate:
    """Sync and async transports that hold every token request until the test releases it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending: List[List[Any]] = []  # [released Event, outcome]
        self.in_flight = 0
        self.max_in_flight = 0
        self.sent = 0
        self.issued = 0

    def _enter(self) -> List[Any]:
        entry: List[Any] = [threading.Event(), None]
        with self._lock:
            self.pending.append(entry)
            self.in_flight += 1
            self.sent += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return entry

    def _leave(self, entry: List[Any]) -> TransportResponse:
        with self._lock:
            self.in_flight -= 1
            if entry in self.pending:
                self.pending.remove(entry)
        outcome = entry[1]
        if outcome is None:
            raise TransportError("gate: never released")
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, TransportResponse)
        return outcome

    def sync(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        entry = self._enter()
        entry[0].wait(REAL_WAIT)
        return self._leave(entry)

    async def async_(self, request: TokenRequest, *, timeout: float) -> TransportResponse:
        entry = self._enter()
        try:
            # A threading.Event set from the test thread: poll it, the loop stays free.
            while not entry[0].is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        except asyncio.CancelledError:
            with self._lock:
                self.in_flight -= 1
                if entry in self.pending:
                    self.pending.remove(entry)
            raise
        return self._leave(entry)

    def release_oldest(self, kind: str) -> bool:
        with self._lock:
            waiting = [e for e in self.pending if not e[0].is_set()]
            if not waiting:
                return False
            entry = waiting[0]
            if kind == "ok":
                self.issued += 1
                entry[1] = token_response(f"machine-token-{self.issued:06d}", expires_in=LIFETIME)
            elif kind == "400":
                entry[1] = error_response(400, {"error": "invalid_request"})
            elif kind == "503":
                entry[1] = error_response(503, {"error": "temporarily_unavailable"})
            else:
                entry[1] = TransportError("gate: connection reset")
            entry[0].set()
            return True


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(REAL_WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(REAL_WAIT)
        self.loop.close()


class ProviderMachine(RuleBasedStateMachine):
    """Threads and tasks asking one provider for tokens while time, failures and cancellations
    happen around them."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.gate = Gate()
        self.provider = TokenProvider(
            CREDS,
            transport=self.gate.sync,
            async_transport=self.gate.async_,
            retry_policy=RetryPolicy(
                max_attempts=2,
                backoff_base=0.001,
                backoff_max=0.001,
                attempt_timeout=10,
                deadline=30,
            ),
            clock=self.clock,
            rng=random.Random(0),
        )
        self.loop = LoopThread()
        self.threads: List[threading.Thread] = []
        self.tasks: List[Any] = []  # concurrent.futures.Future of each task's coroutine
        self.task_handles: List[asyncio.Task[Any]] = []
        self.results: List[Tuple[str, float, Any]] = []
        self._results_lock = threading.Lock()

    # -- callers ----------------------------------------------------------------------------

    def _record(self, kind: str, started: float, outcome: Any) -> None:
        with self._results_lock:
            self.results.append((kind, started, outcome))

    @rule()
    def thread_caller(self) -> None:
        def call() -> None:
            started = self.clock.monotonic()
            try:
                outcome: Any = self.provider.get_token()
            except BaseException as exc:
                outcome = exc
            self._record("thread", started, outcome)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        self.threads.append(thread)

    @rule()
    def task_caller(self) -> None:
        async def call() -> None:
            started = self.clock.monotonic()
            try:
                outcome: Any = await self.provider.aget_token()
            except asyncio.CancelledError as exc:
                self._record("task", started, exc)
                raise
            except BaseException as exc:
                outcome = exc
            self._record("task", started, outcome)

        async def spawn() -> asyncio.Task[None]:
            return asyncio.get_running_loop().create_task(call())

        handle = asyncio.run_coroutine_threadsafe(spawn(), self.loop.loop).result(REAL_WAIT)
        self.task_handles.append(handle)

    @rule(kind=st.sampled_from(["ok", "ok", "400", "503", "transport"]))
    def answer_one_fetch(self, kind: str) -> None:
        self.gate.release_oldest(kind)
        time.sleep(0.003)  # let the woken callers run a little

    @rule(seconds=st.sampled_from([0.5, 10.0, 19.0, 50.0, 81.0, 96.0, 150.0]))
    def move_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def invalidate_current(self) -> None:
        token = self.provider.token
        if token is not None:
            self.provider.invalidate(token)

    @rule(index=st.integers(min_value=0, max_value=50))
    def cancel_a_task(self, index: int) -> None:
        live = [t for t in self.task_handles if not t.done()]
        if live:
            task = live[index % len(live)]
            self.loop.loop.call_soon_threadsafe(task.cancel)

    @rule()
    def settle(self) -> None:
        self._settle()

    # -- checks -------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Answer every fetch until every caller is done: nobody may be left waiting."""
        give_up = time.monotonic() + REAL_WAIT * 2
        while time.monotonic() < give_up:
            self.gate.release_oldest("ok")
            callers_done = all(not t.is_alive() for t in self.threads) and all(
                t.done() for t in self.task_handles
            )
            if callers_done and not self.gate.pending and self.gate.in_flight == 0:
                break
            time.sleep(0.002)
        stuck_threads = sum(t.is_alive() for t in self.threads)
        stuck_tasks = sum(not t.done() for t in self.task_handles)
        assert stuck_threads == 0 and stuck_tasks == 0, (
            f"{stuck_threads} thread(s) and {stuck_tasks} task(s) still waiting after every "
            "fetch finished"
        )
        # A background refresh may still be publishing its outcome: give it a moment.
        deadline = time.monotonic() + REAL_WAIT
        while self.provider.fetching and time.monotonic() < deadline:
            self.gate.release_oldest("ok")
            time.sleep(0.002)
        assert not self.provider.fetching, "a flight outlived every fetch"
        self.threads = []
        self.task_handles = []

    @invariant()
    def at_most_one_fetch_in_flight(self) -> None:
        assert self.gate.max_in_flight <= 1, f"{self.gate.max_in_flight} fetches at once"

    @invariant()
    def no_expired_token_and_only_typed_errors(self) -> None:
        policy = self.provider.refresh_policy
        with self._results_lock:
            results = list(self.results)
        for kind, started, outcome in results:
            if isinstance(outcome, Token):
                _, usable_until = policy.deadlines(outcome)
                assert usable_until > started, (
                    f"{kind} got token {outcome.fingerprint}, already expired when it asked"
                )
            elif isinstance(outcome, asyncio.CancelledError):
                assert kind == "task"
            else:
                assert isinstance(outcome, NavroAuthError), f"{kind} got {outcome!r}"

    def teardown(self) -> None:
        try:
            self._settle()
        finally:
            self.loop.close()


ProviderMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestProviderMachine = ProviderMachine.TestCase
