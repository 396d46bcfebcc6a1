"""``python -m benchmarks``: ``--rounds`` rounds (default 3), each running every stack.

A round (:mod:`benchmarks.stack_runs`) runs every stack, one after another, each in its own
process against its own sandbox server (token endpoint latency 50 ms by default), through
the scenarios of :mod:`benchmarks.scenarios` and :mod:`benchmarks.overhead`. The rounds are
combined (:mod:`benchmarks.rounds`: every figure as median, min and max), the targets checked
on the medians (:mod:`benchmarks.targets`; zero 401s in every round), the fleets run
(:mod:`benchmarks.fleet_runs`), and written under ``--results-dir`` (default
``benchmarks/results``):

* ``results.json``: configuration, conditions, every round's figures, the combined figures,
  every target, the fleets;
* ``results.md``: the full report; ``README-table.md``: the section for README.md;
* ``latency.png``: latency over time during expiry contention in round 1, rotations marked;
* ``fleet-jitter.png``: refresh instants of the no-store fleet without and with jitter.

A ``causes.json`` already in that directory (``{"stack|target prefix": "cause"}``, written by
whoever investigated a run's misses) is joined to the matching MISS rows of the tables.

``--update-readme`` also rewrites README.md between ``<!-- bench-table -->`` and
``<!-- /bench-table -->`` (and only there) when both markers are present.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .config import BenchConfig
from .fleet_runs import run_fleets
from .plots import plot_fleet_jitter, plot_latency
from .report import attach_causes, readme_section, render_markdown, update_readme
from .rounds import combine
from .stack_runs import PROJECT_ROOT, run_round
from .stacks import STACKS
from .targets import evaluate

__all__ = ["main", "render", "run"]

DEFAULT_RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
CAUSES_FILE = "causes.json"  # {"stack|target prefix": cause}: investigated causes of misses
PLOTTED_ROUND = 1  # the latency plot shows this round (1-based): one real run, not a blend
VERSIONED = (
    "requests",
    "httpx",
    "httpx2",
    "aiohttp",
    "niquests",
    "authlib",
    "requests-auth",
    "httpx-auth",
    "redis",
    "matplotlib",
)

#: Facts about the peers a reader needs to read their rows; printed in results.md.
NOTES = (
    "Peers are configured as their documentation shows for client credentials, plus what Navro "
    "needs: `X-API-Version: 1` through their session/client headers (the only way each offers "
    "to put a header on the token request), `scope=openid`, HTTP Basic client authentication.",
    "Peers' default expiry margins (requests-auth/httpx-auth `early_expiry=30`, Authlib "
    "`leeway=60`) assume long tokens; in the expiry scenario they are scaled by TTL/300 s, as "
    "the benchmark scales Navro's 300 s lifetime down. Unscaled they would treat every 2 s "
    "token as expired and fetch one per request.",
    "Authlib's `OAuth2Session`/`AsyncOAuth2Client` raise `MissingTokenError` until "
    "`fetch_token()` has been called: their cold-start row shows that; the other scenarios call "
    "`fetch_token(token_url, grant_type='client_credentials')` first, as Authlib's docs show.",
    "requests-auth and httpx-auth keep one process-wide token cache; it is cleared before each "
    "scenario. Neither resends after a 401, so a revoked token fails every request in flight.",
    "Every client (auth stacks and baselines alike) gets a connection pool sized for the largest "
    "concurrency used (the storm's), so requests are in flight at the server, not queued in "
    "the client.",
)


def _conditions(note: str) -> Dict[str, Any]:
    versions: Dict[str, Optional[str]] = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions,
        "note": note,
    }


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: the results file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _load() -> Optional[List[float]]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def run(
    config: BenchConfig,
    results_dir: Path,
    *,
    keys: Optional[Sequence[str]] = None,
    with_fleet: bool = True,
    with_thread_fleet: bool = False,
    note: str = "",
    update_readme_file: Optional[Path] = None,
) -> Dict[str, Any]:
    """Run the benchmark and write its files; returns the results document."""
    specs = [spec for spec in STACKS if keys is None or spec.key in keys]
    meta = _conditions(note)
    print(
        f"navro-adapters benchmarks ({'quick' if config.quick else 'full'}): {len(specs)} stacks "
        f"x {config.rounds} round(s), token latency {config.token_latency * 1000:g} ms, "
        f"{meta['cpu_count']} cores, "
        f"load {meta['load_average_start'][0] if meta['load_average_start'] else '?'}",
        flush=True,
    )
    rounds: List[List[Dict[str, Any]]] = []
    round_loads: List[Optional[List[float]]] = []
    for number in range(1, config.rounds + 1):
        print(f"round {number} of {config.rounds}", flush=True)
        rounds.append(run_round(specs, config))
        round_loads.append(_load())
    fleet = run_fleets(config, with_threads=with_thread_fleet) if with_fleet else None
    meta["load_average_end"] = _load()
    meta["load_average_after_each_round"] = round_loads
    combined = combine(rounds)
    targets = [target.to_dict() for target in evaluate(combined, rounds)]
    causes_file = results_dir / CAUSES_FILE
    if causes_file.exists():
        attach_causes(targets, json.loads(causes_file.read_text(encoding="utf-8")))
    document: Dict[str, Any] = _json_safe(
        {
            "config": config.to_dict(),
            "meta": meta,
            "rounds": len(rounds),
            "plotted_round": PLOTTED_ROUND,
            "stacks": combined,
            "round_stacks": rounds,
            "targets": targets,
            "notes": list(NOTES),
            "fleet": fleet,
        }
    )
    _write(document, results_dir, update_readme_file)
    print("\nTargets (medians over the rounds):")
    for target in targets:
        print(
            f"  {target['result']:<4}  {target['stack']:<24} {target['target']}: "
            f"{target['measured']}"
        )
    passed = sum(1 for t in targets if t["result"] == "PASS")
    print(f"{passed} of {len(targets)} targets PASS; results in {results_dir}")
    return document


def render(results_dir: Path, readme: Optional[Path] = None) -> None:
    """Rewrite the markdown and the plot of an earlier run, with the current causes.json."""
    document: Dict[str, Any] = json.loads(
        (results_dir / "results.json").read_text(encoding="utf-8")
    )
    for target in document["targets"]:
        target.pop("cause", None)
    causes_file = results_dir / CAUSES_FILE
    if causes_file.exists():
        attach_causes(document["targets"], json.loads(causes_file.read_text(encoding="utf-8")))
    _write(document, results_dir, readme)
    print(f"rewrote the report files in {results_dir}")


def _write(document: Dict[str, Any], results_dir: Path, readme: Optional[Path]) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "results.json").write_text(
        json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    (results_dir / "results.md").write_text(render_markdown(document), encoding="utf-8")
    section = readme_section(document)
    (results_dir / "README-table.md").write_text(section, encoding="utf-8")
    try:
        plot_latency(document, results_dir / "latency.png")
        if plot_fleet_jitter(document, results_dir / "fleet-jitter.png"):
            print(f"wrote {results_dir / 'fleet-jitter.png'}")
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
    if readme is not None:
        if update_readme(readme, section):
            print(f"updated the benchmark section of {readme}")
        else:
            print(f"{readme} has no <!-- bench-table --> markers: left untouched")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="navro-adapters against the auth layers users would otherwise pick.",
    )
    parser.add_argument("--quick", action="store_true", help="a reduced run (about a minute)")
    parser.add_argument(
        "--rounds", type=int, help="rounds of every stack (default 3; 1 with --quick)"
    )
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    parser.add_argument("--stacks", help="comma-separated stack keys (default: all)")
    parser.add_argument("--list", action="store_true", help="list the stack keys and exit")
    parser.add_argument("--token-latency", type=float, help="seconds (default 0.05)")
    parser.add_argument("--threads", type=int, help="callers for thread stacks (default 50)")
    parser.add_argument("--tasks", type=int, help="callers for asyncio stacks (default 200)")
    parser.add_argument(
        "--fleet",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the fleets (benchmarks/fleet_tasks.py; default: on)",
    )
    parser.add_argument(
        "--fleet-threads",
        action="store_true",
        help="add the thread fleet of benchmarks/fleet.py (no store, file store)",
    )
    parser.add_argument(
        "--update-readme",
        action="store_true",
        help="rewrite README.md between the bench-table markers",
    )
    parser.add_argument("--note", default="", help="free text added to the conditions line")
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: rewrite the tables and plot from results.json (and causes.json)",
    )
    args = parser.parse_args(argv)
    if args.render:
        render(args.results_dir, PROJECT_ROOT / "README.md" if args.update_readme else None)
        return 0
    if args.list:
        for spec in STACKS:
            print(f"{spec.key:<24} {spec.role:<8} {spec.kind:<7} {spec.label}")
        return 0
    config = BenchConfig.quick_config() if args.quick else BenchConfig()
    overrides = {
        name: value
        for name, value in (
            ("token_latency", args.token_latency),
            ("threads", args.threads),
            ("tasks", args.tasks),
            ("rounds", args.rounds),
        )
        if value is not None
    }
    if overrides:
        config = dataclasses.replace(config, **overrides)
    if config.rounds < 1:
        parser.error("--rounds must be at least 1")
    keys = [key.strip() for key in args.stacks.split(",")] if args.stacks else None
    if keys:
        unknown = sorted(set(keys) - {spec.key for spec in STACKS})
        if unknown:
            parser.error(f"unknown stacks: {', '.join(unknown)} (see --list)")
    started = time.perf_counter()
    run(
        config,
        args.results_dir,
        keys=keys,
        with_fleet=args.fleet is not False,
        with_thread_fleet=args.fleet_threads,
        note=args.note,
        update_readme_file=PROJECT_ROOT / "README.md" if args.update_readme else None,
    )
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0
