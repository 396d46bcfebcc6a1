"""The provider's ``on_event`` callback and OpenTelemetry context, against the real sandbox.

Every event kind is produced by the real thing that causes it (a fetch, a rejected secret, a
stale token, a 401's invalidation, a FileStore shared by two providers, a store that raises).
The span-parent tests drive the flight on each place it can run: inline on the caller's thread,
on a thread the provider spawns (which does not copy contextvars), and as a refresh ahead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from navro_adapters import (
    ConfigurationError,
    InvalidClientError,
    TokenEvent,
    TokenProvider,
    UrllibTransport,
)
from navro_adapters.auth import PROVIDER_OPTIONS
from navro_adapters.events import EVENT_KINDS
from navro_adapters.sandbox import Sandbox
from navro_adapters.stores import FileStore
from tests.core.fakes import FakeClock

SECRET = "s3cr3t-value-never-logged"
WAIT = 30.0  # seconds a test waits for a background refresh before failing


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


class Recorder:
    """An on_event callback that keeps every event and can wait for a kind."""

    def __init__(self) -> None:
        self.events: List[TokenEvent] = []
        self._arrived = threading.Condition()

    def __call__(self, event: TokenEvent) -> None:
        with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()

    def kinds(self) -> List[str]:
        return [event.kind for event in self.events]

    def of(self, kind: str) -> List[TokenEvent]:
        return [event for event in self.events if event.kind == kind]

    def wait_for(self, kind: str, count: int = 1) -> TokenEvent:
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.of(kind)) >= count, WAIT)
            assert arrived, f"fewer than {count} {kind} event(s)"
            return self.of(kind)[-1]


def wait_for_fetches(recorder: Recorder, count: int) -> None:
    recorder.wait_for("fetched", count)


class RaisingStore:
    """A token store whose every call fails, as a store whose server is down does."""

    def _fail(self, *args: Any) -> Any:
        raise ConnectionRefusedError("store host refused the connection")

    load = save = try_lock = unlock = _fail


def test_a_fetch_reports_fetched_with_the_fingerprint(sandbox: Sandbox) -> None:
    recorder = Recorder()
    provider = TokenProvider(sandbox.credentials(), on_event=recorder)
    token = provider.get_token()
    assert recorder.kinds() == ["fetched"]
    [event] = recorder.events
    assert event.fingerprint == token.fingerprint
    assert event.attempts == 1
    assert event.duration > 0
    assert event.error_type is None


def test_a_rejected_secret_reports_fetch_failed(sandbox: Sandbox) -> None:
    recorder = Recorder()
    credentials = sandbox.credentials()  # with the secret about to be refused
    sandbox.reset_secret("a-brand-new-secret")
    provider = TokenProvider(credentials, on_event=recorder)
    with pytest.raises(InvalidClientError):
        provider.get_token()
    assert recorder.kinds() == ["fetch_failed"]
    [event] = recorder.events
    assert event.error_type == "InvalidClientError"
    assert event.attempts == 1 and event.fingerprint is None


def test_a_stale_token_reports_refresh_ahead_then_fetched(sandbox: Sandbox) -> None:
    recorder = Recorder()
    clock = FakeClock()
    provider = TokenProvider(sandbox.credentials(), clock=clock, on_event=recorder)
    first = provider.get_token()
    clock.advance(first.expires_in * 0.85)  # past the refresh margin, before expiry: STALE
    assert provider.get_token() is first  # served at once while the refresh runs
    refresh = recorder.wait_for("refresh_ahead")
    assert refresh.fingerprint == first.fingerprint
    wait_for_fetches(recorder, 2)
    assert recorder.kinds() == ["fetched", "refresh_ahead", "fetched"]
    second = recorder.events[-1]
    assert second.fingerprint != first.fingerprint
    # "fetched" is emitted when Navro issues the token; the background refresh then caches it.
    deadline = time.monotonic() + 5.0
    while provider.token is first and time.monotonic() < deadline:
        time.sleep(0.01)
    assert provider.token is not None and provider.token.fingerprint == second.fingerprint


def test_an_invalidation_reports_invalidated_once(sandbox: Sandbox) -> None:
    recorder = Recorder()
    provider = TokenProvider(sandbox.credentials(), on_event=recorder)
    token = provider.get_token()
    assert provider.invalidate(token)
    assert not provider.invalidate(token)  # already gone: nothing to report
    assert recorder.kinds() == ["fetched", "invalidated"]
    assert recorder.events[-1].fingerprint == token.fingerprint


def test_a_token_from_a_shared_file_store_reports_store_hit(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    pytest.importorskip("filelock")
    path = tmp_path / "tokens.json"
    first, second = Recorder(), Recorder()
    token = TokenProvider(sandbox.credentials(), store=FileStore(path), on_event=first).get_token()
    peer = TokenProvider(sandbox.credentials(), store=FileStore(path), on_event=second)
    assert peer.get_token() == token
    assert first.kinds() == ["fetched"]
    assert second.kinds() == ["store_hit"]
    assert second.events[0].fingerprint == token.fingerprint
    assert sandbox.stats().token_requests == 1


def test_a_failing_store_reports_store_failed_and_the_fetch_still_succeeds(
    sandbox: Sandbox,
) -> None:
    recorder = Recorder()
    provider = TokenProvider(sandbox.credentials(), store=RaisingStore(), on_event=recorder)
    token = provider.get_token()
    assert recorder.kinds() == ["store_failed", "fetched"]
    failed = recorder.events[0]
    assert failed.error_type == "ConnectionRefusedError"
    assert recorder.events[1].fingerprint == token.fingerprint


def test_a_raising_callback_is_logged_once_per_kind_and_fails_nothing(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    calls: List[str] = []

    def broken(event: TokenEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("callback detail that must not be logged")

    provider = TokenProvider(sandbox.credentials(), on_event=broken)
    with caplog.at_level(logging.WARNING, logger="navro_adapters"):
        token = provider.get_token()
        assert provider.invalidate(token)
        provider.get_token()
        assert provider.invalidate(provider.get_token())
    assert calls == ["fetched", "invalidated", "fetched", "invalidated"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings  # one per kind, not one per call
    assert all("RuntimeError" in message for message in warnings)
    assert any("'fetched'" in m for m in warnings) and any("'invalidated'" in m for m in warnings)
    assert not any("callback detail" in m for m in warnings)
    assert all(r.exc_info is None for r in caplog.records)  # no traceback, no message


def test_events_never_run_on_the_fresh_path(sandbox: Sandbox) -> None:
    recorder = Recorder()
    provider = TokenProvider(sandbox.credentials(), on_event=recorder)
    for _ in range(50):
        provider.get_token()
        assert provider.fresh_token() is not None
    assert recorder.kinds() == ["fetched"]


def test_an_event_and_its_repr_hold_no_token_or_secret(sandbox: Sandbox, tmp_path: Path) -> None:
    recorder = Recorder()
    provider = TokenProvider(sandbox.credentials(), store=RaisingStore(), on_event=recorder)
    token = provider.get_token()
    provider.invalidate(token)
    sandbox.reset_secret("a-brand-new-secret")
    with pytest.raises(InvalidClientError):
        provider.get_token()
    assert set(recorder.kinds()) == {"store_failed", "fetched", "invalidated", "fetch_failed"}
    for event in recorder.events:
        assert event.kind in EVENT_KINDS
        shown = repr(event) + str(dataclasses.astuple(event))
        for secret in (token.access_token, SECRET, "a-brand-new-secret"):
            assert secret not in shown
    with pytest.raises(dataclasses.FrozenInstanceError):
        recorder.events[0].kind = "fetched"  # type: ignore[misc]


def test_bad_observability_options_are_configuration_errors(sandbox: Sandbox) -> None:
    assert {"tracer_provider", "meter_provider", "on_event"} <= PROVIDER_OPTIONS
    with pytest.raises(ConfigurationError) as failure:
        TokenProvider(sandbox.credentials(), on_event="not callable")  # type: ignore[arg-type]
    assert failure.value.field == "on_event"
    pytest.importorskip("opentelemetry")
    for name in ("tracer_provider", "meter_provider"):
        with pytest.raises(ConfigurationError) as failure:
            TokenProvider(sandbox.credentials(), **{name: object()})
        assert failure.value.field == name


# -- the caller's OpenTelemetry context, wherever the flight runs ----------------------------


@pytest.fixture
def spans() -> Iterator[Any]:
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    exporter.tracer_provider = tracer_provider  # type: ignore[attr-defined]
    try:
        yield exporter
    finally:
        tracer_provider.shutdown()


def token_spans(exporter: Any) -> List[Any]:
    return [s for s in exporter.get_finished_spans() if "token" in s.name]


def test_a_flight_spawned_on_a_thread_is_still_the_callers_child(
    sandbox: Sandbox, spans: Any
) -> None:
    # An own sync transport on the async path: the flight runs on a thread the provider
    # starts, which does not copy contextvars; the span must hang under the caller anyway.
    provider = TokenProvider(
        sandbox.credentials(),
        transport=UrllibTransport(),
        tracer_provider=spans.tracer_provider,
    )
    tracer = spans.tracer_provider.get_tracer("tests")
    callers: List[int] = []

    async def call() -> None:
        with tracer.start_as_current_span("caller") as caller:
            await provider.aget_token()
        callers.append(caller.get_span_context().span_id)

    asyncio.run(call())
    [span] = token_spans(spans)
    assert span.parent is not None and span.parent.span_id == callers[0]
    assert span.attributes["http.response.status_code"] == 200


def test_a_refresh_ahead_starts_its_own_trace_linked_to_the_caller(
    sandbox: Sandbox, spans: Any
) -> None:
    recorder = Recorder()
    clock = FakeClock()
    provider = TokenProvider(
        sandbox.credentials(),
        clock=clock,
        tracer_provider=spans.tracer_provider,
        on_event=recorder,
    )
    tracer = spans.tracer_provider.get_tracer("tests")
    first = provider.get_token()
    clock.advance(first.expires_in * 0.85)
    with tracer.start_as_current_span("caller") as caller:
        assert provider.get_token() is first
    wait_for_fetches(recorder, 2)
    refresh = [s for s in token_spans(spans) if s.attributes["navro.token.refresh_ahead"]]
    assert len(refresh) == 1
    [span] = refresh
    assert span.parent is None  # nobody waits on it: not part of the caller's trace
    assert [link.context.span_id for link in span.links] == [caller.get_span_context().span_id]


_GLOBAL_PROVIDERS = """
import json
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from navro_adapters import TokenProvider
from navro_adapters.requests import NavroAuth
from navro_adapters.sandbox import Sandbox
import requests

