"""Render a run: markdown tables (full report and the README section) and the latency plot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = [
    "README_BEGIN",
    "attach_causes",
    "README_END",
    "plot_latency",
    "readme_section",
    "render_markdown",
    "update_readme",
]

NONE = "-"  # a cell with no figure
README_BEGIN = "<!-- bench-table -->"
README_END = "<!-- /bench-table -->"
MAX_ROTATION_LINES = 40  # beyond this a subplot says "rotating continuously" instead


def _num(value: Optional[float], digits: int = 1) -> str:
    return NONE if value is None else f"{value:,.{digits}f}"


def _section(stack: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    section = stack.get("scenarios", {}).get(name)
    return section if isinstance(section, dict) else None


def _state(section: Optional[Dict[str, Any]]) -> Optional[str]:
    """``None`` when the section has figures, else a short reason to show instead."""
    if section is None:
        return NONE
    status = section.get("status", "ok")
    if status == "ok":
        return None
    if status == "n/a":
        return "n/a"
    return "error: " + str(section.get("error", ""))[:60]


def _cold_cell(stack: Dict[str, Any]) -> str:
    section = _section(stack, "cold")
    state = _state(section)
    if state is not None or section is None:
        return state or NONE
    text = f"{section['token_requests']} ({section['seconds_to_last_answer']:.2f} s)"
    if section["failed"]:
        errors = ", ".join(f"{n}x {e}" for e, n in section["errors"].items()) or "non-200"
        text += f"; **{section['failed']}/{section['callers']} failed** ({errors})"
    return text


def _storm_cell(stack: Dict[str, Any]) -> str:
    section = _section(stack, "storm")
    state = _state(section)
    if state is not None or section is None:
        return state or NONE
    text = f"{section['token_requests']} / {section['failed']}"
    if section["failed"]:
        reasons = dict(section["errors"])
        for status, count in section["statuses"].items():
            if status not in ("200", "0"):
                reasons[f"HTTP {status}"] = count
        text += " (" + ", ".join(f"{n}x {r}" for r, n in reasons.items()) + ")"
    return text


def _contention_cells(stack: Dict[str, Any]) -> List[str]:
    section = _section(stack, "contention")
    state = _state(section)
    if state is not None or section is None:
        return [state or NONE] + [NONE] * 6
    ideal = section.get("ideal_token_requests")
    tokens = f"{section['token_requests']}" + ("" if ideal is None else f" ({ideal})")
    latency = section["latency"]
    windows = section["in_windows"]
    same = section.get("baseline_in_same_windows")
    if section["rotations"]:
        rotation = f"{_num(windows['p99_ms'])} / {_num(windows['max_ms'])}"
        if same:
            rotation += f" ({_num(same['p99_ms'])} / {_num(same['max_ms'])})"
    else:
        rotation = "no rotation"
    stall = section.get("loop_stall_max_ms")
    return [
        tokens,
        str(section["callers_401"]),
        str(section["other_errors"]),
        f"{section['requests_completed']:,}",
        f"{_num(latency['p50_ms'])} / {_num(latency['p99_ms'])} / {_num(latency['max_ms'])}",
        rotation,
        NONE if stall is None else _num(stall),
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
        "latency p50 / p99 / max ms",
        "around rotations p99 / max ms (baseline, same windows)",
        "loop stall max ms",
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
        "| stack | hook timed | stack ns/call | fixed-header ns/call | extra ns | "
        "network µs/request: stack / fixed header (extra) |",
        "|---|---|---|---|---|---|",
    ]
    for stack in stacks:
        section = _section(stack, "overhead")
        if stack["status"] != "ok" or section is None or section.get("status") == "n/a":
            continue
        state = _state(section)
        if state is not None:
            lines.append(f"| {stack['label']} | {state} | - | - | - | - |")
            continue
        hook = section.get("hook")
        network = section.get("network")
        hook_cells = (
            [
                f"`{hook['hook']}`",
                _num(hook["stack_ns"], 0),
                _num(hook["fixed_ns"], 0),
                f"{hook['extra_ns']:+,.0f}",
            ]
            if hook
            else ["not timed (no public hook to call alone)", NONE, NONE, NONE]
        )
        net_cell = (
            f"{_num(network['stack_us'], 0)} / {_num(network['fixed_us'], 0)} "
            f"({network['extra_us']:+,.0f})"
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


def fleet_table(fleet: Dict[str, Any]) -> List[str]:
    if fleet.get("status") != "ok":
        return [f"Fleet: {fleet.get('status')} ({fleet.get('detail', '')})."]
    lines = [
        "| fleet store | processes x threads | token requests | per token lifetime | 401s | "
        "errors | ping p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in fleet["runs"]:
        if "error" in run:
            lines.append(f"| {run['store']} | error: {run['error']} | - | - | - | - | - |")
            continue
        lines.append(
            f"| {run['store']} | {run['processes']} x {run['threads']} | {run['token_requests']} "
            f"| {_num(run['token_requests_per_lifetime'], 2)} | {run['api_401s']} | "
            f"{run['errors']} | {_num(run['ping_p50_ms'])} / {_num(run['ping_p99_ms'])} |"
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
        f"(`python -m benchmarks{' --quick' if config['quick'] else ''}`)."
    )
    if meta.get("note"):
        text += f" {meta['note']}"
    return text


def readme_section(document: Dict[str, Any]) -> str:
    """The markdown that goes between the README markers (and in ``README-table.md``)."""
    config, meta = document["config"], document["meta"]
    targets = document["targets"]
    passed = sum(1 for t in targets if t["result"] == "PASS")
    lines = [
        "### Benchmarks: navro-adapters against the alternatives",
        "",
        conditions_line(meta, config),
        "Every stack ran in its own process against its own sandbox server (another process), "
        'one after the other. "Ideal" is the fewest token requests that keep a valid token '
        "through the run; rotation windows are "
        f"±{config['rotation_window'] * 1000:g} ms around the first use of each new token; "
        "the baselines send a fixed, valid token (no auth layer).",
        "",
        *main_table(document["stacks"], config),
        "",
        "Per-request overhead with a warm token (in process, median of "
        f"{config['overhead_repeats']} x {config['overhead_number']:,} calls; network: "
        f"{config['network_rounds']} alternating rounds of {config['network_requests']} "
        "sequential requests on one client):",
        "",
        *overhead_table(document["stacks"]),
        "",
        f"Targets: {passed} of {len(targets)} PASS.",
        "",
        *targets_table(targets),
    ]
    return "\n".join(lines) + "\n"


def render_markdown(document: Dict[str, Any]) -> str:
    """The full report: the README section plus peers' notes and the fleet."""
    lines = [readme_section(document)]
    notes = document.get("notes") or []
    if notes:
        lines += ["### Notes", ""] + [f"- {note}" for note in notes] + [""]
    fleet = document.get("fleet")
    if fleet:
        lines += ["### Fleet (benchmarks/fleet.py)", "", *fleet_table(fleet), ""]
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


