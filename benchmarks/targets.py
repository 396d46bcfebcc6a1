"""The bar our stacks are held to, checked against the figures of a run's rounds.

Every target yields PASS or MISS with the measured figure; a scenario that errored is a MISS
(the target was not shown to hold). Peers and baselines are never judged, only shown.
Comparisons with a baseline use the same stack's no-auth baseline from the same run.
Targets are judged on the medians over the rounds (:func:`benchmarks.rounds.median_view`),
except "zero 401s at callers", which must hold in every round.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .rounds import median_view, per_round

__all__ = [
    "LOOP_LAG_ALLOWANCE_MS",
    "SAME_JOB_BUDGET_NS",
    "ROTATION_MAX_FACTOR",
    "ROTATION_P99_FACTOR",
    "TargetResult",
    "evaluate",
]

#: Allowed extra in-process cost per request over the hand-written same-job hook
#: (:mod:`benchmarks.hooks`), by stack: the performance issue's targets.
SAME_JOB_BUDGET_NS: Dict[str, float] = {
    "navro-requests": 300.0,
    "navro-niquests": 300.0,
    "navro-niquests-async": 300.0,
    "navro-aiohttp": 300.0,
    "navro-httpx": 500.0,
    "navro-httpx-async": 500.0,
}
ROTATION_P99_FACTOR = 1.10  # p99 in the rotation windows, against the baseline's same windows
ROTATION_MAX_FACTOR = 1.5  # max in the rotation windows, likewise
#: Acquiring a token may add at most this much to the event loop's worst lag around
#: rotations, over the no-auth baseline's worst lag in the same windows (the issue's 1 ms).
LOOP_LAG_ALLOWANCE_MS = 1.0


@dataclass
class TargetResult:
    stack: str
    target: str
    measured: str
    result: str  # "PASS" or "MISS"

    def to_dict(self) -> Dict[str, str]:
        return asdict(self)


def _ok(section: Optional[Dict[str, Any]]) -> bool:
    return section is not None and section.get("status", "ok") == "ok"


def _error(section: Optional[Dict[str, Any]]) -> str:
    if section is None:
        return "not run"
    return f"{section.get('status')}: {section.get('error', section.get('reason', ''))}"


def _fmt(value: Optional[float], unit: str = "ms") -> str:
    return "n/a" if value is None else f"{value:.1f} {unit}"


def evaluate(
    combined: List[Dict[str, Any]], rounds: Sequence[Sequence[Dict[str, Any]]]
) -> List[TargetResult]:
    """Every target for every stack of ours that ran, on the medians of ``combined`` (see
    :func:`benchmarks.rounds.combine`); the 401 target on each of ``rounds``."""
    stacks = median_view(combined)
    by_key = {stack["key"]: stack for stack in stacks}
    results: List[TargetResult] = []
    for stack in stacks:
        if stack["role"] == "ours" and stack["status"] == "ok":
            results += _stack_targets(stack, by_key.get(stack.get("baseline") or ""), rounds)
    return results


Check = Callable[[Dict[str, Any]], Tuple[bool, str]]


def _judge(
    stack: str, target: str, section: Optional[Dict[str, Any]], check: Check
) -> TargetResult:
    if not _ok(section):
        return TargetResult(stack, target, _error(section), "MISS")
    assert section is not None
    passed, measured = check(section)
    return TargetResult(stack, target, measured, "PASS" if passed else "MISS")


def _cold(s: Dict[str, Any]) -> Tuple[bool, str]:
    return (
        s["token_requests"] == 1 and s["failed"] == 0,
        f"{s['token_requests']} token request(s), {s['failed']} failed",
    )


def _token_requests(s: Dict[str, Any]) -> Tuple[bool, str]:
    return (
        s["token_requests"] <= s["ideal_token_requests"] + 1,
        f"{s['token_requests']} (ideal {s['ideal_token_requests']})",
    )


def _no_401_every_round(each: List[Optional[Any]]) -> Check:
    def check(s: Dict[str, Any]) -> Tuple[bool, str]:
        shown = ", ".join("not run" if n is None else str(n) for n in each)
        return (
            bool(each) and all(n == 0 for n in each),
            f"{shown} at callers, by round (median {s['server_api_401s']:g} answered 401 at "
            "the server)",
        )

    return check


def _storm(s: Dict[str, Any]) -> Tuple[bool, str]:
    return (
        s["token_requests"] == 1 and s["failed"] == 0,
        f"{s['token_requests']} token request(s), {s['failed']} failed of {s['callers']} "
        f"({s['in_flight_at_revocation']} in flight)",
    )


def _lag_check(baseline: Optional[Dict[str, Any]]) -> Check:
    def check(s: Dict[str, Any]) -> Tuple[bool, str]:
        lag = s.get("loop_lag") or {}
        ours = lag.get("in_windows_max_ms")
        if ours is None:
            return False, "no rotation seen" if not s.get("rotations") else "no ticks"
        same = s.get("baseline_loop_lag_same_windows") or {}
        theirs = same.get("in_windows_max_ms")
        whole = f"; whole phase {_fmt(lag.get('phase_max_ms'))}"
        if theirs is None:
            return False, f"{_fmt(ours)}; baseline missing{whole}"
        if _ok(baseline) and baseline is not None:
            whole += f" vs {_fmt((baseline.get('loop_lag') or {}).get('phase_max_ms'))}"
        return (
            ours <= theirs + LOOP_LAG_ALLOWANCE_MS,
            f"{ours:.2f} ms vs baseline {theirs:.2f} ms in the same windows{whole}",
        )

    return check


def _rotation_check(figure: str, factor: float) -> Check:
    def check(s: Dict[str, Any]) -> Tuple[bool, str]:
        same = s.get("baseline_in_same_windows")
        if not s["rotations"]:
            return False, "no rotation seen"
        if not same or same.get(figure) is None:
            return False, "baseline missing"
        ours, theirs = s["in_windows"][figure], same[figure]
        return (
            ours <= theirs * factor,
            f"{_fmt(ours)} vs baseline {_fmt(theirs)} (x{ours / theirs:.2f})",
        )

    return check


def _hook_check(budget: float) -> Check:
    def check(s: Dict[str, Any]) -> Tuple[bool, str]:
        hook = s["hook"]
        return (
            hook["extra_ns"] <= budget,
            f"{hook['extra_ns']:+.0f} ns ({hook['stack_ns']:.0f} vs same-job "
            f"{hook['same_job_ns']:.0f} ns/call)",
        )

    return check


def _stack_targets(
    stack: Dict[str, Any],
    baseline: Optional[Dict[str, Any]],
    rounds: Sequence[Sequence[Dict[str, Any]]],
) -> List[TargetResult]:
    key = stack["key"]
    scenarios: Dict[str, Any] = stack["scenarios"]
    contention = scenarios.get("contention")
    results = [
        _judge(
            key,
            "cold start: exactly 1 token request, every caller answered 200",
            scenarios.get("cold"),
            _cold,
        ),
        _judge(key, "expiry: token requests <= ideal + 1", contention, _token_requests),
        _judge(
            key,
            "expiry: zero 401s at callers in every round",
            contention,
            _no_401_every_round(per_round(rounds, key, "contention", "callers_401")),
        ),
    ]
    if stack["kind"] == "tasks":
        base_contention = baseline["scenarios"].get("contention") if baseline else None
        results.append(
            _judge(
                key,
                f"rotation: worst loop lag <= baseline's in the same windows + "
                f"{LOOP_LAG_ALLOWANCE_MS:g} ms",
                contention,
                _lag_check(base_contention),
            )
        )
    results += [
        _judge(
            key,
            f"rotation: p99 <= {ROTATION_P99_FACTOR:g}x baseline",
            contention,
            _rotation_check("p99_ms", ROTATION_P99_FACTOR),
        ),
        _judge(
            key,
            f"rotation: max <= {ROTATION_MAX_FACTOR:g}x baseline",
            contention,
            _rotation_check("max_ms", ROTATION_MAX_FACTOR),
        ),
    ]
    budget = SAME_JOB_BUDGET_NS.get(key)
    if budget is not None:
        results.append(
            _judge(
                key,
                f"overhead: hook within {budget / 1000:g} us of the same-job hook",
                scenarios.get("overhead"),
                _hook_check(budget),
            )
        )
    results.append(
        _judge(key, "revocation storm: 1 token request, 0 failed", scenarios.get("storm"), _storm)
    )
    return results
