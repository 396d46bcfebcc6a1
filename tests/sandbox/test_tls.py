"""HTTPS and mutual TLS in the sandbox, with real handshakes against the CA it generates."""

from __future__ import annotations

import gc
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

trustme = pytest.importorskip("trustme")  # the [sandbox] extra; tox's oldest env lacks it

from navro_adapters.sandbox import Fault, Sandbox

from .stdlib_client import TIMEOUT, get_token, ping, post_token

PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@pytest.fixture
def tls_sandbox() -> Iterator[Sandbox]:
    with Sandbox(tls=True) as sandbox:
        yield sandbox


@pytest.fixture
def mtls_sandbox() -> Iterator[Sandbox]:
    with Sandbox(tls=True, require_client_cert=True) as sandbox:
        yield sandbox


def trusting(sandbox: Sandbox, *, cert: bool = False) -> ssl.SSLContext:
    """What a user writes: trust the sandbox's CA file (and present its client certificate)."""
    assert sandbox.ca_file is not None
    context = ssl.create_default_context(cafile=sandbox.ca_file)
    if cert:
        assert sandbox.client_cert is not None
        context.load_cert_chain(*sandbox.client_cert)
    return context


def tls_connect(
    sandbox: Sandbox, context: ssl.SSLContext, server_hostname: str = "127.0.0.1"
) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def answer_to_raw_ping(sock: ssl.SSLSocket) -> bytes:
    """Send a ping and read until the server closes: b"" when it closes without answering."""
    sock.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n")
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            return received
        if not chunk:
            return received
        received += chunk


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# -- HTTPS -----------------------------------------------------------------------------------------


def test_a_client_trusting_the_ca_gets_a_token_and_pings(tls_sandbox: Sandbox) -> None:
    assert tls_sandbox.base_url == f"https://127.0.0.1:{tls_sandbox.port}"
    assert tls_sandbox.token_url.startswith(f"https://127.0.0.1:{tls_sandbox.port}/")
    assert tls_sandbox.credentials().token_url == tls_sandbox.token_url
    context = trusting(tls_sandbox)
    token = get_token(tls_sandbox, context=context)
    assert ping(tls_sandbox, token, context) == (
        200,
        {
            "ok": True,
            "company": "acme",
            "client_id": "sandbox-client",
            "api_version": None,
            "method": "GET",
            "body_bytes": 0,
        },
    )
    assert tls_sandbox.stats().tokens_issued == 1
    assert tls_sandbox.client_cert is None  # no mutual TLS asked for


def test_the_certificate_names_every_loopback_address(tls_sandbox: Sandbox) -> None:
    context = trusting(tls_sandbox)
    with tls_connect(tls_sandbox, context, "localhost") as sock:  # hostname verification
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.selected_alpn_protocol() in (None, "http/1.1")
        certificate = sock.getpeercert()
    names = set(certificate["subjectAltName"])
    assert {("DNS", "localhost"), ("IP Address", "127.0.0.1")} <= names
    assert any(
        kind == "IP Address" and value.startswith("0:0:0:0:0:0:0:1") for kind, value in names
    )


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_https_on_ipv6_loopback() -> None:
    with Sandbox(host="::1", tls=True) as sandbox:
        assert sandbox.base_url.startswith("https://[::1]:")
        context = trusting(sandbox)
        assert ping(sandbox, get_token(sandbox, context=context), context)[0] == 200


def test_without_the_ca_verification_fails(tls_sandbox: Sandbox) -> None:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", tls_sandbox.port, timeout=TIMEOUT, context=ssl.create_default_context()
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        connection.request("GET", "/v1/ping")
    connection.close()
    # A CA of someone else's does not help either.
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(tls_sandbox, other)
    assert tls_sandbox.stats().api_requests == 0  # nothing got as far as HTTP


