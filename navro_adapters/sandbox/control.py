"""How a :class:`~navro_adapters.sandbox.Sandbox` steers its server, in either mode.

Every control operation is a name plus JSON arguments, applied by :func:`apply_control`. In
process the sandbox calls it directly (:class:`LocalControl`); with the server in a child process
it POSTs the same JSON to ``/_sandbox/control`` (:class:`RemoteControl`), where the server calls
the same function. Both paths encode results to JSON and back, so they behave identically:
same results, and invalid arguments raise ``ValueError`` with the same message.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .faults import Fault
from .state import SandboxState

__all__ = [
    "CONTROL_KEY_HEADER",
    "CONTROL_PATH",
    "ControlChannel",
    "LocalControl",
    "RemoteControl",
    "apply_control",
]

CONTROL_PATH = "/_sandbox/control"
CONTROL_KEY_HEADER = "x-sandbox-control-key"  # a random per-sandbox key guards the endpoint
CONTROL_TIMEOUT = 10.0  # seconds; control calls are local and tiny


def _number(args: Mapping[str, Any], name: str) -> float:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, not {value!r}")
    return float(value)


def _faults(args: Mapping[str, Any]) -> List[Fault]:
    items = args.get("faults")
    if not isinstance(items, list):
        raise ValueError("faults must be a list")
    if not all(isinstance(item, dict) for item in items):
        raise ValueError("each fault must be an object")
    return [Fault.from_dict(item) for item in items]


def _text(args: Mapping[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _reset_secret(state: SandboxState, args: Mapping[str, Any]) -> None:
    client_id = args.get("client_id")
    if client_id is not None and not isinstance(client_id, str):
        raise ValueError("client_id must be a string")
    state.reset_secret(_text(args, "new_secret"), client_id)


def _add_client(state: SandboxState, args: Mapping[str, Any]) -> None:
    state.add_client(_text(args, "client_id"), _text(args, "client_secret"))


_OPERATIONS: Dict[str, Callable[[SandboxState, Mapping[str, Any]], object]] = {
    "stats": lambda state, args: state.stats().to_dict(),
    "reset_stats": lambda state, args: state.reset_stats(),
    "revoke_all_tokens": lambda state, args: state.revoke_all_tokens(),
    "reset_secret": _reset_secret,
    "add_client": _add_client,
    "set_token_latency": lambda state, args: state.set_token_latency(_number(args, "seconds")),
    "set_token_ttl": lambda state, args: state.set_token_ttl(_number(args, "seconds")),
    "enqueue_token_faults": lambda state, args: state.enqueue_token_faults(_faults(args)),
    "enqueue_api_faults": lambda state, args: state.enqueue_api_faults(_faults(args)),
    "clear_faults": lambda state, args: state.clear_faults(),
    "set_api_always_401": lambda state, args: state.set_api_always_401(bool(args.get("enabled"))),
    "requests_seen": lambda state, args: [seen.to_dict() for seen in state.requests_seen()],
    "clear_requests_seen": lambda state, args: state.clear_requests_seen(),
}


def apply_control(state: SandboxState, op: str, args: Mapping[str, Any]) -> object:
    """Run one control operation; the result is JSON-serialisable. Bad input: ValueError."""
    operation = _OPERATIONS.get(op)
    if operation is None:
        raise ValueError(f"unknown control operation {op!r}")
    return operation(state, args)


class ControlChannel:
    """Sends control operations to a sandbox server."""

    def call(self, op: str, args: Optional[Mapping[str, Any]] = None) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources; further calls fail."""


class LocalControl(ControlChannel):
    """Applies operations to an in-process state, through the same JSON round trip as HTTP."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def call(self, op: str, args: Optional[Mapping[str, Any]] = None) -> Any:
        wire_args = json.loads(json.dumps(dict(args or {})))
        return json.loads(json.dumps(apply_control(self._state, op, wire_args)))


class RemoteControl(ControlChannel):
    """POSTs operations to the control endpoint of a server in another process.

    With ``ssl_context`` (a sandbox serving HTTPS) it speaks HTTPS through that context.
    """

    def __init__(
        self, host: str, port: int, key: str, ssl_context: Optional[ssl.SSLContext] = None
    ) -> None:
        self._host = host
        self._port = port
        self._key = key
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._connection: Optional[http.client.HTTPConnection] = None

    def call(self, op: str, args: Optional[Mapping[str, Any]] = None) -> Any:
        payload = json.dumps({"op": op, "args": dict(args or {})}).encode("utf-8")
        headers = {"Content-Type": "application/json", CONTROL_KEY_HEADER: self._key}
        with self._lock:
            status, body = self._post(payload, headers)
        document = json.loads(body.decode("utf-8")) if body else {}
        if status == 400:
            raise ValueError(str(document.get("error_description", "invalid control request")))
        if status != 200:
            raise RuntimeError(f"sandbox control failed with HTTP {status}")
        return document.get("result")

    def _post(self, payload: bytes, headers: Mapping[str, str]) -> Tuple[int, bytes]:
        for attempt in range(2):  # a kept-alive connection may have gone stale: retry once
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.request("POST", CONTROL_PATH, payload, dict(headers))
                response = self._connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError, ssl.SSLEOFError):
                self._connection.close()
                self._connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        if self._ssl_context is None:
            return http.client.HTTPConnection(self._host, self._port, timeout=CONTROL_TIMEOUT)
        return http.client.HTTPSConnection(
            self._host, self._port, timeout=CONTROL_TIMEOUT, context=self._ssl_context
        )

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
