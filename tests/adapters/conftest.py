"""Fixtures the adapter tests share: a sandbox with the suite's secret and an echo server."""

from __future__ import annotations

from typing import Iterator

import pytest

from navro_adapters.sandbox import EchoServer, Sandbox

from .support import SECRET


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(client_secret=SECRET) as sb:
        yield sb


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    """A server on another origin that records what it receives."""
    with EchoServer() as server:
        yield server
