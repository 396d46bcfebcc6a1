"""Secret sources, re-reading a reset secret, and the fail-fast back-off (no network)."""

from __future__ import annotations

import asyncio
import base64
import pickle
import random
import socket
import ssl
import urllib.error
from pathlib import Path
from typing import List

import pytest

from navro_adapters import (
    ConfigurationError,
    Credentials,
    InvalidClientError,
    RetryPolicy,
    TokenEndpointError,
    TokenProvider,
    TokenTimeoutError,
    TransportError,
)
from navro_adapters.credentials import SecretFile
from navro_adapters.provider import FAILURE_BACKOFF_MAX
from navro_adapters.transport import transport_failure

from .fakes import FakeClock, ScriptedTransport, error_response, token_response

TOKEN_URL = "http://127.0.0.1:9/token"
OLD, NEW = "old-secret-value-0001", "new-secret-value-0002"


class Source:
    """A secret source whose value the test changes, counting its reads."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> str:
        self.reads += 1
        return self.value


def sent_secret(transport: ScriptedTransport, n: int = -1) -> str:
    header = transport.calls[n].headers["Authorization"]
    return base64.b64decode(header.split(" ", 1)[1]).decode().split(":", 1)[1]


class SecretCheckingTransport(ScriptedTransport):
    """Answers 401 invalid_client to any secret but the one the 'Hub' currently holds."""

    def __init__(self, hub_secret: str) -> None:
        super().__init__()
        self.hub_secret = hub_secret

    def next_response(self):  # type: ignore[no-untyped-def]
        if sent_secret(self) != self.hub_secret:
            return error_response(401, {"error": "invalid_client"})
        return super().next_response()


def make(
    source: object, transport: ScriptedTransport, clock: FakeClock, **kwargs: object
) -> TokenProvider:
    credentials = Credentials("client-1", source, "acme", token_url=TOKEN_URL)  # type: ignore[arg-type]
    return TokenProvider(
        credentials,
        transport=transport,
        clock=clock,
        rng=random.Random(3),
        **kwargs,  # type: ignore[arg-type]
    )


# -- secret sources ----------------------------------------------------------------------------


def test_a_secret_source_is_read_when_a_token_request_is_built_not_before() -> None:
    source = Source(OLD)
    credentials = Credentials("client-1", source, "acme", token_url=TOKEN_URL)
    assert source.reads == 0  # constructing never calls it
    assert OLD not in repr(credentials) and "Source" not in repr(credentials)
    transport = ScriptedTransport()
    provider = TokenProvider(credentials, transport=transport, clock=FakeClock())
    provider.get_token()
    assert sent_secret(transport) == OLD
    assert source.reads == 1  # one read serves the request and its cache key


def test_a_source_that_fails_is_a_configuration_error_without_its_value() -> None:
    def broken() -> str:
        raise RuntimeError(f"vault said {OLD}")

    credentials = Credentials("client-1", broken, "acme", token_url=TOKEN_URL)
    with pytest.raises(ConfigurationError) as caught:
        credentials.client_secret  # noqa: B018
    assert caught.value.field == "client_secret"
    assert "RuntimeError" in str(caught.value) and OLD not in str(caught.value)


def test_a_source_returning_an_unusable_secret_is_refused() -> None:
    credentials = Credentials("client-1", lambda: "  ", "acme", token_url=TOKEN_URL)
    with pytest.raises(ConfigurationError):
        credentials.client_secret  # noqa: B018


def test_secret_file_reads_the_file_each_time_and_strips_the_newline(tmp_path: Path) -> None:
    path = tmp_path / "navro-secret"
    path.write_text(OLD + "\n")
    source = SecretFile(path)
    assert source() == OLD
    path.write_text(NEW)
    assert source() == NEW
    assert repr(source) == f"SecretFile({str(path)!r})"
    assert pickle.loads(pickle.dumps(source)) == source  # the path travels, not the contents


def test_a_missing_secret_file_names_the_path_never_a_secret(tmp_path: Path) -> None:
    credentials = Credentials("c", SecretFile(tmp_path / "absent"), "acme", token_url=TOKEN_URL)
    with pytest.raises(ConfigurationError) as caught:
        credentials.client_secret  # noqa: B018
    assert "absent" in str(caught.value) and "No such file" in str(caught.value)


def test_from_env_reads_navro_client_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(OLD)
    base = {"NAVRO_CLIENT_ID": "c", "NAVRO_COMPANY": "acme"}
    credentials = Credentials.from_env({**base, "NAVRO_CLIENT_SECRET_FILE": str(path)})
    assert credentials.secret_changes and credentials.client_secret == OLD
    path.write_text(NEW)
    assert credentials.client_secret == NEW
    with pytest.raises(ConfigurationError) as both:
        Credentials.from_env(
            {**base, "NAVRO_CLIENT_SECRET_FILE": str(path), "NAVRO_CLIENT_SECRET": OLD}
        )
    assert both.value.field == "NAVRO_CLIENT_SECRET_FILE"
    with pytest.raises(ConfigurationError) as neither:
        Credentials.from_env(base)
    assert neither.value.field == "NAVRO_CLIENT_SECRET"


def test_a_new_secret_gives_a_new_cache_key() -> None:
    source = Source(OLD)
    credentials = Credentials("client-1", source, "acme", token_url=TOKEN_URL)
    before = credentials.cache_key
    source.value = NEW
    assert credentials.cache_key != before
    assert OLD not in before and NEW not in credentials.cache_key


# -- a reset secret, picked up without a restart -------------------------------------------------


class ChangesAfterFirstRead(Source):
    """The mounted secret is updated just after our first read of it."""

    def __call__(self) -> str:
        value = super().__call__()
        self.value = NEW
        return value


def test_a_rejected_secret_is_read_again_and_a_new_one_used_at_once() -> None:
    transport = SecretCheckingTransport(hub_secret=NEW)  # the secret was reset in the Hub
    clock = FakeClock()
    provider = make(ChangesAfterFirstRead(OLD), transport, clock)
    token = provider.get_token()
    assert token.access_token == "tok-1"  # issued to the second request, the new secret's
    assert len(transport.calls) == 2
    assert [sent_secret(transport, 0), sent_secret(transport, 1)] == [OLD, NEW]
    assert clock.sleeps == []  # no backoff between the two: the change is used at once


def test_an_unchanged_rejected_secret_fails_after_one_request() -> None:
    transport = SecretCheckingTransport(hub_secret=NEW)
    provider = make(Source(OLD), transport, FakeClock())
    with pytest.raises(InvalidClientError):
        provider.get_token()
    assert len(transport.calls) == 1


# -- fail fast: the back-off after a failed fetch ----------------------------------------------


def test_callers_get_the_same_error_at_once_during_the_back_off() -> None:
    transport = SecretCheckingTransport(hub_secret=NEW)
    clock = FakeClock()
    provider = make(OLD, transport, clock)
    with pytest.raises(InvalidClientError) as first:
        provider.get_token()
    for _ in range(50):
        with pytest.raises(InvalidClientError) as again:
            provider.get_token()
        assert again.value is first.value  # the same typed error, no new token request
    assert len(transport.calls) == 1
    clock.advance(1.0)  # the first back-off is 1 s
    with pytest.raises(InvalidClientError):
        provider.get_token()
    assert len(transport.calls) == 2


def test_the_back_off_doubles_up_to_thirty_seconds() -> None:
    transport = SecretCheckingTransport(hub_secret=NEW)
    clock = FakeClock()
    provider = make(OLD, transport, clock)
    waits: List[float] = []
    for _ in range(8):
        with pytest.raises(InvalidClientError):
            provider.get_token()
        sent = len(transport.calls)
        waited = 0.0
        while len(transport.calls) == sent:  # step time until the next request is allowed
            clock.advance(0.5)
            waited += 0.5
            with pytest.raises(InvalidClientError):
                provider.get_token()
        waits.append(waited)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert FAILURE_BACKOFF_MAX == 30.0


def test_a_changed_secret_ends_the_back_off_at_once() -> None:
    source = Source(OLD)
    transport = SecretCheckingTransport(hub_secret=NEW)
    clock = FakeClock()
    provider = make(source, transport, clock)
    with pytest.raises(InvalidClientError):
        provider.get_token()
    clock.advance(0.1)
    source.value = NEW  # the mounted secret is updated
    reads_before = source.reads
    assert provider.get_token().access_token  # no waiting for the back-off to run out
    assert sent_secret(transport) == NEW
    assert source.reads - reads_before <= 2  # one check, then the request's own read


def test_the_secret_source_is_consulted_at_most_once_a_second_while_backing_off() -> None:
    source = Source(OLD)
    transport = SecretCheckingTransport(hub_secret=NEW)
    clock = FakeClock()
    provider = make(source, transport, clock)
    for _ in range(3):  # three failures: a 4 s back-off
        with pytest.raises(InvalidClientError):
            provider.get_token()
        clock.advance(30.0)
    with pytest.raises(InvalidClientError):
        provider.get_token()
    reads = source.reads
    for _ in range(40):  # 40 calls over 2 s
        with pytest.raises(InvalidClientError):
            provider.get_token()
        clock.advance(0.05)
    assert source.reads - reads <= 3  # at 0 s, 1 s and 2 s at most


def test_retries_used_up_start_the_back_off_too() -> None:
    transport = ScriptedTransport(*[error_response(503)] * 3)
    clock = FakeClock()
    provider = make(OLD, transport, clock, retry_policy=RetryPolicy(max_attempts=3))
    with pytest.raises(TokenEndpointError):
        provider.get_token()
    assert len(transport.calls) == 3
    with pytest.raises(TokenEndpointError):
        provider.get_token()  # served from the back-off: no fourth request
    assert len(transport.calls) == 3
    clock.advance(1.0)
    assert provider.get_token().access_token == "tok-4"  # the endpoint is back


def test_no_back_off_while_a_valid_token_is_cached() -> None:
    transport = ScriptedTransport(token_response("tok-a", expires_in=300))
    clock = FakeClock()
    provider = make(OLD, transport, clock)
    provider.get_token()
    transport.steps = [error_response(401, {"error": "invalid_client"})] * 5
    clock.advance(250.0)  # STALE: a refresh ahead fails in the background
    assert provider.get_token().access_token == "tok-a"
    assert provider.get_token().access_token == "tok-a"  # still served, no error


def test_clear_ends_the_back_off() -> None:
    transport = SecretCheckingTransport(hub_secret=NEW)
    provider = make(OLD, transport, FakeClock())
    with pytest.raises(InvalidClientError):
        provider.get_token()
    transport.hub_secret = OLD
    provider.clear()
    assert provider.get_token().access_token


def test_async_callers_fail_fast_too() -> None:
    transport = SecretCheckingTransport(hub_secret=NEW)
    provider = make(OLD, transport, FakeClock())

    async def run() -> None:
        for _ in range(20):
            with pytest.raises(InvalidClientError):
                await provider.aget_token()

    asyncio.run(run())
    assert len(transport.calls) == 1


# -- a refused certificate is not transient ------------------------------------------------------


def _cert_error() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    return error


def test_a_certificate_failure_is_a_non_retryable_tls_error() -> None:
    failure = transport_failure(urllib.error.URLError(_cert_error()))
    assert isinstance(failure, TransportError) and not failure.retryable
    assert "TLS certificate problem" in failure.message
    assert "unable to get local issuer certificate" in failure.message


def test_a_certificate_failure_is_found_however_deeply_a_library_wraps_it() -> None:
    class LibraryError(Exception):
        pass

    try:
        try:
            raise _cert_error()
        except ssl.SSLError as inner:
            raise LibraryError(inner) from None  # as urllib3 and requests pass it along
    except LibraryError as outer:
        failure = transport_failure(ConnectionError(outer))
    assert not failure.retryable and "TLS certificate problem" in failure.message


def test_a_refused_client_certificate_is_not_transient() -> None:
    alert = ssl.SSLError(1, "tlsv13 alert certificate required")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    failure = transport_failure(OSError(alert))
    assert not failure.retryable and "client certificate" in failure.message


def test_other_failures_stay_retryable_and_timeouts_are_timeouts() -> None:
    refused = transport_failure(ConnectionRefusedError(111, "Connection refused"))
    assert refused.retryable and "ConnectionRefusedError" in refused.message
    assert isinstance(transport_failure(socket.timeout("timed out")), TokenTimeoutError)
    assert isinstance(transport_failure(ValueError(), timed_out=True), TokenTimeoutError)


def test_a_certificate_failure_is_not_retried_by_the_provider() -> None:
    transport = ScriptedTransport(*[transport_failure(_cert_error())] * 5)
    provider = make(OLD, transport, FakeClock())
    with pytest.raises(TransportError) as caught:
        provider.get_token()
    assert len(transport.calls) == 1 and not caught.value.retryable
