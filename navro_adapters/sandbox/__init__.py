"""The embedded Navro sandbox: a real loopback HTTP server for the demo, tests and benchmarks."""

from __future__ import annotations

from .echo import EchoServer
from .faults import Fault, FaultKind
from .server import Sandbox
from .state import SandboxStats, SeenRequest

__all__ = ["EchoServer", "Fault", "FaultKind", "Sandbox", "SandboxStats", "SeenRequest"]
