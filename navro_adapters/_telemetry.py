"""What a provider reports about its token requests: OpenTelemetry and ``on_event``.

:class:`Telemetry` belongs to one provider. Each flight the provider starts gets a
:class:`FlightObserver` (built on the caller's stack, so it captures the caller's OpenTelemetry
context even when the flight then runs on a spawned thread), and the flow reports each token
request attempt through an :class:`Attempt`. With neither OpenTelemetry installed nor a
callback given, every one of them is a shared object whose methods do nothing. None of this is
on the fresh-token path: it only runs when a token is fetched, refreshed, read from a store or
invalidated.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Optional, Set

from ._log import logger
from .credentials import Credentials
from .errors import ConfigurationError, TokenEndpointError
from .events import EventCallback, TokenEvent
from .token import Token

if TYPE_CHECKING:
    from ._otel import FlightParent, LifetimeSource, Reporter

__all__ = ["QUIET_FLIGHT", "Attempt", "FlightObserver", "Telemetry", "error_type_of"]

ABANDONED = "abandoned"  # error.type of an attempt whose answer never reached the provider
_OTEL_EXTRA = "install OpenTelemetry first: pip install 'navro-adapters[otel]'"


def error_type_of(error: BaseException) -> str:
    """``error.type`` of a failed attempt: the HTTP status for an error answer, else the
    exception's class name (a low-cardinality value, never a message)."""
    if isinstance(error, TokenEndpointError):
        return str(error.status_code)
    return type(error).__name__


class Attempt:
    """One token request attempt. Tell it the status when an answer arrives, then end it once:
    :meth:`succeeded`, :meth:`failed` or :meth:`abandoned`. This base reports nothing."""

    __slots__ = ()

    def answered(self, status_code: int) -> None:
        pass

    def succeeded(self, token: Token) -> None:
        pass

    def failed(self, error: BaseException) -> None:
        pass

    def abandoned(self) -> None:
        pass


_QUIET_ATTEMPT = Attempt()


class FlightObserver:
    """What one flight (one acquisition) reports. This base reports nothing."""

    __slots__ = ()

    def attempt(self, number: int) -> Attempt:
        """A token request attempt starts (``number`` counts from 1)."""
        return _QUIET_ATTEMPT

    def fetched(self, token: Token, attempts: int, duration: float) -> None:
        pass

    def fetch_failed(self, error: BaseException, attempts: int, duration: float) -> None:
        pass

    def store_hit(self, token: Token) -> None:
        pass

    def store_failed(self, error: BaseException) -> None:
        pass


QUIET_FLIGHT = FlightObserver()


class _ReportedFlight(FlightObserver):
    __slots__ = ("_parent", "_refresh", "_telemetry")

    def __init__(self, telemetry: Telemetry, parent: Optional[FlightParent], refresh: bool) -> None:
        self._telemetry, self._parent, self._refresh = telemetry, parent, refresh

    def attempt(self, number: int) -> Attempt:
        reporter = self._telemetry.reporter
        if reporter is None:
            return _QUIET_ATTEMPT
        return reporter.start_attempt(self._parent, number, refresh=self._refresh)

    def fetched(self, token: Token, attempts: int, duration: float) -> None:
        self._telemetry.emit(TokenEvent("fetched", token.fingerprint, attempts, duration))

    def fetch_failed(self, error: BaseException, attempts: int, duration: float) -> None:
        event = TokenEvent("fetch_failed", None, attempts, duration, type(error).__name__)
        self._telemetry.emit(event)

    def store_hit(self, token: Token) -> None:
        self._telemetry.emit(TokenEvent("store_hit", token.fingerprint))

    def store_failed(self, error: BaseException) -> None:
        cause = error.__cause__ or error  # what the store raised, when it was wrapped in ours
        self._telemetry.emit(TokenEvent("store_failed", error_type=type(cause).__name__))


class Telemetry:
    """One provider's reporting: spans and metrics when ``opentelemetry-api`` is importable
    (through the given providers, else the global ones), ``on_event`` calls when given."""

    def __init__(
        self,
        source: LifetimeSource,
        credentials: Credentials,
        *,
        tracer_provider: object = None,
        meter_provider: object = None,
        on_event: Optional[EventCallback] = None,
    ) -> None:
        if on_event is not None and not callable(on_event):
            raise ConfigurationError("on_event", "must be a callable taking a TokenEvent")
        self.on_event = on_event
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.reporter: Optional[Reporter] = None
        from . import _otel  # only now: importing navro_adapters never imports OpenTelemetry

        if _otel.AVAILABLE:
            self.reporter = _otel.Reporter(credentials, source, tracer_provider, meter_provider)
        elif tracer_provider is not None:
            raise ConfigurationError("tracer_provider", _OTEL_EXTRA)
        elif meter_provider is not None:
            raise ConfigurationError("meter_provider", _OTEL_EXTRA)
        self._lock = threading.Lock()
        self._failed_kinds: Set[str] = set()  # kinds whose callback failure was logged

    def flight(self, stale: Optional[Token]) -> FlightObserver:
        """The observer of a flight the calling code starts now, on its own stack; ``stale``
        is the token a refresh ahead replaces (None for a fetch callers wait on)."""
        if stale is not None:
            self.emit(TokenEvent("refresh_ahead", stale.fingerprint))
        if self.reporter is None and self.on_event is None:
            return QUIET_FLIGHT
        refresh = stale is not None
        parent = self.reporter.flight_parent(refresh=refresh) if self.reporter else None
        return _ReportedFlight(self, parent, refresh)

    def invalidated(self, token: Token) -> None:
        """The cached ``token`` was dropped after a 401 from the API."""
        if self.reporter is not None:
            self.reporter.invalidated()
        self.emit(TokenEvent("invalidated", token.fingerprint))

    def emit(self, event: TokenEvent) -> None:
        """Call ``on_event``; its exception is logged (once per kind, type only) and dropped."""
        callback = self.on_event
        if callback is None:
            return
        try:
            callback(event)
        except Exception as exc:
            with self._lock:
                first = event.kind not in self._failed_kinds
                self._failed_kinds.add(event.kind)
            if first:
                # The type only: the exception's message may quote whatever the callback held.
                logger.warning(
                    "on_event callback raised %s on a %r event (ignored; not logged again "
                    "for this kind)",
                    type(exc).__name__,
                    event.kind,
                )
