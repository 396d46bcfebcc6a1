"""A rejected secret under load: how many token requests, and how fast callers fail.

``python -m benchmarks.failfast [--rounds N] [--threads N] [--seconds S]``: each round starts a
sandbox whose secret was reset (every token request gets 401 ``invalid_client``), then
``threads`` threads call ``TokenProvider.get_token()`` in a loop for ``seconds``. Printed: token
requests per round and the latency of a failed call (median of each round's median, with the
min and max over rounds). Targets (the production issue): at most 6 token requests for 20
threads over 3 s, and a failed call returning in under 50 ms (median).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Dict, List, Optional, Sequence

from navro_adapters import Credentials, InvalidClientError, TokenProvider
from navro_adapters.sandbox import Sandbox

TARGET_TOKEN_REQUESTS = 6
TARGET_FAILED_CALL_MS = 50.0


def one_round(threads: int, seconds: float) -> Dict[str, float]:
    with Sandbox(client_secret="the-secret-after-the-reset", in_process=False) as sandbox:
        credentials = Credentials(
            sandbox.client_id, "the-secret-before-the-reset", sandbox.company,
            base_url=sandbox.base_url,
        )  # fmt: skip
        provider = TokenProvider(credentials)
        latencies: List[float] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def caller() -> None:
            mine: List[float] = []
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    provider.get_token()
                except InvalidClientError:
                    mine.append(time.perf_counter() - started)
                time.sleep(0.001)
            with lock:
                latencies.extend(mine)

        workers = [threading.Thread(target=caller) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return {
            "token_requests": float(sandbox.stats().token_requests),
            "failed_calls": float(len(latencies)),
            "median_ms": statistics.median(latencies) * 1000,
            "p99_ms": sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000,
        }


def _spread(values: Sequence[float]) -> str:
    return f"median {statistics.median(values):.3f}, min {min(values):.3f}, max {max(values):.3f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failfast", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    rounds = [one_round(args.threads, args.seconds) for _ in range(args.rounds)]
    requests = [r["token_requests"] for r in rounds]
    medians = [r["median_ms"] for r in rounds]
    print(f"{args.rounds} rounds, {args.threads} threads, {args.seconds:g} s, wrong secret")
    print(f"token requests per round: {_spread(requests)} (target <= {TARGET_TOKEN_REQUESTS})")
    print(f"failed calls per round: {_spread([r['failed_calls'] for r in rounds])}")
    print(f"failed call ms (round medians): {_spread(medians)} (target < {TARGET_FAILED_CALL_MS})")
    print(f"failed call ms (round p99s): {_spread([r['p99_ms'] for r in rounds])}")
    met = max(requests) <= TARGET_TOKEN_REQUESTS and statistics.median(medians) < 50.0
    print("targets:", "met" if met else "MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
