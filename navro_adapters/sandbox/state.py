"""Everything the sandbox remembers: the client secret, issued tokens, counters, queued faults.

One :class:`SandboxState` per sandbox, shared by the server's event loop and the thread that
controls it; every method takes the one lock, briefly, and never does I/O under it.
"""

from __future__ import annotations

import base64
import collections
import hmac
import math
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

from .faults import Fault

__all__ = ["SandboxState", "SandboxStats", "SeenRequest"]

MAX_SEEN_REQUESTS = 10_000  # the request log keeps the most recent ones
MAX_LOGGED_BODY = 4096  # bytes of each request body kept in the log
TOKEN_BYTES = 32  # 256 random bits -> a 43-character URL-safe token
PRUNE_THRESHOLD = 10_000  # expired tokens are swept once this many are held (then 2x live)


@dataclass(frozen=True)
class SandboxStats:
    """Counters since start (or the last reset). Control requests are never counted.

    ``token_requests`` counts every POST to a token URL; each is answered either with a new
    token (``tokens_issued``) or with anything else (``token_errors``: a rejection or a fault).
    ``api_requests`` counts requests under ``/v1/``; ``api_401s`` those answered 401.
    """

    token_requests: int = 0
    tokens_issued: int = 0
    token_errors: int = 0
    api_requests: int = 0
    api_401s: int = 0

    def to_dict(self) -> Dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxStats:
        return cls(**{name: int(data[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SeenRequest:
    """One request as the server received it. ``kind`` is ``"token"``, ``"api"`` or ``"other"``.

    ``path`` is the raw path (still percent-encoded), ``query`` the raw query string,
    ``headers`` has lower-case names, ``body`` keeps the first 4 KiB.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    kind: str
    query: str = ""
    body: bytes = b""

    def to_dict(self) -> Dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": dict(self.headers),
            "kind": self.kind,
            "query": self.query,
            "body": base64.b64encode(self.body).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeenRequest:
        return cls(
            method=str(data["method"]),
            path=str(data["path"]),
            headers={str(k): str(v) for k, v in dict(data["headers"]).items()},
            kind=str(data["kind"]),
            query=str(data["query"]),
            body=base64.b64decode(str(data["body"])),
        )


def check_duration(name: str, seconds: float, *, positive: bool = False) -> float:
    """A finite number of seconds, >= 0 (or > 0 when ``positive``); raises ValueError."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, not {seconds!r}")
    value = float(seconds)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}, not {seconds!r}")
    return value


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class SandboxState:
    """The sandbox's memory. Thread-safe."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        company: str,
        token_ttl: float,
        token_latency: float,
    ) -> None:
        self.client_id = client_id
        self.company = company
        self._lock = threading.Lock()
        self._client_secret = client_secret
        self._token_ttl = check_duration("token_ttl", token_ttl, positive=True)
        self._token_latency = check_duration("token_latency", token_latency)
        self._tokens: Dict[str, float] = {}  # token -> monotonic expiry
        self._prune_at = PRUNE_THRESHOLD
        self._token_faults: Deque[Fault] = collections.deque()
        self._api_faults: Deque[Fault] = collections.deque()
        self._api_always_401 = False
        self._seen: Deque[SeenRequest] = collections.deque(maxlen=MAX_SEEN_REQUESTS)
        self._counts = SandboxStats().to_dict()

    # -- used by the server --------------------------------------------------------------------

    def client_matches(self, client_id: str, client_secret: str) -> bool:
        with self._lock:
            expected_secret = self._client_secret
        return _same(client_id, self.client_id) & _same(client_secret, expected_secret)

    def record(
        self, method: str, path: str, query: str, headers: Mapping[str, str], kind: str, body: bytes
    ) -> None:
        seen = SeenRequest(method, path, dict(headers), kind, query, body[:MAX_LOGGED_BODY])
        with self._lock:
            self._seen.append(seen)

    def begin_token_request(self) -> Tuple[Optional[Fault], float]:
        """Count a token POST; return the next queued token fault (if any) and the latency."""
        with self._lock:
            self._counts["token_requests"] += 1
            fault = self._token_faults.popleft() if self._token_faults else None
            return fault, self._token_latency

    def issue_token(self) -> Tuple[str, float]:
        """A new token and its lifetime in seconds."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self._lock:
            now = time.monotonic()
            if len(self._tokens) >= self._prune_at:
                self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
                # Amortised: the next sweep waits until the live set has doubled.
                self._prune_at = max(PRUNE_THRESHOLD, 2 * len(self._tokens))
            self._tokens[token] = now + self._token_ttl
            self._counts["tokens_issued"] += 1
            return token, self._token_ttl

    def note_token_error(self) -> None:
        with self._lock:
            self._counts["token_errors"] += 1

    def begin_api_request(self) -> Tuple[Optional[Fault], bool]:
        """Count an API request; return the next queued API fault and whether 401 is forced."""
        with self._lock:
            self._counts["api_requests"] += 1
            fault = self._api_faults.popleft() if self._api_faults else None
            return fault, self._api_always_401

    def token_is_valid(self, token: str) -> bool:
        with self._lock:
            expires_at = self._tokens.get(token)
            if expires_at is None:
                return False
            if time.monotonic() >= expires_at:
                del self._tokens[token]
                return False
            return True

    def note_api_401(self) -> None:
        with self._lock:
            self._counts["api_401s"] += 1

    # -- control ------------------------------------------------------------------------------

    def stats(self) -> SandboxStats:
        with self._lock:
            return SandboxStats(**self._counts)

    def reset_stats(self) -> None:
        with self._lock:
            self._counts = SandboxStats().to_dict()

    def revoke_all_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._prune_at = PRUNE_THRESHOLD

    def reset_secret(self, new_secret: str) -> None:
        if not isinstance(new_secret, str) or not new_secret:
            raise ValueError("new_secret must be a non-empty string")
        with self._lock:
            self._client_secret = new_secret

    def set_token_latency(self, seconds: float) -> None:
        value = check_duration("token latency", seconds)
        with self._lock:
            self._token_latency = value

    def set_token_ttl(self, seconds: float) -> None:
        value = check_duration("token TTL", seconds, positive=True)
        with self._lock:
            self._token_ttl = value

    def enqueue_token_faults(self, faults: List[Fault]) -> None:
        with self._lock:
            self._token_faults.extend(faults)

    def enqueue_api_faults(self, faults: List[Fault]) -> None:
        with self._lock:
            self._api_faults.extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._token_faults.clear()
            self._api_faults.clear()

    def set_api_always_401(self, enabled: bool) -> None:
        with self._lock:
            self._api_always_401 = bool(enabled)

    def requests_seen(self) -> List[SeenRequest]:
        with self._lock:
            return list(self._seen)

    def clear_requests_seen(self) -> None:
        with self._lock:
            self._seen.clear()
