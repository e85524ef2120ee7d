"""A small HTTP/1.1 server layer on ``asyncio.Protocol``.

Why not ``http.server`` or aiohttp: the mock must stay stdlib-only (the package
later imports a compiled extension, and test helpers must not drag in extra
dependencies), it must answer a few thousand requests a second on a small
machine, and the fault modes need control that a framework hides: answering
nothing, writing garbage, cutting a body short, noticing at once that a client
went away. A protocol with its own parser gives all of that in little code.

What it speaks: HTTP/1.0 and 1.1 requests in origin or absolute form,
keep-alive (the HTTP/1.1 default; ``Connection: close`` honoured), bodies with
``Content-Length``, ``Expect: 100-continue``, pipelined requests (answered in
order, one at a time). A malformed request gets 400 and the connection is
closed; a ``Transfer-Encoding`` body (chunked) gets 501, because Splash's
clients never send one and a mock that guessed would hide bugs.

An :class:`HttpApp` wraps a handler function: it returns a
:class:`Response` to send now, an ``asyncio`` future (a task) whose result is
sent when it finishes, or ``None`` when the application has already dealt with
the connection (closed it, or left it hanging on purpose).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

__all__ = ["Connection", "HttpApp", "Request", "Response"]

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024

_METHOD_RE = re.compile(rb"[A-Z][A-Z0-9_-]*")
_TOKEN_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_REASONS.update({498: "Expired Arguments", 520: "Unknown Error"})


@dataclass(slots=True)
class Request:
    """One parsed request; ``headers`` keys are lower-case."""

    method: str
    target: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


@dataclass(slots=True)
class Response:
    """An answer to send.

    ``raw`` is for the broken answers of fault modes: when it is set, exactly
    those bytes are written (possibly none) and the connection is closed,
    whatever the request asked for.
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    raw: bytes | None = None


