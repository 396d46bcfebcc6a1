"""Pytest fixtures for testing your own code against the embedded Navro sandbox.

Installed as a pytest plugin (entry point ``navro_adapters``), so the fixtures are available
in any test suite once navro-adapters is installed::

    def test_payout_client(navro_sandbox, navro_credentials):
        client = MyPayoutClient(auth=NavroAuth(navro_credentials))
        ...
        assert navro_sandbox.stats().token_requests == 1

``navro_sandbox`` is a running :class:`~navro_adapters.sandbox.Sandbox` (function scope,
stopped after the test); ``navro_credentials`` are matching ``Credentials``;
``navro_sandbox_factory`` starts sandboxes with your own settings (TTL, latency, secret,
``tls``, ``token_port``...).

``navro_tls_sandbox`` serves HTTPS (``tls=True``): trust its CA, ``navro_tls_sandbox.ca_file``
(a PEM path; ``client_ssl_context()`` is a ready ``ssl.SSLContext``). ``navro_mtls_sandbox``
also requires a client certificate (mutual TLS): present ``navro_mtls_sandbox.client_cert``,
a ``(cert_file, key_file)`` pair::

    def test_payouts_over_mutual_tls(navro_mtls_sandbox):
        session = requests.Session()
        session.verify = navro_mtls_sandbox.ca_file
        session.cert = navro_mtls_sandbox.client_cert
        session.auth = NavroAuth(navro_mtls_sandbox.credentials(), session=session)
        ...

The sandbox needs the ``[sandbox]`` extra (h11, and trustme for the TLS fixtures). Without it
the plugin still loads; only the tests using these fixtures fail, saying what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Type

import pytest

from .credentials import Credentials

if TYPE_CHECKING:
    from .sandbox import Sandbox

__all__ = [
    "navro_credentials",
    "navro_mtls_sandbox",
    "navro_sandbox",
    "navro_sandbox_factory",
    "navro_tls_sandbox",
]

_EXTRA_LIBRARIES = ("h11", "trustme")  # what the [sandbox] extra installs


def _sandbox_class() -> Type[Sandbox]:
    """The Sandbox class, or a test failure naming the extra when h11 is missing."""
    try:
        from .sandbox import Sandbox
    except ImportError as exc:
        if exc.name not in _EXTRA_LIBRARIES:
            raise
        pytest.fail(str(exc), pytrace=False)
    return Sandbox


@pytest.fixture
def navro_sandbox_factory() -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes with any :class:`Sandbox` arguments; all are stopped after the test."""
    sandbox_class = _sandbox_class()
    started: List[Sandbox] = []

    def start(**kwargs: Any) -> Sandbox:
        try:
            sandbox = sandbox_class(**kwargs)
        except ImportError as exc:  # tls=True without trustme
            if exc.name not in _EXTRA_LIBRARIES:
                raise
            pytest.fail(str(exc), pytrace=False)
        started.append(sandbox)
        return sandbox.start()

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


@pytest.fixture
def navro_tls_sandbox(navro_sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """A running sandbox serving HTTPS; its certificate is from the CA at ``.ca_file``."""
    return navro_sandbox_factory(tls=True)


@pytest.fixture
def navro_mtls_sandbox(navro_sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """A running HTTPS sandbox that requires the client certificate ``.client_cert``."""
    return navro_sandbox_factory(tls=True, require_client_cert=True)
