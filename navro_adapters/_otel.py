"""OpenTelemetry spans and metrics for token requests: the one module that imports it.

Imported only when a provider is built (by :mod:`._telemetry`), and only if the optional
``opentelemetry-api`` (extra ``[otel]``) is installed; :data:`AVAILABLE` says whether it is.
Public API of OpenTelemetry only: its tracer and meter providers, spans, instruments, context.

Attribute names follow OpenTelemetry's HTTP client conventions (``http.request.method``,
``http.response.status_code``, ``server.address``, ``server.port``, ``url.full``,
``error.type``); ours are under ``navro.``. Nothing here ever sees a secret: the request's
headers are never read, and a token appears only as its fingerprint.
"""

from __future__ import annotations

import threading
import weakref
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, Union
from urllib.parse import urlsplit

from ._telemetry import ABANDONED, Attempt, error_type_of
from ._version import __version__
from .clock import Clock
from .credentials import Credentials
from .errors import ConfigurationError
from .token import Token

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
except ImportError:  # the [otel] extra is not installed: the provider reports through on_event only
    AVAILABLE = False
else:
    AVAILABLE = True

__all__ = ["AVAILABLE", "FlightParent", "Reporter", "SpanAttempt"]

SCOPE = "navro_adapters"  # the instrumentation scope: tracer and meter name
SPAN_NAME = "POST navro token"
#: Histogram buckets in seconds for token round trips (OpenTelemetry's advice for HTTP client
#: durations); the SDK's default buckets are meant for milliseconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

Attributes = Dict[str, Union[str, int, float, bool]]


class LifetimeSource(Protocol):
    """What the gauge reads: a provider's cached token and its clock (public attributes)."""

    @property
    def token(self) -> Optional[Token]: ...

    clock: Clock


class _Instruments:
    """The instruments of one meter provider, created once and shared by its providers."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.requests = meter.create_counter(
            "navro.token.requests",
            unit="{request}",
            description="Token requests sent to Navro, one per attempt",
        )
        self.duration = meter.create_histogram(
            "navro.token.request.duration",
            unit="s",
            description="Duration of each token request attempt",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.invalidations = meter.create_counter(
            "navro.token.invalidations",
            unit="{token}",
            description="Cached tokens dropped after the API answered 401",
        )
        self._lock = threading.Lock()
        self._reporters: weakref.WeakSet[Reporter] = weakref.WeakSet()
        meter.create_observable_gauge(
            "navro.token.remaining_lifetime",
            callbacks=[self._observe],
            unit="s",
            description="Seconds until the cached token expires (absent when none is cached)",
        )

    def watch(self, reporter: Reporter) -> None:
        with self._lock:
            self._reporters.add(reporter)

    def _observe(self, options: metrics.CallbackOptions) -> List[metrics.Observation]:
        with self._lock:
            reporters = list(self._reporters)
        # Providers of one account report as one series: the longest lifetime any holds (an
        # idle one's token running out says nothing while another's is fresh).
        longest: Dict[Tuple[object, ...], metrics.Observation] = {}
        for reporter in reporters:
            remaining = reporter.remaining_lifetime()
            if remaining is None:
                continue
            key = tuple(reporter.token_attributes.values())  # the same keys for every reporter
            held = longest.get(key)
            if held is None or remaining > float(held.value):
                longest[key] = metrics.Observation(remaining, reporter.token_attributes)
        return list(longest.values())


_shared: weakref.WeakKeyDictionary[metrics.MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)
_global: Optional[_Instruments] = None  # on the global meter provider, whichever it is
_shared_lock = threading.Lock()


def _instruments(meter_provider: Optional[metrics.MeterProvider]) -> _Instruments:
    """The shared instruments of ``meter_provider``, default the global one.

    One set for the global provider, whether or not it is set yet: instruments made on the
    global proxy follow the provider set later, and a second set made on that provider would be
    a duplicate registration (the SDK keeps the first gauge callback only).
    """
    global _global
    with _shared_lock:
        current = metrics.get_meter_provider()
        if meter_provider is None or meter_provider is current:
            made = _shared.get(current)
            if made is not None:  # passed explicitly before it became the global one
                return made
            if _global is None:
                _global = _Instruments(metrics.get_meter(SCOPE, __version__))
            return _global
        found = _shared.get(meter_provider)
        if found is None:
            found = _shared[meter_provider] = _Instruments(
                metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
            )
        return found


class FlightParent:
    """Where a flight's attempt spans hang: the caller's context, captured when it started."""

    __slots__ = ("context", "links")

    def __init__(self, context: otel_context.Context, links: Sequence[trace.Link]) -> None:
        self.context = context
        self.links = links


class SpanAttempt(Attempt):
    """One attempt's span, ended with its outcome, and its metric points."""

    __slots__ = ("_clock", "_ended", "_reporter", "_span", "_started_at", "_status_code")

    def __init__(self, reporter: Reporter, span: trace.Span, clock: Clock) -> None:
        self._reporter, self._span, self._clock = reporter, span, clock
        self._started_at = clock.monotonic()
        self._status_code: Optional[int] = None
        self._ended = False

    def answered(self, status_code: int) -> None:
        self._status_code = status_code

    def succeeded(self, token: Token) -> None:
        self._end(None, token.fingerprint)

    def failed(self, error: BaseException) -> None:
        self._end(error_type_of(error), None)

    def abandoned(self) -> None:
        self._end(ABANDONED, None)

    def _end(self, error_type: Optional[str], fingerprint: Optional[str]) -> None:
        if self._ended:
            return
        self._ended = True
        duration = self._clock.monotonic() - self._started_at
        self._reporter.end_attempt(self._span, duration, self._status_code, error_type, fingerprint)


