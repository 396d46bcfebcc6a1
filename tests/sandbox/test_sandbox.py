"""End-to-end tests of the embedded Navro sandbox, over real loopback sockets."""

from __future__ import annotations

import base64
import gc
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from navro_adapters.credentials import Credentials
from navro_adapters.sandbox import EchoServer, Fault, Sandbox, SandboxStats, SeenRequest

CLIENT_ID = "sandbox-client"
SECRET = "sandbox-secret"
FORM = "grant_type=client_credentials&scope=openid"
URLENCODED = "application/x-www-form-urlencoded"
TIMEOUT = 5.0  # seconds; every socket in these tests gives up after this
REPO_ROOT = Path(__file__).resolve().parents[2]

Answer = Tuple[int, Mapping[str, str], bytes]


# -- helpers ---------------------------------------------------------------------------------------


def basic(client_id: str = CLIENT_ID, secret: str = SECRET) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")


def token_headers(**overrides: Optional[str]) -> Dict[str, str]:
    headers: Dict[str, Optional[str]] = {
        "X-API-Version": "1",
        "Authorization": basic(),
        "Content-Type": URLENCODED,
    }
    headers.update(overrides)
    return {name: value for name, value in headers.items() if value is not None}


def request(
    url: str,
    method: str = "GET",
    body: Optional[bytes] = None,
    headers: Optional[Mapping[str, str]] = None,
    timeout: float = TIMEOUT,
) -> Answer:
    """One request on a fresh connection; returns status, lower-cased headers and body."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body, dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def post_token(
    sandbox: Sandbox, body: str = FORM, headers: Optional[Mapping[str, str]] = None
) -> Answer:
    return request(
        sandbox.token_url, "POST", body.encode(), token_headers() if headers is None else headers
    )


def get_token(sandbox: Sandbox) -> str:
    status, _, body = post_token(sandbox)
    assert status == 200, body
    token = json.loads(body)["access_token"]
    assert isinstance(token, str)
    return token


def ping(sandbox: Sandbox, token: Optional[str], method: str = "GET", body: bytes = b"") -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return request(f"{sandbox.base_url}/v1/ping", method, body or None, headers)


def oauth_error(answer: Answer) -> str:
    document = json.loads(answer[2])
    assert isinstance(document, dict)
    return str(document["error"])


def _exchange(
    sandbox: Sandbox, data: bytes, timeout: float, complete: Callable[[bytes], bool]
) -> bytes:
    """Send raw bytes; read until ``complete(received)``, or the server closes or resets."""
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while not complete(received):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
        return received


def _whole_response(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep or b"content-length:" not in head.lower():
        return False
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return len(body) >= length


def raw_exchange(sandbox: Sandbox, data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send raw bytes and read until the server closes or a whole response has arrived."""
    return _exchange(sandbox, data, timeout, _whole_response)


