"""``navro-adapters doctor`` against the real sandbox (plain and TLS), a real tinyproxy and a
port with nothing listening: the CLI in a subprocess, and the checks called in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Dict, Iterator, List, Optional

import pytest

from navro_adapters.doctor import (
    STEPS,
    DoctorOptions,
    Outcome,
    StepResult,
    TcpResult,
    TlsResult,
    TokenResult,
    check_tcp,
    run_doctor,
)
from navro_adapters.sandbox import Sandbox
from tests.production.conftest import CA_VARIABLES, PROXY_VARIABLES, Tinyproxy, tinyproxy

__all__ = ["tinyproxy"]  # the fixture, imported to be used here

SECRET = "s3cr3t-value-never-logged"  # in tests/conftest.py's SECRETS: the log guard knows it
WRONG_SECRET = "a-brand-new-secret"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


@pytest.fixture
def tls_sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET, tls=True) as sb:
        yield sb


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine sets CA and maybe proxy variables: in-process checks start without them."""
    for name in PROXY_VARIABLES + CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def credential_env(sb: Sandbox, secret: str = SECRET) -> Dict[str, str]:
    return {
        "NAVRO_CLIENT_ID": "sandbox-client",
        "NAVRO_CLIENT_SECRET": secret,
        "NAVRO_COMPANY": "acme",
        "NAVRO_BASE_URL": sb.base_url,
    }


