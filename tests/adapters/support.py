"""Constants and helpers the adapter tests share (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import List, Optional, Tuple

from navro_adapters import (
    Credentials,
    TokenProvider,
    TokenRequest,
    TransportResponse,
    UrllibTransport,
)
from navro_adapters.sandbox import Sandbox
from navro_adapters.token import Token

#: The client secret every adapter test uses; the suite's log guard knows it.
SECRET = "s3cr3t-value-never-logged"
#: An API base no request reaches: offline tests answer it in memory.
BASE = "https://api.navro.test"
CREDS = Credentials("client-id", SECRET, "acme", base_url=BASE)
#: The repository root, for tests that run code in a subprocess.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ping(sandbox: Sandbox) -> str:
    return f"{sandbox.base_url}/v1/ping"


def assert_repr_is_safe(text: str, token: Optional[Token]) -> None:
    """A repr may show the token's fingerprint, never the token nor the client secret."""
    assert token is not None
    assert SECRET not in text and token.access_token not in text
    assert token.fingerprint in text


def import_error_message(module: str, *missing: str) -> str:
    """What ``import navro_adapters.<module>`` says in a fresh interpreter without ``missing``."""
    code = textwrap.dedent(
        f"""
        import sys
        for name in {missing!r}:
            sys.modules[name] = None  # makes "import name" raise ImportError
        try:
            import navro_adapters.{module}
        except ImportError as exc:
            print(exc)
        """
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def recording_provider(sandbox: Sandbox) -> Tuple[TokenProvider, List[str]]:
    """A provider with a transport of its own (the standard library's, recording), and the URL
    of every token request it sends: an adapter given this provider must not send them."""
    calls: List[str] = []
    inner = UrllibTransport()

    def transport(request: TokenRequest, *, timeout: float) -> TransportResponse:
        calls.append(request.url)
        return inner(request, timeout=timeout)

    return TokenProvider(sandbox.credentials(), transport=transport), calls


#: An API origin no request can reach directly (nothing listens on port 9 of a name that does
#: not resolve): a request gets there only through a proxy, which proves the proxy was used.
UNREACHABLE_BASE = "http://api.navro.localhost:9"


def behind_proxy(sandbox: Sandbox) -> Credentials:
    """The sandbox's credentials for :data:`UNREACHABLE_BASE`, reachable only with the sandbox
    as the HTTP proxy (it answers absolute-form requests as if they were addressed to it)."""
    return Credentials(
        sandbox.client_id, sandbox.client_secret, sandbox.company, base_url=UNREACHABLE_BASE
    )
