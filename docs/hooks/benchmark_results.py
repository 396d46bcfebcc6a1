"""mkdocs hook: serve benchmarks/results/latency.png in the site, as the benchmark run wrote it.

The plot lives where ``python -m benchmarks`` writes it; adding it to the build here (rather
than a copy under docs/) means a rerun never leaves the site showing an old plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT_FILES = ("benchmarks/results/latency.png",)  # site paths mirror the repository's


def on_files(files: Files, *, config: Any) -> Files:
    for path in RESULT_FILES:
        files.append(File(path, str(REPO_ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