def doctor(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, with no NAVRO_*, proxy or CA variable but those in ``env``."""
    dropped = set(PROXY_VARIABLES + CA_VARIABLES)
    base = {k: v for k, v in os.environ.items() if not k.startswith("NAVRO_") and k not in dropped}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "navro_adapters", "doctor", *args],
        capture_output=True,
        text=True,
        env=base,
        timeout=60,
    )


def lines_by_step(stdout: str) -> Dict[str, str]:
    """``{step: its line}``; asserts every step has exactly one line, in order."""
    lines = stdout.strip().splitlines()
    steps = [line.split("]", 1)[1].split()[0] for line in lines[:-1]]
    assert steps == list(STEPS), stdout
    return dict(zip(steps, lines))


def mark(line: str) -> str:
    return line.split("]")[0].strip("[ ")


def assert_nothing_secret(result: subprocess.CompletedProcess, *secrets: str) -> None:
    for value in (SECRET, *secrets):
        assert value not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def issued_tokens(sb: Sandbox) -> List[str]:
    """The bearer tokens the sandbox's API saw (what the doctor got and sent)."""
    return [
        seen.headers["authorization"].split(" ", 1)[1]
        for seen in sb.requests_seen()
        if seen.kind == "api" and "authorization" in seen.headers
    ]


def test_a_working_configuration_passes_every_step_and_shows_the_clock_skew(
    sandbox: Sandbox,
) -> None:
    result = doctor(env=credential_env(sandbox))
    assert result.returncode == 0, result.stdout + result.stderr
    steps = lines_by_step(result.stdout)
    assert {step: mark(line) for step, line in steps.items()} == {
        "credentials": "ok",
        "proxy": "ok",
        "dns": "ok",
        "tcp": "ok",
        "tls": "skip",  # plain http to loopback: nothing to check
        "token": "ok",
        "api": "skip",  # no --api-url
    }
    assert "company acme, client id sandbox-client" in steps["credentials"]
    assert f"connected to 127.0.0.1:{sandbox.port}" in steps["tcp"]
    assert "HTTP 200" in steps["token"] and "lives 300 s" in steps["token"]
    assert "clock skew" in steps["token"] and "unknown" not in steps["token"]
    assert result.stdout.strip().endswith("all checks passed")
    assert result.stderr == ""
    assert_nothing_secret(result)


def test_api_url_on_the_sandbox_passes_and_the_token_shows_only_as_its_fingerprint(
    sandbox: Sandbox,
) -> None:
    from navro_adapters._log import fingerprint

    result = doctor("--api-url", f"{sandbox.base_url}/v1/ping", env=credential_env(sandbox))
    assert result.returncode == 0, result.stdout
    steps = lines_by_step(result.stdout)
    assert mark(steps["api"]) == "ok" and "HTTP 200" in steps["api"]
    [token] = issued_tokens(sandbox)
    assert fingerprint(token) in steps["token"]
    assert_nothing_secret(result, token)


def test_tls_with_the_sandbox_ca_passes_and_names_the_ca_file(tls_sandbox: Sandbox) -> None:
    assert tls_sandbox.ca_file is not None
    result = doctor(
        "--ca-file",
        tls_sandbox.ca_file,
        "--api-url",
        f"{tls_sandbox.base_url}/v1/ping",
        env=credential_env(tls_sandbox),
    )
    assert result.returncode == 0, result.stdout
    steps = lines_by_step(result.stdout)
    assert all(mark(line) == "ok" for line in steps.values()), result.stdout
    assert f"verified with --ca-file ({tls_sandbox.ca_file})" in steps["tls"]
    assert "CN=navro-sandbox" in steps["tls"] and "valid until" in steps["tls"]
    assert_nothing_secret(result, *issued_tokens(tls_sandbox))


def test_tls_trusting_the_ca_through_ssl_cert_file_names_that_variable(
    tls_sandbox: Sandbox,
) -> None:
    assert tls_sandbox.ca_file is not None
    env = credential_env(tls_sandbox)
    env["SSL_CERT_FILE"] = tls_sandbox.ca_file
    result = doctor(env=env)
    assert result.returncode == 0, result.stdout
    tls_line = lines_by_step(result.stdout)["tls"]
    assert f"verified with SSL_CERT_FILE ({tls_sandbox.ca_file})" in tls_line


def test_tls_without_the_ca_fails_at_tls_with_one_certificate_line(tls_sandbox: Sandbox) -> None:
    assert tls_sandbox.ca_file is not None
    env = credential_env(tls_sandbox)
    env["REQUESTS_CA_BUNDLE"] = tls_sandbox.ca_file  # not read by the standard library
    result = doctor(env=env)
    assert result.returncode == 1, result.stdout
    steps = lines_by_step(result.stdout)
    assert [mark(line) for line in steps.values()] == ["ok"] * 4 + ["FAIL", "skip", "skip"]
    tls_line = steps["tls"]
    assert "certificate problem" in tls_line and "not trusted by system default" in tls_line
    assert "--ca-file" in tls_line and "SSL_CERT_FILE" in tls_line
    assert "REQUESTS_CA_BUNDLE is set, but only requests and curl read it" in tls_line
    assert result.stdout.count("FAIL") == 1
    assert tls_sandbox.stats().token_requests == 0  # the secret was never sent
    assert_nothing_secret(result)


def test_a_wrong_secret_fails_at_the_token_step_saying_to_check_the_secret(
    sandbox: Sandbox,
) -> None:
    result = doctor(
        "--api-url", f"{sandbox.base_url}/v1/ping", env=credential_env(sandbox, WRONG_SECRET)
    )
    assert result.returncode == 1, result.stdout
    steps = lines_by_step(result.stdout)
    token_line = steps["token"]
    assert mark(token_line) == "FAIL" and "HTTP 401" in token_line
    assert "secret" in token_line and "reset" in token_line
    assert mark(steps["api"]) == "skip"
    assert result.stdout.strip().endswith("failed at token")
    assert_nothing_secret(result, WRONG_SECRET)


def test_a_port_with_nothing_listening_fails_at_the_tcp_step() -> None:
    # Bound but never listening: connects are refused, and no one else can take the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        env = {
            "NAVRO_CLIENT_ID": "sandbox-client",
            "NAVRO_CLIENT_SECRET": SECRET,
            "NAVRO_COMPANY": "acme",
        }
        result = doctor("--base-url", f"http://127.0.0.1:{port}", env=env)
        direct = check_tcp(["127.0.0.1"], port, timeout=5)
    assert result.returncode == 1, result.stdout
    steps = lines_by_step(result.stdout)
    assert mark(steps["tcp"]) == "FAIL"
    assert f"connection refused by 127.0.0.1:{port}" in steps["tcp"]
    assert "--base-url" in steps["tcp"]
    assert [mark(steps[s]) for s in ("tls", "token", "api")] == ["skip"] * 3
    assert isinstance(direct, TcpResult) and direct.outcome is Outcome.FAIL
    assert direct.address == f"127.0.0.1:{port}" and direct.connect_ms is None
    assert_nothing_secret(result)


def test_missing_credentials_fail_first_and_skip_everything_else() -> None:
    result = doctor(env={"NAVRO_CLIENT_SECRET": SECRET, "NAVRO_COMPANY": "acme"})
    assert result.returncode == 1
    steps = lines_by_step(result.stdout)
    assert mark(steps["credentials"]) == "FAIL"
    assert "NAVRO_CLIENT_ID" in steps["credentials"] and "--client-id" in steps["credentials"]
    assert all(mark(steps[s]) == "skip" for s in STEPS[1:])
    assert_nothing_secret(result)


