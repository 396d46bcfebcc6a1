"""Child side of process mode: ``python -m navro_adapters.sandbox._child``.

Reads one JSON line of configuration from stdin, serves, prints the ready line with its port,
then serves until stdin reaches end-of-file (the parent closed it or died). See
:mod:`navro_adapters.sandbox.process`.
"""

from __future__ import annotations

import json
import sys

from ._http import HttpServer
from .app import SandboxApp
from .process import READY_PREFIX
from .state import SandboxState

__all__ = ["main"]


def main() -> int:
    """Child side: serve until stdin reaches end-of-file."""
    stdin = sys.stdin.buffer
    try:
        config = json.loads(stdin.readline().decode("utf-8"))
        state = SandboxState(
            config["client_id"],
            config["client_secret"],
            config["company"],
            config["token_ttl"],
            config["token_latency"],
        )
        server = HttpServer(
            SandboxApp(state, config["control_key"]).handle, config["host"], config["port"]
        )
        server.start()
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
        print(f"navro sandbox: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(f"{READY_PREFIX} {server.port}\n")
        sys.stdout.flush()
        while stdin.read(65536):  # blocks until the parent closes stdin or dies
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
