"""The command line, run as a real subprocess: outputs, exit codes, no tracebacks, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from navro_adapters.sandbox import Fault, Sandbox

SECRET = "s3cr3t-value-never-logged"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


def run(
    *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NAVRO_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "navro_adapters", *args],
        capture_output=True,
        text=True,
        env=base,
        timeout=timeout,
    )


def sandbox_env(sb: Sandbox) -> Dict[str, str]:
    return {
        "NAVRO_CLIENT_ID": "sandbox-client",
        "NAVRO_CLIENT_SECRET": SECRET,
        "NAVRO_COMPANY": "acme",
        "NAVRO_BASE_URL": sb.base_url,
    }


def assert_clean_failure(result: subprocess.CompletedProcess, code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("navro-adapters")
    assert SECRET not in result.stderr + result.stdout


def test_token_prints_a_usable_access_token(sandbox: Sandbox) -> None:
    result = run("token", env=sandbox_env(sandbox))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token and "\n" not in token
    import urllib.request

    request = urllib.request.Request(
        f"{sandbox.base_url}/v1/ping", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_token_json_has_the_response_and_nothing_secret(sandbox: Sandbox) -> None:
    result = run("token", "--json", env=sandbox_env(sandbox))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"access_token", "token_type", "expires_in", "scope", "expires_at"}
    assert data["token_type"] == "Bearer" and data["expires_in"] == 300
    assert SECRET not in result.stdout


def test_flags_override_the_environment(sandbox: Sandbox, tmp_path: object) -> None:
    secret_file = os.path.join(str(tmp_path), "secret")
    with open(secret_file, "w") as handle:
        handle.write(SECRET + "\n")
    result = run(
        "token",
        "--client-id", "sandbox-client",
        "--client-secret-file", secret_file,
        "--company", "acme",
        "--token-url", sandbox.token_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_missing_configuration_is_one_line_exit_2() -> None:
    result = run("token")
    assert_clean_failure(result, 2)
    assert "NAVRO_CLIENT_ID" in result.stderr


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"NAVRO_ENVIRONMENT": "moon"}, "environment"),
        ({"NAVRO_BASE_URL": "http://example.com"}, "base_url"),
        ({"NAVRO_TOKEN_URL": "not a url"}, "token_url"),
    ],
)
def test_bad_configuration_names_the_field(extra: Dict[str, str], field: str) -> None:
    env = {"NAVRO_CLIENT_ID": "c", "NAVRO_CLIENT_SECRET": SECRET, "NAVRO_COMPANY": "acme", **extra}
    result = run("token", env=env)
    assert_clean_failure(result, 2)
    assert field in result.stderr


def test_rejected_secret_is_one_line_exit_1(sandbox: Sandbox) -> None:
    env = {**sandbox_env(sandbox), "NAVRO_CLIENT_SECRET": "wrong-" + SECRET}
    result = run("token", env=env)
    assert_clean_failure(result, 1)
    assert "InvalidClientError" in result.stderr and "wrong-" not in result.stderr


def test_unreachable_endpoint_is_one_line_exit_1() -> None:
    with Sandbox() as sb:
        env = sandbox_env(sb)
    result = run("token", "--timeout", "1", env=env)
    assert_clean_failure(result, 1)


def test_server_error_is_one_line(sandbox: Sandbox) -> None:
    sandbox.enqueue_token_faults(*[Fault.status(500)] * 10)
    result = run("token", "--timeout", "1", env=sandbox_env(sandbox))
    assert_clean_failure(result, 1)
    assert "500" in result.stderr


def test_missing_secret_file_is_a_configuration_error() -> None:
    result = run(
        "token", "--client-secret-file", "/nonexistent/secret", "--client-id", "c", "--company", "a"
    )
    assert_clean_failure(result, 2)


def test_usage_errors_are_one_line() -> None:
    result = run("token", "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert run().returncode == 2


def test_sandbox_port_in_use_is_a_clean_error(sandbox: Sandbox) -> None:
    port = sandbox.base_url.rsplit(":", 1)[1]
    result = run("sandbox", "--port", port)
    assert_clean_failure(result, 2)


def test_sandbox_command_serves_until_interrupted() -> None:
    import signal
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith("NAVRO_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "navro_adapters",
            "sandbox",
            "--port",
            str(port),
            "--token-ttl",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=base,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"127.0.0.1:{port}" in first
        env = {
            "NAVRO_CLIENT_ID": "sandbox-client",
            "NAVRO_CLIENT_SECRET": "sandbox-secret",
            "NAVRO_COMPANY": "acme",
            "NAVRO_BASE_URL": f"http://127.0.0.1:{port}",
        }
        result = run("token", "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["expires_in"] == 5
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        time.sleep(0)
    assert process.returncode == 130 and "Traceback" not in err


def test_demo_runs_every_installed_adapter() -> None:
    result = run("demo", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "core (urllib)" in result.stdout
    assert "one shared TokenProvider" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "200" in line]
    assert rows
    for line in rows:
        if "not installed" in line:
            continue
        assert " 1 " in f" {line} ", line  # one token fetch per adapter row


# -- sandbox --tls, --client-cert, --token-port -------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_sandbox_command(*flags: str) -> Tuple[subprocess.Popen[str], Dict[str, str]]:
    """Start ``navro-adapters sandbox`` with ``flags``; return it and what it printed, by label
    (``"url"``, ``"token endpoint"``, ``"CA certificate"``..., and each ``export`` variable)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NAVRO_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "navro_adapters", "sandbox", "--port", str(free_port()), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=base,
    )
    assert process.stdout is not None
    printed: Dict[str, str] = {}
    for line in process.stdout:
        text = line.strip()
        if text.startswith("Press Ctrl+C"):
            break
        if text.startswith("Navro sandbox listening on "):
            printed["url"] = text.rsplit(" ", 1)[1]
        elif text.startswith("export "):
            name, _, value = text[len("export ") :].partition("=")
            printed[name] = value
        elif ": " in text:
            label, _, value = text.partition(": ")
            printed[label] = value.split("  ")[0]
    return process, printed