def test_both_secret_flags_are_bad_usage(sandbox: Sandbox, tmp_path: object) -> None:
    secret_file = os.path.join(str(tmp_path), "secret")
    with open(secret_file, "w") as handle:
        handle.write(SECRET)
    result = doctor(
        "--client-secret", SECRET, "--client-secret-file", secret_file, env=credential_env(sandbox)
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert_nothing_secret(result)


def test_an_api_url_off_the_api_origin_gets_no_token(sandbox: Sandbox) -> None:
    with Sandbox() as elsewhere:
        result = doctor("--api-url", f"{elsewhere.base_url}/v1/ping", env=credential_env(sandbox))
        assert elsewhere.requests_seen() == []
    assert result.returncode == 1
    api_line = lines_by_step(result.stdout)["api"]
    assert mark(api_line) == "FAIL" and "not on the API base" in api_line


def test_a_proxy_in_the_environment_is_reported_without_its_password_and_used(
    tls_sandbox: Sandbox, tinyproxy: Tinyproxy
) -> None:
    assert tls_sandbox.ca_file is not None
    env = credential_env(tls_sandbox)
    env["HTTPS_PROXY"] = f"http://doctor:proxy-password@127.0.0.1:{tinyproxy.port}"
    result = doctor("--ca-file", tls_sandbox.ca_file, env=env)
    assert result.returncode == 0, result.stdout
    steps = lines_by_step(result.stdout)
    assert (
        f"goes through HTTPS_PROXY http://127.0.0.1:{tinyproxy.port} (with credentials)"
        in steps["proxy"]
    )
    assert f"connected to 127.0.0.1:{tinyproxy.port}" in steps["tcp"]  # the proxy, not Navro
    # The TLS check and the token request each went through a CONNECT tunnel.
    assert len(tinyproxy.wait_for(lambda: tinyproxy.connects_to(tls_sandbox.port), 2)) >= 2
    assert_nothing_secret(result, "proxy-password")


def test_no_proxy_exempting_the_host_is_reported_and_the_connection_is_direct(
    sandbox: Sandbox,
) -> None:
    env = credential_env(sandbox)
    env.update({"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"})
    result = doctor(env=env)
    assert result.returncode == 0, result.stdout
    steps = lines_by_step(result.stdout)
    assert "NO_PROXY exempts 127.0.0.1: direct" in steps["proxy"]
    assert f"connected to 127.0.0.1:{sandbox.port}" in steps["tcp"]


def test_json_output_has_every_step_and_nothing_secret(sandbox: Sandbox) -> None:
    result = doctor("--json", env=credential_env(sandbox))
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert [step["step"] for step in document["steps"]] == list(STEPS)
    token = document["steps"][STEPS.index("token")]
    assert token["status_code"] == 200 and token["expires_in"] == 300
    assert isinstance(token["clock_skew"], float) and token["server_date"]
    assert_nothing_secret(result)


def test_results_are_typed_for_callers(tls_sandbox: Sandbox) -> None:
    options = DoctorOptions(
        environ=credential_env(tls_sandbox),
        ca_file=tls_sandbox.ca_file,
        api_url=f"{tls_sandbox.base_url}/v1/ping",
    )
    results: List[StepResult] = run_doctor(options)
    by_step = {result.step: result for result in results}
    assert [r.outcome for r in results] == [Outcome.OK] * len(STEPS)
    tls = by_step["tls"]
    assert isinstance(tls, TlsResult) and tls.leaf is not None
    assert tls.trust == f"--ca-file ({tls_sandbox.ca_file})"
    assert "127.0.0.1" in tls.leaf.names and tls.leaf.not_after
    token = by_step["token"]
    assert isinstance(token, TokenResult) and token.expires_in == 300
    assert token.clock_skew is not None and token.outcome is Outcome.OK  # one machine, one clock
    assert token.fingerprint is not None and len(token.fingerprint) == 8
    assert tls_sandbox.stats().token_requests == 1  # one request, no retry


def test_results_without_the_ca_stop_at_tls(tls_sandbox: Sandbox) -> None:
    results = run_doctor(DoctorOptions(environ=credential_env(tls_sandbox)))
    outcomes = {result.step: result.outcome for result in results}
    assert outcomes["tls"] is Outcome.FAIL
    assert outcomes["token"] is Outcome.SKIP and outcomes["api"] is Outcome.SKIP
    assert tls_sandbox.stats().token_requests == 0


def test_a_secret_file_is_named_and_its_contents_are_not(
    sandbox: Sandbox, tmp_path: object
) -> None:
    secret_file = os.path.join(str(tmp_path), "secret")
    with open(secret_file, "w") as handle:
        handle.write(SECRET + "\n")
    env = credential_env(sandbox)
    del env["NAVRO_CLIENT_SECRET"]
    result = doctor("--client-secret-file", secret_file, env=env)
    assert result.returncode == 0, result.stdout
    assert f"secret from file {secret_file}" in lines_by_step(result.stdout)["credentials"]
    assert_nothing_secret(result)
