"""The knobs of a benchmark run, with the full and ``--quick`` settings.

A :class:`BenchConfig` travels from the runner to each worker process as JSON, so every stack
of a run sees exactly the same settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping

__all__ = ["PEER_DEFAULT_TOKEN_LIFETIME", "BenchConfig"]

#: Peers' default safety margins (requests-auth/httpx-auth ``early_expiry=30``, Authlib
#: ``leeway=60``) are sized for real tokens. Navro's live 300 s; when the benchmark shrinks the
#: lifetime it shrinks those margins in the same proportion, as a user tuning them would.
PEER_DEFAULT_TOKEN_LIFETIME = 300.0  # seconds, per Navro's document


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run depends on. Durations in seconds."""

    token_latency: float = 0.050  # the sandbox waits this long before answering a token POST
    threads: int = 50  # concurrent callers for thread-based stacks
    tasks: int = 200  # concurrent callers for asyncio stacks
    long_ttl: float = 300.0  # token lifetime outside the expiry scenario (Navro's)
    baseline_ttl: float = 3600.0  # lifetime of the baseline's fixed token: outlives the run
    contention_ttl: float = 2.0  # token lifetime in the expiry-contention scenario
    contention_duration: float = 6.0  # seconds of continuous load in that scenario
    rotation_window: float = 0.25  # seconds either side of a token rotation
    ticker_interval: float = 0.005  # the event-loop ticker sleeps this long between ticks
    bin_seconds: float = 0.1  # width of the latency-over-time bins (plot, JSON)
    storm_requests: int = 200  # requests in flight when every token is revoked
    storm_delay: float = 2.0  # the sandbox holds each of them this long before answering
    #: After the delay, callers still unanswered this much later are reported stuck. Longer
    #: than the default retry deadline (30 s), so a stack that gives up shows its own error.
    storm_grace: float = 45.0
    overhead_number: int = 100_000  # calls per timing loop of the in-process hook cost
    overhead_repeats: int = 7  # timing loops per hook (median reported)
    network_rounds: int = 10  # alternating rounds, auth hook vs fixed header, same client
    network_requests: int = 100  # sequential requests per round
    request_timeout: float = 30.0  # per API request
    worker_timeout: float = 240.0  # per stack process
    rounds: int = 3  # every stack runs once per round; figures are medians over the rounds
    fleet_processes: int = 4  # the fleet at scale: processes ...
    fleet_tasks: int = 250  # ... x asyncio tasks, each a worker with its own TokenProvider
    fleet_ttl: float = 3.0  # token lifetime in the fleet
    fleet_lifetimes: float = 3.0  # how many lifetimes each fleet runs
    #: The no-store fleets that show the refresh jitter use longer tokens: the jitter spreads
    #: refreshes over a share of the lifetime, and a 3 s token has no second to spread over.
    fleet_jitter_ttl: float = 30.0
    fleet_jitter_lifetimes: float = 1.0  # each provider's first refresh falls in it
    quick: bool = False

    @classmethod
    def quick_config(cls) -> BenchConfig:
        """A reduced run for smoke tests: same scenarios, smaller and shorter."""
        return cls(
            token_latency=0.020,
            threads=10,
            tasks=20,
            contention_ttl=0.5,
            rotation_window=0.1,
            bin_seconds=0.05,
            contention_duration=0.8,
            storm_requests=20,
            storm_delay=0.3,
            storm_grace=2.0,
            overhead_number=2_000,
            overhead_repeats=3,
            network_rounds=2,
            network_requests=5,
            worker_timeout=60.0,
            rounds=1,
            fleet_processes=2,
            fleet_tasks=50,
            fleet_ttl=1.0,
            fleet_jitter_ttl=2.0,
            quick=True,
        )

    @property
    def pool_size(self) -> int:
        """Connection-pool size for every client: enough for the largest concurrency used.

        Applied to the auth stacks and their baselines alike; with a smaller pool the storm's
        requests would queue in the client instead of being in flight at the server.
        """
        return max(self.threads, self.tasks, self.storm_requests)

    def peer_margin_scale(self, token_ttl: float) -> float:
        """The factor applied to a peer's default expiry margin for tokens of ``token_ttl``."""
        return min(1.0, token_ttl / PEER_DEFAULT_TOKEN_LIFETIME)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchConfig:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})
