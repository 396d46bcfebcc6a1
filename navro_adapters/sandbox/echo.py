"""A second local origin that records every request and answers 200.

Cross-origin tests point ``/v1/redirect?to=`` at it and then assert that no ``Authorization``
header ever reached it.
"""

from __future__ import annotations

import collections
import threading
from types import TracebackType
from typing import Deque, List, Optional, Type

from ._http import HttpServer, Reply, Request, json_response
from .server import url_host
from .state import MAX_LOGGED_BODY, MAX_SEEN_REQUESTS, SeenRequest

__all__ = ["EchoServer"]


class EchoServer:
    """A loopback HTTP server that answers ``200 {"ok": true, ...}`` to anything and records it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._server = HttpServer(self._handle, host, port)
        self._lock = threading.Lock()
        self._seen: Deque[SeenRequest] = collections.deque(maxlen=MAX_SEEN_REQUESTS)
        self._started = False

    async def _handle(self, request: Request) -> Reply:
        seen = SeenRequest(
            request.method,
            request.path,
            dict(request.headers),
            "other",
            request.query,
            request.body[:MAX_LOGGED_BODY],
        )
        with self._lock:
            self._seen.append(seen)
        return json_response(200, {"ok": True, "method": request.method, "path": request.path})

    def start(self) -> EchoServer:
        if not self._started:
            self._server.start()
            self._started = True
        return self

    def close(self) -> None:
        """Stop serving. Idempotent."""
        self._server.close()

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        if not self._started:
            raise RuntimeError("start the EchoServer first")
        return f"http://{url_host(self.host)}:{self._server.port}"

    def requests_seen(self) -> List[SeenRequest]:
        with self._lock:
            return list(self._seen)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