def plot_latency(document: Dict[str, Any], path: Path) -> None:
    """Latency over time during expiry contention, one panel per stack, rotations marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        stack
        for stack in document["stacks"]
        if stack["status"] == "ok" and _state(_section(stack, "contention")) is None
    ]
    columns = 3
    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(5.2 * columns, 2.6 * rows), sharex=True, squeeze=False
    )
    colours = {"ours": "tab:green", "baseline": "tab:gray", "peer": "tab:red"}
    for index, stack in enumerate(panels):
        axis = axes[index // columns][index % columns]
        section = _section(stack, "contention")
        assert section is not None
        bins = section["bins"]
        width = bins["width_s"]
        times = [(i + 0.5) * width for i in range(len(bins["max_ms"]))]
        colour = colours.get(stack["role"], "tab:blue")
        axis.plot(times, _gaps(bins["max_ms"]), color=colour, linewidth=1.0, label="max")
        axis.plot(
            times, _gaps(bins["p50_ms"]), color=colour, linewidth=1.0, linestyle=":", label="p50"
        )
        rotations = section["rotation_offsets_s"]
        if len(rotations) <= MAX_ROTATION_LINES:
            for offset in rotations:
                axis.axvline(offset, color="tab:blue", linewidth=0.8, linestyle="--", alpha=0.7)
        else:
            axis.text(
                0.02,
                0.85,
                f"{section['rotations']} token rotations",
                transform=axis.transAxes,
                fontsize=7,
                color="tab:blue",
            )
        unauthorized = sum(bins["callers_401"])
        title = f"{stack['label']} - {section['token_requests']} token req."
        if unauthorized:
            title += f", {unauthorized} x 401"
        axis.set_title(title, fontsize=8)
        axis.set_yscale("log")
        axis.tick_params(labelsize=7)
        axis.grid(True, which="major", alpha=0.3)
        if index % columns == 0:
            axis.set_ylabel("latency ms", fontsize=7)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    for axis in axes[-1]:
        axis.set_xlabel("seconds into the load", fontsize=7)
    config = document["config"]
    figure.suptitle(
        f"Latency during expiry contention (TTL {config['contention_ttl']:g} s; solid: max, "
        "dotted: p50 per bin; dashed blue: first use of a new token)",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _gaps(values: Sequence[Optional[float]]) -> List[float]:
    return [float("nan") if value is None else value for value in values]
