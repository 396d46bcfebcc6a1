"""``python -m benchmarks``: every stack, one after another, each in its own process.

For each stack (see :mod:`benchmarks.stacks`) the runner starts ``python -m
benchmarks.worker``, which starts its own sandbox server in a child process (token endpoint
latency 50 ms by default) and runs the scenarios of :mod:`benchmarks.scenarios` and
:mod:`benchmarks.overhead`. The runner prints one progress line per stack, analyses the
records (:mod:`benchmarks.analysis`), checks the targets (:mod:`benchmarks.targets`) and
writes, under ``--results-dir`` (default ``benchmarks/results``):

* ``results.json``: configuration, conditions, every figure, every target;
* ``results.md``: the full report; ``README-table.md``: the section for README.md;
* ``latency.png``: latency over time during expiry contention, rotations marked.

A ``causes.json`` already in that directory (``{"stack|target prefix": "cause"}``, written by
whoever investigated a run's misses) is joined to the matching MISS rows of the tables.

``--update-readme`` also rewrites README.md between ``<!-- bench-table -->`` and
``<!-- /bench-table -->`` (and only there) when both markers are present.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .analysis import analyse_contention
from .config import BenchConfig
from .report import (
    attach_causes,
    plot_latency,
    readme_section,
    render_markdown,
    update_readme,
)
from .stacks import STACKS, StackSpec, missing_modules
from .targets import evaluate

__all__ = ["main", "render", "run"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
CAUSES_FILE = "causes.json"  # {"stack|target prefix": cause}: investigated causes of misses
STDERR_KEPT = 1500  # characters of a failed worker's stderr kept in the results
FLEET_STORES = ("none", "file")  # redis needs a server binary: opt in with --fleet-redis
FLEET_PROCESSES = 4
FLEET_THREADS = 10
VERSIONED = (
    "requests",
    "httpx",
    "httpx2",
    "aiohttp",
    "authlib",
    "requests-auth",
    "httpx-auth",
    "matplotlib",
)
INSTALL_HINTS = {
    "requests_auth": "pip install requests-auth (the bench extra)",
    "httpx_auth": "pip install httpx-auth (the bench extra)",
    "navro_adapters.authlib": "navro_adapters.authlib is not in this tree yet",
}

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


def _run_worker(spec: StackSpec, config: BenchConfig) -> Dict[str, Any]:
    """Run one stack's worker process; its document, or a status explaining the failure."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        path for path in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if path
    )
    payload = json.dumps({"stack": spec.key, "config": config.to_dict()})
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker"],
            input=payload,
            capture_output=True,
            text=True,
            cwd=str(PROJECT_ROOT),
            env=env,
            timeout=config.worker_timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "detail": f"timed out after {config.worker_timeout:g} s"}
    if completed.returncode != 0 or not completed.stdout.strip():
        return {
            "status": "error",
            "detail": f"worker exited with {completed.returncode}",
            "stderr": completed.stderr[-STDERR_KEPT:],
        }
    document: Dict[str, Any] = json.loads(completed.stdout)
    document["status"] = "ok"
    if completed.stderr.strip():
        document["stderr"] = completed.stderr[-STDERR_KEPT:]
    return document


def _progress(index: int, total: int, spec: StackSpec, stack: Dict[str, Any]) -> str:
    head = f"[{index:2d}/{total}] {spec.label:<28}"
    if stack["status"] != "ok":
        return f"{head} {stack['status']}: {stack.get('detail', '')}"
    parts = [f"{stack['seconds']:5.1f} s"]
    scenarios = stack["scenarios"]
    cold = scenarios.get("cold", {})
    if cold.get("status") == "ok":
        parts.append(f"cold {cold['token_requests']} tok, {cold['failed']} failed")
    contention = scenarios.get("contention", {})
    if contention.get("status", "ok") == "ok" and "token_requests" in contention:
        ideal = contention.get("ideal_token_requests")
        parts.append(
            f"expiry {contention['token_requests']} tok"
            + ("" if ideal is None else f" (ideal {ideal})")
            + f", {contention['callers_401']} x 401"
        )
    storm = scenarios.get("storm", {})
    if storm.get("status") == "ok":
        parts.append(f"storm {storm['token_requests']} tok, {storm['failed']} failed")
    errored = [name for name, s in scenarios.items() if s.get("status") == "error"]
    if errored:
        parts.append("errors in: " + ", ".join(errored))
    return f"{head} ok   " + " | ".join(parts)


def _analyse(stacks: List[Dict[str, Any]], config: BenchConfig) -> None:
    """Replace raw contention records by figures (baselines first: others compare to them)."""
    raw = {
        stack["key"]: stack["scenarios"]["contention"]
        for stack in stacks
        if stack["status"] == "ok"
        and stack["scenarios"].get("contention", {}).get("status") == "ok"
    }
    for stack in stacks:
        section = raw.get(stack["key"])
        if section is None:
            continue
        stack["scenarios"]["contention"] = analyse_contention(
            section,
            duration=config.contention_duration,
            ttl=config.contention_ttl,
            window=config.rotation_window,
            bin_width=config.bin_seconds,
            is_baseline=stack["role"] == "baseline",
            baseline_raw=raw.get(stack.get("baseline") or ""),
        )


