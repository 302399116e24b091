"""The gateway's direct path for proxied calls (``Upstream.relay``: from the ASGI scope to the
upstream and back, without request or response objects), against the loopback upstream of the
transport tests, whose every byte is written out: the request head the upstream receives, hrefs
rewritten or passed untouched, bodies streamed both ways, answers without a body, and upstream
failures as TMF errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.proxy import Pool, Upstream
from tests.integration.test_gateway_transport import Upstream_, _answer, _chunked_first, _echo_path, _silent

PUBLIC = "https://api.example.net"


async def _relay(proxy: Upstream, method: str, path: str, query: bytes = b"",
                 headers: list[tuple[bytes, bytes]] | None = None,
                 body: list[bytes] | None = None, leave: asyncio.Event | None = None,
                 ) -> tuple[int, dict[str, Any], list[bytes]]:
    """Relays one call; (status relay reported, the response start message, body messages).
    The client stays until the answer is sent, or until ``leave`` is set."""
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": headers or [(b"host", b"api.example.net")], "scheme": "https",
             "client": ("203.0.113.7", 50000)}
    pieces = list(body or [b""])

    async def receive() -> dict[str, Any]:
        if not pieces:  # the whole request was read: what comes next is the client leaving
            await (leave or asyncio.Event()).wait()
            return {"type": "http.disconnect"}
        chunk = pieces.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pieces)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    status = await proxy.relay(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    if leave is None:
        assert not sent[-1].get("more_body", False)
    return status, sent[0], [message["body"] for message in sent[1:]]


@asynccontextmanager
async def _proxied(upstream: Upstream_, max_connections: int = 4) -> AsyncIterator[Upstream]:
    """The gateway's upstream for the loopback server ``upstream``, its pool closed on the way out."""
    pool = Pool(connect_timeout=5, read_timeout=5, max_connections=max_connections)
    async with upstream as url:
        yield Upstream("serviceInventory", url, PUBLIC, pool)
        await pool.aclose()


def _headers(start: dict[str, Any]) -> dict[bytes, bytes]:
    return dict(start["headers"])


