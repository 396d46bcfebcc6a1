"""Helpers for the real servers the tests start (redis-server, tinyproxy): stopping them."""

from __future__ import annotations

import subprocess
from typing import Optional

STOP_TIMEOUT = 5.0  # seconds for a server to exit after SIGTERM, before SIGKILL


def stop(process: Optional[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; a no-op once it exited."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
