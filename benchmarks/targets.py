"""The bar our stacks are held to, checked against the figures of one run.

Every target yields PASS or MISS with the measured figure; a scenario that errored is a MISS
(the target was not shown to hold). Peers and baselines are never judged, only shown.
Comparisons with a baseline use the same stack's no-auth baseline from the same run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = [
    "HOOK_BUDGET_NS",
    "LOOP_STALL_TOLERANCE",
    "ROTATION_MAX_FACTOR",
    "ROTATION_P99_FACTOR",
    "TargetResult",
    "evaluate",
]

#: Allowed extra in-process cost per request over the fixed-header hook, by stack.
HOOK_BUDGET_NS: Dict[str, float] = {
    "navro-requests": 500.0,
    "navro-aiohttp": 500.0,
    "navro-httpx": 1000.0,
    "navro-httpx-async": 1000.0,
}
ROTATION_P99_FACTOR = 1.10  # p99 in the rotation windows, against the baseline's same windows
ROTATION_MAX_FACTOR = 1.5  # max in the rotation windows, likewise
#: "No worse than the baseline" for the event-loop stall, read with the same 1.5x noise
#: allowance as the max latency: a single stall on a shared 2-core host varies that much.
LOOP_STALL_TOLERANCE = 1.5


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


def evaluate(stacks: List[Dict[str, Any]]) -> List[TargetResult]:
    """Every target for every stack of ours that ran."""
    by_key = {stack["key"]: stack for stack in stacks}
    results: List[TargetResult] = []
    for stack in stacks:
        if stack["role"] == "ours" and stack["status"] == "ok":
            results += _stack_targets(stack, by_key.get(stack.get("baseline") or ""))
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


def _no_401(s: Dict[str, Any]) -> Tuple[bool, str]:
    return (
        s["callers_401"] == 0,
        f"{s['callers_401']} at callers ({s['server_api_401s']} answered at the server)",
    )


def _storm(s: Dict[str, Any]) -> Tuple[bool, str]:
    return (
        s["token_requests"] == 1 and s["failed"] == 0,
        f"{s['token_requests']} token request(s), {s['failed']} failed of {s['callers']} "
        f"({s['in_flight_at_revocation']} in flight)",
    )


def _stall_check(baseline: Optional[Dict[str, Any]]) -> Check:
    def check(s: Dict[str, Any]) -> Tuple[bool, str]:
        if not _ok(baseline):
            return False, f"{_fmt(s.get('loop_stall_max_ms'))}; baseline missing"
        assert baseline is not None
        ours, theirs = s["loop_stall_max_ms"], baseline["loop_stall_max_ms"]
        return ours <= theirs * LOOP_STALL_TOLERANCE, f"{_fmt(ours)} vs baseline {_fmt(theirs)}"

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
            f"{hook['extra_ns']:+.0f} ns ({hook['stack_ns']:.0f} vs {hook['fixed_ns']:.0f} "
            "ns/call)",
        )

    return check


def _stack_targets(stack: Dict[str, Any], baseline: Optional[Dict[str, Any]]) -> List[TargetResult]:
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
        _judge(key, "expiry: zero 401s at callers", contention, _no_401),
    ]
    if stack["kind"] == "tasks":
        base_contention = baseline["scenarios"].get("contention") if baseline else None
        results.append(
            _judge(
                key,
                f"expiry: loop stall <= baseline (x{LOOP_STALL_TOLERANCE:g} allowance)",
                contention,
                _stall_check(base_contention),
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
    budget = HOOK_BUDGET_NS.get(key)
    if budget is not None:
        results.append(
            _judge(
                key,
                f"overhead: hook within {budget / 1000:g} us of the fixed-header hook",
                scenarios.get("overhead"),
                _hook_check(budget),
            )
        )
    results.append(
        _judge(key, "revocation storm: 1 token request, 0 failed", scenarios.get("storm"), _storm)
    )
    return results
