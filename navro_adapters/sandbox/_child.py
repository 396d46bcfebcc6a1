"""Child side of process mode: ``python -m navro_adapters.sandbox._child``.

Reads one JSON line of configuration from stdin, serves, prints the ready line with its port
(and the token endpoint's own port, if any), then serves until stdin reaches end-of-file (the
parent closed it or died). See :mod:`navro_adapters.sandbox.process`.
"""

from __future__ import annotations

import json
import sys

from .listeners import start_servers
from .process import READY_PREFIX

__all__ = ["main"]


def main() -> int:
    """Child side: serve until stdin reaches end-of-file."""
    stdin = sys.stdin.buffer
    try:
        config = json.loads(stdin.readline().decode("utf-8"))
        _, servers = start_servers(config)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:  # ssl.SSLError too
        print(f"navro sandbox: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    try:
        ports = [servers.port] if servers.token_port is None else [servers.port, servers.token_port]
        sys.stdout.write(" ".join([READY_PREFIX, *map(str, ports)]) + "\n")
        sys.stdout.flush()
        while stdin.read(65536):  # blocks until the parent closes stdin or dies
            pass
    except KeyboardInterrupt:
        pass
    finally:
        servers.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
