"""Scripted misbehaviour for the sandbox: error statuses, broken bodies, dropped connections.

A :class:`Fault` replaces the sandbox's answer to exactly one request. Faults are queued with
``Sandbox.enqueue_token_faults`` / ``enqueue_api_faults`` and consumed first in, first out.
They are frozen and JSON-serialisable (:meth:`Fault.to_dict`) so a sandbox running in a child
process receives the very same faults as one running in this process.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["Fault", "FaultKind"]

JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"

#: The RFC 6749 error code a status fault carries when the caller gives no body.
_DEFAULT_ERROR_CODES: Mapping[int, str] = {
    400: "invalid_request",
    401: "invalid_client",
    403: "access_denied",
    429: "too_many_requests",
    503: "temporarily_unavailable",
}

_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>Bad Gateway</h1><p>The upstream server is unavailable.</p></body></html>\n"
)
_MALFORMED_JSON = b'{"access_token": "truncated'


class FaultKind:
    """What a fault does to the request it replaces (string constants, JSON-friendly)."""

    RESPONSE = "response"  # answer with the fault's status, headers and body
    DROP = "drop"  # close the connection without answering
    RESET = "reset"  # send part of a response, then reset the connection (RST)
    HANG = "hang"  # never answer; released when the sandbox closes
    DELAY = "delay"  # answer normally after ``seconds``

    ALL = frozenset({RESPONSE, DROP, RESET, HANG, DELAY})


def _check_status(status: int) -> int:
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"HTTP status must be an int in 100..599, not {status!r}")
    return status


def _check_header(name: str, value: str) -> Tuple[str, str]:
    # Headers go on the wire as latin-1; CR/LF would let a test inject extra headers by mistake.
    for text in (name, value):
        if not isinstance(text, str) or any(ch in text for ch in "\r\n\x00"):
            raise ValueError(f"invalid header {name!r}: {value!r}")
        text.encode("latin-1")
    if not name or ":" in name or " " in name:
        raise ValueError(f"invalid header name {name!r}")
    return name, value


@dataclass(frozen=True)
class Fault:
    """One scripted answer. Build it with the class-method constructors, not directly."""

    kind: str
    status_code: int = 200
    body: bytes = b""
    content_type: Optional[str] = None
    headers: Tuple[Tuple[str, str], ...] = ()
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FaultKind.ALL:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        _check_status(self.status_code)
        if not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError(f"seconds must be finite and >= 0, not {self.seconds!r}")
        for name, value in self.headers:
            _check_header(name, value)
        if self.content_type is not None:
            _check_header("Content-Type", self.content_type)

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def status(
        cls,
        code: int,
        *,
        body: Optional[Mapping[str, Any]] = None,
        retry_after: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Fault:
        """An error status with a JSON body (``{"error": ...}`` by default).

        ``retry_after`` is sent verbatim as ``Retry-After``: seconds (``"2"``) or an HTTP-date.
        A 401 without an explicit ``WWW-Authenticate`` gets the endpoint's usual challenge.
        """
        _check_status(code)
        if body is None:
            body = {"error": _DEFAULT_ERROR_CODES.get(code, "server_error")}
        extra = list((headers or {}).items())
        if retry_after is not None:
            extra.append(("Retry-After", str(retry_after)))
        return cls(
            FaultKind.RESPONSE,
            status_code=code,
            body=json.dumps(body).encode("utf-8"),
            content_type=JSON_TYPE,
            headers=tuple(extra),
        )

    @classmethod
    def json(cls, body: object, status: int = 200) -> Fault:
        """Any JSON document, e.g. a token response without ``access_token``."""
        return cls(
            FaultKind.RESPONSE,
            status_code=status,
            body=json.dumps(body).encode("utf-8"),
            content_type=JSON_TYPE,
        )

    @classmethod
    def raw(cls, body: bytes, content_type: str, status: int = 200) -> Fault:
        """Exactly these bytes with this content type."""
        if not isinstance(body, (bytes, bytearray)):
            raise TypeError("body must be bytes")
        return cls(
            FaultKind.RESPONSE, status_code=status, body=bytes(body), content_type=content_type
        )

    @classmethod
    def malformed_json(cls) -> Fault:
        """200, ``application/json``, and a body that does not parse as JSON."""
        return cls.raw(_MALFORMED_JSON, JSON_TYPE)

    @classmethod
    def html(cls) -> Fault:
        """200 with an HTML error page, as an intercepting proxy or captive portal sends."""
        return cls.raw(_HTML_ERROR_PAGE, HTML_TYPE)

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the connection without a byte of response."""
        return cls(FaultKind.DROP)

    @classmethod
    def reset(cls) -> Fault:
        """Send the start of a response, then reset the connection (SO_LINGER 0 + close)."""
        return cls(FaultKind.RESET)

    @classmethod
    def hang(cls) -> Fault:
        """Read the request and never answer; the connection is released when the sandbox closes."""
        return cls(FaultKind.HANG)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally, but only after ``seconds``."""
        return cls(FaultKind.DELAY, seconds=float(seconds))

    # -- transport to a child process ------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "status_code": self.status_code,
            "body": base64.b64encode(self.body).decode("ascii"),
            "content_type": self.content_type,
            "headers": [list(pair) for pair in self.headers],
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        try:
            return cls(
                kind=str(data["kind"]),
                status_code=int(data["status_code"]),
                body=base64.b64decode(str(data["body"]), validate=True),
                content_type=None if data["content_type"] is None else str(data["content_type"]),
                headers=tuple((str(name), str(value)) for name, value in data["headers"]),
                seconds=float(data["seconds"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a fault: {exc}") from None
