"""The embedded Navro sandbox: a real HTTP server on loopback that follows Navro's document.

Use it as a context manager::

    with Sandbox() as sandbox:
        credentials = sandbox.credentials()   # points at sandbox.token_url
        sandbox.enqueue_token_faults(Fault.status(503, retry_after="1"))

The server runs on an event loop in a daemon thread, or, with ``in_process=False``, in a child
process (for benchmarks, so the clients' GIL is not the server's). Every control method goes
through :mod:`~navro_adapters.sandbox.control` and behaves the same in both modes.
What the endpoints accept and answer is described in :mod:`~navro_adapters.sandbox.app`.
"""

from __future__ import annotations

import secrets
import threading
import weakref
from types import TracebackType
from typing import Any, Dict, List, Optional, Type
from urllib.parse import quote

from ..credentials import Credentials
from ._http import HttpServer
from .app import SandboxApp
from .control import ControlChannel, LocalControl, RemoteControl
from .faults import Fault
from .process import SandboxProcess
from .state import SandboxState, SandboxStats, SeenRequest, check_duration

__all__ = ["Sandbox", "url_host"]

DEFAULT_TOKEN_TTL = 300.0  # seconds, per Navro's document


def url_host(host: str) -> str:
    """The host to put in URLs for a bind address (a wildcard bind is reached on loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return value


class _Resources:
    """What a running sandbox holds; closed once, by ``close()`` or when it is collected."""

    def __init__(self) -> None:
        self.server: Optional[HttpServer] = None
        self.process: Optional[SandboxProcess] = None
        self.control: Optional[ControlChannel] = None

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.server is not None:
            self.server.close()
        if self.process is not None:
            self.process.close()


class Sandbox:
    """A local Navro: token endpoint, protected ``/v1/ping``, ``/v1/redirect``, and controls.

    ``start()`` (or ``with``) binds ``host:port`` (port 0: a free one); ``close()`` stops it,
    releases hung requests and is idempotent. A closed sandbox cannot be started again.
    """

    def __init__(
        self,
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",
        company: str = "acme",
        token_ttl: float = DEFAULT_TOKEN_TTL,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token_latency: float = 0.0,
        in_process: bool = True,
    ) -> None:
        self.client_id = _check_text("client_id", client_id)
        if ":" in client_id:
            raise ValueError("client_id must not contain ':' (HTTP Basic cannot carry it)")
        self._client_secret = _check_text("client_secret", client_secret)
        self.company = _check_text("company", company)
        self._token_ttl = check_duration("token_ttl", token_ttl, positive=True)
        self._token_latency = check_duration("token_latency", token_latency)
        self.host = host
        self._requested_port = port
        self.in_process = in_process
        self._control_key = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._status = "new"  # -> "running" -> "closed"
        self._port = 0
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, self._resources.close)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start serving; returns ``self``. Starting a running sandbox is a no-op."""
        with self._lock:
            if self._status == "running":
                return self
            if self._status == "closed":
                raise RuntimeError("a closed Sandbox cannot be restarted; create a new one")
            try:
                self._start()
            except BaseException:
                self._resources.close()
                self._status = "closed"
                raise
            self._status = "running"
        return self

    def _start(self) -> None:
        resources = self._resources
        if self.in_process:
            state = SandboxState(
                self.client_id,
                self._client_secret,
                self.company,
                self._token_ttl,
                self._token_latency,
            )
            resources.server = HttpServer(
                SandboxApp(state, self._control_key).handle, self.host, self._requested_port
            )
            resources.server.start()
            self._port = resources.server.port
            resources.control = LocalControl(state)
        else:
            resources.process = SandboxProcess(
                {
                    "client_id": self.client_id,
                    "client_secret": self._client_secret,
                    "company": self.company,
                    "token_ttl": self._token_ttl,
                    "token_latency": self._token_latency,
                    "host": self.host,
                    "port": self._requested_port,
                    "control_key": self._control_key,
                }
            )
            self._port = resources.process.start()
            resources.control = RemoteControl(
                url_host(self.host).strip("[]"), self._port, self._control_key
            )

    def close(self) -> None:
        """Stop the server (and its process); pending ``hang`` requests are released. Idempotent."""
        with self._lock:
            self._status = "closed"
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.base_url if self._status == "running" else self._status
        mode = "in-process" if self.in_process else "child process"
        return f"Sandbox({where}, company={self.company!r}, {mode})"

    # -- addresses ---------------------------------------------------------------------------------

    def _require_running(self) -> ControlChannel:
        control = self._resources.control
        if self._status != "running" or control is None:
            raise RuntimeError(f"the sandbox is {self._status}; use start() or a with block")
        return control

    @property
    def port(self) -> int:
        self._require_running()
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/authentication/{quote(self.company, safe='')}/token"

    @property
    def client_secret(self) -> str:
        """The secret the sandbox currently accepts (changed by :meth:`reset_secret`)."""
        return self._client_secret

    @property
    def pid(self) -> Optional[int]:
        """The server's child process id, or None when it runs in this process."""
        process = self._resources.process
        return process.pid if process is not None else None

    def credentials(self) -> Credentials:
        """Credentials for this sandbox and its current secret; their token URL is ``token_url``."""
        return Credentials(
            self.client_id, self._client_secret, self.company, base_url=self.base_url
        )

    # -- control -----------------------------------------------------------------------------------

    def _call(self, op: str, args: Optional[Dict[str, Any]] = None) -> Any:
        return self._require_running().call(op, args)

    def stats(self) -> SandboxStats:
        return SandboxStats.from_dict(self._call("stats"))

    def reset_stats(self) -> None:
        self._call("reset_stats")

    def revoke_all_tokens(self) -> None:
        """Every token issued so far gets 401 at the API from now on."""
        self._call("revoke_all_tokens")

    def reset_secret(self, new_secret: str) -> None:
        """Accept only ``new_secret`` from now on; the old one gets 401 ``invalid_client``.

        Tokens already issued stay valid until they expire (use :meth:`revoke_all_tokens`).
        """
        self._call("reset_secret", {"new_secret": new_secret})
        self._client_secret = new_secret

    def set_token_latency(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each token request (other requests are not delayed)."""
        self._call("set_token_latency", {"seconds": seconds})

    def set_token_ttl(self, seconds: float) -> None:
        """The lifetime of tokens issued from now on (``expires_in``, enforced by the API)."""
        self._call("set_token_ttl", {"seconds": seconds})

    def enqueue_token_faults(self, *faults: Fault) -> None:
        """Answer the next token POSTs with these faults, one each, in order."""
        self._call("enqueue_token_faults", {"faults": [_fault(f).to_dict() for f in faults]})

    def enqueue_api_faults(self, *faults: Fault) -> None:
        """Answer the next ``/v1/`` requests with these faults, one each, in order."""
        self._call("enqueue_api_faults", {"faults": [_fault(f).to_dict() for f in faults]})

    def clear_faults(self) -> None:
        """Forget every queued fault, token and API."""
        self._call("clear_faults")

    def set_api_always_401(self, enabled: bool) -> None:
        """While enabled, ``/v1/ping`` answers 401 whatever the token."""
        self._call("set_api_always_401", {"enabled": bool(enabled)})

    def requests_seen(self) -> List[SeenRequest]:
        """The most recent 10,000 requests (control requests excluded), oldest first."""
        return [SeenRequest.from_dict(item) for item in self._call("requests_seen")]

    def clear_requests_seen(self) -> None:
        self._call("clear_requests_seen")


def _fault(fault: object) -> Fault:
    if not isinstance(fault, Fault):
        raise TypeError(f"expected a Fault, not {type(fault).__name__}")
    return fault