def _run_fleet(config: BenchConfig, stores: Sequence[str]) -> Dict[str, Any]:
    try:
        fleet = importlib.import_module("benchmarks.fleet")
    except ImportError as exc:
        return {"status": "missing", "detail": f"benchmarks.fleet cannot be imported: {exc}"}
    runs = []
    for store in stores:
        try:
            runs.append(
                fleet.run_fleet(
                    processes=FLEET_PROCESSES,
                    threads=FLEET_THREADS,
                    ttl=config.contention_ttl,
                    duration=config.contention_duration,
                    store_kind=store,
                )
            )
        except Exception as exc:
            runs.append({"store": store, "error": f"{type(exc).__name__}: {exc}"[:200]})
    return {"status": "ok", "runs": runs}


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: the results file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def run(
    config: BenchConfig,
    results_dir: Path,
    *,
    keys: Optional[Sequence[str]] = None,
    fleet_stores: Sequence[str] = (),
    note: str = "",
    update_readme_file: Optional[Path] = None,
) -> Dict[str, Any]:
    """Run the benchmark and write its files; returns the results document."""
    specs = [spec for spec in STACKS if keys is None or spec.key in keys]
    meta = _conditions(note)
    print(
        f"navro-adapters benchmarks ({'quick' if config.quick else 'full'}): {len(specs)} stacks, "
        f"token latency {config.token_latency * 1000:g} ms, {meta['cpu_count']} cores, "
        f"load {meta['load_average_start'][0] if meta['load_average_start'] else '?'}",
        flush=True,
    )
    stacks: List[Dict[str, Any]] = []
    for index, spec in enumerate(specs, start=1):
        stack: Dict[str, Any] = {
            "key": spec.key,
            "label": spec.label,
            "role": spec.role,
            "kind": spec.kind,
            "baseline": spec.baseline,
        }
        missing = missing_modules(spec)
        if missing:
            hints = "; ".join(INSTALL_HINTS.get(name, f"{name} not installed") for name in missing)
            stack.update(status="missing", detail=hints)
        else:
            stack.update(_run_worker(spec, config))
            stack.pop("stack", None)
        stacks.append(stack)
        print(_progress(index, len(specs), spec, _preview(stack, config)), flush=True)
    _analyse(stacks, config)
    fleet = None
    if fleet_stores:
        print(f"fleet: {', '.join(fleet_stores)} ...", flush=True)
        fleet = _run_fleet(config, fleet_stores)
    meta["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    targets = [target.to_dict() for target in evaluate(stacks)]
    causes_file = results_dir / CAUSES_FILE
    if causes_file.exists():
        attach_causes(targets, json.loads(causes_file.read_text(encoding="utf-8")))
    document: Dict[str, Any] = _json_safe(
        {
            "config": config.to_dict(),
            "meta": meta,
            "stacks": stacks,
            "targets": targets,
            "notes": list(NOTES),
            "fleet": fleet,
        }
    )
    _write(document, results_dir, update_readme_file)
    print("\nTargets:")
    for target in targets:
        print(
            f"  {target['result']:<4}  {target['stack']:<24} {target['target']}: "
            f"{target['measured']}"
        )
    passed = sum(1 for t in targets if t["result"] == "PASS")
    print(f"{passed} of {len(targets)} targets PASS; results in {results_dir}")
    return document


def _preview(stack: Dict[str, Any], config: BenchConfig) -> Dict[str, Any]:
    """The stack with just enough contention figures for its progress line."""
    if stack["status"] != "ok":
        return stack
    contention = stack["scenarios"].get("contention", {})
    if contention.get("status") != "ok" or "records" not in contention:
        return stack
    statuses = [int(record[2]) for record in contention["records"]]
    preview = dict(contention, callers_401=statuses.count(401))
    if stack["role"] != "baseline":
        from .analysis import ideal_token_requests

        preview["ideal_token_requests"] = ideal_token_requests(
            config.contention_duration,
            config.contention_ttl,
            float(contention.get("warm_token_age_at_start", 0.0)),
        )
    return dict(stack, scenarios=dict(stack["scenarios"], contention=preview))


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
    except ImportError:
        print("matplotlib is not installed: no latency.png (pip install matplotlib)")
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
    parser.add_argument("--quick", action="store_true", help="a reduced run (under a minute)")
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
        help="run benchmarks/fleet.py too (default: on for full runs)",
    )
    parser.add_argument(
        "--fleet-redis", action="store_true", help="add a redis-backed fleet (needs redis-server)"
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
        )
        if value is not None
    }
    if overrides:
        config = dataclasses.replace(config, **overrides)
    keys = [key.strip() for key in args.stacks.split(",")] if args.stacks else None
    if keys:
        unknown = sorted(set(keys) - {spec.key for spec in STACKS})
        if unknown:
            parser.error(f"unknown stacks: {', '.join(unknown)} (see --list)")
    with_fleet = args.fleet if args.fleet is not None else not config.quick
    stores = (*FLEET_STORES, *(("redis",) if args.fleet_redis else ())) if with_fleet else ()
    started = time.perf_counter()
    run(
        config,
        args.results_dir,
        keys=keys,
        fleet_stores=stores,
        note=args.note,
        update_readme_file=PROJECT_ROOT / "README.md" if args.update_readme else None,
    )
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0