with Sandbox() as sandbox:
    sandbox.add_client("reports-client", "reports-secret")
    # Built before the application sets its global providers, as happens at import time.
    early = TokenProvider(sandbox.credentials())
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    early.get_token()
    session = requests.Session()  # built after: an adapter with no provider options
    session.auth = NavroAuth(sandbox.credentials("reports-client"))
    assert session.get(sandbox.base_url + "/v1/ping").status_code == 200
    # The global provider passed explicitly is the same provider: no second set of instruments.
    TokenProvider(sandbox.credentials(), meter_provider=meter_provider).get_token()
    data = reader.get_metrics_data()
    found = {
        metric.name: metric.data.data_points
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
print(json.dumps({
    "spans": [s.name for s in exporter.get_finished_spans()],
    "metrics": sorted(found),
    "lifetimes": sorted(p.attributes["navro.client_id"]
                        for p in found["navro.token.remaining_lifetime"]),
    "requests": sum(p.value for p in found["navro.token.requests"]),
}))
"""


def test_without_providers_given_the_global_ones_are_used() -> None:
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed")
    pytest.importorskip("requests")
    from tests.test_packaging import run_python

    outcome = run_python(_GLOBAL_PROVIDERS)
    assert outcome["spans"] == ["POST navro token"] * 3
    assert outcome["metrics"] == [
        "navro.token.remaining_lifetime",
        "navro.token.request.duration",
        "navro.token.requests",
    ]
    assert outcome["requests"] == 3
    # Every provider's token is observed, whether built before or after the global was set.
    assert outcome["lifetimes"] == ["reports-client", "sandbox-client"]


def test_the_gauge_shows_the_longest_lifetime_among_one_accounts_providers(
    sandbox: Sandbox,
) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    clock = FakeClock()
    older = TokenProvider(sandbox.credentials(), clock=clock, meter_provider=meter_provider)
    newer = TokenProvider(sandbox.credentials(), clock=clock, meter_provider=meter_provider)
    older.get_token()
    clock.advance(100.0)
    token = newer.get_token()
    data = reader.get_metrics_data()
    assert data is not None
    [point] = [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "navro.token.remaining_lifetime"
        for point in metric.data.data_points
    ]
    assert point.value == token.expires_in  # the newer token's, not the older one's 200 s
    meter_provider.shutdown()
