"""Render a run: markdown tables (the full report and the README section).

Figures combined over rounds (:mod:`benchmarks.rounds`) show as ``median (min-max)``; a run
of one round, or an older results file of plain numbers, shows the number alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .rounds import is_figure

__all__ = [
    "README_BEGIN",
    "README_END",
    "attach_causes",
    "readme_section",
    "render_markdown",
    "section_of",
    "state_of",
    "update_readme",
]

NONE = "-"  # a cell with no figure
README_BEGIN = "<!-- bench-table -->"
README_END = "<!-- /bench-table -->"


def _one(value: float, digits: int, signed: bool) -> str:
    return f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"


def _num(value: Any, digits: int = 1, signed: bool = False) -> str:
    """A number, or a figure as ``median (min-max)`` when it spans several rounds."""
    if value is None:
        return NONE
    if is_figure(value):
        text = _one(value["median"], digits, signed)
        if value["rounds"] > 1:
            low, high = _one(value["min"], digits, signed), _one(value["max"], digits, signed)
            text += f" ({low}-{high})"
        return text
    return _one(float(value), digits, signed)


def _worst(value: Any) -> float:
    """The largest value a figure took over the rounds (a plain number is itself)."""
    if is_figure(value):
        return float(value["max"])
    return 0.0 if value is None else float(value)


def section_of(stack: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    section = stack.get("scenarios", {}).get(name)
    return section if isinstance(section, dict) else None


def state_of(section: Optional[Dict[str, Any]]) -> Optional[str]:
    """``None`` when the section has figures, else a short reason to show instead."""
    if section is None:
        return NONE
    status = section.get("status", "ok")
    if status == "ok":
        return None
    if status == "n/a":
        return "n/a"
    return "error: " + str(section.get("error", ""))[:60]


def _counts(counts: Dict[str, Any]) -> str:
    return ", ".join(f"{_num(n, 0)}x {name}" for name, n in counts.items())


def _cold_cell(stack: Dict[str, Any]) -> str:
    section = section_of(stack, "cold")
    state = state_of(section)
    if state is not None or section is None:
        return state or NONE
    text = f"{_num(section['token_requests'], 0)} ({_num(section['seconds_to_last_answer'], 2)} s)"
    if _worst(section["failed"]):
        errors = _counts(section["errors"]) or "non-200"
        text += (
            f"; **{_num(section['failed'], 0)}/{_num(section['callers'], 0)} failed** ({errors})"
        )
    return text


def _storm_cell(stack: Dict[str, Any]) -> str:
    section = section_of(stack, "storm")
    state = state_of(section)
    if state is not None or section is None:
        return state or NONE
    text = f"{_num(section['token_requests'], 0)} / {_num(section['failed'], 0)}"
    if _worst(section["failed"]):
        reasons = dict(section["errors"])
        for status, count in section["statuses"].items():
            if status not in ("200", "0"):
                reasons[f"HTTP {status}"] = count
        text += f" ({_counts(reasons)})"
    return text


def _pair(figures: Optional[Dict[str, Any]]) -> str:
    if not figures:
        return NONE
    return f"{_num(figures.get('p99_ms'))} / {_num(figures.get('max_ms'))}"


def _lag_cells(section: Dict[str, Any]) -> List[str]:
    lag = section.get("loop_lag")
    if not lag:
        return [NONE, NONE]
    around = _num(lag.get("in_windows_max_ms"), 2)
    same = section.get("baseline_loop_lag_same_windows")
    if same:
        around += f" ({_num(same.get('in_windows_max_ms'), 2)})"
    return [around, _num(lag.get("phase_max_ms"), 2)]


def _contention_cells(stack: Dict[str, Any]) -> List[str]:
    section = section_of(stack, "contention")
    state = state_of(section)
    if state is not None or section is None:
        return [state or NONE] + [NONE] * 8
    ideal = section.get("ideal_token_requests")
    tokens = _num(section["token_requests"], 0) + ("" if ideal is None else f" ({_num(ideal, 0)})")
    latency = section["latency"]
    if _worst(section["rotations"]):
        rotation = _pair(section["in_windows"])
        same = section.get("baseline_in_same_windows")
        if same:
            rotation += f" ({_pair(same)})"
    else:
        rotation = "no rotation"
    return [
        tokens,
        _num(section["callers_401"], 0),
        _num(section["other_errors"], 0),
        _num(section["requests_completed"], 0),
        f"{_num(latency['p50_ms'])} / {_num(latency['p99_ms'])} / {_num(latency['max_ms'])}",
        rotation,
        *_lag_cells(section),
    ]


def _status_cell(stack: Dict[str, Any]) -> str:
    if stack["status"] == "ok":
        return str(stack["label"])
    return f"{stack['label']} - **{stack['status']}**: {stack.get('detail', '')}"


def main_table(stacks: Sequence[Dict[str, Any]], config: Dict[str, Any]) -> List[str]:
    threads, tasks = config["threads"], config["tasks"]
    ttl, duration = config["contention_ttl"], config["contention_duration"]
    header = [
        "stack",
        f"cold start ({threads} threads / {tasks} tasks): token requests (last answer)",
        f"expiry, TTL {ttl:g} s, {duration:g} s: token requests (ideal)",
        "401s at callers",
        "other errors",
        "requests done",
        "latency, whole phase: p50 / p99 / max ms",
        "around rotations: p99 / max ms (baseline, same windows)",
        "loop lag max ms around rotations (baseline, same windows)",
        "loop lag max ms, whole phase",
        f"revocation storm ({config['storm_requests']} in flight): token requests / failed",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for stack in stacks:
        if stack["status"] != "ok":
            lines.append("| " + _status_cell(stack) + " |" + " - |" * (len(header) - 1))
            continue
        cells = [
            _status_cell(stack),
            _cold_cell(stack),
            *_contention_cells(stack),
            _storm_cell(stack),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def overhead_table(stacks: Sequence[Dict[str, Any]]) -> List[str]:
    lines = [
        "| stack | hook timed | ours ns/call | same-job hook ns/call | difference ns | "
        "network µs/request: stack / fixed header (extra) |",
        "|---|---|---|---|---|---|",
    ]
    for stack in stacks:
        section = section_of(stack, "overhead")
        if stack["status"] != "ok" or section is None or section.get("status") == "n/a":
            continue
        state = state_of(section)
        if state is not None:
            lines.append(f"| {stack['label']} | {state} | - | - | - | - |")
            continue
        hook = section.get("hook")
        network = section.get("network")
        hook_cells = (
            [
                f"`{hook['hook']}`",
                _num(hook["stack_ns"], 0),
                _num(hook.get("same_job_ns", hook.get("fixed_ns")), 0),
                _num(hook["extra_ns"], 0, signed=True),
            ]
            if hook
            else ["not timed (no public hook to call alone)", NONE, NONE, NONE]
        )
        net_cell = (
            f"{_num(network['stack_us'], 0)} / {_num(network['fixed_us'], 0)} "
            f"({_num(network['extra_us'], 0, signed=True)})"
            if network
            else NONE
        )
        lines.append("| " + " | ".join([stack["label"], *hook_cells, net_cell]) + " |")
    return lines


def targets_table(targets: Sequence[Dict[str, str]]) -> List[str]:
    with_causes = any(target.get("cause") for target in targets)
    header = "| stack | target | measured | result |" + (" cause found |" if with_causes else "")
    lines = [header, "|---|---|---|---|" + ("---|" if with_causes else "")]
    for target in targets:
        result = target["result"] if target["result"] == "PASS" else f"**{target['result']}**"
        line = f"| {target['stack']} | {target['target']} | {target['measured']} | {result} |"
        if with_causes:
            line += f" {target.get('cause', '')} |"
        lines.append(line)
    return lines


def attach_causes(targets: List[Dict[str, str]], causes: Dict[str, str]) -> None:
    """Add the investigated cause to each MISS whose ``"stack|target prefix"`` key matches.

    ``causes`` comes from ``causes.json`` in the results directory, written by whoever
    investigated the misses of a run, so the table says why and not only what.
    """
    for target in targets:
        if target["result"] == "PASS":
            continue
        for key, cause in causes.items():
            stack, _, prefix = key.partition("|")
            if target["stack"] == stack and target["target"].startswith(prefix):
                target["cause"] = cause
                break


def _fleet_row(name: str, run: Dict[str, Any]) -> str:
    if run.get("status") != "ok":
        return f"| {name} | {run.get('status')}: {run.get('error', '')} |" + " - |" * 6
    spread = run.get("refresh_spread") or {}
    return (
        f"| {name} | {run['processes']} x {run['tasks_per_process']} = {run['workers']} | "
        f"{run['ttl']:g} s x {run['duration'] / run['ttl']:g} | {run['token_requests']} | "
        f"{_num(run.get('token_requests_per_lifetime'), 2)} | "
        f"{_num(run.get('redis_commands_per_worker_lifetime'), 2)} | "
        f"{_num(run.get('store_call_p99_ms'), 2)} | "
        f"{_num(spread.get('range_s'), 2)} / {_num(spread.get('stdev_s'), 3)} / "
        f"{_num(spread.get('busiest_second'), 0)} |"
    )


def fleet_table(fleet: Dict[str, Any]) -> List[str]:
    """The fleets at scale (:mod:`benchmarks.fleet_runs`), plus the thread fleet if it ran."""
    lines = [
        "| fleet | processes x tasks | TTL x lifetimes | token requests | per lifetime "
        "(target 1 with a store) | Redis commands per worker per lifetime, steady (target "
        "<= 3) | store call p99 ms | refresh spread per generation: range s / stdev s / "
        "busiest second |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if "redis" in fleet:
        lines.append(_fleet_row("RedisStore, shared", fleet["redis"]))
    for key, name in (("without", "no store, refresh_jitter=0.0"), ("with", "no store, default")):
        run = (fleet.get("jitter") or {}).get(key)
        if run is not None:
            lines.append(_fleet_row(name, run))
    threads = fleet.get("threads")
    if threads:
        lines += ["", "Thread fleet (benchmarks/fleet.py):", ""]
        lines += [
            "| store | processes x threads | token requests | per lifetime | 401s | errors |",
            "|---|---|---|---|---|---|",
        ]
        for run in threads["runs"]:
            if "error" in run:
                lines.append(f"| {run['store']} | error: {run['error']} | - | - | - | - |")
                continue
            lines.append(
                f"| {run['store']} | {run['processes']} x {run['threads']} | "
                f"{run['token_requests']} | {_num(run['token_requests_per_lifetime'], 2)} | "
                f"{run['api_401s']} | {run['errors']} |"
            )
    return lines


def conditions_line(meta: Dict[str, Any], config: Dict[str, Any]) -> str:
    load = meta.get("load_average_start")
    load_end = meta.get("load_average_end")
    load_text = (
        f"load average {load[0]:.1f} at start, {load_end[0]:.1f} at end"
        if load and load_end
        else "load average unknown"
    )
    text = (
        f"Run {meta['started_utc']} on {meta['cpu_count']} CPU cores ({meta['platform']}), "
        f"Python {meta['python']}, {load_text}; token endpoint latency "
        f"{config['token_latency'] * 1000:g} ms; {'quick' if config['quick'] else 'full'} run "
        f"(`python -m benchmarks{' --quick' if config['quick'] else ''}`), "
        f"{config.get('rounds', 1)} round(s): each figure is `median (min-max)` over them."
    )
    if meta.get("note"):
        text += f" {meta['note']}"
    return text


def readme_section(document: Dict[str, Any], *, all_targets: bool = False) -> str:
    """The markdown that goes between the README markers (and in ``README-table.md``): the
    tables and the misses; ``all_targets`` lists every target (the full report)."""
    config, meta = document["config"], document["meta"]
    targets = document["targets"]
    passed = sum(1 for t in targets if t["result"] == "PASS")
    lines = [
        "### Benchmarks: navro-adapters against the alternatives",
        "",
        conditions_line(meta, config),
        "Every stack ran in its own process against its own sandbox server (another process), "
        'one after the other, once per round. "Ideal" is the fewest token requests that keep a '
        "valid token through the run; rotation windows are "
        f"±{config['rotation_window'] * 1000:g} ms around the first use of each new token; "
        "the baselines send a fixed, valid token (no auth layer). Loop lag: the worst delay of "
        f"a ticker task sleeping {config['ticker_interval'] * 1000:g} ms on the event loop. "
        "Targets are judged on the medians; zero 401s at callers in every round.",
        "",
        *main_table(document["stacks"], config),
        "",
        "Per-request overhead with a warm token, in process against a hand-written same-job "
        "hook (public API only: origin check, `Authorization` and `X-API-Version`, a 401 "
        f"check), median of {config['overhead_repeats']} x {config['overhead_number']:,} calls; "
        f"network: {config['network_rounds']} alternating rounds of "
        f"{config['network_requests']} sequential requests on one client against a "
        "fixed-header hook:",
        "",
        *overhead_table(document["stacks"]),
        "",
        f"Targets: {passed} of {len(targets)} PASS."
        + (
            ""
            if all_targets
            else " The misses, with their measured causes (every target: "
            "[docs/benchmarks.md](docs/benchmarks.md)):"
        ),
        "",
        *targets_table(targets if all_targets else [t for t in targets if t["result"] != "PASS"]),
    ]
    return "\n".join(lines) + "\n"


def render_markdown(document: Dict[str, Any]) -> str:
    """The full report: the README section plus peers' notes and the fleets."""
    lines = [readme_section(document, all_targets=True)]
    notes = document.get("notes") or []
    if notes:
        lines += ["### Notes", ""] + [f"- {note}" for note in notes] + [""]
    fleet = document.get("fleet")
    if fleet:
        lines += [
            "### Fleet at scale (benchmarks/fleet_tasks.py)",
            "",
            "Each worker is an asyncio task with its own TokenProvider calling `aget_token()`; "
            "refresh spread counts refreshes after the cold start (`fleet-jitter.png`).",
            "",
            *fleet_table(fleet),
            "",
        ]
    return "\n".join(lines)


def update_readme(readme: Path, section: str) -> bool:
    """Replace what lies between the markers in ``readme``; False when there are none."""
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        return False
    replacement = f"{README_BEGIN}\n{section}{README_END}"
    readme.write_text(pattern.sub(lambda _: replacement, text, count=1), encoding="utf-8")
    return True
