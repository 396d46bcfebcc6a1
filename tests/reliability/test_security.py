"""Security: no secret or token in logs, errors, reprs or CLI output; plain http refused; tokens
stay on their origin; token files are private; the sandbox and the parser survive fuzzing.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from navro_adapters import (
    ConfigurationError,
    Credentials,
    FileStore,
    NavroAuthError,
    TokenProvider,
    TokenRequest,
    TransportResponse,
    build_token_request,
)
from navro_adapters.sandbox import Fault, Sandbox

from .helpers import (
    DRIVER_NAMES,
    REPO_ROOT,
    ROTATED_SECRET,
    SECRET,
    SMALL_POLICY,
    adapter_objects,
    capture_all_logs,
    driver_factory_or_skip,
    error_texts,
    leaks_in,
    our_error_texts,
    provider_tokens,
    reset_sandbox,
    sandbox_issued_tokens,
    write_results,
)

FINDINGS: Dict[str, Any] = {"third_party_logs": {}, "our_log_leaks": 0, "fuzz": {}}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


@pytest.fixture(scope="module", autouse=True)
def _write_findings() -> Iterator[None]:
    yield
    write_results("security", FINDINGS)


def _basic(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")


# -- logs, errors and reprs through every adapter --------------------------------------------------


@pytest.mark.parametrize("driver_name", DRIVER_NAMES)
def test_no_secret_or_token_in_logs_errors_or_reprs(driver_name: str, sandbox: Sandbox) -> None:
    """Success, refresh after revocation, 401 always, a redirect and a rejected secret, all at
    DEBUG on every logger; ours must be clean, third-party findings are recorded."""
    factory = driver_factory_or_skip(driver_name)
    reset_sandbox(sandbox)
    sandbox.set_token_ttl(1.0)
    ping = f"{sandbox.base_url}/v1/ping"
    texts: List[str] = []
    errors: List[BaseException] = []
    with capture_all_logs() as logs:
        driver = factory()
        driver.open(sandbox.credentials())
        try:
            results = driver.request_many("GET", [ping] * 3)
            sandbox.revoke_all_tokens()
            results += driver.request_many("GET", [ping] * 3)
            results += driver.request_many(
                "GET", [f"{sandbox.base_url}/v1/redirect?to={ping}&code=307"]
            )
            sandbox.set_api_always_401(True)
            results += driver.request_many("POST", [ping], body=b'{"amount": 1}')
            sandbox.set_api_always_401(False)
            driver.provider.clear()
            sandbox.reset_secret(ROTATED_SECRET)
            results += driver.request_many("GET", [ping] * 2)
            errors = [r.error for r in results if r.error is not None]
            for obj in adapter_objects(driver):
                texts.extend([repr(obj), str(obj)])
            needles = sandbox_issued_tokens(sandbox) | provider_tokens(driver.provider)
        finally:
            driver.close()
    assert errors and all(isinstance(e, NavroAuthError) for e in errors), errors
    needles |= {SECRET, ROTATED_SECRET, _basic(sandbox.client_id, SECRET)}
    assert len(needles) >= 5  # the secrets, and the tokens issued on the way
    for error in errors:
        texts.extend(our_error_texts(error))
    assert not leaks_in(texts, needles), leaks_in(texts, needles)[:3]
    ours = leaks_in(logs.texts(ours=True), needles)
    FINDINGS["our_log_leaks"] += len(ours)
    assert not ours, ours[:3]
    # Third-party DEBUG logs are outside our control: record what they reveal, per library.
    chains = [t for e in errors for t in error_texts(e) if t not in our_error_texts(e)]
    FINDINGS["third_party_logs"][driver_name] = {
        "records": logs.by_logger(),
        "records_with_secret_or_token": logs.third_party_leaks(needles),
        "library_exceptions_in_cause_chain_with_secret_or_token": len(leaks_in(chains, needles)),
    }


def test_reprs_of_core_objects_hide_secrets() -> None:
    credentials = Credentials("client", SECRET, "acme")
    request = build_token_request(credentials)
    provider = TokenProvider(credentials)
    response = TransportResponse.build(200, {}, b'{"access_token": "abcdefghijkl0123"}')
    header = request.headers["Authorization"]
    for obj in (credentials, request, provider, response, credentials._secret):
        for text in (repr(obj), str(obj)):
            assert SECRET not in text and header not in text and "abcdefghijkl0123" not in text
    assert isinstance(request, TokenRequest)
    with pytest.raises(TypeError):
        vars(credentials)  # __slots__: no __dict__ to dump the secret from


# -- the CLI ---------------------------------------------------------------------------------------


def _cli(sandbox: Sandbox, *args: str, secret: str = SECRET) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT),
        NAVRO_CLIENT_ID=sandbox.client_id,
        NAVRO_CLIENT_SECRET=secret,
        NAVRO_COMPANY=sandbox.company,
        NAVRO_BASE_URL=sandbox.base_url,
    )
    return subprocess.run(
        [sys.executable, "-m", "navro_adapters", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_json_prints_only_the_token_asked_for(sandbox: Sandbox) -> None:
    reset_sandbox(sandbox)
    proc = _cli(sandbox, "-v", "token", "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    token = document["access_token"]
    assert proc.stdout.count(token) == 1
    assert set(document) == {"access_token", "token_type", "expires_in", "scope", "expires_at"}
    secrets = {SECRET, _basic(sandbox.client_id, SECRET)}
    assert not leaks_in([proc.stdout], secrets)
    assert not leaks_in([proc.stderr], secrets | {token}), proc.stderr  # -v logs fingerprints
    sandbox.reset_secret(ROTATED_SECRET)
    failed = _cli(sandbox, "-v", "token", "--json", secret=SECRET)
    assert failed.returncode == 1 and "InvalidClientError" in failed.stderr
    assert not leaks_in([failed.stdout, failed.stderr], secrets)
    reset_sandbox(sandbox)


# -- plain http, origins, files --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://api.navro.cloud",
        "HTTP://api.navro.cloud",
        "http://10.0.0.1:8080",
        "http://0.0.0.0",
        "http://127.1",
        "http://127.0.0.1.nip.io",
        "http://localhost.example.com",
        "http://[::ffff:10.0.0.1]",
        "ftp://127.0.0.1",
        "https://user:pass@api.navro.cloud",
        "//api.navro.cloud",
    ],
)
@pytest.mark.parametrize("field", ["base_url", "token_url"])
def test_credentials_refuse_plain_http_to_non_loopback(url: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Credentials("client", SECRET, "acme", **{field: url})
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8300", "http://localhost:1", "http://[::1]:2", "https://api.x"]
)
def test_credentials_accept_https_and_loopback(url: str) -> None:
    assert Credentials("client", SECRET, "acme", base_url=url).base_url == url


@pytest.mark.parametrize("driver_name", DRIVER_NAMES)
def test_redirect_to_an_alias_of_the_api_host_does_not_carry_the_token(
    driver_name: str, sandbox: Sandbox
) -> None:
    """``localhost:port`` is the same server as ``127.0.0.1:port`` but another origin."""
    factory = driver_factory_or_skip(driver_name)
    reset_sandbox(sandbox)
    alias = f"http://localhost:{sandbox.port}/v1/ping"
    driver = factory()
    driver.open(sandbox.credentials())
    try:
        result = driver.request("GET", f"{sandbox.base_url}/v1/redirect?to={alias}")
    finally:
        driver.close()
    assert result.error is None, result.error
    assert result.status == 401  # the alias got no token; nothing was resent with one
    hops = [r for r in sandbox.requests_seen() if r.headers.get("host", "").startswith("localhost")]
    assert hops, "the redirect was not followed"
    assert all("authorization" not in r.headers for r in hops)


def test_file_store_files_are_private(tmp_path: Any, sandbox: Sandbox) -> None:
    reset_sandbox(sandbox)
    old_umask = os.umask(0)  # the most permissive umask: the store must still create 0600
    try:
        store = FileStore(tmp_path / "tokens.json")
        provider = TokenProvider(sandbox.credentials(), store=store)
        provider.get_token()
        provider.invalidate(provider.get_token())
        provider.get_token()
    finally:
        os.umask(old_umask)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files, "the store wrote nothing"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
    FINDINGS["file_store_modes"] = {k: oct(v) for k, v in modes.items()}


# -- fuzzing ---------------------------------------------------------------------------------------

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
methods = st.one_of(
    st.sampled_from(["POST", "GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE"]),
    st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=12),
    st.text(min_size=0, max_size=8),
)
paths = st.one_of(
    st.sampled_from(
        [
            "/authentication/acme/token",
            "/authentication/%61cme/token",
            "/authentication/%ff/token",
            "/authentication//token",
            "/authentication/acme/token?x=1",
            "/v1/ping",
            "/v1/redirect?to=%ff",
            "/v1/redirect?to=http://x/&code=999",
            "*",
            "/",
        ]
    ),
    st.text(min_size=0, max_size=40).map(lambda s: "/" + s),
)
header_names = st.one_of(
    st.sampled_from(
        ["Authorization", "X-API-Version", "Content-Type", "Content-Length", "Transfer-Encoding"]
    ),
    st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=20),
    st.text(min_size=0, max_size=10),
)
header_values = st.one_of(
    st.sampled_from(
        [
            "1",
            "Basic " + _basic("sandbox-client", SECRET),
            "Basic !!!",
            "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "chunked",
            "-1",
            "99999999999999999999",
        ]
    ),
    st.text(max_size=40),
)
bodies = st.one_of(
    st.sampled_from(
        [
            b"grant_type=client_credentials&scope=openid",
            b"grant_type=client_credentials&grant_type=x&scope=openid",
            b"scope=%ff&grant_type=%",
            b"--x\r\nContent-Disposition: form-data\r\n\r\n--x--",
        ]
    ),
    st.binary(max_size=300),
)
versions = st.one_of(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]), st.text(max_size=10))


def _raw_exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(5)
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse and close early: its answer is still readable
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=methods,
    path=paths,
    version=versions,
    headers=st.lists(st.tuples(header_names, header_values), max_size=6),
    body=bodies,
    content_length=st.sampled_from(["exact", "exact", "none"]),
)
def test_fuzzed_raw_requests_get_a_4xx_never_a_5xx_or_a_crash(
    sandbox: Sandbox,
    method: str,
    path: str,
    version: str,
    headers: List[Any],
    body: bytes,
    content_length: str,
) -> None:
    head_lines = [f"{method} {path} {version}", f"Host: 127.0.0.1:{sandbox.port}"]
    for name, value in headers:
        if name.lower() in ("content-length", "transfer-encoding") and content_length == "exact":
            continue  # a lying length would just make the server wait for the rest
        head_lines.append(f"{name}: {value}")
    if content_length == "exact":
        head_lines.append(f"Content-Length: {len(body)}")
    head_lines.append("Connection: close")
    raw = ("\r\n".join(head_lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body
    with capture_all_logs() as logs:
        answer = _raw_exchange(sandbox.port, raw)
    status_line = answer.split(b"\r\n", 1)[0]
    FINDINGS["fuzz"]["raw_requests"] = FINDINGS["fuzz"].get("raw_requests", 0) + 1
    crashes = [t for t in logs.texts(ours=True) if "sandbox" in t and "failed" in t]
    assert not crashes, crashes[:1]
    if not answer:
        FINDINGS["fuzz"]["closed_without_answer"] = (
            FINDINGS["fuzz"].get("closed_without_answer", 0) + 1
        )
        return
    assert status_line.startswith(b"HTTP/1.1 "), answer[:200]
    status = int(status_line.split()[1])
    key = f"status_{status}"
    FINDINGS["fuzz"][key] = FINDINGS["fuzz"].get(key, 0) + 1
    assert status < 500 or status == 505, answer[:300]  # 505: an unsupported HTTP version


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=6),
    body=bodies,
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
    valid=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_fuzzed_well_framed_token_posts_get_a_4xx_or_a_token(
    sandbox: Sandbox,
    headers: List[Any],
    body: bytes,
    version: str,
    valid: Tuple[bool, bool, bool],
) -> None:
    """Well-framed POSTs to the token URL, so the fuzzing reaches the OAuth checks."""
    head_lines = [f"POST /authentication/acme/token {version}", "Host: 127.0.0.1"]
    good_headers = (
        "X-API-Version: 1",
        f"Authorization: Basic {_basic(sandbox.client_id, SECRET)}",
        "Content-Type: application/x-www-form-urlencoded",
    )
    head_lines += [line for line, keep in zip(good_headers, valid) if keep]
    for name, value in headers:
        if name.lower() not in ("content-length", "transfer-encoding", "host", "connection"):
            head_lines.append(f"{name}: {value}")
    head_lines += [f"Content-Length: {len(body)}", "Connection: close"]
    raw = ("\r\n".join(head_lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body
    with capture_all_logs() as logs:
        answer = _raw_exchange(sandbox.port, raw)
    crashes = [t for t in logs.texts(ours=True) if "sandbox" in t and "failed" in t]
    assert not crashes, crashes[:1]
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    status = int(answer.split(b"\r\n", 1)[0].split()[1])
    key = f"token_post_status_{status}"
    FINDINGS["fuzz"][key] = FINDINGS["fuzz"].get(key, 0) + 1
    assert status < 500, answer[:300]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    status=st.sampled_from([200, 201, 302, 400, 401, 404, 429, 500, 503]),
    body=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["access_token", "expires_in", "token_type"]),
            st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.none()),
        ).map(lambda d: json.dumps(d).encode()),
    ),
    content_type=st.sampled_from(["application/json", "text/html", "application/octet-stream"]),
)
def test_fuzzed_token_responses_over_the_wire_give_a_token_or_a_typed_error(
    sandbox: Sandbox, status: int, body: bytes, content_type: str
) -> None:
    sandbox.clear_faults()
    sandbox.enqueue_token_faults(Fault.raw(body, content_type, status=status))
    provider = TokenProvider(sandbox.credentials(), retry_policy=SMALL_POLICY)
    try:
        token = provider.get_token()
    except NavroAuthError as exc:
        assert SECRET not in str(exc) and SECRET not in repr(exc)
        FINDINGS["fuzz"]["wire_typed_errors"] = FINDINGS["fuzz"].get("wire_typed_errors", 0) + 1
    else:
        assert token.access_token
        FINDINGS["fuzz"]["wire_tokens"] = FINDINGS["fuzz"].get("wire_tokens", 0) + 1
    finally:
        sandbox.clear_faults()