class HttpError(Exception):
    """A request the parser refuses; the connection is closed after the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[["Connection", Request], "Response | asyncio.Future[Response | None] | None"]


class HttpApp:
    """One listening port's application: its handler and its connections.

    Keeps the set of open connections so that a fault can close them all, and
    the header bytes added to every answer (the node's name, for instance).
    """

    def __init__(self, handler: Handler, extra_headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.handle = handler
        self.connections: set[Connection] = set()
        self.extra_header_bytes = b""
        self.set_extra_headers(extra_headers)

    def set_extra_headers(self, headers: tuple[tuple[str, str], ...]) -> None:
        """Set the headers added to every answer."""
        self.extra_header_bytes = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("latin-1")

    def protocol(self) -> Connection:
        """Protocol factory for ``loop.create_server``."""
        return Connection(self)


class Connection(asyncio.Protocol):
    """One client connection: parse, dispatch, answer, repeat."""

    def __init__(self, app: HttpApp) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: Why the server closed this connection, or ``None`` while open or
        #: when the client closed it (a client disconnect).
        self.drop_reason: str | None = None
        self._buf = bytearray()
        self._busy: asyncio.Future[Response | None] | None = None
        self._hung = False
        self._continue_sent = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.app.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closed or self._hung:
            return
        self._buf += data
        if self._busy is None:
            self._process()

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone, as Twisted (and so
        # Splash) does: returning None lets the transport close itself.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.app.connections.discard(self)
        busy = self._busy
        if busy is not None and not busy.done():
            busy.cancel()

    # -- used by applications ---------------------------------------------

    def drop(self, reason: str) -> None:
        """Close at once without an answer, cancelling the request in progress."""
        if self.closed:
            return
        self.drop_reason = reason
        self.closed = True
        busy = self._busy
        if busy is not None and not busy.done():
            busy.cancel()
        if self.transport is not None:
            self.transport.close()

    def hang(self) -> None:
        """Read everything from now on and never answer; the socket stays open."""
        self._hung = True
        self._buf.clear()

    # -- internals ---------------------------------------------------------

    def _process(self) -> None:
        while not self.closed and not self._hung and self._busy is None:
            try:
                request = self._parse()
            except HttpError as err:
                self._send_error(err)
                return
            if request is None:
                return
            try:
                result = self.app.handle(self, request)
            except Exception:
                log.exception("mock splash: handler failed")
                result = Response(500, b"internal error in the mock\n", "text/plain", close=True)
            if result is None:
                return
            if isinstance(result, Response):
                self._send(result, request)
                continue
            self._busy = result
            result.add_done_callback(lambda fut, req=request: self._on_done(fut, req))

    def _on_done(self, fut: asyncio.Future[Response | None], request: Request) -> None:
        self._busy = None
        if fut.cancelled() or self.closed:
            return
        exc = fut.exception()
        if exc is not None:
            log.error("mock splash: handler failed", exc_info=exc)
            response: Response | None = Response(
                500, b"internal error in the mock\n", "text/plain", close=True
            )
        else:
            response = fut.result()
        if response is None:
            return
        self._send(response, request)
        if not self.closed and self._buf:
            self._process()

    def _send(self, response: Response, request: Request) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if response.raw is not None:
            if response.raw:
                transport.write(response.raw)
            self.drop_reason = "fault"
            self.closed = True
            transport.close()
            return
        keep_alive = request.keep_alive and not response.close
        transport.write(self._encode(response, keep_alive, request.version == "HTTP/1.0"))
        if not keep_alive:
            self.closed = True
            transport.close()

    def _send_error(self, err: HttpError) -> None:
        body = f"{err.status} {_REASONS.get(err.status, 'Error')}: {err.message}\n".encode()
        if self.transport is not None and not self.closed:
            self.transport.write(
                self._encode(Response(err.status, body, "text/plain; charset=utf-8"), False, False)
            )
            self.closed = True
            self.transport.close()

    def _encode(self, response: Response, keep_alive: bool, http10: bool) -> bytes:
        body = response.body
        head = (
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
            f"Server: mock-splash\r\nContent-Type: {response.content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        for name, value in response.headers:
            head += f"{name}: {value}\r\n"
        if not keep_alive:
            head += "Connection: close\r\n"
        elif http10:
            head += "Connection: keep-alive\r\n"
        return b"".join((head.encode("latin-1"), self.app.extra_header_bytes, b"\r\n", body))

    def _parse(self) -> Request | None:
        """Take one complete request off the buffer, or return None for more data."""
        buf = self._buf
        # RFC 9112 2.2: ignore empty lines before a request line.
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise HttpError(431, "request head too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise HttpError(400, "malformed request line")
        method_b, target_b, version_b = parts
        if not _METHOD_RE.fullmatch(method_b):
            raise HttpError(400, "malformed method")
        if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
            if version_b.startswith(b"HTTP/") and len(version_b) == 8:
                raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
            raise HttpError(400, "malformed HTTP version")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            colon = line.find(b":")
            if colon <= 0 or not _TOKEN_RE.fullmatch(line[:colon]):
                raise HttpError(400, "malformed header line")
            name = line[:colon].decode("ascii").lower()
            value = line[colon + 1 :].strip(b" \t").decode("latin-1")
            if name in headers:
                if name == "content-length" and headers[name] != value:
                    raise HttpError(400, "conflicting Content-Length headers")
                if name != "content-length":
                    headers[name] += ", " + value
            else:
                headers[name] = value
        if "transfer-encoding" in headers:
            raise HttpError(501, "Transfer-Encoding request bodies (chunked) are not supported")
        length = 0
        content_length = headers.get("content-length")
        if content_length is not None:
            if not content_length.isascii() or not content_length.isdigit():
                raise HttpError(400, "malformed Content-Length")
            length = int(content_length)
            if length > MAX_BODY_BYTES:
                raise HttpError(413, "request body too large")
        total = end + 4 + length
        if len(buf) < total:
            if (
                not self._continue_sent
                and headers.get("expect", "").lower() == "100-continue"
                and self.transport is not None
            ):
                self._continue_sent = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        self._continue_sent = False
        body = bytes(buf[end + 4 : total])
        del buf[:total]

        target = target_b.decode("latin-1")
        if target.startswith(("http://", "https://")):
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        if not target.startswith("/"):
            raise HttpError(400, "malformed request target")
        raw_path, _, query = target.partition("?")
        version = version_b.decode("ascii")
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        return Request(
            method=method_b.decode("ascii"),
            target=target,
            path=unquote(raw_path),
            query=query,
            version=version,
            headers=headers,
            body=body,
            keep_alive=keep_alive,
        )