def test_handshake_failures_close_only_that_connection_and_log_no_error(
    tls_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    # Plain HTTP to the HTTPS port: no HTTP answer, the connection closes.
    with socket.create_connection(("127.0.0.1", tls_sandbox.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: sandbox\r\n\r\n")
        assert not sock.recv(65536).startswith(b"HTTP/")
    # A client that rejects the certificate, and one that leaves mid-handshake.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(tls_sandbox, ssl.create_default_context())
    with socket.create_connection(("127.0.0.1", tls_sandbox.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\x16\x03\x01\x00\xff")  # the start of a ClientHello, then goodbye
    context = trusting(tls_sandbox)
    assert ping(tls_sandbox, get_token(tls_sandbox, context=context), context)[0] == 200
    gc.collect()  # an unretrieved task exception would be logged now
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]


def test_faults_over_tls(tls_sandbox: Sandbox) -> None:
    context = trusting(tls_sandbox)
    tls_sandbox.enqueue_token_faults(
        Fault.status(503, retry_after="2"), Fault.reset(), Fault.drop()
    )
    status, headers, _ = post_token(tls_sandbox, context=context)
    assert (status, headers["retry-after"]) == (503, "2")
    for _ in range(2):  # reset: part of an answer, then RST; drop: closed without one
        with pytest.raises((http.client.HTTPException, ConnectionError, ssl.SSLError)):
            post_token(tls_sandbox, context=context)
    assert post_token(tls_sandbox, context=context)[0] == 200


def test_close_is_prompt_and_leaks_nothing_with_tls_connections_open() -> None:
    gc.collect()
    threads_before = threading.active_count()
    fds_before = open_fds() if Path("/proc/self/fd").is_dir() else 0
    sandbox = Sandbox(tls=True).start()
    directory = Path(str(sandbox.ca_file)).parent
    context = trusting(sandbox)
    sandbox.enqueue_token_faults(Fault.hang())
    hung = tls_connect(sandbox, context)
    hung.sendall(
        b"POST /authentication/acme/token HTTP/1.1\r\nHost: sandbox\r\nContent-Length: 0\r\n\r\n"
    )
    idle = tls_connect(sandbox, context)  # keep-alive, no request
    stalled = socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT)  # mid-TLS
    answered = tls_connect(sandbox, context)
    answered.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n")
    assert answered.recv(65536).startswith(b"HTTP/1.1 401")  # left open, unread close_notify
    started = time.monotonic()
    sandbox.close()
    assert time.monotonic() - started < 2.0
    for sock in (hung, idle, stalled, answered):
        sock.close()
    assert not directory.exists()
    assert wait_until(lambda: threading.active_count() == threads_before)
    if fds_before:
        gc.collect()
        assert open_fds() == fds_before


def test_tls_files_are_pem_and_removed_on_close() -> None:
    with Sandbox(tls=True, require_client_cert=True) as sandbox:
        ca_file, client_cert = sandbox.ca_file, sandbox.client_cert
        assert ca_file is not None and client_cert is not None
        cert_file, key_file = client_cert
        assert Path(ca_file).read_bytes().startswith(PEM_CERTIFICATE)
        assert Path(cert_file).read_bytes().startswith(PEM_CERTIFICATE)
        assert b"PRIVATE KEY-----" in Path(key_file).read_bytes()
        if os.name == "posix":  # the keys live in a directory only we can read
            assert Path(ca_file).parent.stat().st_mode & 0o077 == 0
    for path in (ca_file, cert_file, key_file):
        assert not Path(path).exists()
    with Sandbox() as plain:
        assert plain.ca_file is None and plain.client_cert is None
        assert plain.base_url.startswith("http://")
        with pytest.raises(RuntimeError, match="tls=True"):
            plain.client_ssl_context()


def test_every_sandbox_has_a_ca_of_its_own() -> None:
    with Sandbox(tls=True) as first, Sandbox(tls=True) as second:
        assert Path(str(first.ca_file)).read_bytes() != Path(str(second.ca_file)).read_bytes()
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect(second, trusting(first))


# -- mutual TLS ------------------------------------------------------------------------------------


def test_mutual_tls_with_the_client_certificate(mtls_sandbox: Sandbox) -> None:
    context = trusting(mtls_sandbox, cert=True)
    token = get_token(mtls_sandbox, context=context)
    assert ping(mtls_sandbox, token, context)[1]["client_id"] == "sandbox-client"
    ready_made = mtls_sandbox.client_ssl_context()
    assert ping(mtls_sandbox, get_token(mtls_sandbox, context=ready_made), ready_made)[0] == 200


@pytest.mark.parametrize("cert", ["none", "another CA's"])
def test_mutual_tls_without_the_client_certificate_fails(mtls_sandbox: Sandbox, cert: str) -> None:
    def client_context(maximum: ssl.TLSVersion) -> ssl.SSLContext:
        context = trusting(mtls_sandbox)
        context.maximum_version = maximum
        if cert != "none":
            intruder = trustme.CA().issue_cert("intruder@example.invalid")
            intruder.configure_cert(context)
        return context

    # TLS 1.2: the handshake itself fails.
    with pytest.raises(ssl.SSLError):
        tls_connect(mtls_sandbox, client_context(ssl.TLSVersion.TLSv1_2)).close()
    # TLS 1.3: the client's half of the handshake completes; the server's fails and it closes
    # the connection before any HTTP is read.
    sock: Optional[ssl.SSLSocket]
    try:
        sock = tls_connect(mtls_sandbox, client_context(ssl.TLSVersion.TLSv1_3))
    except (ssl.SSLError, ConnectionResetError):
        sock = None
    if sock is not None:
        with sock:
            assert answer_to_raw_ping(sock) == b""
    assert mtls_sandbox.stats().api_requests == 0
    # The server lives on for clients that present the certificate.
    context = trusting(mtls_sandbox, cert=True)
    assert ping(mtls_sandbox, get_token(mtls_sandbox, context=context), context)[0] == 200


def test_require_client_cert_needs_tls() -> None:
    with pytest.raises(ValueError, match="tls=True"):
        Sandbox(require_client_cert=True)


# -- with the other options, and in a child process ------------------------------------------------


@pytest.mark.parametrize("in_process", [True, False])
def test_mutual_tls_with_a_token_port_and_two_clients(in_process: bool) -> None:
    with Sandbox(
        tls=True, require_client_cert=True, token_port=True, in_process=in_process
    ) as sandbox:
        if not in_process:
            assert sandbox.pid is not None and sandbox.pid != os.getpid()
        assert sandbox.token_url.startswith(f"https://127.0.0.1:{sandbox.token_port}/")
        sandbox.add_client("reports", "reports-secret")  # through the TLS control channel
        context = trusting(sandbox, cert=True)
        owners: List[str] = []
        for client_id in ("sandbox-client", "reports"):
            token = get_token(sandbox, client_id, context)
            owners.append(ping(sandbox, token, context)[1]["client_id"])
        assert owners == ["sandbox-client", "reports"]
        sandbox.reset_secret("rotated", client_id="reports")
        assert post_token(sandbox, "reports", "reports-secret", context)[0] == 401
        assert get_token(sandbox, "reports", context)
        stats = sandbox.stats()
        assert stats.token_requests_by_client == {"sandbox-client": 1, "reports": 3}
        assert (stats.tokens_issued, stats.token_errors) == (3, 1)
        directory = Path(str(sandbox.ca_file)).parent
    assert not directory.exists()


def test_process_mode_https() -> None:
    with Sandbox(tls=True, in_process=False) as sandbox:
        context = trusting(sandbox)
        token = get_token(sandbox, context=context)
        assert ping(sandbox, token, context)[0] == 200
        sandbox.revoke_all_tokens()
        assert ping(sandbox, token, context)[0] == 401
        sandbox.enqueue_token_faults(Fault.status(429, retry_after="1"))
        assert post_token(sandbox, context=context)[1]["retry-after"] == "1"
        assert sandbox.stats().token_requests == 2
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect(sandbox, ssl.create_default_context())
