"""Smoke test of the benchmark harness: ``python -m benchmarks --quick`` into a temporary dir.

It checks that the harness works (every file written, the JSON's shape, every stack reported
with a status, one progress line per stack, rounds combined into median/min/max figures, the
loop-lag and same-job overhead columns, the fleet at scale when redis-server is installed),
never how fast anything was: timings on a shared CI host say nothing, and the targets are
printed by the benchmark, not asserted here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from benchmarks.rounds import is_figure
from benchmarks.stacks import STACKS

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 280  # seconds: the quick run takes under a minute on an idle 2-core host
OUTPUTS = ("results.json", "results.md", "README-table.md", "latency.png", "fleet-jitter.png")
SCENARIOS = ("overhead", "cold", "contention", "storm")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT + 20)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    results_dir = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--results-dir", str(results_dir)],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {"dir": results_dir, "stdout": completed.stdout}


def test_every_output_file_is_written(quick_run: Dict[str, Any]) -> None:
    results_dir: Path = quick_run["dir"]
    for name in OUTPUTS:
        assert (results_dir / name).stat().st_size > 0, name
    assert (results_dir / "latency.png").read_bytes().startswith(PNG_SIGNATURE)
    table = (results_dir / "README-table.md").read_text(encoding="utf-8")
    assert "| stack |" in table


def test_every_stack_is_reported_with_a_status(quick_run: Dict[str, Any]) -> None:
    document = json.loads((quick_run["dir"] / "results.json").read_text(encoding="utf-8"))
    assert {"config", "meta", "stacks", "targets", "notes"} <= set(document)
    assert document["config"]["quick"] is True
    reported = {stack["key"]: stack for stack in document["stacks"]}
    assert set(reported) == {spec.key for spec in STACKS}
    for spec in STACKS:
        stack = reported[spec.key]
        assert stack["status"] in ("ok", "missing", "error"), spec.key
        if stack["status"] != "ok":
            assert stack.get("detail"), f"{spec.key}: a stack not run says why"
            continue
        for name in SCENARIOS:
            section = stack["scenarios"][name]
            assert section["status"] in ("ok", "n/a", "error"), (spec.key, name)
            if spec.role == "baseline":  # no auth layer: an error here is the harness's own
                assert section["status"] != "error", (spec.key, name, section)
        contention = stack["scenarios"]["contention"]
        if contention["status"] == "ok":
            assert "records" not in contention  # raw records are analysed, not stored
            assert {"token_requests", "callers_401", "latency", "bins"} <= set(contention)


def test_targets_and_progress_lines(quick_run: Dict[str, Any]) -> None:
    document = json.loads((quick_run["dir"] / "results.json").read_text(encoding="utf-8"))
    assert document["targets"], "our stacks are judged against the targets"
    for target in document["targets"]:
        assert target["result"] in ("PASS", "MISS")
        assert target["measured"]
    progress = [line for line in quick_run["stdout"].splitlines() if line.startswith("[")]
    assert len(progress) == len(STACKS)


def _document(quick_run: Dict[str, Any]) -> Dict[str, Any]:
    document: Dict[str, Any] = json.loads(
        (quick_run["dir"] / "results.json").read_text(encoding="utf-8")
    )
    return document


def test_each_round_is_kept_and_figures_are_medians_with_min_and_max(
    quick_run: Dict[str, Any],
) -> None:
    document = _document(quick_run)
    assert document["rounds"] == 1 == len(document["round_stacks"])
    assert document["plotted_round"] == 1
    raw = {stack["key"]: stack for stack in document["round_stacks"][0]}
    for stack in document["stacks"]:
        if stack["status"] != "ok":
            continue
        contention = stack["scenarios"]["contention"]
        if contention["status"] != "ok":
            continue
        figure = contention["callers_401"]
        assert is_figure(figure), stack["key"]
        measured = raw[stack["key"]]["scenarios"]["contention"]["callers_401"]
        assert figure["median"] == figure["min"] == figure["max"] == measured
        assert figure["rounds"] == 1


def test_async_stacks_report_loop_lag_around_rotations(quick_run: Dict[str, Any]) -> None:
    document = _document(quick_run)
    table = (quick_run["dir"] / "README-table.md").read_text(encoding="utf-8")
    assert "loop lag max ms around rotations (baseline, same windows)" in table
    assert "loop lag max ms, whole phase" in table
    for stack in document["round_stacks"][0]:
        if stack["status"] != "ok" or stack["kind"] != "tasks":
            continue
        contention = stack["scenarios"]["contention"]
        if contention["status"] != "ok":
            continue
        assert contention["loop_lag"]["phase_max_ms"] is not None, stack["key"]
        if stack["role"] == "ours" and contention["rotations"]:
            assert contention["loop_lag"]["in_windows_max_ms"] is not None
            assert "in_windows_max_ms" in contention["baseline_loop_lag_same_windows"]
    lag_targets = [t for t in document["targets"] if "loop lag" in t["target"]]
    assert lag_targets, "every async stack of ours is judged on its loop lag"


def test_overhead_is_measured_against_a_same_job_hook(quick_run: Dict[str, Any]) -> None:
    document = _document(quick_run)
    table = (quick_run["dir"] / "README-table.md").read_text(encoding="utf-8")
    assert "same-job hook ns/call" in table
    timed = 0
    for stack in document["round_stacks"][0]:
        overhead = stack.get("scenarios", {}).get("overhead", {})
        if stack["role"] != "ours" or overhead.get("status") != "ok" or "hook" not in overhead:
            continue
        hook = overhead["hook"]
        assert hook["extra_ns"] == pytest.approx(hook["stack_ns"] - hook["same_job_ns"])
        assert f"| {stack['label']} | `{hook['hook']}` |" in table
        timed += 1
    assert timed >= 3, "requests, httpx and aiohttp hooks are timed"
    assert any("same-job hook" in t["target"] for t in document["targets"])


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_the_fleet_at_scale_is_reported(quick_run: Dict[str, Any]) -> None:
    document = _document(quick_run)
    fleet = document["fleet"]
    redis = fleet["redis"]
    assert redis["status"] == "ok", redis
    assert (
        redis["workers"]
        == document["config"]["fleet_processes"] * (document["config"]["fleet_tasks"])
    )
    assert redis["redis_commands_per_worker_lifetime"] is not None
    assert redis["store_call_p99_ms"] is not None
    assert redis["errors"] == 0
    assert set(fleet["jitter"]) == {"without", "with"}
    assert fleet["jitter"]["with"]["status"] == "ok"
    report = (quick_run["dir"] / "results.md").read_text(encoding="utf-8")
    assert "### Fleet at scale" in report
    assert "| RedisStore, shared |" in report
