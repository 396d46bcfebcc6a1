"""Fixtures for the production-like tests: a real tinyproxy forward proxy, flavours, proxy env.

``tinyproxy`` starts Debian's tinyproxy (``apt-get install tinyproxy``) on a free loopback port
with a generated configuration (loopback clients only, CONNECT allowed to every port, a log
file at ``LogLevel Connect``) and stops it at teardown. Its log is the evidence that a request
went through the proxy: tinyproxy writes one line per request it receives, after a
``CONNECT   Dec 01 22:52:49.786 [13816]: `` prefix (level, time, pid), such as::

    Request (file descriptor 5): CONNECT 127.0.0.1:45805 HTTP/1.0
    Request (file descriptor 5): POST http://127.0.0.1:45805/authentication/acme/token HTTP/1.1

Without tinyproxy the tests using it are skipped with that reason, except under ``CI=true``
where its absence fails them (as ``tests/stores/conftest.py`` does for redis-server).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from navro_adapters.sandbox import Sandbox
from tests.compliance.drivers import DRIVERS, Driver, library_missing, load_driver
from tests.processes import stop
from tests.stores.conftest import free_port, redis_server  # noqa: F401  # the real one

PROXY_START_TIMEOUT = 10.0  # seconds for tinyproxy to accept connections
PROXY_STOP_TIMEOUT = 5.0  # seconds for it to exit after SIGTERM, before SIGKILL
LOG_WAIT = 5.0  # seconds to wait for a log line tinyproxy has not written yet
#: Where Debian installs it (``/usr/sbin`` is not on every user's PATH).
TINYPROXY_PATHS = ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy")
#: Every proxy variable a library may read; tests start with none of them set.
PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
)
#: CA variables that would override a CA given in code: with ``trust_env`` on, requests lets
#: ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` win over ``Session.verify`` (psf/requests#3829),
#: for API and token requests alike. Tests start with none of them set.
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")

_REQUEST_LINE = re.compile(r"Request \(file descriptor \d+\): (\S+) (\S+) HTTP/\d\.\d\s*$")


def _require_tinyproxy() -> str:
    found = shutil.which("tinyproxy")
    path = found or next((p for p in TINYPROXY_PATHS if os.access(p, os.X_OK)), None)
    if path is None:
        reason = "tinyproxy is not installed (install it: apt-get install tinyproxy)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return path


@dataclass(frozen=True)
class ProxiedRequest:
    """One request tinyproxy received: ``CONNECT host:port`` or ``POST http://host:port/...``."""

    method: str
    target: str


class Tinyproxy:
    """One tinyproxy process on a loopback port, logging every request to a file."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.log_file = directory / "tinyproxy.log"
        self.port = 0
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        # No ConnectPort line: CONNECT is allowed to every port (the sandbox's are random).
        config = self.directory / "tinyproxy.conf"
        config.write_text(
            "\n".join(
                [
                    "Listen 127.0.0.1",
                    f"Port {self.port}",
                    "Allow 127.0.0.1",
                    "Timeout 60",
                    "MaxClients 200",
                    "LogLevel Connect",
                    f'LogFile "{self.log_file}"',
                    'ViaProxyName "tinyproxy"',
                    "",
                ]
            )
        )
        return config

    def start(self) -> Tinyproxy:
        for _ in range(5):  # a free port may be taken between probing and binding: retry
            self.port = free_port()
            config = self._write_config()
            self.process = subprocess.Popen(
                [self.binary, "-d", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"tinyproxy did not start; its log:\n{self.log_text()}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        give_up_at = time.monotonic() + PROXY_START_TIMEOUT
        while time.monotonic() < give_up_at:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        stop(self.process, PROXY_STOP_TIMEOUT)

    # -- the log -----------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def requests(self) -> List[ProxiedRequest]:
        """Every request the proxy received so far, in order, from its log."""
        found = []
        for line in self.log_text().splitlines():
            match = _REQUEST_LINE.search(line)
            if match:
                found.append(ProxiedRequest(match.group(1), match.group(2)))
        return found

    def connects_to(self, port: int) -> List[ProxiedRequest]:
        """The ``CONNECT 127.0.0.1:<port>`` tunnels it opened (HTTPS through the proxy)."""
        target = f"127.0.0.1:{port}"
        return [r for r in self.requests() if r.method == "CONNECT" and r.target == target]

    def forwarded(self, url_prefix: str) -> List[ProxiedRequest]:
        """The plain-HTTP requests it forwarded whose absolute URL starts with ``url_prefix``."""
        return [
            r for r in self.requests() if r.method != "CONNECT" and r.target.startswith(url_prefix)
        ]

    def wait_for(
        self, find: Callable[[], List[ProxiedRequest]], count: int
    ) -> List[ProxiedRequest]:
        """``find()`` once it has at least ``count`` entries (the log may lag a little)."""
        give_up_at = time.monotonic() + LOG_WAIT
        while True:
            found = find()
            if len(found) >= count or time.monotonic() > give_up_at:
                return found
            time.sleep(0.02)


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    """A tinyproxy of this test's own (so its log holds this test's requests only)."""
    binary = _require_tinyproxy()
    directory = tmp_path / "tinyproxy"
    directory.mkdir()
    proxy = Tinyproxy(binary, directory).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Every test starts with no proxy (and no CA) variable set; tests that want some set
    them, so only what a test configures (in code or in the environment) is in play."""
    for name in PROXY_VARIABLES + CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(params=sorted(DRIVERS))
def flavour(request: pytest.FixtureRequest) -> str:
    """Every adapter flavour; one whose HTTP library is missing is skipped, nothing else."""
    name: str = request.param
    try:
        load_driver(name)
    except ImportError as exc:
        if not library_missing(exc):
            raise  # a broken adapter or driver must fail, never hide behind a skip
        pytest.skip(f"{name}: {exc}")
    return name


@pytest.fixture
def open_driver(flavour: str) -> Iterator[Callable[..., Driver]]:
    """``open_driver(source, **open_kwargs)``: a new driver of the flavour, opened; every
    driver opened this way is closed at teardown."""
    drivers: List[Driver] = []

    def open_one(source: object, **open_kwargs: object) -> Driver:
        driver = load_driver(flavour)()
        drivers.append(driver)
        driver.open(source, **open_kwargs)
        return driver

    try:
        yield open_one
    finally:
        for driver in reversed(drivers):
            driver.close()


def ping_url(sandbox: Sandbox) -> str:
    return f"{sandbox.base_url}/v1/ping"
