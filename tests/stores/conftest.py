"""Fixtures for the token store tests: a real redis-server process and a local sandbox.

Redis tests skip when ``redis-server`` is not on PATH (install it with
``apt-get install redis-server``), except under ``CI=true`` where its absence fails them:
CI must not silently lose the fleet tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple, Type, TypeVar

import pytest

from navro_adapters.sandbox import Sandbox
from tests.processes import stop

REDIS_START_TIMEOUT = 10.0  # seconds for redis-server to accept connections
REDIS_STOP_TIMEOUT = 5.0  # seconds for it to exit after SIGTERM, before SIGKILL
REPO_ROOT = Path(__file__).resolve().parents[2]
_S = TypeVar("_S")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _require_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server is not on PATH (install it: apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    if os.environ.get("CI") == "true":
        import redis  # noqa: F401  # CI must have the [redis] extra: fail, never skip
    else:
        pytest.importorskip("redis", reason="redis-py is not installed (pip install redis)")
    return path


class RedisServer:
    """One redis-server process on a loopback port, with nothing persisted to disk."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = 0
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _ in range(5):  # a free port may be taken between probing and binding: retry
            self.port = free_port()
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--daemonize",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError("redis-server did not start")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        give_up_at = time.monotonic() + REDIS_START_TIMEOUT
        while time.monotonic() < give_up_at:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """SIGKILL, as a crashed or OOM-killed Redis would go."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(REDIS_STOP_TIMEOUT)

    def stop(self) -> None:
        stop(self.process, REDIS_STOP_TIMEOUT)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2.0)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session (tests use distinct key prefixes)."""
    binary = _require_redis_server()
    server = RedisServer(binary, tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Start private redis-servers that a test may kill; all are stopped afterwards."""
    binary = _require_redis_server()
    servers: List[RedisServer] = []

    def start() -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = RedisServer(binary, directory).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to the test, so tests sharing one Redis never see each other."""
    return f"test:{request.node.name}:{time.monotonic_ns()}:"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # The secret is one tests/conftest.py's log guard knows: no log line may contain it.
    with Sandbox(
        client_id="store-client", client_secret="s3cr3t-value-never-logged", company="acme"
    ) as sb:
        yield sb


def recording_threads(store_class: Type[_S]) -> Tuple[Type[_S], List[int]]:
    """A subclass of ``store_class`` recording the thread each store call runs on."""
    threads: List[int] = []

    class Recording(store_class):  # type: ignore[valid-type,misc]
        def load(self, key: str) -> Any:
            threads.append(threading.get_ident())
            return super().load(key)

        def try_lock(self, key: str, owner: str, ttl: float) -> bool:
            threads.append(threading.get_ident())
            return super().try_lock(key, owner, ttl)

        def unlock(self, key: str, owner: str) -> None:
            threads.append(threading.get_ident())
            super().unlock(key, owner)

    return Recording, threads
