"""Smoke test of the benchmark harness: ``python -m benchmarks --quick`` into a temporary dir.

It checks that the harness works (every file written, the JSON's shape, every stack reported
with a status, one progress line per stack), never how fast anything was: timings on a shared
CI host say nothing, and the targets are printed by the benchmark, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from benchmarks.stacks import STACKS

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 280  # seconds: the quick run takes under a minute on an idle 2-core host
OUTPUTS = ("results.json", "results.md", "README-table.md", "latency.png")
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
