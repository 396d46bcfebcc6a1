"""A small HTTP/1.1 server on asyncio, running its own event loop in a daemon thread.

Why not ``http.server``: the sandbox must hold hundreds of idle keep-alive connections without a
thread each, park a request forever (the ``hang`` fault) and still shut down at once, and reset
a connection half-way through a response. One event loop does all of that and a ``close()`` that
cancels every connection task is prompt by construction.

HTTP/1.1 itself (parsing, framing, keep-alive, ``100-continue``) is h11's: the engine feeds it
bytes and sends what it serialises. The engine adds only the sandbox's own refusals (size
limits, HTTP versions, request-target forms, ``Expect``, ambiguous framing); what to answer is
the handler's business. A handler gets a :class:`Request` and returns a :class:`Response` or a
:class:`Disconnect`.

Given an ``ssl.SSLContext`` the server speaks HTTPS: asyncio runs the TLS handshake on each
accepted socket (``loop.connect_accepted_socket``). A handshake that fails or stalls closes that
connection alone and is logged at DEBUG; the server serves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import http
import json
import logging
import os
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Awaitable, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union
from urllib.parse import urlsplit

try:
    import h11
except ImportError as exc:  # the sandbox is an extra; the core never imports this module
    raise ImportError(
        "the Navro sandbox needs h11: pip install 'navro-adapters[sandbox]'", name="h11"
    ) from exc

__all__ = ["Disconnect", "HttpServer", "Request", "Response"]

logger = logging.getLogger("navro_adapters")

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; larger gets 431
MAX_BODY_BYTES = 64 * 1024  # request body; larger gets 413
READ_SIZE = 64 * 1024  # bytes asked of the socket per read
LISTEN_BACKLOG = 1024  # benchmarks open 200 connections at once
ACCEPT_RETRY_DELAY = 0.1  # seconds to wait after accept() fails, e.g. out of descriptors
ACCEPT_BATCH = 64  # connections accepted per wake-up, so a connect storm cannot starve requests
START_TIMEOUT = 10.0  # seconds to wait for the loop thread to come up
SHUTDOWN_TIMEOUT = 5.0  # seconds to wait for connections to be cancelled on close
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take to complete the TLS handshake
CLOSE_TIMEOUT = 5.0  # seconds an orderly close (TLS: the peer's close_notify) may take
LINGER_SECONDS = 1.0  # after an error answer, drain the client's unread body this long ...
LINGER_MAX_BYTES = 1024 * 1024  # ... or this much, so the answer is not lost to an RST

#: What the ``reset`` disconnect sends before resetting: a head promising more than follows.
RESET_PARTIAL = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 128\r\n\r\n{"access_tok'
)

_VERSIONS = ("1.1", "1.0")
_NO_BODY_STATUSES = frozenset({204, 304})
_SERVER_NAME = b"navro-sandbox"
_SENDABLE_STATES = (h11.IDLE, h11.SEND_RESPONSE)  # where a refusal can still be answered


@dataclass(frozen=True)
class Request:
    """A parsed request. ``headers`` has lower-case names; repeated headers are comma-joined.

    ``keep_alive`` is what the client asked for; whether the connection really stays open is
    h11's decision, after the answer.
    """

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


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


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


def _joined_headers(event: h11.Request) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    for raw_name, raw_value in event.headers:  # h11 gives names lower-cased
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _check_head(version: str, headers: Mapping[str, str]) -> None:
    """The sandbox's own refusals of a request head h11 accepted."""
    if version not in _VERSIONS:
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    expect = headers.get("expect")
    if expect is not None and expect.lower() != "100-continue":
        raise HttpError(417, "unsupported Expect header")
    # h11 lets Transfer-Encoding win over Content-Length; a test server refuses the ambiguity.
    if "transfer-encoding" in headers and ("content-length" in headers or version != "1.1"):
        raise HttpError(400, "ambiguous message framing")
    length = headers.get("content-length")
    if length is not None and int(length) > MAX_BODY_BYTES:  # h11 checked it is digits
        raise HttpError(413, "request body too large")


def _wants_keep_alive(version: str, headers: Mapping[str, str]) -> bool:
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    return version == "1.1" and "close" not in tokens


