"""One process of a test fleet: ``python -m tests.stores.fleet_worker``.

The parent writes one JSON line of configuration to stdin (the client secret travels there,
never on the command line). The worker builds its provider and store, prints ``READY``, waits
for a ``GO`` line, runs, and prints ``RESULT <json>``. Along the way it prints ``LOCKED`` the
first time it takes the store's refresh lock and ``BLOCKED`` the first time a peer holds it,
so a test can kill the lock holder at the right moment.

Modes:

* ``fleet``: ``threads`` threads call ``get_token()`` for ``duration`` seconds (with a short
  think time) and call ``GET /v1/ping`` with the token every ``ping_every`` seconds.
* ``holder`` / ``peer``: ``threads`` threads call ``get_token()`` once each.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional

from navro_adapters import Credentials, RefreshPolicy, RetryPolicy, TokenProvider, TokenStore
from navro_adapters.errors import NavroAuthError
from navro_adapters.store import TokenRecord

THINK_TIME = 0.01  # seconds between two get_token() calls of one fleet thread
PING_TIMEOUT = 5.0  # seconds for one GET /v1/ping

_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class ReportingStore:
    """Delegates to a real store; announces the first LOCKED / BLOCKED outcome of try_lock."""

    def __init__(self, inner: TokenStore) -> None:
        self.inner = inner
        self._announced: set[str] = set()

    def _announce(self, word: str) -> None:
        with _print_lock:
            if word in self._announced:
                return
            self._announced.add(word)
        say(word)

    def load(self, key: str) -> Optional[TokenRecord]:
        return self.inner.load(key)

    def save(self, key: str, record: TokenRecord, ttl: float) -> None:
        self.inner.save(key, record, ttl)

    def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        taken = self.inner.try_lock(key, owner, ttl)
        self._announce("LOCKED" if taken else "BLOCKED")
        return taken

    def unlock(self, key: str, owner: str) -> None:
        self.inner.unlock(key, owner)


def build_store(config: Dict[str, Any]) -> Optional[TokenStore]:
    kind = config["store"]
    if kind == "none":
        return None
    if kind == "file":
        from navro_adapters.stores import FileStore

        return ReportingStore(FileStore(config["store_path"]))
    from navro_adapters.stores import RedisStore

    return ReportingStore(RedisStore(config["redis_url"], key_prefix=config["key_prefix"]))


def build_provider(config: Dict[str, Any]) -> TokenProvider:
    credentials = Credentials(
        config["client_id"], config["client_secret"], config["company"], base_url=config["base_url"]
    )
    return TokenProvider(
        credentials,
        store=build_store(config),
        store_wait=config.get("store_wait"),
        store_clock_skew=config.get("store_clock_skew", 5.0),
        refresh_policy=RefreshPolicy(
            refresh_fraction=config.get("refresh_fraction", 0.2),
            expiry_fraction=config.get("expiry_fraction", 0.05),
        ),
        retry_policy=RetryPolicy(
            deadline=config.get("deadline", 30.0),
            attempt_timeout=config.get("attempt_timeout", 10.0),
        ),
    )


def run_fleet(provider: TokenProvider, config: Dict[str, Any]) -> Dict[str, Any]:
    ping_url = provider.credentials.base_url + "/v1/ping"
    end_at = time.monotonic() + config["duration"]
    lock = threading.Lock()
    totals = {
        "calls": 0,
        "served_expired": 0,
        "pings": 0,
        "ping_401s": 0,
        "ping_errors": 0,
        "errors": 0,
    }
    fingerprints: set[str] = set()

    def loop(index: int) -> None:
        counts = dict.fromkeys(totals, 0)
        seen: set[str] = set()
        # Stagger the pings so 25 threads do not all hit the API in the same instant.
        next_ping = time.monotonic() + config["ping_every"] * index / config["threads"]
        while time.monotonic() < end_at:
            try:
                token = provider.get_token()
            except NavroAuthError:
                counts["errors"] += 1
                time.sleep(THINK_TIME)
                continue
            if time.monotonic() >= token.expires_at:
                counts["served_expired"] += 1  # the provider's promise, whatever the load
            counts["calls"] += 1
            seen.add(token.fingerprint)
            if time.monotonic() >= next_ping:
                next_ping += config["ping_every"]
                counts["pings"] += 1
                request = urllib.request.Request(
                    ping_url, headers={"Authorization": token.authorization}
                )
                try:
                    with urllib.request.urlopen(request, timeout=PING_TIMEOUT) as response:
                        response.read()
                except urllib.error.HTTPError as exc:
                    if exc.code == 401:
                        counts["ping_401s"] += 1
                        provider.invalidate(token)
                    else:
                        counts["ping_errors"] += 1
                except OSError:
                    counts["ping_errors"] += 1
            time.sleep(THINK_TIME)
        with lock:
            for name, value in counts.items():
                totals[name] += value
            fingerprints.update(seen)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(config["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {**totals, "tokens_seen": len(fingerprints)}


def run_once_each(provider: TokenProvider, config: Dict[str, Any]) -> Dict[str, Any]:
    results: List[Dict[str, Any]] = []
    lock = threading.Lock()

    def one() -> None:
        started = time.monotonic()
        try:
            token = provider.get_token()
            outcome: Dict[str, Any] = {"fingerprint": token.fingerprint}
        except NavroAuthError as exc:
            outcome = {"error": type(exc).__name__}
        outcome["elapsed"] = time.monotonic() - started
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(config["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"results": results}


def main() -> int:
    config = json.loads(sys.stdin.readline())
    provider = build_provider(config)
    say("READY")
    if sys.stdin.readline().strip() != "GO":
        return 1
    if config["mode"] == "fleet":
        result = run_fleet(provider, config)
    else:
        result = run_once_each(provider, config)
    result["token_requests"] = provider.stats.token_requests
    say("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