def exchange_until_closed(sandbox: Sandbox, data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send raw bytes and read until the server closes the connection (a timeout fails)."""
    return _exchange(sandbox, data, timeout, lambda received: False)


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:80]
    return int(raw[9:12])


def alive(pid: int) -> bool:
    """Is the process running (a zombie counts as dead: it no longer serves anything)?"""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc").is_dir():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def wait_until(predicate: Any, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


# -- the document's own commands -------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_documented_curl_command_gets_a_token(sandbox: Sandbox) -> None:
    encoded = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    command = [
        "curl", "--silent", "--show-error", "--max-time", "5",
        "--location", "--request", "POST", sandbox.token_url,
        "--header", "X-API-Version: 1",
        "--header", f"Authorization: Basic {encoded}",
        "--header", "Content-Type: application/x-www-form-urlencoded",
        "--data-urlencode", "grant_type=client_credentials",
        "--data-urlencode", "scope=openid",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    document = json.loads(result.stdout)
    assert set(document) == {"access_token", "token_type", "expires_in", "scope"}
    assert isinstance(document["access_token"], str) and len(document["access_token"]) >= 32
    assert document["token_type"] == "Bearer"
    assert document["expires_in"] == 300 and isinstance(document["expires_in"], int)
    assert document["scope"] == "openid"
    assert ping(sandbox, document["access_token"])[0] == 200
    seen = sandbox.requests_seen()[0]
    assert seen.kind == "token" and seen.method == "POST"
    assert seen.headers["x-api-version"] == "1"
    assert seen.body == b"grant_type=client_credentials&scope=openid"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_multipart_form_gets_a_token(sandbox: Sandbox) -> None:
    command = [
        "curl", "--silent", "--show-error", "--max-time", "5", sandbox.token_url,
        "-H", "X-API-Version: 1", "-H", f"Authorization: {basic()}",
        "-F", "grant_type=client_credentials", "-F", "scope=openid",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    assert json.loads(result.stdout)["token_type"] == "Bearer"
    assert sandbox.requests_seen()[0].headers["content-type"].startswith("multipart/form-data")


def multipart(fields: List[Tuple[str, str]], boundary: str = "XyZ-b0undary") -> bytes:
    lines = []
    for name, value in fields:
        lines += [f"--{boundary}", f'Content-Disposition: form-data; name="{name}"', "", value]
    return ("\r\n".join([*lines, f"--{boundary}--", ""])).encode()


def test_hand_built_multipart_with_preamble_and_epilogue(sandbox: Sandbox) -> None:
    body = (
        b"preamble to ignore\r\n"
        + multipart([("grant_type", "client_credentials"), ("scope", "openid")])
        + b"epilogue"
    )
    headers = token_headers(**{"Content-Type": 'multipart/form-data; boundary="XyZ-b0undary"'})
    status, _, data = request(sandbox.token_url, "POST", body, headers)
    assert status == 200, data


@pytest.mark.parametrize(
    "body",
    [
        b"no boundary anywhere",
        b'--XyZ-b0undary\r\nContent-Disposition: form-data; name="scope"\r\n\r\nopenid',
        b"--XyZ-b0undary\r\nX-Nothing: here\r\n\r\nopenid\r\n--XyZ-b0undary--\r\n",
        b"--XyZ-b0undary\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ-b0undary--\r\n",
        b'--XyZ-b0undary\r\nContent-Disposition: form-data; name="s"\r\n\r\n\xff\xfe\r\n'
        b"--XyZ-b0undary--\r\n",
    ],
)
def test_malformed_multipart_is_invalid_request(sandbox: Sandbox, body: bytes) -> None:
    headers = token_headers(**{"Content-Type": "multipart/form-data; boundary=XyZ-b0undary"})
    answer = request(sandbox.token_url, "POST", body, headers)
    assert answer[0] == 400 and oauth_error(answer) == "invalid_request"


def test_multipart_without_boundary_parameter_is_invalid_request(sandbox: Sandbox) -> None:
    body = multipart([("grant_type", "client_credentials"), ("scope", "openid")])
    answer = post_token(
        sandbox, body.decode(), token_headers(**{"Content-Type": "multipart/form-data"})
    )
    assert answer[0] == 400 and oauth_error(answer) == "invalid_request"


# -- token endpoint rules --------------------------------------------------------------------------


def test_token_response_shape_and_headers(sandbox: Sandbox) -> None:
    status, headers, body = post_token(sandbox)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    document = json.loads(body)
    assert document["token_type"] == "Bearer" and document["scope"] == "openid"
    assert len(document["access_token"]) >= 32
    assert get_token(sandbox) != document["access_token"]


def test_fractional_ttl_is_a_float_and_integral_ttl_an_int() -> None:
    with Sandbox(token_ttl=0.75) as sandbox:
        assert json.loads(post_token(sandbox)[2])["expires_in"] == 0.75
        sandbox.set_token_ttl(60.0)
        expires_in = json.loads(post_token(sandbox)[2])["expires_in"]
        assert expires_in == 60 and isinstance(expires_in, int)


@pytest.mark.parametrize("version", [None, "2", "", "one"])
def test_api_version_header_is_required(sandbox: Sandbox, version: Optional[str]) -> None:
    answer = post_token(sandbox, headers=token_headers(**{"X-API-Version": version}))
    assert answer[0] == 400 and oauth_error(answer) == "invalid_request"
    assert answer[1]["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic(secret="wrong"),
        basic(client_id="someone-else"),
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Bearer abc",
        "Basic",
    ],
)
def test_bad_client_authentication_is_401_invalid_client(
    sandbox: Sandbox, authorization: Optional[str]
) -> None:
    answer = post_token(sandbox, headers=token_headers(Authorization=authorization))
    assert answer[0] == 401 and oauth_error(answer) == "invalid_client"
    assert answer[1]["www-authenticate"] == 'Basic realm="navro"'


def test_basic_scheme_is_case_insensitive_and_rfc6749_encoding_accepted() -> None:
    with Sandbox(client_secret="p@ss:w rd+/=") as sandbox:
        raw = "basic " + base64.b64encode(f"{CLIENT_ID}:p@ss:w rd+/=".encode()).decode()
        assert post_token(sandbox, headers=token_headers(Authorization=raw))[0] == 200
        encoded = f"{quote(CLIENT_ID, safe='')}:{quote('p@ss:w rd+/=', safe='')}"
        rfc = "Basic " + base64.b64encode(encoded.encode()).decode()
        assert post_token(sandbox, headers=token_headers(Authorization=rfc))[0] == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("scope=openid", "invalid_request"),
        ("grant_type=password&scope=openid", "unsupported_grant_type"),
        ("grant_type=&scope=openid", "unsupported_grant_type"),
        ("grant_type=client_credentials", "invalid_scope"),
        ("grant_type=client_credentials&scope=profile", "invalid_scope"),
        ("grant_type=client_credentials&scope=openid%20profile", "invalid_scope"),
        ("grant_type=client_credentials&scope=openid&scope=openid", "invalid_request"),
        ("this is not a form", "invalid_request"),
        ("grant_type=client_credentials&scope=%FF", "invalid_request"),
    ],
)
def test_form_parameter_rules(sandbox: Sandbox, body: str, error: str) -> None:
    answer = post_token(sandbox, body)
    assert answer[0] == 400 and oauth_error(answer) == error


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain"])
def test_body_must_be_a_form(sandbox: Sandbox, content_type: Optional[str]) -> None:
    answer = post_token(sandbox, headers=token_headers(**{"Content-Type": content_type}))
    assert answer[0] == 400 and oauth_error(answer) == "invalid_request"


def test_urlencoded_with_charset_parameter_is_accepted(sandbox: Sandbox) -> None:
    headers = token_headers(**{"Content-Type": f"{URLENCODED}; charset=UTF-8"})
    assert post_token(sandbox, headers=headers)[0] == 200


def test_unknown_company_is_404(sandbox: Sandbox) -> None:
    url = sandbox.token_url.replace("/acme/", "/globex/")
    answer = request(url, "POST", FORM.encode(), token_headers())
    assert answer[0] == 404 and oauth_error(answer) == "unknown_company"
    bad_escape = sandbox.token_url.replace("/acme/", "/%FF/")
    assert request(bad_escape, "POST", FORM.encode(), token_headers())[0] == 404


def test_company_is_percent_encoded_in_token_url() -> None:
    with Sandbox(company="Acme & Co/EU") as sandbox:
        assert sandbox.token_url.endswith("/authentication/Acme%20%26%20Co%2FEU/token")
        credentials = sandbox.credentials()
        assert isinstance(credentials, Credentials)
        assert credentials.token_url == sandbox.token_url
        assert credentials.base_url == sandbox.base_url
        assert get_token(sandbox)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_token_endpoint_only_accepts_post(sandbox: Sandbox, method: str) -> None:
    status, headers, _ = request(sandbox.token_url, method, headers=token_headers())
    assert status == 405 and headers["allow"] == "POST"
    assert sandbox.stats().token_requests == 0


# -- malformed and hostile requests: 4xx, never 500, never a dead server ---------------------------


TOKEN_PATH = b"POST /authentication/acme/token HTTP/1.1\r\nHost: sandbox\r\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v1/ping HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112 3.2)
        (b"GET /v1/ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /v1/ping HTTP/2.0\r\nHost: sandbox\r\n\r\n", 505),
        (b"GET /v1/ping HTTX/1.1\r\nHost: sandbox\r\n\r\n", 400),
        (b"G(T /v1/ping HTTP/1.1\r\nHost: sandbox\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: sandbox\r\n\r\n", 400),
        (b"CONNECT sandbox:443 HTTP/1.1\r\nHost: sandbox\r\n\r\n", 400),
        (b"GET /v1/ping HTTP/1.1\r\nHost: sandbox\r\nNo-Colon\r\n\r\n", 400),
        (b"GET /v1/ping HTTP/1.1\r\nHost: sandbox\r\nBad Name: x\r\n\r\n", 400),
        (TOKEN_PATH + b"Content-Length: abc\r\n\r\n", 400),
        (TOKEN_PATH + b"Content-Length: -1\r\n\r\n", 400),
        (TOKEN_PATH + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        (TOKEN_PATH + b"Content-Length: 999999999\r\n\r\n", 413),
        (TOKEN_PATH + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", 400),
        (TOKEN_PATH + b"Transfer-Encoding: gzip\r\n\r\n", 400),
        (TOKEN_PATH + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (
            b"POST /authentication/acme/token HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n",
            400,
        ),
        (TOKEN_PATH + b"Expect: magic\r\n\r\n", 417),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: sandbox\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: sandbox\r\nX-Pad: " + b"p" * 70_000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_http_is_rejected_with_4xx(
    shared_sandbox: Sandbox, raw: bytes, expected: int
) -> None:
    answer = exchange_until_closed(shared_sandbox, raw)  # the server closes after refusing
    assert status_of(answer) == expected
    assert b"\r\nHTTP/1." not in answer  # one answer, then the close
    assert b"connection: close" in answer.lower()
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "invalid_request"
    assert get_token(shared_sandbox)  # the server is still serving


def test_oversized_body_is_413_even_when_the_client_sends_it_all(sandbox: Sandbox) -> None:
    huge = b"grant_type=client_credentials&scope=openid&pad=" + b"x" * 100_000
    status, _, _ = request(sandbox.token_url, "POST", huge, token_headers())
    assert status == 413
    assert get_token(sandbox)


def test_chunked_body_is_accepted(sandbox: Sandbox) -> None:
    head = (
        f"POST {urlsplit(sandbox.token_url).path} HTTP/1.1\r\nHost: x\r\nX-API-Version: 1\r\n"
        f"Authorization: {basic()}\r\nContent-Type: {URLENCODED}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    body = b"1e;ext=1\r\ngrant_type=client_credentials&\r\nc\r\nscope=openid\r\n0\r\nX-T: 1\r\n\r\n"
    answer = raw_exchange(sandbox, head + body)
    assert status_of(answer) == 200 and b'"access_token"' in answer


def test_expect_100_continue_is_honoured(sandbox: Sandbox) -> None:
    head = (
        f"POST {urlsplit(sandbox.token_url).path} HTTP/1.1\r\nHost: x\r\nX-API-Version: 1\r\n"
        f"Authorization: {basic()}\r\nContent-Type: {URLENCODED}\r\n"
        f"Content-Length: {len(FORM)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) as sock:
        sock.sendall(head)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(FORM.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert status_of(answer) == 200


def test_non_utf8_body_is_invalid_request(sandbox: Sandbox) -> None:
    answer = request(
        sandbox.token_url, "POST", b"grant_type=\xff\xfe&scope=openid", token_headers()
    )
    assert answer[0] == 400 and oauth_error(answer) == "invalid_request"


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=300),
    content_type=st.one_of(
        st.none(),
        st.sampled_from([URLENCODED, "multipart/form-data; boundary=b", "multipart/form-data"]),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
    ),
    api_version=st.sampled_from(["1", "2", ""]),
    authorization=st.one_of(
        st.just(basic()),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    ),
)
def test_fuzzed_token_requests_never_get_5xx(
    shared_sandbox: Sandbox, body: bytes, content_type: Optional[str], api_version: str,
    authorization: str,
) -> None:  # fmt: skip
    headers = {"X-API-Version": api_version, "Authorization": authorization}
    if content_type is not None:
        headers["Content-Type"] = content_type
    status, _, _ = request(shared_sandbox.token_url, "POST", body, headers)
    assert 200 <= status < 500


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(min_size=1, max_size=400))
def test_fuzzed_raw_bytes_never_get_5xx_or_kill_the_server(raw: bytes) -> None:
    with Sandbox() as sandbox:
        # Generous: an answer or a close comes at once; on two busy cores it once took > 0.5 s.
        answer = raw_exchange(sandbox, raw + b"\r\n\r\n", timeout=5.0)
        if answer:
            assert 100 <= status_of(answer) < 500
        assert get_token(sandbox)


# -- the protected API -----------------------------------------------------------------------------


def test_ping_with_a_valid_token(sandbox: Sandbox) -> None:
    token = get_token(sandbox)
    status, _, body = request(
        f"{sandbox.base_url}/v1/ping",
        headers={"Authorization": f"Bearer {token}", "X-API-Version": "1"},
    )
    assert status == 200
    assert json.loads(body) == {
        "ok": True, "company": "acme", "client_id": CLIENT_ID, "api_version": "1", "method": "GET",
        "body_bytes": 0,
    }  # fmt: skip
    assert json.loads(ping(sandbox, token)[2])["api_version"] is None


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_ping_reads_request_bodies(sandbox: Sandbox, method: str) -> None:
    status, _, body = ping(sandbox, get_token(sandbox), method, b"x" * 5000)
    assert status == 200 and json.loads(body)["body_bytes"] == 5000


def test_ping_other_methods_are_405(sandbox: Sandbox) -> None:
    assert ping(sandbox, get_token(sandbox), "DELETE")[0] == 405


@pytest.mark.parametrize("token", [None, "", "not-a-token", "x" * 43])
def test_ping_without_a_valid_token_is_401(sandbox: Sandbox, token: Optional[str]) -> None:
    status, headers, body = ping(sandbox, token)
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert json.loads(body)["error"] == "invalid_token"


def test_basic_credentials_are_no_api_token(sandbox: Sandbox) -> None:
    answer = request(f"{sandbox.base_url}/v1/ping", headers={"Authorization": basic()})
    assert answer[0] == 401


def test_unknown_paths_are_404(sandbox: Sandbox) -> None:
    assert request(f"{sandbox.base_url}/v1/nothing")[0] == 404
    assert request(f"{sandbox.base_url}/")[0] == 404
    assert [seen.kind for seen in sandbox.requests_seen()] == ["api", "other"]


def test_revoke_all_tokens(sandbox: Sandbox) -> None:
    old = get_token(sandbox)
    sandbox.revoke_all_tokens()
    assert ping(sandbox, old)[0] == 401
    assert ping(sandbox, get_token(sandbox))[0] == 200


def test_reset_secret(sandbox: Sandbox) -> None:
    issued_before = get_token(sandbox)
    old_credentials = sandbox.credentials()
    sandbox.reset_secret("brand-new-secret")
    answer = post_token(sandbox)
    assert answer[0] == 401 and oauth_error(answer) == "invalid_client"
    assert sandbox.client_secret == "brand-new-secret"
    assert sandbox.credentials().client_secret == "brand-new-secret"
    assert old_credentials.client_secret == SECRET
    new_headers = token_headers(Authorization=basic(secret="brand-new-secret"))
    assert post_token(sandbox, headers=new_headers)[0] == 200
    assert ping(sandbox, issued_before)[0] == 200  # tokens live on; revoke them explicitly


def test_tokens_expire_server_side() -> None:
    with Sandbox(token_ttl=0.3) as sandbox:
        token = get_token(sandbox)
        assert ping(sandbox, token)[0] == 200
        time.sleep(0.4)
        assert ping(sandbox, token)[0] == 401
        sandbox.set_token_ttl(30)
        assert ping(sandbox, get_token(sandbox))[0] == 200


def test_token_latency_delays_token_requests_only() -> None:
    latency = 0.5  # generous, so a loaded CI host cannot blur "delayed" and "not delayed"
    with Sandbox(token_latency=latency) as sandbox:
        started = time.monotonic()
        token = get_token(sandbox)
        assert time.monotonic() - started >= latency
        started = time.monotonic()
        assert ping(sandbox, token)[0] == 200
        assert time.monotonic() - started < latency
        sandbox.set_token_latency(0)
        started = time.monotonic()
        get_token(sandbox)
        assert time.monotonic() - started < latency


def test_api_always_401(sandbox: Sandbox) -> None:
    token = get_token(sandbox)
    sandbox.set_api_always_401(True)
    assert ping(sandbox, token)[0] == 401
    sandbox.set_api_always_401(False)
    assert ping(sandbox, token)[0] == 200
    assert sandbox.stats().api_401s == 1


def test_redirect_to_another_origin(sandbox: Sandbox, echo: EchoServer) -> None:
    target = f"{echo.base_url}/landing?x=1"
    status, headers, _ = request(f"{sandbox.base_url}/v1/redirect?to={quote(target, safe='')}")
    assert status == 302 and headers["location"] == target
    url = f"{sandbox.base_url}/v1/redirect?to={quote(target, safe='')}&code=307"
    assert request(url, "POST", b"{}")[0] == 307
    with urllib.request.urlopen(
        f"{sandbox.base_url}/v1/redirect?to={target}", timeout=TIMEOUT
    ) as r:
        assert json.loads(r.read())["ok"] is True
    seen = echo.requests_seen()
    assert len(seen) == 1 and seen[0].path == "/landing" and seen[0].query == "x=1"
    assert seen[0].headers["host"] == urlsplit(echo.base_url).netloc


@pytest.mark.parametrize(
    "query", ["", "to=", "to=ftp://x/", "to=relative", "to=http://x/%0d%0aX:1", "to=/a&code=200"]
)
def test_bad_redirects_are_400(sandbox: Sandbox, query: str) -> None:
    assert request(f"{sandbox.base_url}/v1/redirect?{query}")[0] == 400


def test_echo_server_records_every_request(echo: EchoServer) -> None:
    status, _, body = request(
        f"{echo.base_url}/any/path?q=1", "POST", b"payload", {"Authorization": "Bearer leak?"}
    )
    assert status == 200 and json.loads(body)["ok"] is True
    (seen,) = echo.requests_seen()
    assert (seen.method, seen.path, seen.query, seen.body) == (
        "POST",
        "/any/path",
        "q=1",
        b"payload",
    )
    assert seen.headers["authorization"] == "Bearer leak?"
    echo.clear()
    assert echo.requests_seen() == []


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "error"),
    [
        (Fault.status(500), 500, "server_error"),
        (Fault.status(502), 502, "server_error"),
        (Fault.status(503), 503, "temporarily_unavailable"),
        (Fault.status(400, body={"error": "invalid_scope"}), 400, "invalid_scope"),
        (Fault.status(401, body={"error": "invalid_client"}), 401, "invalid_client"),
    ],
)
def test_status_faults(sandbox: Sandbox, fault: Fault, status: int, error: str) -> None:
    sandbox.enqueue_token_faults(fault)
    answer = post_token(sandbox)
    assert answer[0] == status and oauth_error(answer) == error
    if status == 401:
        assert answer[1]["www-authenticate"] == 'Basic realm="navro"'
    assert post_token(sandbox)[0] == 200  # consumed: back to normal
    assert sandbox.stats() == SandboxStats(token_requests=2, tokens_issued=1, token_errors=1)


def test_retry_after_in_seconds_and_as_http_date(sandbox: Sandbox) -> None:
    date = formatdate(time.time() + 5, usegmt=True)
    sandbox.enqueue_token_faults(
        Fault.status(429, retry_after="2"),
        Fault.status(503, retry_after=date, headers={"X-Extra": "yes"}),
    )
    first = post_token(sandbox)
    assert first[0] == 429 and first[1]["retry-after"] == "2"
    second = post_token(sandbox)
    assert second[0] == 503 and second[1]["retry-after"] == date
    assert second[1]["x-extra"] == "yes"


@pytest.mark.parametrize(
    "document",
    [
        {"token_type": "Bearer", "expires_in": 300},
        {"access_token": "t" * 40, "token_type": "Bearer", "expires_in": "abc"},
        {"access_token": "t" * 40, "token_type": "Bearer", "expires_in": -5},
        {"access_token": "t" * 40, "token_type": "Bearer", "expires_in": 0},
        {"access_token": "t" * 40, "token_type": "Bearer", "expires_in": 1e12},
        ["not", "an", "object"],
    ],
)
def test_json_faults(sandbox: Sandbox, document: object) -> None:
    sandbox.enqueue_token_faults(Fault.json(document))
    status, headers, body = post_token(sandbox)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == document


def test_raw_malformed_json_and_html_faults(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(
        Fault.raw(b"\x00\x01binary", "application/octet-stream", status=202),
        Fault.malformed_json(),
        Fault.html(),
    )
    assert post_token(sandbox)[::2] == (202, b"\x00\x01binary")
    status, headers, body = post_token(sandbox)
    assert status == 200 and headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(body)
    status, headers, body = post_token(sandbox)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert body.lstrip().startswith(b"<!DOCTYPE html>")


def test_faults_are_consumed_in_order_then_normal(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(Fault.status(500), Fault.status(502))
    sandbox.enqueue_token_faults(Fault.status(503))
    assert [post_token(sandbox)[0] for _ in range(4)] == [500, 502, 503, 200]
    sandbox.enqueue_token_faults(Fault.status(500), Fault.status(500))
    sandbox.clear_faults()
    assert post_token(sandbox)[0] == 200


def test_drop_fault_closes_without_a_response(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(Fault.drop())
    with pytest.raises(http.client.RemoteDisconnected):
        post_token(sandbox)
    assert post_token(sandbox)[0] == 200


def test_reset_fault_sends_part_of_a_response_then_rst(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(Fault.reset())
    head = (
        f"POST {urlsplit(sandbox.token_url).path} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(FORM)}\r\n\r\n{FORM}"
    ).encode()
    received = b""
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) as sock:
        sock.sendall(head)
        with pytest.raises(ConnectionResetError):
            while True:
                chunk = sock.recv(65536)
                assert chunk, "the connection ended with FIN, not RST"
                received += chunk
    assert b"HTTP/1.1 200 OK".startswith(received[:15])  # at most a truncated response
    sandbox.enqueue_token_faults(Fault.reset())
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        post_token(sandbox)
    assert post_token(sandbox)[0] == 200


def test_hang_fault_never_answers_and_does_not_block_close() -> None:
    sandbox = Sandbox().start()
    sandbox.enqueue_token_faults(Fault.hang(), Fault.hang())
    with pytest.raises(socket.timeout):
        request(sandbox.token_url, "POST", FORM.encode(), token_headers(), timeout=0.3)
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=TIMEOUT)
    connection.request("POST", urlsplit(sandbox.token_url).path, FORM, token_headers())
    outcome: List[BaseException] = []

    def wait_for_answer() -> None:
        try:
            connection.getresponse()
        except BaseException as exc:  # recorded for the assertion below
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_answer)
    waiter.start()
    time.sleep(0.1)
    assert sandbox.stats().token_errors == 2
    started = time.monotonic()
    sandbox.close()
    assert time.monotonic() - started < 2.0
    waiter.join(TIMEOUT)
    connection.close()
    assert not waiter.is_alive()
    assert outcome and isinstance(outcome[0], (ConnectionError, http.client.HTTPException))


def test_delay_fault_answers_normally_after_the_delay(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(Fault.delay(0.2))
    started = time.monotonic()
    assert post_token(sandbox)[0] == 200
    assert time.monotonic() - started >= 0.2
    assert sandbox.stats().tokens_issued == 1


def test_api_faults(sandbox: Sandbox) -> None:
    token = get_token(sandbox)
    sandbox.enqueue_api_faults(Fault.status(401), Fault.status(503), Fault.drop())
    first = ping(sandbox, token)
    assert first[0] == 401 and first[1]["www-authenticate"] == 'Bearer error="invalid_token"'
    assert ping(sandbox, token)[0] == 503
    with pytest.raises(http.client.RemoteDisconnected):
        ping(sandbox, token)
    assert ping(sandbox, token)[0] == 200
    stats = sandbox.stats()
    assert (stats.api_requests, stats.api_401s) == (4, 1)


def test_fault_validation_and_round_trip() -> None:
    with pytest.raises(ValueError):
        Fault.status(99)
    with pytest.raises(ValueError):
        Fault.status(500, headers={"X-Bad": "a\r\nInjected: 1"})
    with pytest.raises(ValueError):
        Fault.delay(-1)
    with pytest.raises(TypeError):
        Fault.raw("text", "text/plain")  # type: ignore[arg-type]
    for fault in (Fault.status(429, retry_after="3"), Fault.raw(b"\xff", "x/y"), Fault.hang()):
        assert Fault.from_dict(fault.to_dict()) == fault
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "explode"})


def test_enqueueing_a_non_fault_is_a_type_error(sandbox: Sandbox) -> None:
    with pytest.raises(TypeError):
        sandbox.enqueue_token_faults("500")  # type: ignore[arg-type]


# -- stats, request log, control -------------------------------------------------------------------


def test_stats_count_and_reset(sandbox: Sandbox) -> None:
    token = get_token(sandbox)
    post_token(sandbox, headers=token_headers(Authorization=basic(secret="nope")))
    ping(sandbox, token)
    ping(sandbox, "bad")
    request(f"{sandbox.base_url}/elsewhere")
    assert sandbox.stats() == SandboxStats(
        token_requests=2, tokens_issued=1, token_errors=1, api_requests=2, api_401s=1
    )
    sandbox.reset_stats()
    assert sandbox.stats() == SandboxStats()


def test_requests_seen_log(sandbox: Sandbox) -> None:
    get_token(sandbox)
    ping(sandbox, "t", "POST", b"body")
    seen = sandbox.requests_seen()
    assert [(s.method, s.kind) for s in seen] == [("POST", "token"), ("POST", "api")]
    assert all(isinstance(s, SeenRequest) for s in seen)
    assert seen[0].path == "/authentication/acme/token"
    assert seen[0].headers["authorization"] == basic()
    assert all(name == name.lower() for name in seen[0].headers)
    assert seen[1].body == b"body"
    sandbox.clear_requests_seen()
    assert sandbox.requests_seen() == []


def test_control_endpoint_is_hidden_without_its_key(sandbox: Sandbox) -> None:
    body = json.dumps({"op": "reset_secret", "args": {"new_secret": "x"}}).encode()
    url = f"{sandbox.base_url}/_sandbox/control"
    assert request(url, "POST", body, {"X-Sandbox-Control-Key": "guess"})[0] == 404
    assert request(url, "POST", body)[0] == 404
    assert get_token(sandbox)
    assert sandbox.requests_seen()[0].kind == "token"  # control requests are not logged
    assert sandbox.stats().token_requests == 1


def test_invalid_control_arguments_raise_value_error(sandbox: Sandbox) -> None:
    calls: List[Callable[[], None]] = [
        lambda: sandbox.set_token_ttl(0),
        lambda: sandbox.set_token_ttl(float("nan")),
        lambda: sandbox.set_token_latency(-1),
        lambda: sandbox.reset_secret(""),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


# -- HTTP/1.1 behaviour and load -------------------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(sandbox: Sandbox) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=TIMEOUT)
    try:
        path = urlsplit(sandbox.token_url).path
        for _ in range(20):
            connection.request("POST", path, FORM, token_headers())
            response = connection.getresponse()
            assert response.status == 200 and response.version == 11
            token = json.loads(response.read())["access_token"]
            connection.request("GET", "/v1/ping", headers={"Authorization": f"Bearer {token}"})
            assert connection.getresponse().read()
        first_socket = connection.sock
        connection.request("GET", "/v1/nothing")
        connection.getresponse().read()
        assert connection.sock is first_socket
    finally:
        connection.close()


def test_http_1_0_and_connection_close(sandbox: Sandbox) -> None:
    answer = raw_exchange(sandbox, b"GET /v1/ping HTTP/1.0\r\n\r\n")
    assert status_of(answer) == 401 and b"connection: close" in answer.lower()
    # h11 keeps no HTTP/1.0 connection alive, even when asked to: it answers, then closes.
    answer = exchange_until_closed(
        sandbox, b"GET /v1/ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    assert status_of(answer) == 401 and b"connection: close" in answer.lower()
    answer = exchange_until_closed(
        sandbox, b"HEAD /v1/ping HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n"
    )
    assert status_of(answer) == 405 and answer.endswith(b"\r\n\r\n")  # a head, no body
    assert b"content-length: " in answer.lower()


def test_pipelined_requests_are_answered_in_order(sandbox: Sandbox) -> None:
    data = (
        b"GET /v1/a HTTP/1.1\r\nHost: sandbox\r\n\r\n"
        b"GET /v1/b HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 404") == 2
    assert [s.path for s in sandbox.requests_seen()] == ["/v1/a", "/v1/b"]


def test_many_concurrent_keep_alive_clients(sandbox: Sandbox) -> None:
    token = get_token(sandbox)

    def client(_: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=TIMEOUT)
        try:
            for _ in range(10):
                connection.request("GET", "/v1/ping", headers={"Authorization": f"Bearer {token}"})
                response = connection.getresponse()
                response.read()
                assert response.status == 200
            return 10
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        assert sum(pool.map(client, range(50))) == 500
    assert sandbox.stats().api_requests == 500


def read_responses(sock: socket.socket, count: int) -> List[Tuple[int, Dict[str, str], bytes]]:
    """Read ``count`` whole responses (each framed by Content-Length) from ``sock``."""
    buffer = b""
    answers: List[Tuple[int, Dict[str, str], bytes]] = []
    while len(answers) < count:
        head, sep, rest = buffer.partition(b"\r\n\r\n")
        if sep:
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:])
            }
            length = int(headers.get("content-length", "0"))
            if len(rest) >= length:
                answers.append((int(lines[0].split()[1]), headers, rest[:length]))
                buffer = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {len(answers)} of {count} responses"
        buffer += chunk
    assert buffer == b""
    return answers


def token_request_bytes(body: bytes, chunked: bool = False, extra: str = "") -> bytes:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = (
        "POST /authentication/acme/token HTTP/1.1\r\nHost: sandbox\r\nX-API-Version: 1\r\n"
        f"Authorization: {basic()}\r\nContent-Type: {URLENCODED}\r\n{framing}\r\n{extra}\r\n"
    ).encode()
    return head + (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body)


def test_pipelined_requests_with_bodies_keep_the_connection(sandbox: Sandbox) -> None:
    pipeline = (
        token_request_bytes(FORM.encode())
        + token_request_bytes(FORM.encode(), chunked=True)
        + b"GET /v1/nothing HTTP/1.1\r\nHost: sandbox\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) as sock:
        sock.sendall(pipeline)  # all three in one write: h11 splits them
        answers = read_responses(sock, 3)
        assert [status for status, _, _ in answers] == [200, 200, 404]
        assert all("connection" not in headers for _, headers, _ in answers)
        token = json.loads(answers[1][2])["access_token"]
        sock.sendall(
            f"GET /v1/ping HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        assert read_responses(sock, 1)[0][0] == 200  # the same connection, still open
    assert [s.body for s in sandbox.requests_seen()][:2] == [FORM.encode()] * 2


def test_request_trickling_in_byte_by_byte_is_served(sandbox: Sandbox) -> None:
    data = token_request_bytes(FORM.encode(), chunked=True)
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(data)):
            sock.send(data[index : index + 1])
        assert read_responses(sock, 1)[0][0] == 200


def test_chunked_body_over_the_limit_is_413(sandbox: Sandbox) -> None:
    chunk = b"x" * 16_000
    head = token_request_bytes(b"", chunked=True).partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    answer = exchange_until_closed(sandbox, head + body)
    assert status_of(answer) == 413 and b"connection: close" in answer.lower()
    assert get_token(sandbox)


def test_expect_100_continue_is_not_sent_for_a_refused_body(sandbox: Sandbox) -> None:
    head = token_request_bytes(b"").replace(
        b"Content-Length: 0", b"Content-Length: 100000\r\nExpect: 100-continue"
    )
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert status_of(answer) == 413 and b"100 Continue" not in answer


def test_expect_100_continue_on_a_keep_alive_connection(sandbox: Sandbox) -> None:
    request_bytes = token_request_bytes(FORM.encode(), extra="Expect: 100-continue\r\n")
    head, _, body = request_bytes.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) as sock:
        for _ in range(2):
            sock.sendall(head + b"\r\n\r\n")
            assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(body)
            assert read_responses(sock, 1)[0][0] == 200


def test_head_just_under_the_limit_is_served(sandbox: Sandbox) -> None:
    pad = "p" * 60_000
    status, _, _ = request(f"{sandbox.base_url}/v1/ping", headers={"X-Pad": pad})
    assert status == 401
    assert sandbox.requests_seen()[0].headers["x-pad"] == pad


def test_obsolete_line_folding_is_unfolded(echo: EchoServer) -> None:
    # RFC 9112 5.2 lets a server replace obs-fold with a space; h11 does.
    port = int(echo.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /f HTTP/1.1\r\nHost: echo\r\nX-Folded: first\r\n\tsecond\r\n\r\n")
        assert read_responses(sock, 1)[0][0] == 200
    assert echo.requests_seen()[0].headers["x-folded"] == "first second"


def test_repeated_headers_are_comma_joined(echo: EchoServer) -> None:
    port = int(echo.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /r HTTP/1.1\r\nHost: echo\r\nX-Many: a\r\nx-many: b\r\n\r\n")
        assert read_responses(sock, 1)[0][0] == 200
    assert echo.requests_seen()[0].headers["x-many"] == "a, b"


def test_client_closing_mid_request_leaves_the_server_serving(sandbox: Sandbox) -> None:
    for partial in (b"POST /v1/ping HTT", token_request_bytes(FORM.encode())[:-5]):
        with socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) as sock:
            sock.sendall(partial)
    assert get_token(sandbox)


def test_a_fault_h11_cannot_send_is_answered_500(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(Fault.status(101))  # a 1xx cannot carry a body
    assert post_token(sandbox)[0] == 500
    assert post_token(sandbox)[0] == 200


def test_hundreds_of_idle_keep_alive_connections(sandbox: Sandbox) -> None:
    token = get_token(sandbox)
    ping_bytes = f"GET /v1/ping HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer {token}\r\n\r\n"
    sockets = [
        socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) for _ in range(300)
    ]
    try:
        for sock in sockets:
            sock.sendall(ping_bytes.encode())
        assert all(read_responses(sock, 1)[0][0] == 200 for sock in sockets)
        time.sleep(0.2)  # all idle now; each must still be served
        for sock in sockets[::10]:
            sock.sendall(ping_bytes.encode())
            assert read_responses(sock, 1)[0][0] == 200
    finally:
        for sock in sockets:
            sock.close()
    assert sandbox.stats().api_requests == 330


# -- lifecycle -------------------------------------------------------------------------------------


def test_close_is_idempotent_and_frees_port_threads_and_sockets() -> None:
    gc.collect()
    threads_before = threading.active_count()
    fds_before = open_fds() if Path("/proc/self/fd").is_dir() else 0
    sandbox = Sandbox().start()
    port = sandbox.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)  # left open on purpose
    get_token(sandbox)
    sandbox.close()
    sandbox.close()
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    assert wait_until(lambda: threading.active_count() == threads_before)
    if fds_before:
        gc.collect()
        assert open_fds() == fds_before
    with pytest.raises(RuntimeError):
        sandbox.start()
    with pytest.raises(RuntimeError):
        sandbox.stats()


def test_closing_amid_busy_connections_leaks_nothing() -> None:
    gc.collect()
    threads_before = threading.active_count()
    fds_before = open_fds() if Path("/proc/self/fd").is_dir() else 0
    for _ in range(15):
        sandbox = Sandbox().start()
        sandbox.enqueue_token_faults(Fault.hang(), Fault.delay(5))
        clients = [socket.create_connection(("127.0.0.1", sandbox.port)) for _ in range(8)]
        for index, client in enumerate(clients):
            path = "/authentication/acme/token" if index < 2 else "/v1/ping"
            request = f"POST {path} HTTP/1.1\r\nHost: sandbox\r\nContent-Length: 0\r\n\r\n"
            client.sendall(request.encode())
        sandbox.close()  # some connections are mid-request, some not even accepted yet
        for client in clients:
            client.close()
    gc.collect()
    assert wait_until(lambda: threading.active_count() == threads_before)
    if fds_before:
        assert open_fds() == fds_before


def test_not_started_sandbox_has_no_url() -> None:
    sandbox = Sandbox()
    with pytest.raises(RuntimeError):
        _ = sandbox.base_url
    sandbox.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_id": ""},
        {"client_id": "a:b"},
        {"client_secret": ""},
        {"company": " "},
        {"token_ttl": 0},
        {"token_ttl": -1},
        {"token_latency": -0.1},
    ],
)
def test_invalid_configuration_is_rejected(kwargs: Dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Sandbox(**kwargs)


def test_fixed_port_and_port_in_use() -> None:
    with Sandbox() as first:
        with pytest.raises(OSError):
            Sandbox(port=first.port).start()
        with Sandbox(port=0) as second:
            assert second.port != first.port


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
@pytest.mark.parametrize("in_process", [True, False])
def test_ipv6_loopback(in_process: bool) -> None:
    with Sandbox(host="::1", in_process=in_process) as sandbox:
        assert sandbox.base_url.startswith("http://[::1]:")
        assert sandbox.credentials().token_url == sandbox.token_url
        assert get_token(sandbox)
        assert sandbox.stats().tokens_issued == 1


# -- process mode ----------------------------------------------------------------------------------


def test_process_mode_behaves_like_in_process() -> None:
    with Sandbox(in_process=False, token_ttl=120) as sandbox:
        pid = sandbox.pid
        assert pid is not None and pid != os.getpid() and alive(pid)
        token = get_token(sandbox)
        assert json.loads(post_token(sandbox)[2])["expires_in"] == 120
        assert ping(sandbox, token)[0] == 200
        sandbox.revoke_all_tokens()
        assert ping(sandbox, token)[0] == 401
        sandbox.enqueue_token_faults(Fault.status(429, retry_after="1"), Fault.malformed_json())
        assert post_token(sandbox)[1]["retry-after"] == "1"
        assert post_token(sandbox)[2].startswith(b'{"access_token": "trunc')
        sandbox.reset_secret("rotated")
        assert post_token(sandbox)[0] == 401
        assert sandbox.credentials().client_secret == "rotated"
        assert sandbox.stats() == SandboxStats(
            token_requests=5, tokens_issued=2, token_errors=3, api_requests=2, api_401s=1
        )
        seen = sandbox.requests_seen()
        assert len(seen) == 7 and seen[0].headers["authorization"] == basic()
        with pytest.raises(ValueError, match="token TTL"):
            sandbox.set_token_ttl(-1)
        sandbox.enqueue_token_faults(Fault.hang())
        with pytest.raises(socket.timeout):
            request(sandbox.token_url, "POST", FORM.encode(), token_headers(), timeout=0.3)
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    assert not alive(pid)


def test_process_mode_child_dies_with_its_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from navro_adapters.sandbox import Sandbox\n"
        "sandbox = Sandbox(in_process=False).start()\n"
        "print(sandbox.pid, sandbox.port, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid_text, port_text = parent.stdout.readline().split()
        child = int(pid_text)
        assert alive(child)
        socket.create_connection(("127.0.0.1", int(port_text)), timeout=TIMEOUT).close()
    finally:
        parent.kill()  # no clean-up code runs in the parent
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    assert wait_until(lambda: not alive(child)), "the sandbox child outlived its parent"
