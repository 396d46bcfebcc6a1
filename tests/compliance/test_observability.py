"""OpenTelemetry spans and metrics, and ``on_event``, on every adapter flavour.

Each driver builds its adapter with the provider options ``tracer_provider=``,
``meter_provider=`` and ``on_event=``; the SDK's in-memory span exporter and metric reader
collect what the provider emits while the driver talks to the real sandbox. The drivers run
each request in a copy of the test's context, so a span the test holds is the caller's span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List
from urllib.parse import urlsplit

import pytest

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from navro_adapters import InvalidClientError, TokenEvent
from navro_adapters.sandbox import Fault, Sandbox

from . import test_compliance as compliance
from .drivers import Driver

SECRET = compliance.SECRET
# The compliance suite's fixtures: every driver flavour, and a sandbox with SECRET.
driver_factory = compliance.driver_factory
sandbox = compliance.sandbox

REQUESTS = "navro.token.requests"
DURATION = "navro.token.request.duration"
INVALIDATIONS = "navro.token.invalidations"
LIFETIME = "navro.token.remaining_lifetime"


@dataclass
class Telemetry:
    """An SDK tracer and meter provider that keep everything in memory, and the events."""

    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    events: List[TokenEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("tests")

    def options(self) -> Dict[str, Any]:
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "on_event": self.events.append,
        }

    def token_spans(self) -> List[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if "token" in span.name]

    def metrics(self) -> Dict[str, Any]:
        """Every metric of our scope by name, as collected now."""
        found: Dict[str, Any] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                if scope_metrics.scope.name == "navro_adapters":
                    for metric in scope_metrics.metrics:
                        found[metric.name] = metric
        return found

    def points(self, name: str) -> List[Any]:
        metric = self.metrics().get(name)
        return list(metric.data.data_points) if metric is not None else []

    def counts(self, name: str) -> Dict[Any, int]:
        """A counter's value by its points' (status code, error type)."""
        return {
            (p.attributes.get("http.response.status_code"), p.attributes.get("error.type")): p.value
            for p in self.points(name)
        }


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    collected = Telemetry()
    try:
        yield collected
    finally:
        collected.tracer_provider.shutdown()
        collected.meter_provider.shutdown()


@pytest.fixture
def driver(driver_factory: Any, sandbox: Sandbox, telemetry: Telemetry) -> Iterator[Driver]:
    drv = driver_factory()
    drv.open(sandbox.credentials(), **telemetry.options())
    try:
        yield drv
    finally:
        drv.close()


def ping(sandbox: Sandbox) -> str:
    return f"{sandbox.base_url}/v1/ping"


def token_endpoint(sandbox: Sandbox) -> tuple:
    parts = urlsplit(sandbox.token_url)
    return parts.hostname, parts.port


def assert_child_of(span: ReadableSpan, parent: Any) -> None:
    expected = parent.get_span_context()
    assert span.parent is not None, "the token request span has no parent"
    assert span.parent.span_id == expected.span_id
    assert span.context.trace_id == expected.trace_id


def test_a_fetch_is_one_client_span_under_the_callers_span(
    driver: Driver,
    sandbox: Sandbox,
    telemetry: Telemetry,
) -> None:
    with telemetry.tracer.start_as_current_span("caller") as caller:
        result = driver.request("GET", ping(sandbox))
    assert result.status == 200, result.error
    spans = telemetry.token_spans()
    assert len(spans) == 1, [s.name for s in spans]
    span = spans[0]
    host, port = token_endpoint(sandbox)
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == host
    assert attributes["server.port"] == port
    assert attributes["url.full"] == sandbox.token_url
    assert attributes["navro.attempt"] == 1
    assert "error.type" not in attributes
    token = driver.provider.token
    assert token is not None
    assert attributes["navro.token.fingerprint"] == token.fingerprint
    assert_child_of(span, caller)
    assert telemetry.counts(REQUESTS) == {(200, None): 1}
    [fetched] = [e for e in telemetry.events if e.kind == "fetched"]
    assert fetched.fingerprint == token.fingerprint and fetched.attempts == 1


def test_a_500_then_200_is_two_spans_and_two_counted_requests(
    driver: Driver,
    sandbox: Sandbox,
    telemetry: Telemetry,
) -> None:
    sandbox.enqueue_token_faults(Fault.status(500))
    with telemetry.tracer.start_as_current_span("caller") as caller:
        result = driver.request("GET", ping(sandbox))
    assert result.status == 200, result.error
    spans = sorted(telemetry.token_spans(), key=lambda s: s.attributes["navro.attempt"])
    assert [s.attributes["navro.attempt"] for s in spans] == [1, 2]
    failed, succeeded = spans
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["error.type"] == "500"
    assert failed.status.status_code is StatusCode.ERROR
    assert succeeded.attributes["http.response.status_code"] == 200
    assert succeeded.attributes["http.request.resend_count"] == 1
    assert succeeded.status.status_code is StatusCode.UNSET
    for span in spans:
        assert_child_of(span, caller)
    assert telemetry.counts(REQUESTS) == {(500, "500"): 1, (200, None): 1}
    durations = telemetry.metrics()[DURATION]
    assert durations.unit == "s"
    assert sum(p.count for p in durations.data.data_points) == 2
    [fetched] = [e for e in telemetry.events if e.kind == "fetched"]
    assert fetched.attempts == 2 and fetched.duration > 0


def test_a_wrong_secret_is_an_error_span_with_its_error_type(
    driver: Driver,
    sandbox: Sandbox,
    telemetry: Telemetry,
) -> None:
    sandbox.reset_secret("a-brand-new-secret")
    with telemetry.tracer.start_as_current_span("caller") as caller:
        result = driver.request("GET", ping(sandbox))
    assert isinstance(result.error, InvalidClientError), repr(result.error)
    [span] = telemetry.token_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "401"
    assert span.attributes["http.response.status_code"] == 401
    assert "navro.token.fingerprint" not in span.attributes
    assert_child_of(span, caller)
    assert telemetry.counts(REQUESTS) == {(401, "401"): 1}
    [failed] = [e for e in telemetry.events if e.kind == "fetch_failed"]
    assert failed.error_type == "InvalidClientError"
    assert failed.attempts == 1 and failed.fingerprint is None


def test_a_401_from_the_api_counts_one_invalidation(
    driver: Driver,
    sandbox: Sandbox,
    telemetry: Telemetry,
) -> None:
    assert driver.request("GET", ping(sandbox)).status == 200
    first = driver.provider.token
    assert first is not None
    assert telemetry.points(INVALIDATIONS) == []
    sandbox.revoke_all_tokens()
    assert driver.request("GET", ping(sandbox)).status == 200
    [point] = telemetry.points(INVALIDATIONS)
    assert point.value == 1
    assert len(telemetry.token_spans()) == 2
    [invalidated] = [e for e in telemetry.events if e.kind == "invalidated"]
    assert invalidated.fingerprint == first.fingerprint


def test_the_gauge_reads_the_cached_tokens_remaining_lifetime(
    driver: Driver,
    sandbox: Sandbox,
    telemetry: Telemetry,
) -> None:
    assert telemetry.points(LIFETIME) == [], "a gauge point with no token cached"
    assert driver.request("GET", ping(sandbox)).status == 200
    provider = driver.provider
    token = provider.token
    assert token is not None
    latest = token.expires_at - provider.clock.monotonic()
    metric = telemetry.metrics()[LIFETIME]
    earliest = token.expires_at - provider.clock.monotonic()
    [point] = metric.data.data_points
    assert metric.unit == "s"
    assert earliest <= point.value <= latest <= token.expires_in
    assert point.attributes["navro.client_id"] == sandbox.client_id


def test_the_fresh_token_path_emits_nothing(
    driver: Driver,
    sandbox: Sandbox,
    telemetry: Telemetry,
) -> None:
    assert driver.request("GET", ping(sandbox)).status == 200
    spans, events = len(telemetry.exporter.get_finished_spans()), list(telemetry.events)
    counted = telemetry.counts(REQUESTS)
    with telemetry.tracer.start_as_current_span("caller"):
        for result in driver.request_many("GET", [ping(sandbox)] * 20):
            assert result.status == 200, result.error
    assert len(telemetry.exporter.get_finished_spans()) == spans + 1  # the caller's own
    assert telemetry.events == events
    assert telemetry.counts(REQUESTS) == counted
    assert sandbox.stats().token_requests == 1


def test_no_span_or_metric_holds_a_token_or_the_secret(
    driver: Driver,
    sandbox: Sandbox,
    telemetry: Telemetry,
) -> None:
    sandbox.enqueue_token_faults(Fault.status(500))
    assert driver.request("GET", ping(sandbox)).status == 200
    sandbox.revoke_all_tokens()
    assert driver.request("GET", ping(sandbox)).status == 200
    sandbox.reset_secret("a-brand-new-secret")
    sandbox.revoke_all_tokens()
    driver.request("GET", ping(sandbox))
    forbidden = {SECRET, "a-brand-new-secret"}
    for seen in sandbox.requests_seen():
        authorization = seen.headers.get("authorization", "")
        if authorization:
            forbidden.add(authorization)
            forbidden.add(authorization.split(" ", 1)[-1])  # the token or the Basic pair
    assert len(forbidden) > 4, "no token was seen at the sandbox"
    texts: List[str] = [repr(event) for event in telemetry.events]
    for span in telemetry.exporter.get_finished_spans():
        texts.append(span.to_json())
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    texts.append(data.to_json())
    assert len(telemetry.token_spans()) >= 4
    for text in texts:
        for secret in forbidden:
            assert secret not in text


def test_a_dropped_connection_is_an_error_span_without_a_status(
    driver: Driver,
    sandbox: Sandbox,
    telemetry: Telemetry,
) -> None:
    sandbox.enqueue_token_faults(Fault.drop())
    with telemetry.tracer.start_as_current_span("caller") as caller:
        first = driver.request("GET", ping(sandbox))
        if first.error is not None:  # the client's own auth flow: that caller gets the error
            assert driver.token_requests_through_client, repr(first.error)
            assert driver.request("GET", ping(sandbox)).status == 200
    spans = sorted(telemetry.token_spans(), key=lambda s: s.start_time)
    assert len(spans) == 2
    dropped, fetched = spans
    assert dropped.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in dropped.attributes
    # Ours when the provider saw the failure; "abandoned" when the client gave the request up.
    assert dropped.attributes["error.type"] in ("TransportError", "abandoned")
    assert fetched.attributes["http.response.status_code"] == 200
    for span in spans:
        assert_child_of(span, caller)
    assert sum(telemetry.counts(REQUESTS).values()) == 2
