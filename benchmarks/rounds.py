"""Several rounds of the same run, combined: every figure as its median with its min and max.

Each round runs every stack (see :mod:`benchmarks.runner`). :func:`combine` merges the rounds'
analysed stacks into one list of the same shape in which every number becomes a *figure*,
``{"median": m, "min": a, "max": b, "rounds": n}``; lists (latency bins, rotation offsets,
timing samples) and text come from the first round that has them, so the plot shows one real
round. A scenario that failed in some rounds is combined from the rounds where it ran
(``rounds_ok`` says how many); one that failed in every round keeps the first failure.
:func:`median_view` turns figures back into plain numbers (their medians) for the targets.
"""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["FIGURE_KEYS", "combine", "is_figure", "median_view", "per_round"]

FIGURE_KEYS = frozenset({"median", "min", "max", "rounds"})


def is_figure(value: Any) -> bool:
    """Whether ``value`` is a combined figure (see the module docstring)."""
    return isinstance(value, dict) and set(value) == FIGURE_KEYS


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _merge(values: Sequence[Any]) -> Any:
    present = [value for value in values if value is not None]
    if not present:
        return None
    first = present[0]
    if all(_is_number(value) for value in present):
        return {
            "median": statistics.median(present),
            "min": min(present),
            "max": max(present),
            "rounds": len(present),
        }
    if isinstance(first, dict):
        keys: List[str] = []
        for value in present:
            if isinstance(value, dict):
                keys += [key for key in value if key not in keys]
        return {
            key: _merge([value.get(key) for value in present if isinstance(value, dict)])
            for key in keys
        }
    return first  # lists, text, flags: the first round's


def _ok(section: Any) -> bool:
    return isinstance(section, dict) and section.get("status", "ok") == "ok"


def combine(rounds: Sequence[Sequence[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """One stack list of figures from every round's stack list (same stacks, same order)."""
    combined: List[Dict[str, Any]] = []
    for stack in rounds[0]:
        versions = [s for stacks in rounds for s in stacks if s["key"] == stack["key"]]
        ran = [s for s in versions if s["status"] == "ok"]
        if not ran:
            combined.append(dict(versions[0], rounds_ok=0))
            continue
        merged = {key: value for key, value in ran[0].items() if key != "scenarios"}
        merged["rounds_ok"] = len(ran)
        merged["seconds"] = _merge([s.get("seconds") for s in ran])
        scenarios: Dict[str, Any] = {}
        for name in ran[0].get("scenarios", {}):
            sections = [s["scenarios"].get(name) for s in ran]
            good = [section for section in sections if _ok(section)]
            if good:
                scenarios[name] = dict(_merge(good), status="ok", rounds_ok=len(good))
            else:
                scenarios[name] = dict(sections[0] or {}, rounds_ok=0)
        merged["scenarios"] = scenarios
        combined.append(merged)
    return combined


def median_view(value: Any) -> Any:
    """``value`` with every figure replaced by its median (the numbers targets judge)."""
    if is_figure(value):
        return value["median"]
    if isinstance(value, dict):
        return {key: median_view(item) for key, item in value.items()}
    if isinstance(value, list):
        return [median_view(item) for item in value]
    return value


def per_round(
    rounds: Sequence[Sequence[Dict[str, Any]]], key: str, scenario: str, figure: str
) -> List[Optional[Any]]:
    """``figure`` of ``scenario`` for stack ``key`` in each round (``None``: it did not run)."""
    values: List[Optional[Any]] = []
    for stacks in rounds:
        found: Optional[Any] = None
        for stack in stacks:
            if stack["key"] == key and stack["status"] == "ok":
                section = stack["scenarios"].get(scenario)
                if _ok(section):
                    found = section.get(figure)
        values.append(found)
    return values
