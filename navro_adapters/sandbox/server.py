"""The embedded Navro sandbox: a real HTTP server on loopback that follows Navro's document.

Use it as a context manager::

    with Sandbox() as sandbox:
        credentials = sandbox.credentials()   # points at sandbox.token_url
        sandbox.enqueue_token_faults(Fault.status(503, retry_after="1"))

The server runs on an event loop in a daemon thread, or, with ``in_process=False``, in a child
process (for benchmarks, so the clients' GIL is not the server's). Every control method goes
through :mod:`~navro_adapters.sandbox.control` and behaves the same in both modes.
What the endpoints accept and answer is described in :mod:`~navro_adapters.sandbox.app`.

Production-like setups, each in both modes:

* ``tls=True`` serves HTTPS with a certificate from a CA made for this sandbox (trust
  :attr:`Sandbox.ca_file`); ``require_client_cert=True`` adds mutual TLS (present
  :attr:`Sandbox.client_cert`).
* ``token_port=True`` serves the token endpoint on a port of its own (:attr:`Sandbox.token_url`),
  so a forward proxy's CONNECT log tells token requests from API calls.
* :meth:`Sandbox.add_client` registers more service accounts of the company; each token is
  bound to its client, and ``/v1/ping`` answers whose token it was.
"""

from __future__ import annotations

import secrets
import ssl
import threading
import weakref
from types import TracebackType
from typing import Any, Dict, List, Optional, Tuple, Type
from urllib.parse import quote

from ..credentials import Credentials
from .control import ControlChannel, LocalControl, RemoteControl
from .faults import Fault
from .listeners import SandboxServers, start_servers
from .process import SandboxProcess
from .state import SandboxStats, SeenRequest, check_client, check_duration
from .tls import TlsFiles, require_trustme

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
        self.servers: Optional[SandboxServers] = None
        self.process: Optional[SandboxProcess] = None
        self.control: Optional[ControlChannel] = None
        self.tls: Optional[TlsFiles] = None

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.servers is not None:
            self.servers.close()
        if self.process is not None:
            self.process.close()
        if self.tls is not None:
            self.tls.close()


