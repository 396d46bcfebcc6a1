"""One round: every stack, one after another, each in its own worker process.

For each stack (see :mod:`benchmarks.stacks`) :func:`run_round` starts ``python -m
benchmarks.worker``, which starts its own sandbox server in a child process and runs the
scenarios; it prints one progress line per stack and replaces the raw contention records by
figures (:mod:`benchmarks.analysis`), baselines first since the others compare to them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .analysis import analyse_contention, ideal_token_requests
from .config import BenchConfig
from .stacks import StackSpec, missing_modules

__all__ = ["run_round"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STDERR_KEPT = 1500  # characters of a failed worker's stderr kept in the results
INSTALL_HINTS = {
    "requests_auth": "pip install requests-auth (the bench extra)",
    "httpx_auth": "pip install httpx-auth (the bench extra)",
    "niquests": "pip install niquests (the niquests extra)",
    "navro_adapters.authlib": "navro_adapters.authlib is not in this tree yet",
    "navro_adapters.niquests": "navro_adapters.niquests is not in this tree yet",
}


def run_round(specs: Sequence[StackSpec], config: BenchConfig) -> List[Dict[str, Any]]:
    """Every stack of ``specs`` once; their analysed documents, in order."""
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
    return stacks


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
        preview["ideal_token_requests"] = ideal_token_requests(
            config.contention_duration,
            config.contention_ttl,
            float(contention.get("warm_token_age_at_start", 0.0)),
        )
    return dict(stack, scenarios=dict(stack["scenarios"], contention=preview))
