"""The plots of a run: latency during expiry contention, and the fleet's refresh spread."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .report import section_of as _section
from .report import state_of as _state

__all__ = ["plot_fleet_jitter", "plot_latency"]

MAX_ROTATION_LINES = 40  # beyond this a subplot says "rotating continuously" instead
JITTER_BIN_SECONDS = 0.05  # histogram bin width of the refresh instants


def plot_latency(document: Dict[str, Any], path: Path) -> None:
    """Latency over time during expiry contention, one panel per stack, rotations marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    number = int(document.get("plotted_round") or 1)
    rounds = document.get("round_stacks") or [document["stacks"]]
    stacks = rounds[min(number, len(rounds)) - 1]
    panels = [
        stack
        for stack in stacks
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
        f"Latency during expiry contention, round {number} of {len(rounds)} "
        f"(TTL {config['contention_ttl']:g} s; solid: max, "
        "dotted: p50 per bin; dashed blue: first use of a new token)",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _gaps(values: Sequence[Optional[float]]) -> List[float]:
    return [float("nan") if value is None else value for value in values]


def plot_fleet_jitter(document: Dict[str, Any], path: Path) -> bool:
    """Histogram of the no-store fleet's refresh instants without and with refresh jitter;
    False (nothing written) when neither fleet ran."""
    fleet = document.get("fleet") or {}
    runs = fleet.get("jitter") or {}
    shown = [
        (label, runs[name])
        for name, label in (("without", "refresh_jitter=0.0"), ("with", "default jitter"))
        if (runs.get(name) or {}).get("status") == "ok"
    ]
    if not shown:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(shown), 1, figsize=(9, 2.4 * len(shown)), squeeze=False)
    span = max(run["duration"] for _label, run in shown)
    edges = [i * JITTER_BIN_SECONDS for i in range(int(span / JITTER_BIN_SECONDS) + 2)]
    for axis, (label, run) in zip((row[0] for row in axes), shown):
        offsets = [offset for _generation, offset in run["refreshes"]]
        spread = run["refresh_spread"]
        axis.hist(offsets, bins=edges, color="tab:green" if "default" in label else "tab:red")
        axis.set_title(
            f"{label}: {run['workers']} providers, no store, TTL {run['ttl']:g} s; per token "
            f"generation range {_seconds(spread.get('range_s'))}, busiest second "
            f"{spread.get('busiest_second') or 0:.0f} refreshes",
            fontsize=8,
        )
        axis.set_ylabel(f"refreshes / {JITTER_BIN_SECONDS * 1000:g} ms", fontsize=7)
        axis.tick_params(labelsize=7)
        axis.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("seconds after the fleet started (cold start not shown)", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f} s"
