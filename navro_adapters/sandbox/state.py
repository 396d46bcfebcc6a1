"""Everything the sandbox remembers: clients and secrets, issued tokens, counters, queued faults.

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
from dataclasses import dataclass, field, fields
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

    ``token_requests_by_client`` maps every registered client id to the token POSTs whose
    Basic credentials name it, whatever the answer (a wrong secret or a fault included);
    requests naming no registered client are in ``token_requests`` only. It takes no part in
    ``==``, so comparing with ``SandboxStats(token_requests=..., ...)`` works as before.
    """

    token_requests: int = 0
    tokens_issued: int = 0
    token_errors: int = 0
    api_requests: int = 0
    api_401s: int = 0
    token_requests_by_client: Mapping[str, int] = field(default_factory=dict, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        document: Dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        document["token_requests_by_client"] = dict(self.token_requests_by_client)
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxStats:
        by_client = data.get("token_requests_by_client", {})
        counters = {name: int(data[name]) for name in _COUNTERS}
        return cls(
            **counters,
            token_requests_by_client={str(k): int(v) for k, v in dict(by_client).items()},
        )


_COUNTERS = ("token_requests", "tokens_issued", "token_errors", "api_requests", "api_401s")


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


def check_client(client_id: object, client_secret: object) -> Tuple[str, str]:
    """A client id and secret a sandbox can register; raises ValueError naming the field."""
    for name, value in (("client_id", client_id), ("client_secret", client_secret)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string")
    assert isinstance(client_id, str) and isinstance(client_secret, str)
    if ":" in client_id:
        raise ValueError("client_id must not contain ':' (HTTP Basic cannot carry it)")
    return client_id, client_secret


class SandboxState:
    """The sandbox's memory. Thread-safe.

    Clients are the company's service accounts: ``client_id`` is the default one, more are
    added by :meth:`add_client`. Each token remembers the client it was issued to.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        company: str,
        token_ttl: float,
        token_latency: float,
    ) -> None:
        self.client_id, secret = check_client(client_id, client_secret)
        self.company = company
        self._lock = threading.Lock()
        self._secrets: Dict[str, str] = {self.client_id: secret}  # client id -> secret
        self._token_ttl = check_duration("token_ttl", token_ttl, positive=True)
        self._token_latency = check_duration("token_latency", token_latency)
        self._tokens: Dict[str, Tuple[float, str]] = {}  # token -> (monotonic expiry, client)
        self._prune_at = PRUNE_THRESHOLD
        self._token_faults: Deque[Fault] = collections.deque()
        self._api_faults: Deque[Fault] = collections.deque()
        self._api_always_401 = False
        self._seen: Deque[SeenRequest] = collections.deque(maxlen=MAX_SEEN_REQUESTS)
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._by_client: Dict[str, int] = {self.client_id: 0}

    # -- used by the server --------------------------------------------------------------------

    def is_client(self, client_id: str) -> bool:
        with self._lock:
            return client_id in self._secrets

    def client_matches(self, client_id: str, client_secret: str) -> bool:
        """Whether ``client_id`` is registered and ``client_secret`` is its current secret."""
        with self._lock:
            expected = self._secrets.get(client_id)
        # Client ids are not secret: only the secret is compared in constant time.
        return expected is not None and _same(client_secret, expected)

    def record(
        self, method: str, path: str, query: str, headers: Mapping[str, str], kind: str, body: bytes
    ) -> None:
        seen = SeenRequest(method, path, dict(headers), kind, query, body[:MAX_LOGGED_BODY])
        with self._lock:
            self._seen.append(seen)

    def begin_token_request(self, client_id: Optional[str]) -> Tuple[Optional[Fault], float]:
        """Count a token POST (for ``client_id`` too, when it names a registered client);
        return the next queued token fault (if any) and the latency."""
        with self._lock:
            self._counts["token_requests"] += 1
            if client_id in self._by_client:
                self._by_client[client_id] += 1
            fault = self._token_faults.popleft() if self._token_faults else None
            return fault, self._token_latency

    def issue_token(self, client_id: str) -> Tuple[str, float]:
        """A new token for ``client_id`` and its lifetime in seconds."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self._lock:
            now = time.monotonic()
            if len(self._tokens) >= self._prune_at:
                self._tokens = {t: held for t, held in self._tokens.items() if held[0] > now}
                # Amortised: the next sweep waits until the live set has doubled.
                self._prune_at = max(PRUNE_THRESHOLD, 2 * len(self._tokens))
            self._tokens[token] = (now + self._token_ttl, client_id)
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

    def token_owner(self, token: str) -> Optional[str]:
        """The client a valid token was issued to; None for an unknown, expired or revoked one."""
        with self._lock:
            held = self._tokens.get(token)
            if held is None:
                return None
            expires_at, client_id = held
            if time.monotonic() >= expires_at:
                del self._tokens[token]
                return None
            return client_id

    def token_is_valid(self, token: str) -> bool:
        return self.token_owner(token) is not None

    def note_api_401(self) -> None:
        with self._lock:
            self._counts["api_401s"] += 1

    # -- control ------------------------------------------------------------------------------

    def stats(self) -> SandboxStats:
        with self._lock:
            return SandboxStats(**self._counts, token_requests_by_client=dict(self._by_client))

    def reset_stats(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(_COUNTERS, 0)
            self._by_client = dict.fromkeys(self._by_client, 0)

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Register another client of the company; an id already registered is a ValueError."""
        client_id, client_secret = check_client(client_id, client_secret)
        with self._lock:
            if client_id in self._secrets:
                raise ValueError(f"client {client_id!r} is already registered")
            self._secrets[client_id] = client_secret
            self._by_client[client_id] = 0

    def revoke_all_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._prune_at = PRUNE_THRESHOLD

    def reset_secret(self, new_secret: str, client_id: Optional[str] = None) -> None:
        """Accept only ``new_secret`` from ``client_id`` (default: the default client)."""
        if not isinstance(new_secret, str) or not new_secret:
            raise ValueError("new_secret must be a non-empty string")
        target = self.client_id if client_id is None else client_id
        with self._lock:
            if target not in self._secrets:
                raise ValueError(f"no client {target!r} is registered")
            self._secrets[target] = new_secret

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
