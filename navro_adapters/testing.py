"""Pytest fixtures for testing your own code against the embedded Navro sandbox.

Installed as a pytest plugin (entry point ``navro_adapters``), so the fixtures are available
in any test suite once navro-adapters is installed::

    def test_payout_client(navro_sandbox, navro_credentials):
        client = MyPayoutClient(auth=NavroAuth(navro_credentials))
        ...
        assert navro_sandbox.stats().token_requests == 1

``navro_sandbox`` is a running :class:`~navro_adapters.sandbox.Sandbox` (function scope,
stopped after the test); ``navro_credentials`` are matching ``Credentials``;
``navro_sandbox_factory`` starts sandboxes with your own settings (TTL, latency, secret).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from .credentials import Credentials
from .sandbox import Sandbox

__all__ = ["navro_credentials", "navro_sandbox", "navro_sandbox_factory"]


@pytest.fixture
def navro_sandbox_factory() -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes with any :class:`Sandbox` arguments; all are stopped after the test."""
    started: List[Sandbox] = []

    def start(**kwargs: Any) -> Sandbox:
        sandbox = Sandbox(**kwargs).start()
        started.append(sandbox)
        return sandbox

    try:
        yield start
    finally:
        for sandbox in started:
            sandbox.close()


@pytest.fixture
def navro_sandbox(navro_sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """A running sandbox with default settings (300 s tokens, no faults)."""
    return navro_sandbox_factory()


@pytest.fixture
def navro_credentials(navro_sandbox: Sandbox) -> Credentials:
    """Credentials for :func:`navro_sandbox` (its token URL and API base)."""
    return navro_sandbox.credentials()