def test_the_upstream_receives_the_path_query_and_forwarding_headers() -> None:
    async def scenario() -> None:
        upstream = Upstream_(_echo_path)
        async with _proxied(upstream) as proxy:
            url = proxy.url
            status, _, body = await _relay(
                proxy, "POST", "/tmf-api/x/service", b"fields=name&limit=2",
                [(b"host", b"api.example.net"), (b"authorization", b"Bearer t"), (b"connection", b"keep-alive"),
                 (b"x-forwarded-for", b"198.51.100.1"), (b"accept-encoding", b"gzip"),
                 (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                 (b"content-length", b"7")], [b"{", b'"a":1}'])
        assert status == 200
        assert json.loads(b"".join(body)) == {"path": "/tmf-api/x/service?fields=name&limit=2", "connection": 1,
                                               "body": 7}
        head, sent_body = upstream.requests[0]
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /tmf-api/x/service?fields=name&limit=2 HTTP/1.1"
        fields = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
        assert ("host", url.removeprefix("http://")) in fields
        assert ("authorization", "Bearer t") in fields
        assert ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") in fields
        assert ("x-forwarded-for", "198.51.100.1, 203.0.113.7") in fields
        assert ("x-forwarded-proto", "https") in fields
        assert ("x-forwarded-host", "api.example.net") in fields
        assert ("accept-encoding", "identity") in fields  # hrefs are rewritten in plain bodies
        assert [name for name, _ in fields].count("host") == 1
        assert "connection" not in [name for name, _ in fields]
        assert sent_body == b'{"a":1}'

    asyncio.run(scenario())


def test_hrefs_and_location_are_rewritten_to_the_public_url_with_the_new_length() -> None:
    async def created(connection: int, index: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        href = f"{base}/tmf-api/x/service/1".encode()
        document = b'{"id": "1", "href": "%b"}' % href
        writer.write(b"HTTP/1.1 201 Created\r\ncontent-type: application/json;charset=utf-8\r\nlocation: %b\r\n"
                     b"content-length: %d\r\n\r\n%b" % (href, len(document), document))
        await writer.drain()
        return True

    async def scenario() -> None:
        nonlocal base
        upstream = Upstream_(created)
        async with _proxied(upstream) as proxy:
            base = proxy.url
            status, start, body = await _relay(proxy, "GET", "/tmf-api/x/service/1")
        assert status == start["status"] == 201
        document = b"".join(body)
        assert json.loads(document)["href"] == f"{PUBLIC}/tmf-api/x/service/1"
        headers = _headers(start)
        assert headers[b"location"] == f"{PUBLIC}/tmf-api/x/service/1".encode()
        assert headers[b"content-length"] == str(len(document)).encode()

    base = ""
    asyncio.run(scenario())


def test_an_upstream_that_knows_the_public_url_has_its_answer_passed_untouched() -> None:
    async def public(connection: int, index: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(_answer(b'{"href": "%b/tmf-api/x/service/1"}' % PUBLIC.encode()))
        await writer.drain()
        return True

    async def scenario() -> None:
        upstream = Upstream_(public)
        async with _proxied(upstream) as proxy:
            answers = [await _relay(proxy, "GET", "/tmf-api/x/service/1") for _ in range(3)]
        for _, _, body in answers:
            assert b"".join(body) == b'{"href": "%b/tmf-api/x/service/1"}' % PUBLIC.encode()
        assert upstream.connections == 1  # kept alive between the calls

    asyncio.run(scenario())


def test_a_large_answer_and_a_chunked_upload_are_streamed_and_the_connection_kept() -> None:
    size = 3 * 1024 * 1024

    async def scenario() -> None:
        upstream = Upstream_(_chunked_first(size, b"content-type: application/json\r\n"))
        async with _proxied(upstream) as proxy:
            _, start, chunks = await _relay(proxy, "GET", "/tmf-api/x/large")
            _, _, posted = await _relay(proxy, "POST", "/tmf-api/x/upload",
                                        headers=[(b"host", b"h"), (b"transfer-encoding", b"chunked")],
                                        body=[b"z" * 65536] * 4)
        assert sum(len(chunk) for chunk in chunks) == size
        assert len(chunks) > 2  # passed on in pieces as they came, not read whole first
        assert b"content-length" not in _headers(start)  # its length was never declared
        assert json.loads(b"".join(posted)) == {"path": "/tmf-api/x/upload", "connection": 1, "body": 4 * 65536}
        assert b"transfer-encoding: chunked" in upstream.requests[1][0]
        assert upstream.connections == 1

    asyncio.run(scenario())


def test_answers_without_a_body_keep_their_declared_length() -> None:
    async def bodiless(connection: int, index: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1234\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        return True

    async def scenario() -> None:
        upstream = Upstream_(bodiless)
        async with _proxied(upstream) as proxy:
            head = await _relay(proxy, "HEAD", "/tmf-api/x/service/1")
            deleted = await _relay(proxy, "DELETE", "/tmf-api/x/service/1")
        assert head[0] == 200 and _headers(head[1])[b"content-length"] == b"1234" and head[2] == [b""]
        assert deleted[0] == 204 and deleted[2] == [b""]
        assert upstream.connections == 1

    asyncio.run(scenario())


def test_an_unreachable_upstream_is_a_502_and_a_silent_one_a_504() -> None:
    async def scenario() -> None:
        upstream = Upstream_(_silent)
        pool = Pool(connect_timeout=5, read_timeout=0.2, max_connections=4)
        async with upstream as url:
            slow = await _relay(Upstream("serviceInventory", url, PUBLIC, pool), "GET", "/tmf-api/x/service")
        gone = await _relay(Upstream("serviceInventory", url, PUBLIC, pool), "GET", "/tmf-api/x/service")
        await pool.aclose()
        assert slow[0] == 504
        assert json.loads(b"".join(slow[2]))["reason"] == "Gateway timeout"
        assert gone[0] == 502
        error = json.loads(b"".join(gone[2]))
        assert error["code"] == error["status"] == "502"
        assert error["reason"] == "Bad gateway" and "try again" in error["message"]
        assert _headers(gone[1])[b"retry-after"] == b"5"
        assert _headers(gone[1])[b"content-type"].startswith(b"application/json")

    asyncio.run(scenario())


def test_a_client_that_leaves_stops_a_streamed_answer_and_its_upstream_connection() -> None:
    async def endless(connection: int, index: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if connection > 1:
            return await _echo_path(connection, index, head, body, writer)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:  # an answer that would never end; only the gateway closing the connection stops it
            writer.write(b"10000\r\n" + b"y" * 65536 + b"\r\n")
            await writer.drain()
            served.set()

    async def scenario() -> None:
        upstream = Upstream_(endless)
        leave = asyncio.Event()
        async with _proxied(upstream, max_connections=1) as proxy:
            relayed = asyncio.ensure_future(_relay(proxy, "GET", "/tmf-api/x/export", leave=leave))
            await served.wait()
            leave.set()
            # Safety timeout only: a relay that ignored the client's leaving would never end.
            status, _, chunks = await asyncio.wait_for(relayed, 60)
            # The one connection place is free again: the next call gets through, on a new connection.
            _, _, after = await asyncio.wait_for(_relay(proxy, "GET", "/tmf-api/x/after"), 60)
        assert status == 499
        assert chunks and all(chunks)
        assert json.loads(b"".join(after))["connection"] == 2

    served = asyncio.Event()
    asyncio.run(scenario())
