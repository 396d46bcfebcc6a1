"""From raw contention records to figures: percentiles, rotations, windows, bins.

A record is ``[start offset, latency, status, auth id, error index]``, offsets in seconds from
the start of the load. A *rotation* is the first moment a new Authorization value was sent:
the earliest start among the requests that carried it (the first value, the warm token, is
not a rotation). A request is *in a rotation window* when its lifetime overlaps
``[rotation - window, rotation + window]``. The baseline of a stack is looked at through the
same windows (same offsets), so both are compared over the same stretch of load.

Asyncio stacks also carry the event-loop ticker's ticks ``[due offset, lag]``: a tick is in a
window when ``[due, due + lag]`` overlaps it, and the worst lag is reported in the windows,
outside them and over the whole phase (the baseline's through our windows too).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Dict, List, Optional, Sequence

__all__ = [
    "analyse_contention",
    "ideal_token_requests",
    "loop_lag",
    "percentile",
    "rotations_of",
    "window_split",
]

MAX_ROTATIONS_KEPT = 200  # rotation offsets stored in the results JSON (all are used)


def percentile(values: Sequence[float], fraction: float) -> Optional[float]:
    """Nearest-rank percentile of ``values`` (``None`` when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else value * 1000.0


def rotations_of(records: Sequence[Sequence[Any]]) -> List[float]:
    """Offsets at which each new Authorization value was first sent (see module docstring)."""
    first_start: Dict[int, float] = {}
    for record in records:
        auth = int(record[3])
        if auth == 0:
            continue
        start = float(record[0])
        if auth not in first_start or start < first_start[auth]:
            first_start[auth] = start
    starts = sorted(first_start.values())
    return starts[1:]


def window_split(
    records: Sequence[Sequence[Any]], rotations: Sequence[float], window: float
) -> Dict[str, List[float]]:
    """Latencies of the requests inside and outside the rotation windows."""
    inside: List[float] = []
    outside: List[float] = []
    for record in records:
        start, latency = float(record[0]), float(record[1])
        index = bisect.bisect_left(rotations, start - window)
        if index < len(rotations) and rotations[index] <= start + latency + window:
            inside.append(latency)
        else:
            outside.append(latency)
    return {"inside": inside, "outside": outside}


def loop_lag(
    ticks: Sequence[Sequence[float]], rotations: Sequence[float], window: float
) -> Dict[str, Optional[float]]:
    """The ticker's worst lag (ms) in the rotation windows, outside them and over the phase."""
    inside = [0.0]
    outside = [0.0]
    for due, lag in ticks:
        index = bisect.bisect_left(rotations, due - window)
        hit = index < len(rotations) and rotations[index] <= due + lag + window
        (inside if hit else outside).append(lag)
    return {
        "in_windows_max_ms": _ms(max(inside)) if rotations else None,
        "outside_windows_max_ms": _ms(max(outside)),
        "phase_max_ms": _ms(max(inside + outside)),
        "ticks": float(len(ticks)),
    }


def ideal_token_requests(duration: float, ttl: float, warm_token_age: float) -> int:
    """The fewest token requests that keep a valid token through the whole load.

    The warm token still has ``ttl - warm_token_age`` to live when the load starts; every new
    token covers at most ``ttl`` more.
    """
    uncovered = duration - max(0.0, ttl - warm_token_age)
    return max(0, math.ceil(uncovered / ttl - 1e-9))


def _bins(records: Sequence[Sequence[Any]], width: float, duration: float) -> Dict[str, Any]:
    count = max(1, math.ceil(duration / width))
    buckets: List[List[float]] = [[] for _ in range(count)]
    unauthorized = [0] * count
    for record in records:
        index = min(count - 1, max(0, int(float(record[0]) / width)))
        buckets[index].append(float(record[1]))
        if int(record[2]) == 401:
            unauthorized[index] += 1
    return {
        "width_s": width,
        "p50_ms": [_ms(percentile(b, 0.50)) for b in buckets],
        "p99_ms": [_ms(percentile(b, 0.99)) for b in buckets],
        "max_ms": [_ms(max(b)) if b else None for b in buckets],
        "requests": [len(b) for b in buckets],
        "callers_401": unauthorized,
    }


def _latency_figures(latencies: Sequence[float]) -> Dict[str, Optional[float]]:
    return {
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        "count": float(len(latencies)),
    }


def analyse_contention(
    raw: Dict[str, Any],
    *,
    duration: float,
    ttl: float,
    window: float,
    bin_width: float,
    is_baseline: bool,
    baseline_raw: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The contention figures of one stack (and of its baseline through the same windows)."""
    records: List[List[Any]] = raw["records"]
    names: List[str] = raw.get("error_names", [""])
    latencies = [float(r[1]) for r in records]
    statuses = [int(r[2]) for r in records]
    errors: Dict[str, int] = {}
    for record in records:
        status, error = int(record[2]), int(record[4])
        if status not in (200, 401):
            key = names[error] if error else f"HTTP {status}"
            errors[key] = errors.get(key, 0) + 1
    rotations = rotations_of(records)
    split = window_split(records, rotations, window)
    warm_age = float(raw.get("warm_token_age_at_start", 0.0))
    result: Dict[str, Any] = {
        "status": raw.get("status", "ok"),
        "duration_s": duration,
        "token_ttl_s": ttl,
        "token_requests": raw["token_requests"],
        "ideal_token_requests": None
        if is_baseline
        else ideal_token_requests(duration, ttl, warm_age),
        "warm_token_age_at_start_s": warm_age,
        "requests_completed": sum(1 for s in statuses if s == 200),
        "callers_401": sum(1 for s in statuses if s == 401),
        "server_api_401s": raw.get("server_api_401s"),
        "other_errors": sum(errors.values()),
        "errors": errors,
        "latency": _latency_figures(latencies),
        "rotations": len(rotations),
        "rotation_offsets_s": rotations[:MAX_ROTATIONS_KEPT],
        "window_s": window,
        "in_windows": _latency_figures(split["inside"]),
        "outside_windows": _latency_figures(split["outside"]),
        "bins": _bins(records, bin_width, duration),
    }
    for name in ("loop_stall_max_ms", "loop_stalls_over_50ms", "stuck_callers"):
        if name in raw:
            result[name] = raw[name]
    if "ticks" in raw:
        result["loop_lag"] = loop_lag(raw["ticks"], rotations, window)
    if baseline_raw is not None and rotations:
        same = window_split(baseline_raw["records"], rotations, window)
        result["baseline_in_same_windows"] = _latency_figures(same["inside"])
        if "ticks" in baseline_raw:
            result["baseline_loop_lag_same_windows"] = loop_lag(
                baseline_raw["ticks"], rotations, window
            )
    return result