class Sandbox:
    """A local Navro: token endpoint, protected ``/v1/ping``, ``/v1/redirect``, and controls.

    ``start()`` (or ``with``) binds ``host:port`` (port 0: a free one); ``close()`` stops it,
    releases hung requests and is idempotent. A closed sandbox cannot be started again.

    ``tls=True`` serves HTTPS (needs trustme, the ``[sandbox]`` extra, else ImportError here);
    ``require_client_cert=True`` (with ``tls=True`` only, else ValueError) makes the handshake
    fail for a client without a certificate from the sandbox's CA. ``token_port=True`` serves
    the token endpoint on a second free port, and only there (the main port answers 404 there).
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
        tls: bool = False,
        require_client_cert: bool = False,
        token_port: bool = False,
    ) -> None:
        self.client_id, secret = check_client(client_id, client_secret)
        self._secrets: Dict[str, str] = {self.client_id: secret}  # what each client may send
        self.company = _check_text("company", company)
        self._token_ttl = check_duration("token_ttl", token_ttl, positive=True)
        self._token_latency = check_duration("token_latency", token_latency)
        if require_client_cert and not tls:
            raise ValueError("require_client_cert=True needs tls=True")
        if tls:
            require_trustme()
        self.host = host
        self._requested_port = port
        self.in_process = in_process
        self.tls = bool(tls)
        self.require_client_cert = bool(require_client_cert)
        self._own_token_port = bool(token_port)
        self._control_key = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._status = "new"  # -> "running" -> "closed"
        self._port = 0
        self._token_port: Optional[int] = None
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
        if self.tls:
            resources.tls = TlsFiles.generate(self.host, client_cert=self.require_client_cert)
        config = self._config(resources.tls)
        if self.in_process:
            state, resources.servers = start_servers(config)
            self._port, self._token_port = resources.servers.port, resources.servers.token_port
            resources.control = LocalControl(state)
        else:
            resources.process = SandboxProcess(config)
            self._port, self._token_port = resources.process.start()
            resources.control = RemoteControl(
                url_host(self.host).strip("[]"),
                self._port,
                self._control_key,
                resources.tls.client_context() if resources.tls is not None else None,
            )

    def _config(self, tls: Optional[TlsFiles]) -> Dict[str, Any]:
        """What :func:`~navro_adapters.sandbox.listeners.start_servers` needs, as JSON."""
        return {
            "client_id": self.client_id,
            "client_secret": self._secrets[self.client_id],
            "clients": {cid: s for cid, s in self._secrets.items() if cid != self.client_id},
            "company": self.company,
            "token_ttl": self._token_ttl,
            "token_latency": self._token_latency,
            "host": self.host,
            "port": self._requested_port,
            "control_key": self._control_key,
            "token_port": self._own_token_port,
            "tls": None
            if tls is None
            else {
                "server_file": tls.server_file,
                "ca_file": tls.ca_file,
                "require_client_cert": self.require_client_cert,
            },
        }

    def close(self) -> None:
        """Stop the server (and its process); pending ``hang`` requests are released, the TLS
        files removed. Idempotent."""
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
    def token_port(self) -> Optional[int]:
        """The token endpoint's own port (``token_port=True``), else None."""
        self._require_running()
        return self._token_port

    @property
    def scheme(self) -> str:
        """``"https"`` with ``tls=True``, else ``"http"``."""
        return "https" if self.tls else "http"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with TLS), without a trailing slash."""
        return f"{self.scheme}://{url_host(self.host)}:{self.port}"

    @property
    def token_url(self) -> str:
        """The token endpoint: on ``base_url``, or on :attr:`token_port` when it has its own."""
        port = self.port if self.token_port is None else self.token_port
        origin = f"{self.scheme}://{url_host(self.host)}:{port}"
        return f"{origin}/authentication/{quote(self.company, safe='')}/token"

    @property
    def ca_file(self) -> Optional[str]:
        """Path of the CA certificate (PEM) that issued the server's, or None without TLS.

        The file exists while the sandbox runs; ``close()`` removes it.
        """
        self._require_running()
        tls = self._resources.tls
        return tls.ca_file if tls is not None else None

    @property
    def client_cert(self) -> Optional[Tuple[str, str]]:
        """``(cert_file, key_file)`` (PEM) of a client certificate from the sandbox's CA, with
        ``require_client_cert=True``; else None. Removed by ``close()`` like :attr:`ca_file`."""
        self._require_running()
        tls = self._resources.tls
        return tls.client_cert if tls is not None else None

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client-side context trusting only the sandbox's CA and presenting
        :attr:`client_cert` when there is one. RuntimeError for a plain-HTTP sandbox."""
        self._require_running()
        tls = self._resources.tls
        if tls is None:
            raise RuntimeError("this sandbox serves plain HTTP; create it with tls=True")
        return tls.client_context()

    @property
    def client_secret(self) -> str:
        """The secret the sandbox currently accepts from the default client (changed by
        :meth:`reset_secret`)."""
        return self._secrets[self.client_id]

    @property
    def client_ids(self) -> List[str]:
        """Every registered client id, the default one first."""
        return list(self._secrets)

    @property
    def pid(self) -> Optional[int]:
        """The server's child process id, or None when it runs in this process."""
        process = self._resources.process
        return process.pid if process is not None else None

    def credentials(self, client_id: Optional[str] = None) -> Credentials:
        """Credentials of the default client, or of ``client_id`` (registered with
        :meth:`add_client`; else ValueError), with its current secret. Their ``base_url`` is
        :attr:`base_url` and their ``token_url`` is :attr:`token_url`."""
        client = self.client_id if client_id is None else client_id
        secret = self._secrets.get(client)
        if secret is None:
            raise ValueError(f"no client {client!r} is registered with this sandbox")
        return Credentials(
            client, secret, self.company, base_url=self.base_url, token_url=self.token_url
        )

    # -- clients -----------------------------------------------------------------------------------

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Register another service account of the company (Navro's "Additional Service
        Accounts"). Works before or after ``start()``; an id already registered is a ValueError.
        """
        client_id, client_secret = check_client(client_id, client_secret)
        with self._lock:
            if client_id in self._secrets:
                raise ValueError(f"client {client_id!r} is already registered")
            if self._status == "running":
                self._call("add_client", {"client_id": client_id, "client_secret": client_secret})
            elif self._status == "closed":
                raise RuntimeError("the sandbox is closed")
            self._secrets[client_id] = client_secret

    # -- control -----------------------------------------------------------------------------------

    def _call(self, op: str, args: Optional[Dict[str, Any]] = None) -> Any:
        return self._require_running().call(op, args)

    def stats(self) -> SandboxStats:
        return SandboxStats.from_dict(self._call("stats"))

    def reset_stats(self) -> None:
        self._call("reset_stats")

    def revoke_all_tokens(self) -> None:
        """Every token issued so far, to any client, gets 401 at the API from now on."""
        self._call("revoke_all_tokens")

    def reset_secret(self, new_secret: str, client_id: Optional[str] = None) -> None:
        """Accept only ``new_secret`` from the default client (or ``client_id``) from now on;
        its old secret gets 401 ``invalid_client``. Other clients are not affected.

        Tokens already issued stay valid until they expire (use :meth:`revoke_all_tokens`).
        """
        client = self.client_id if client_id is None else client_id
        args: Dict[str, Any] = {"new_secret": new_secret}
        if client_id is not None:
            args["client_id"] = client_id
        self._call("reset_secret", args)
        self._secrets[client] = new_secret

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