class _Peer:
    """One accepted connection: its streams, h11's state of it and the request being answered."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.method = ""  # a HEAD request's answer has no body
        self.received = 0  # bytes given to h11 since this request began

    async def next_event(self) -> object:
        """h11's next event, reading as needed; h11's refusals become :class:`HttpError`."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = 431 if exc.error_status_hint == 431 else 400
                raise HttpError(status, str(exc)) from None
            if event is not h11.NEED_DATA:
                return event
            if self.h11.they_are_waiting_for_100_continue:
                self.writer.write(
                    self.h11.send(
                        h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                    )
                )
            data = await self.reader.read(READ_SIZE)
            self.received += len(data)
            self.h11.receive_data(data)  # b"": end of input

    async def read_request(self) -> Optional[Request]:
        """The next whole request, or None when the client closed between requests."""
        self.method = ""
        event = await self.next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)  # what h11 yields first on a server connection
        self.method = event.method.decode("ascii")
        # h11 bounds an incomplete head only; one completed by the read that crossed the limit
        # is measured here.
        if self.received > MAX_HEAD_BYTES and self.head_size() > MAX_HEAD_BYTES:
            raise HttpError(431, "request head too large")
        version = event.http_version.decode("ascii")
        target = event.target.decode("ascii")
        headers = _joined_headers(event)
        _check_head(version, headers)
        path, query = _split_target(target)
        body = bytearray()
        while True:
            event = await self.next_event()
            if isinstance(event, h11.EndOfMessage):
                break
            assert isinstance(event, h11.Data)
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise HttpError(413, "request body too large")
        return Request(
            self.method,
            target,
            path,
            query,
            f"HTTP/{version}",
            headers,
            bytes(body),
            _wants_keep_alive(version, headers),
        )

    def respond(self, response: Response, date: bytes, close: bool) -> None:
        """Write ``response`` (and, with ``close``, ``Connection: close``) through h11."""
        headers: List[Tuple[bytes, bytes]] = [(b"Date", date), (b"Server", _SERVER_NAME)]
        if response.content_type is not None:
            headers.append((b"Content-Type", response.content_type.encode("latin-1")))
        headers.extend(
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
        )
        body = response.body
        if response.status in _NO_BODY_STATUSES:
            body = b""
        else:
            headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        if close:
            headers.append((b"Connection", b"close"))
        try:
            event = h11.Response(
                status_code=response.status, headers=headers, reason=_reason(response.status)
            )
        except h11.LocalProtocolError:  # e.g. a fault's 1xx status or odd header name
            logger.exception("sandbox answer is not valid HTTP; sending 500 instead")
            self.respond(json_response(500, {"error": "server_error"}), date, close)
            return
        data = self.h11.send(event)
        if body and self.method != "HEAD":
            data += self.h11.send(h11.Data(data=body))
        self.writer.write(data + self.h11.send(h11.EndOfMessage()))

    def head_size(self) -> int:
        """Bytes of the current request h11 has parsed (right after its Request event: the head)."""
        return self.received - len(self.h11.trailing_data[0])

    def next_cycle(self) -> None:
        """Reuse the connection for the next request (h11 keeps any pipelined bytes)."""
        self.h11.start_next_cycle()
        self.received = len(self.h11.trailing_data[0])

    @property
    def must_close(self) -> bool:
        """After an answer: does h11 say this connection cannot serve another request?"""
        return self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE


class HttpServer:
    """Serve ``handler`` on ``host:port`` (0 = a free port) from a background thread; HTTPS
    when given an ``ssl_context`` (a server-side context)."""

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._handler = handler
        self._host = host
        self._ssl_context = ssl_context
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
        self._date_cache: Tuple[int, bytes] = (0, b"")

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
        try:
            reader, writer = await self._open_streams(conn)
        except OSError as exc:  # ssl.SSLError included: a client that cannot speak TLS to us
            logger.debug("sandbox connection closed before any request: %s", exc)
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = None  # the transport owns (and will close) the socket now
        await self._serve(_Peer(reader, writer))

    async def _open_streams(
        self, conn: socket.socket
    ) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Streams over an accepted socket, after the TLS handshake when serving HTTPS."""
        if self._ssl_context is None:
            return await asyncio.open_connection(sock=conn)
        # open_connection() can only be a TLS client; these are the pieces start_server() uses.
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol,
            conn,
            ssl=self._ssl_context,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
        )
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def _serve(self, peer: _Peer) -> None:
        transport = peer.writer.transport
        self._transports.add(transport)
        abort = False
        try:
            abort = await self._serve_requests(peer)
            if not abort:
                abort = not await self._close(peer.writer)
        except (asyncio.CancelledError, ConnectionError, OSError):
            abort = True
        except Exception:  # one broken connection must not stop the server
            logger.exception("sandbox connection failed")
            abort = True
        finally:
            self._transports.discard(transport)
            if abort:
                transport.abort()

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> bool:
        """Close in order; False when that did not finish in time (the caller then aborts).

        Over TLS an orderly close waits for the client's close_notify, so it is bounded: a
        client that never answers must not keep the socket open past the sandbox's close().
        """
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            return False
        return True

    async def _serve_requests(self, peer: _Peer) -> bool:
        """Serve requests until the connection should close; True means close abruptly."""
        while True:
            try:
                request = await peer.read_request()
            except HttpError as exc:
                await self._refuse(peer, exc)
                return False
            if request is None:
                return False
            try:
                reply = await self._handler(request)
            except Exception:  # a handler bug answers 500; the server lives on
                logger.exception("sandbox handler failed")
                reply = json_response(500, {"error": "server_error"})
            if isinstance(reply, Disconnect):
                return await self._disconnect(reply, peer.writer)
            peer.respond(reply, self._http_date(), reply.close)
            await peer.writer.drain()
            if peer.must_close:
                return False
            peer.next_cycle()

    async def _refuse(self, peer: _Peer, error: HttpError) -> None:
        """Answer a request the engine could not accept, then close without losing the answer."""
        if peer.h11.our_state in _SENDABLE_STATES:
            response = json_response(
                error.status, {"error": "invalid_request", "error_description": str(error)}
            )
            peer.respond(response, self._http_date(), close=True)
        writer, reader = peer.writer, peer.reader
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
                data = await asyncio.wait_for(reader.read(READ_SIZE), remaining)
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
            writer.write(RESET_PARTIAL)  # raw bytes: h11 would (rightly) never send half an answer
            await writer.drain()
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return True  # abort() with linger 0 sends RST
        return False  # DROP: an orderly close, without a response

    def _http_date(self) -> bytes:
        now = int(time.time())
        if self._date_cache[0] != now:
            self._date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
        return self._date_cache[1]
