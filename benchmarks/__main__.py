"""``python -m benchmarks``: see :mod:`benchmarks.runner`."""

from __future__ import annotations

import sys

from .runner import main

if __name__ == "__main__":  # spawned fleet processes re-import this module: run nothing there
    sys.exit(main())
