"""The gateway's own HTTP/1.1 transport against a plain asyncio server on loopback whose every
misbehaviour is written out here: connections kept and reused, a kept-alive connection the
upstream drops (sent again only when that is safe), timeouts, and bodies streamed both ways."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from gateway.proxy import Pool, Upstream
from gateway.transport import StreamTransport

Handler = Callable[[int, int, bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]
TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


class Upstream_:
    """A loopback server reading HTTP/1.1 requests; ``handler(connection number, request number
    on that connection, head, body, writer)`` answers and says whether to keep the connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        try:
            for index in range(1, 1000):
                head = await reader.readuntil(b"\r\n\r\n")
                body = await _read_body(reader, head)
                self.requests.append((head, body))
                if not await self.handler(number, index, head, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                return body
    for line in lowered.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    return b""


def _answer(body: bytes, status: int = 200) -> bytes:
    return b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
        status, len(body), body)


async def _echo_path(connection: int, index: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    path = head.split(b" ")[1]
    writer.write(_answer(b'{"path": "%b", "connection": %d, "body": %d}' % (path, connection, len(body))))
    await writer.drain()
    return True


def _chunked_first(size: int, content_type: bytes = b"") -> Handler:
    """A handler answering a connection's first request with ``size`` bytes in 64 KiB chunks
    of undeclared total length, and echoing the path of the others."""
    async def handler(connection: int, index: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if index > 1:
            return await _echo_path(connection, index, head, body, writer)
        writer.write(b"HTTP/1.1 200 OK\r\n%btransfer-encoding: chunked\r\n\r\n" % content_type)
        for _ in range(size // 65536):
            writer.write(b"10000\r\n" + b"y" * 65536 + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return handler


async def _call(transport: StreamTransport, method: str, url: str, **options: Any) -> httpx.Response:
    request = httpx.Request(method, url, extensions={"timeout": TIMEOUTS}, **options)
    response = await transport.handle_async_request(request)
    await response.aread()
    return response


def test_keeps_the_connection_alive_between_calls() -> None:
    async def scenario() -> None:
        upstream = Upstream_(_echo_path)
        transport = StreamTransport(max_connections=4)
        async with upstream as url:
            answers = [await _call(transport, "GET", f"{url}/a/{n}?q={n}") for n in range(5)]
            posted = await _call(transport, "POST", f"{url}/b", content=b"x" * 1000)
            await transport.aclose()
        assert [a.json()["path"] for a in answers] == [f"/a/{n}?q={n}" for n in range(5)]
        assert posted.json() == {"path": "/b", "connection": 1, "body": 1000}
        assert upstream.connections == 1

    asyncio.run(scenario())


async def _drop_the_second(connection: int, index: int, head: bytes, body: bytes,
                           writer: asyncio.StreamWriter) -> bool:
    """Answers the first request of each connection, then closes on the next one unanswered:
    what an upstream that ends an idle connection just as a call goes out looks like."""
    if index > 1:
        return False
    return await _echo_path(connection, index, head, body, writer)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_an_idempotent_call_on_a_dropped_connection_is_sent_again(method: str) -> None:
    async def scenario() -> None:
        upstream = Upstream_(_drop_the_second)
        transport = StreamTransport(max_connections=4)
        async with upstream as url:
            first = await _call(transport, "GET", f"{url}/first")
            second = await _call(transport, method, f"{url}/second", content=b"{}")
            await transport.aclose()
        assert first.json()["connection"] == 1
        assert second.status_code == 200
        assert second.json() == {"path": "/second", "connection": 2, "body": 2}
        # The second call reached the first connection, was dropped there, then went on a new one.
        assert [head.split(b" ")[1] for head, _ in upstream.requests] == [b"/first", b"/second", b"/second"]

    asyncio.run(scenario())


def test_a_post_on_a_dropped_connection_is_not_sent_again_and_is_a_502() -> None:
    async def scenario() -> None:
        upstream = Upstream_(_drop_the_second)
        pool = Pool(connect_timeout=5, read_timeout=5, max_connections=4)
        async with upstream as url:
            proxy = Upstream("serviceInventory", url, url, pool)
            first = await proxy.forward(_request("GET", "/first"))
            second = await proxy.forward(_request("POST", "/second", b'{"name": "x"}'))
            await pool.aclose()
        assert first.status_code == 200
        assert second.status_code == 502
        assert second.headers["retry-after"] == "5"
        assert [head.split(b" ")[0] for head, _ in upstream.requests] == [b"GET", b"POST"]

    asyncio.run(scenario())


async def _silent(connection: int, index: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    await asyncio.sleep(30)  # far longer than the tests' read timeouts
    return False


def test_an_upstream_that_does_not_answer_in_time_is_a_504() -> None:
    async def scenario() -> None:
        upstream = Upstream_(_silent)
        pool = Pool(connect_timeout=5, read_timeout=0.2, max_connections=4)
        async with upstream as url:
            proxy = Upstream("serviceInventory", url, url, pool)
            answer = await proxy.forward(_request("GET", "/service"))
            await pool.aclose()
        assert answer.status_code == 504
        assert b"did not answer in time" in bytes(answer.body)

    asyncio.run(scenario())


def test_a_large_body_is_streamed_both_ways_and_the_connection_kept() -> None:
    size = 5 * 1024 * 1024

    async def upload() -> Any:
        for _ in range(16):
            yield b"z" * 65536

    async def scenario() -> None:
        upstream = Upstream_(_chunked_first(size))
        transport = StreamTransport(max_connections=4)
        async with upstream as url:
            request = httpx.Request("GET", f"{url}/large", extensions={"timeout": TIMEOUTS})
            response = await transport.handle_async_request(request)
            chunks = [len(chunk) async for chunk in response.aiter_raw()]
            posted = await _call(transport, "POST", f"{url}/upload", content=upload())
            await transport.aclose()
        assert sum(chunks) == size
        assert len(chunks) > 1  # it came in pieces, not read whole first
        assert posted.json() == {"path": "/upload", "connection": 1, "body": 16 * 65536}
        assert b"transfer-encoding: chunked" in upstream.requests[1][0].lower()
        assert upstream.connections == 1

    asyncio.run(scenario())


def test_an_answer_broken_off_in_its_body_is_an_error_and_the_connection_not_reused() -> None:
    async def broken(connection: int, index: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if connection == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
            await writer.drain()
            return False
        return await _echo_path(connection, index, head, body, writer)

    async def scenario() -> None:
        upstream = Upstream_(broken)
        transport = StreamTransport(max_connections=4)
        async with upstream as url:
            with pytest.raises(httpx.RemoteProtocolError):
                await _call(transport, "GET", f"{url}/broken")
            after = await _call(transport, "GET", f"{url}/after")
            await transport.aclose()
        assert after.json()["connection"] == 2

    asyncio.run(scenario())


def _request(method: str, path: str, body: bytes = b"") -> Request:
    headers = [(b"host", b"gateway.test"), (b"content-type", b"application/json")]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a disconnect would come here; none does in these tests
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "scheme": "http", "server": ("gateway.test", 80), "client": ("127.0.0.1", 5000),
             "root_path": "", "http_version": "1.1"}
    return Request(scope, receive)


def test_an_answer_left_unread_closes_its_connection_and_frees_its_place() -> None:
    async def large(connection: int, index: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if connection == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10000000\r\n\r\n" + b"y" * 65536)
            await writer.drain()
            await asyncio.sleep(30)  # the rest never comes; the caller gives up first
            return False
        return await _echo_path(connection, index, head, body, writer)

    async def scenario() -> None:
        upstream = Upstream_(large)
        transport = StreamTransport(max_connections=1)  # the next call needs the first one's place
        async with upstream as url:
            request = httpx.Request("GET", f"{url}/large", extensions={"timeout": TIMEOUTS})
            response = await transport.handle_async_request(request)
            async for chunk in response.aiter_raw():
                assert chunk
                break
            await response.aclose()
            after = await _call(transport, "GET", f"{url}/after")
            await transport.aclose()
        assert after.json()["connection"] == 2

    asyncio.run(scenario())
