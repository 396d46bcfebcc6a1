"""A sandbox's servers, started from its configuration the same way in this process or a child.

The configuration is a JSON-able mapping (process mode sends it to the child on stdin):
``client_id``, ``client_secret``, ``clients`` (more ids and secrets), ``company``,
``token_ttl``, ``token_latency``, ``host``, ``port``, ``control_key``, ``token_port`` (bool)
and ``tls`` (None, or ``server_file``, ``ca_file`` and ``require_client_cert``).
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from ._http import HttpServer
from .app import ENDPOINTS, SandboxApp
from .state import SandboxState
from .tls import server_context

__all__ = ["SandboxServers", "start_servers"]


class SandboxServers:
    """The listening servers of one sandbox: the API's and, optionally, the token endpoint's."""

    def __init__(self, api: HttpServer, token: Optional[HttpServer]) -> None:
        self._api = api
        self._token = token

    @property
    def port(self) -> int:
        return self._api.port

    @property
    def token_port(self) -> Optional[int]:
        """The token endpoint's own port, or None when it is served on :attr:`port`."""
        return self._token.port if self._token is not None else None

    def close(self) -> None:
        """Stop every server. Idempotent."""
        for server in (self._api, self._token):
            if server is not None:
                server.close()


def start_servers(config: Mapping[str, Any]) -> Tuple[SandboxState, SandboxServers]:
    """Build the state and start serving; bind and certificate errors raise here."""
    state = SandboxState(
        config["client_id"],
        config["client_secret"],
        config["company"],
        config["token_ttl"],
        config["token_latency"],
    )
    for client_id, client_secret in dict(config.get("clients", {})).items():
        state.add_client(client_id, client_secret)
    tls = config.get("tls")
    context = (
        server_context(tls["server_file"], tls["ca_file"], bool(tls["require_client_cert"]))
        if tls
        else None
    )
    host, key = config["host"], config["control_key"]
    own_token_port = bool(config.get("token_port"))
    started: List[HttpServer] = []
    try:
        api_endpoints = frozenset({"api"}) if own_token_port else ENDPOINTS
        api = HttpServer(
            SandboxApp(state, key, api_endpoints).handle,
            host,
            config["port"],
            ssl_context=context,
        )
        api.start()
        started.append(api)
        token: Optional[HttpServer] = None
        if own_token_port:
            token = HttpServer(
                SandboxApp(state, None, frozenset({"token"})).handle,
                host,
                0,
                ssl_context=context,
            )
            token.start()
            started.append(token)
    except BaseException:
        for server in started:
            server.close()
        raise
    return state, SandboxServers(api, token)