def stop_sandbox_command(process: subprocess.Popen[str]) -> str:
    import signal

    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 130 and "Traceback" not in err
    return err


def test_sandbox_tls_with_a_token_port_serves_the_token_command() -> None:
    pytest.importorskip("trustme")
    process, printed = start_sandbox_command("--tls", "--token-port")
    try:
        url, token_url, ca_file = (
            printed["url"],
            printed["token endpoint"],
            printed["CA certificate"],
        )
        assert url.startswith("https://127.0.0.1:") and printed["NAVRO_BASE_URL"] == url
        assert token_url.startswith("https://127.0.0.1:") and not token_url.startswith(url)
        assert printed["NAVRO_TOKEN_URL"] == token_url
        assert Path(ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert "client certificate" not in printed
        env = {name: printed[name] for name in printed if name.startswith("NAVRO_")}
        # The token command has no CA flag: OpenSSL's SSL_CERT_FILE makes it trust the CA.
        result = run("token", "--json", env={**env, "SSL_CERT_FILE": ca_file})
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["token_type"] == "Bearer"
        untrusted = run("token", "--timeout", "2", env=env)
        assert_clean_failure(untrusted, 1)
        assert "certificate" in untrusted.stderr.lower()
    finally:
        stop_sandbox_command(process)
    assert not Path(ca_file).exists()  # removed when the sandbox stopped


def test_sandbox_client_cert_prints_a_working_client_certificate() -> None:
    pytest.importorskip("trustme")
    import ssl
    import urllib.request

    process, printed = start_sandbox_command("--tls", "--client-cert")
    try:
        context = ssl.create_default_context(cafile=printed["CA certificate"])
        context.load_cert_chain(printed["client certificate"], printed["client key"])
        request = urllib.request.Request(
            printed["token endpoint"],
            data=b"grant_type=client_credentials&scope=openid",
            headers={
                "X-API-Version": "1",
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": "Basic c2FuZGJveC1jbGllbnQ6c2FuZGJveC1zZWNyZXQ=",
            },
        )
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            assert json.load(response)["token_type"] == "Bearer"
    finally:
        stop_sandbox_command(process)


def test_sandbox_client_cert_without_tls_is_a_usage_error() -> None:
    result = run("sandbox", "--port", "0", "--client-cert")
    assert_clean_failure(result, 2)
    assert "--client-cert" in result.stderr and "--tls" in result.stderr
    assert result.stdout == ""


def test_sandbox_tls_without_trustme_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['trustme'] = None\n")
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    result = run("sandbox", "--port", "0", "--tls", env={"PYTHONPATH": os.pathsep.join(paths)})
    assert_clean_failure(result, 2)
    assert "trustme" in result.stderr
    assert "pip install 'navro-adapters[sandbox]'" in result.stderr
    assert result.stdout == ""


# -- without the [sandbox] extra ---------------------------------------------------------------


@pytest.fixture
def without_h11(tmp_path: Path) -> Dict[str, str]:
    """Environment for a subprocess in which ``import h11`` fails, as if it were not installed."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['h11'] = None\n")
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


@pytest.mark.parametrize("command", [["sandbox", "--port", "0"], ["demo"]])
def test_sandbox_commands_without_h11_say_what_to_install(
    command: List[str], without_h11: Dict[str, str]
) -> None:
    result = run(*command, env=without_h11, timeout=30)
    assert_clean_failure(result, 2)
    assert "pip install 'navro-adapters[sandbox]'" in result.stderr
    assert result.stdout == ""


def test_token_command_needs_no_h11(sandbox: Sandbox, without_h11: Dict[str, str]) -> None:
    result = run("token", env={**sandbox_env(sandbox), **without_h11})
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) >= 32
