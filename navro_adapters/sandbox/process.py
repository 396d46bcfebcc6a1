"""Run a sandbox server in a child process, so benchmark clients do not share its GIL.

The parent starts ``python -m navro_adapters.sandbox._child``, writes one JSON line of
configuration to the child's stdin (the secret never appears in the process list) and keeps
stdin open: it is the child's lifeline. When the parent closes it, or dies for any reason, the
child reads end-of-file, closes its server and exits, so no orphan survives its parent.
The child answers ``NAVRO-SANDBOX-READY <port> [<token port>]`` on stdout once it is listening.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Mapping, Optional, Tuple

__all__ = ["READY_PREFIX", "SandboxProcess"]

READY_PREFIX = "NAVRO-SANDBOX-READY"
CHILD_MODULE = "navro_adapters.sandbox._child"  # not imported by the package: runs cleanly
START_TIMEOUT = 30.0  # seconds for the child to import and bind; generous for loaded CI hosts
STOP_TIMEOUT = 5.0  # seconds for the child to exit after its stdin closes, before a kill

#: The directory holding the ``navro_adapters`` package, so the child imports this same copy.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _read_line(stream: IO[bytes], lines: queue.Queue[bytes]) -> None:
    try:
        lines.put(stream.readline())
    except (OSError, ValueError):
        lines.put(b"")


class SandboxProcess:
    """The parent's handle on a child process serving one sandbox."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = dict(config)
        self._process: Optional[subprocess.Popen[bytes]] = None

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def start(self) -> Tuple[int, Optional[int]]:
        """Start the child; return its port and the token endpoint's own port (or None)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            path for path in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if path
        )
        process = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(self._config).encode("utf-8") + b"\n")
            process.stdin.flush()
            lines: queue.Queue[bytes] = queue.Queue()
            reader = threading.Thread(target=_read_line, args=(process.stdout, lines), daemon=True)
            reader.start()
            try:
                line = lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                raise RuntimeError("the sandbox process did not start in time") from None
            reader.join()
            text = line.decode("ascii", errors="replace").split()
            ports = [int(word) for word in text[1:] if word.isdigit()]
            if text[:1] != [READY_PREFIX] or len(ports) not in (1, 2) or len(ports) < len(text) - 1:
                process.wait(STOP_TIMEOUT)
                raise RuntimeError(
                    f"the sandbox process failed to start (exit code {process.returncode})"
                )
            return ports[0], ports[1] if len(ports) == 2 else None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the child's lifeline, wait for it to exit, kill it if it does not. Idempotent."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