class Reporter:
    """Spans and metrics of one TokenProvider (a no-op tracer/meter costs next to nothing)."""

    def __init__(
        self,
        credentials: Credentials,
        source: LifetimeSource,
        tracer_provider: object,
        meter_provider: object,
    ) -> None:
        # Refused now with a typed error, not an AttributeError at the first token request.
        if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
            raise ConfigurationError(
                "tracer_provider", "must be an opentelemetry.trace.TracerProvider"
            )
        if meter_provider is not None and not isinstance(meter_provider, metrics.MeterProvider):
            raise ConfigurationError(
                "meter_provider", "must be an opentelemetry.metrics.MeterProvider"
            )
        self._clock = source.clock
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        self._source = weakref.ref(source)
        parts = urlsplit(credentials.token_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        #: On the gauge and the invalidations counter: which account, which Navro.
        self.token_attributes: Attributes = {
            "navro.client_id": credentials.client_id,
            "server.address": parts.hostname or "",
            "server.port": port,
        }
        self._request_attributes: Attributes = {
            **self.token_attributes,
            "http.request.method": "POST",
        }
        # The token URL holds no credentials (Credentials refuses user info and queries).
        self._span_attributes: Attributes = {
            **self._request_attributes,
            "url.full": parts.geturl(),
        }
        self._metrics = _instruments(meter_provider)
        self._metrics.watch(self)

    def flight_parent(self, *, refresh: bool) -> FlightParent:
        """The caller's context, for a flight it starts. A refresh ahead is nobody's wait: its
        spans start a trace of their own, linked to the caller's span."""
        current = otel_context.get_current()
        if not refresh:
            return FlightParent(current, ())
        caller = trace.get_current_span(current).get_span_context()
        links = (trace.Link(caller),) if caller.is_valid else ()
        return FlightParent(otel_context.Context(), links)

    def start_attempt(
        self, parent: Optional[FlightParent], number: int, *, refresh: bool
    ) -> SpanAttempt:
        attributes: Attributes = {
            **self._span_attributes,
            "navro.attempt": number,
            "navro.token.refresh_ahead": refresh,
        }
        if number > 1:
            attributes["http.request.resend_count"] = number - 1
        span = self._tracer.start_span(
            SPAN_NAME,
            # None: the current context, right for a flow driven on the caller's own stack.
            context=parent.context if parent is not None else None,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            links=parent.links if parent is not None else (),
        )
        return SpanAttempt(self, span, self._clock)

    def end_attempt(
        self,
        span: trace.Span,
        duration: float,
        status_code: Optional[int],
        error_type: Optional[str],
        fingerprint: Optional[str],
    ) -> None:
        outcome: Attributes = {}
        if status_code is not None:
            outcome["http.response.status_code"] = status_code
        if error_type is not None:
            outcome["error.type"] = error_type
        span.set_attributes(outcome)
        if fingerprint is not None:
            span.set_attribute("navro.token.fingerprint", fingerprint)
        if error_type is not None:
            # The description is the low-cardinality type: an error message may quote the server.
            span.set_status(trace.Status(trace.StatusCode.ERROR, error_type))
        span.end()
        attributes = {**self._request_attributes, **outcome}
        self._metrics.requests.add(1, attributes)
        self._metrics.duration.record(max(0.0, duration), attributes)

    def invalidated(self) -> None:
        self._metrics.invalidations.add(1, self.token_attributes)

    def remaining_lifetime(self) -> Optional[float]:
        """Seconds until the cached token expires; ``None`` when there is none."""
        source = self._source()
        token = source.token if source is not None else None
        if source is None or token is None:
            return None
        return max(0.0, token.expires_at - source.clock.monotonic())
