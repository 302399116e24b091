"""The gateway's HTTP/1.1 transport to its upstreams: an ``httpx.AsyncBaseTransport`` over
asyncio streams that keeps keep-alive connections per upstream and parses answers with
httptools' compiled parser. httpx's default stack parses every byte in Python, which was most
of the gateway's own CPU time per forwarded call.

What it does not do, because an upstream is one of the suite's own processes: HTTP/2, proxies,
informational (1xx) answers (the gateway does not forward ``Expect``) and upgrades."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httptools
import httpx

# RFC 9110 §9.2.2: these may be sent again when a kept-alive connection turns out closed.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
READ_SIZE = 64 * 1024
Origin = tuple[str, str, int]


class _Answer:
    """httptools' callbacks for one response: status, raw headers, body chunks as they come."""

    __slots__ = ("chunks", "complete", "headers", "headers_done", "keep_alive", "parser", "reason")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.keep_alive = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.chunks: list[bytes] = []
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Asked now: the parser forgets the answer's flags once it is complete.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


@dataclass(slots=True)
class Reply:
    """An upstream's answer as it came: status, raw header pairs, and its body, still to be read
    (or closed) through ``body``."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: _Body

    @property
    def whole(self) -> bytes | None:
        """The whole body when it came with the head (the common case of a small answer), the
        connection already back in the pool; None while more is to be read."""
        return self.body.whole()


class _Stale(Exception):
    """A kept-alive connection was closed by the upstream before it read the request."""


class _Body(httpx.AsyncByteStream):
    """The answer's body, read from the connection as the caller iterates; the connection goes
    back to the pool once the whole answer is read, and is closed if the caller stops early."""

    def __init__(self, transport: StreamTransport, origin: Origin, connection: _Connection,
                 parser: Any, answer: _Answer, read_timeout: float | None, until_close: bool) -> None:
        self._transport = transport
        self._origin = origin
        self._connection: _Connection | None = connection
        self._parser = parser
        self._answer = answer
        self._read_timeout = read_timeout
        self._until_close = until_close
        if answer.complete:
            self._finish()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        answer = self._answer
        try:
            while True:
                if answer.chunks:
                    chunks, answer.chunks = answer.chunks, []
                    for chunk in chunks:
                        yield chunk
                if self._connection is None:
                    return
                data = await _read(self._connection, self._read_timeout)
                if not data:
                    if not self._until_close:
                        raise httpx.RemoteProtocolError("the upstream closed the connection within its answer")
                    answer.complete = True
                    self._drop()
                    continue
                _feed(self._parser, data)
                if answer.complete:
                    self._finish()
        finally:
            # Left early (an error, or the caller stopped reading): the rest of the answer is
            # still on the connection, which cannot carry another call.
            self._drop()

    def _finish(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if not self._until_close and self._answer.keep_alive:
            self._transport._release(self._origin, connection)
        else:
            connection.close()
            self._transport._release(self._origin, None)

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            self._transport._release(self._origin, None)

    async def aclose(self) -> None:
        self._drop()

    def whole(self) -> bytes | None:
        if self._connection is not None:
            return None
        chunks, self._answer.chunks = self._answer.chunks, []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read(connection: _Connection, seconds: float | None) -> bytes:
    try:
        async with asyncio.timeout(seconds):
            return await connection.reader.read(READ_SIZE)
    except TimeoutError as exc:
        raise httpx.ReadTimeout("the upstream did not answer in time") from exc
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc


def _feed(parser: Any, data: bytes) -> None:
    try:
        parser.feed_data(data)
    except httptools.HttpParserError as exc:
        raise httpx.RemoteProtocolError(f"malformed answer from the upstream: {exc}") from exc


class StreamTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to the gateway's upstreams over kept-alive asyncio streams. At most
    ``max_connections`` calls are in flight at once (a call waits for a free place up to the
    ``pool`` timeout) and at most as many idle connections are kept per upstream. The timeouts
    come from the request's ``timeout`` extension, as httpx's own transports take them."""

    def __init__(self, max_connections: int) -> None:
        self._max_idle = max_connections
        self._places = asyncio.Semaphore(max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"the gateway cannot call {url.scheme!r} URLs")
        origin: Origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        stream: AsyncIterable[bytes] | None = None
        body: bytes | None = None
        if isinstance(request.stream, httpx.ByteStream):
            body = b"".join([chunk async for chunk in _async_stream(request)])
        else:
            stream = _async_stream(request)
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        reply = await self.exchange(origin, request.method, _head(request), body, timeouts, stream, chunked)
        return httpx.Response(reply.status, headers=reply.headers, stream=reply.body,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reply.reason})

    async def exchange(self, origin: Origin, method: str, head: bytes, body: bytes | None,
                       timeouts: dict[str, float | None], stream: AsyncIterable[bytes] | None = None,
                       chunked: bool = False) -> Reply:
        """One call: ``head`` (request line and header lines, up to the blank line) and then
        ``body`` in the same write, or the chunks of ``stream`` (framed as chunks when
        ``chunked``). Raises httpx's exceptions, as httpx's own transports do."""
        places = self._places
        if places.locked():  # a timer only when the call has to wait for a place
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await places.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout("every connection to the upstreams is busy") from exc
        else:
            await places.acquire()
        try:
            return await self._exchange(origin, method, head, body, stream, chunked, timeouts)
        except BaseException:
            self._places.release()
            raise

    async def _exchange(self, origin: Origin, method: str, head: bytes, body: bytes | None,
                        stream: AsyncIterable[bytes] | None, chunked: bool,
                        timeouts: dict[str, float | None]) -> Reply:
        replayable = stream is None
        connection = self._idle_connection(origin)
        if connection is not None:
            try:
                return await self._send(method, origin, connection, head, body, stream, chunked, timeouts)
            except _Stale as exc:
                if not (replayable and method in IDEMPOTENT):
                    raise httpx.RemoteProtocolError("the upstream closed a kept-alive connection") from exc
        connection = await self._connect(origin, timeouts.get("connect"))
        try:
            return await self._send(method, origin, connection, head, body, stream, chunked, timeouts)
        except _Stale as exc:
            raise httpx.RemoteProtocolError("the upstream closed the connection without answering") from exc

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, seconds: float | None) -> _Connection:
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            tls = self._tls = self._tls or ssl.create_default_context()
        try:
            async with asyncio.timeout(seconds):
                reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=READ_SIZE)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return _Connection(reader, writer)

    async def _send(self, method: str, origin: Origin, connection: _Connection, head: bytes, body: bytes | None,
                    stream: AsyncIterable[bytes] | None, chunked: bool, timeouts: dict[str, float | None]) -> Reply:
        """Writes the request and reads the answer's head. ``_Stale`` if the connection was
        found closed before a byte of the answer came back."""
        try:
            try:
                await self._write(connection, head, body, stream, chunked, timeouts.get("write"))
            except httpx.WriteError as exc:
                raise _Stale() from exc
            answer = _Answer()
            parser = answer.parser
            read_timeout = timeouts.get("read")
            received = False
            while not answer.headers_done:
                try:
                    data = await _read(connection, read_timeout)
                except httpx.ReadError as exc:
                    if received:
                        raise
                    raise _Stale() from exc
                if not data:
                    if received:
                        raise httpx.RemoteProtocolError("the upstream closed the connection in the middle of its head")
                    raise _Stale()
                received = True
                _feed(parser, data)
        except BaseException:
            connection.close()
            raise
        status: int = parser.get_status_code()
        headers = answer.headers
        if method == "HEAD" or status in (204, 304):
            answer.complete = True  # no body follows (RFC 9112 §6.3), whatever the headers say
            answer.chunks.clear()
        until_close = not answer.complete and not any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers)
        return Reply(status, answer.reason, headers,
                     _Body(self, origin, connection, parser, answer, read_timeout, until_close))

    @staticmethod
    async def _write(connection: _Connection, head: bytes, body: bytes | None, stream: AsyncIterable[bytes] | None,
                     chunked: bool, seconds: float | None) -> None:
        writer = connection.writer
        if stream is None:
            # Head and body in one write: one segment on the wire for a small call, which the
            # socket usually takes whole, leaving nothing to wait for (and no timer to set).
            try:
                writer.write(head + body if body else head)
            except OSError as exc:
                raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
            if not writer.transport.get_write_buffer_size():
                return
        try:
            async with asyncio.timeout(seconds):
                if stream is None:
                    await writer.drain()
                    return
                writer.write(head)
                async for chunk in stream:
                    if chunk:
                        writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                        await writer.drain()
                if chunked:
                    writer.write(b"0\r\n\r\n")
                await writer.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout("the upstream did not take the request in time") from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc

    def _release(self, origin: Origin, connection: _Connection | None) -> None:
        """The call's place back, and its connection (if still good) among the idle ones."""
        self._places.release()
        if connection is None:
            return
        idle = self._idle.setdefault(origin, [])
        if self._closed or len(idle) >= self._max_idle or not connection.usable():
            connection.close()
        else:
            idle.append(connection)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _async_stream(request: httpx.Request) -> httpx.AsyncByteStream:
    stream = request.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise httpx.StreamError("the gateway sends only async request bodies")
    return stream


def _head(request: httpx.Request) -> bytes:
    lines = [b"%b %b HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [b"%b: %b\r\n" % pair for pair in request.headers.raw]
    lines.append(b"\r\n")
    return b"".join(lines)
