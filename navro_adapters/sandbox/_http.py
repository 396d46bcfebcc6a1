"""A small HTTP/1.1 server on asyncio, running its own event loop in a daemon thread.

Why not ``http.server``: the sandbox must hold hundreds of idle keep-alive connections without a
thread each, park a request forever (the ``hang`` fault) and still shut down at once, and reset
a connection half-way through a response. One event loop does all of that and a ``close()`` that
cancels every connection task is prompt by construction.

The engine knows HTTP framing only; what to answer is the handler's business. A handler gets a
:class:`Request` and returns a :class:`Response` or a :class:`Disconnect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import http
import json
import logging
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Awaitable, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union
from urllib.parse import urlsplit

__all__ = ["Disconnect", "HttpServer", "Request", "Response"]

logger = logging.getLogger("navro_adapters")

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; larger gets 431
MAX_BODY_BYTES = 64 * 1024  # request body; larger gets 413
LISTEN_BACKLOG = 1024  # benchmarks open 200 connections at once
ACCEPT_RETRY_DELAY = 0.1  # seconds to wait after accept() fails, e.g. out of descriptors
ACCEPT_BATCH = 64  # connections accepted per wake-up, so a connect storm cannot starve requests
START_TIMEOUT = 10.0  # seconds to wait for the loop thread to come up
SHUTDOWN_TIMEOUT = 5.0  # seconds to wait for connections to be cancelled on close
LINGER_SECONDS = 1.0  # after an error answer, drain the client's unread body this long ...
LINGER_MAX_BYTES = 1024 * 1024  # ... or this much, so the answer is not lost to an RST

#: What the ``reset`` disconnect sends before resetting: a head promising more than follows.
RESET_PARTIAL = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 128\r\n\r\n{"access_tok'
)

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS_RE = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]{1,8})[ \t]*(?:;[^\r\n]*)?")
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")
_NO_BODY_STATUSES = frozenset({204, 304})
_SERVER_NAME = "navro-sandbox"


@dataclass(frozen=True)
class Request:
    """A parsed request. ``headers`` has lower-case names; repeated headers are comma-joined."""

    method: str
    target: str
    path: str
    query: str
    version: str
    headers: Mapping[str, str]
    body: bytes
    keep_alive: bool


@dataclass(frozen=True)
class Response:
    """An answer. ``Content-Length``, ``Date`` and ``Connection`` are added by the engine."""

    status: int
    body: bytes = b""
    content_type: Optional[str] = None
    headers: Tuple[Tuple[str, str], ...] = ()
    close: bool = False


class Disconnect(enum.Enum):
    """Connection-level answers: no HTTP response, or only part of one."""

    DROP = "drop"
    RESET = "reset"
    HANG = "hang"


Reply = Union[Response, Disconnect]
Handler = Callable[[Request], Awaitable[Reply]]


class HttpError(Exception):
    """A request the engine refuses before the handler sees it; the connection then closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(
    status: int, document: object, headers: Tuple[Tuple[str, str], ...] = ()
) -> Response:
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return Response(status, body, "application/json", headers)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _parse_head(head: bytes) -> Tuple[str, str, str, Dict[str, str]]:
    """Split a request head into method, target, version and lower-cased headers."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise HttpError(400, "malformed method")
    if version not in _VERSIONS:
        if re.fullmatch(r"HTTP/[0-9]\.[0-9]", version):
            raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise HttpError(400, "malformed HTTP version")
    if not target or any(ch in target for ch in " \t\x00\n"):
        raise HttpError(400, "malformed request target")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise HttpError(400, "obsolete header line folding is not accepted")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.fullmatch(name) or any(ch in value for ch in "\n\x00"):
            raise HttpError(400, "malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return method, target, version, headers


def _split_target(target: str) -> Tuple[str, str]:
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    if target.startswith(("http://", "https://")):
        try:
            parts = urlsplit(target)
        except ValueError:
            raise HttpError(400, "malformed absolute request target") from None
        return parts.path or "/", parts.query
    raise HttpError(400, "unsupported request target form")


def _wants_keep_alive(version: str, headers: Mapping[str, str]) -> bool:
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens


class HttpServer:
    """Serve ``handler`` on ``host:port`` (0 = a free port) from a background thread."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._port = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._listener: Optional[socket.socket] = None
        # connection task -> its accepted socket, until a transport takes the socket over
        self._connections: Dict[asyncio.Task[None], Optional[socket.socket]] = {}
        self._transports: Set[asyncio.WriteTransport] = set()
        self._released: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._closed = False
        self._date_cache: Tuple[int, str] = (0, "")

    @property
    def port(self) -> int:
        return self._port

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bind (errors raise here, in the caller's thread) and start serving."""
        with self._lock:
            if self._thread is not None or self._closed:
                raise RuntimeError("an HttpServer can be started once")
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                if os.name == "posix":  # elsewhere SO_REUSEADDR allows port hijacking
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self._host, self._requested_port))
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            self._port = sock.getsockname()[1]
            self._thread = threading.Thread(
                target=self._run, args=(sock,), name=f"navro-sandbox-{self._port}", daemon=True
            )
            self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("the sandbox server thread did not start in time")
        if self._start_error is not None:
            raise RuntimeError("the sandbox server failed to start") from self._start_error

    def close(self) -> None:
        """Stop serving, release hung requests, close every connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            try:
                future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
                future.result(SHUTDOWN_TIMEOUT)
            except Exception:  # closing must not raise; the thread is a daemon
                logger.debug("sandbox shutdown did not complete cleanly", exc_info=True)
            with contextlib.suppress(RuntimeError):  # the loop may have closed itself
                loop.call_soon_threadsafe(loop.stop)
        thread.join(SHUTDOWN_TIMEOUT)

    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._open(sock))
            except BaseException as exc:  # reported to start()
                self._start_error = exc
                sock.close()
                return
            finally:
                self._ready.set()
            loop.run_forever()
        finally:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            self._stop_accepting()
            loop.close()

    async def _open(self, sock: socket.socket) -> None:
        self._released = asyncio.Event()
        self._listener = sock
        self._resume_accepting()

    # Our own accept callback rather than asyncio.start_server: each accepted socket is owned by
    # a tracked task within the same callback, so close() can never miss one mid-handover.

    def _resume_accepting(self) -> None:
        if self._listener is not None and self._loop is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept, self._listener)

    def _stop_accepting(self) -> None:
        if self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None

    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up before we accepted it
            except OSError:  # out of file descriptors, most likely: breathe, then retry
                logger.warning("sandbox accept failed", exc_info=True)
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_RETRY_DELAY, self._resume_accepting)
                return
            conn.setblocking(False)
            task = loop.create_task(self._serve_socket(conn))
            self._connections[task] = conn
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        conn = self._connections.pop(task, None)
        if conn is not None:
            conn.close()  # the task ended before a transport took the socket over

    async def _shutdown(self) -> None:
        self._stop_accepting()
        if self._released is not None:
            self._released.set()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
        for transport in list(self._transports):
            transport.abort()
        await asyncio.sleep(0)  # let aborted transports run connection_lost and release sockets

    # -- one connection --------------------------------------------------------------------

    async def _serve_socket(self, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=conn, limit=MAX_HEAD_BYTES)
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = None  # the transport owns (and will close) the socket now
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        self._transports.add(transport)
        abort = False
        try:
            abort = await self._serve_requests(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError, OSError):
            abort = True
        except Exception:  # one broken connection must not stop the server
            logger.exception("sandbox connection failed")
            abort = True
        finally:
            self._transports.discard(transport)
            if abort:
                transport.abort()
            else:
                writer.close()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve requests until the connection should close; True means close abruptly."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return False  # the client closed the connection between requests
            except asyncio.LimitOverrunError:
                await self._refuse(reader, writer, HttpError(431, "request head too large"))
                return False
            head = head.lstrip(b"\r\n")  # RFC 9112 2.2: ignore empty lines before a request
            if not head:
                continue
            try:
                request = await self._read_request(head, reader, writer)
            except HttpError as exc:
                await self._refuse(reader, writer, exc)
                return False
            try:
                reply = await self._handler(request)
            except Exception:  # a handler bug answers 500; the server lives on
                logger.exception("sandbox handler failed")
                reply = json_response(500, {"error": "server_error"})
            if isinstance(reply, Disconnect):
                return await self._disconnect(reply, writer)
            keep_alive = request.keep_alive and not reply.close
            writer.write(
                self._serialize(reply, request.version, keep_alive, request.method == "HEAD")
            )
            await writer.drain()
            if not keep_alive:
                return False

    async def _read_request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Request:
        method, target, version, headers = _parse_head(head)
        path, query = _split_target(target)
        length_header = headers.get("content-length")
        coding = headers.get("transfer-encoding")
        expect = headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            raise HttpError(417, "unsupported Expect header")
        if coding is not None:
            if length_header is not None:
                raise HttpError(400, "both Transfer-Encoding and Content-Length")
            if coding.strip().lower() != "chunked" or version != "HTTP/1.1":
                raise HttpError(400, "unsupported Transfer-Encoding")
            if expect is not None:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await self._read_chunked(reader)
        elif length_header is not None:
            if not _DIGITS_RE.fullmatch(length_header):
                raise HttpError(400, "malformed Content-Length")
            length = int(length_header)
            if length > MAX_BODY_BYTES:
                raise HttpError(413, "request body too large")
            if expect is not None and length and version == "HTTP/1.1":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await reader.readexactly(length) if length else b""
        else:
            body = b""
        return Request(
            method, target, path, query, version, headers, body, _wants_keep_alive(version, headers)
        )

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks: List[bytes] = []
        total = 0
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise HttpError(400, "malformed chunk") from None
            match = _CHUNK_SIZE_RE.fullmatch(line[:-2])
            if match is None:
                raise HttpError(400, "malformed chunk size")
            size = int(match.group(1), 16)
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise HttpError(413, "request body too large")
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise HttpError(400, "malformed chunk terminator")
        while True:  # trailer fields, ignored, up to the empty line
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise HttpError(400, "malformed chunked trailer") from None
            if line == b"\r\n":
                return b"".join(chunks)

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, error: HttpError
    ) -> None:
        """Answer a request the engine could not accept, then close without losing the answer."""
        response = json_response(
            error.status, {"error": "invalid_request", "error_description": str(error)}
        )
        writer.write(self._serialize(response, "HTTP/1.1", False, False))
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        # Closing with unread input makes the kernel send RST, which can destroy the answer
        # before the client reads it: drain what the client is still sending, briefly.
        deadline = time.monotonic() + LINGER_SECONDS
        drained = 0
        while drained < LINGER_MAX_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                data = await asyncio.wait_for(reader.read(65536), remaining)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                break
            if not data:
                break
            drained += len(data)

    async def _disconnect(self, kind: Disconnect, writer: asyncio.StreamWriter) -> bool:
        if kind is Disconnect.HANG:
            if self._released is not None:
                await self._released.wait()
            return True
        if kind is Disconnect.RESET:
            writer.write(RESET_PARTIAL)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return True  # abort() with linger 0 sends RST
        return False  # DROP: an orderly close, without a response

    # -- responses -----------------------------------------------------------------------------

    def _http_date(self) -> str:
        now = int(time.time())
        if self._date_cache[0] != now:
            self._date_cache = (now, formatdate(now, usegmt=True))
        return self._date_cache[1]

    def _serialize(
        self, response: Response, version: str, keep_alive: bool, head_only: bool
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {response.status} {_reason(response.status)}",
            f"Date: {self._http_date()}",
            f"Server: {_SERVER_NAME}",
        ]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        body = response.body
        if response.status in _NO_BODY_STATUSES:
            body = b""
        else:
            lines.append(f"Content-Length: {len(body)}")
        if not keep_alive:
            lines.append("Connection: close")
        elif version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + body
