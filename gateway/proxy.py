"""Forwarding a request to the process that serves its API: pooled connections, bounded
timeouts, responses streamed back, and the upstream's own address in ``href``s and
``Location`` replaced by the public URL partners use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from services.tmf import telemetry
from services.tmf.errors import JSON, error_bytes

from .transport import StreamTransport

log = structlog.get_logger("gateway.proxy")
# RFC 9110 §7.6.1: connection-specific fields are not forwarded.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade", b"host"})
# Bodies we rewrite are read whole; anything larger than this is streamed untouched.
MAX_REWRITTEN_BYTES = 16 * 1024 * 1024
MAX_BUFFERED_BYTES = 1024 * 1024


def tmf_error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_bytes(status, reason, message), status_code=status, media_type=JSON,
                    headers=headers)


# Request headers the gateway sets itself.
# ``Expect`` is answered by the gateway's own server as it reads the body; not sent upstream.
_REPLACED = HOP_BY_HOP | {b"expect", b"accept-encoding", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}


def _forwarded_headers(request: Request) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _REPLACED]
    client = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    return [*headers,
            (b"x-forwarded-for", f"{prior}, {client}".encode() if prior else client.encode()),
            (b"x-forwarded-proto", request.url.scheme.encode()),
            (b"x-forwarded-host", request.headers.get("host", "").encode("latin-1")),
            # Rewriting hrefs needs the plain body.
            (b"accept-encoding", b"identity")]


def _response_headers(raw: Iterable[tuple[bytes, bytes]], rewrite: tuple[bytes, bytes] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in raw:
        name = key.lower()
        if name in HOP_BY_HOP:
            continue
        if rewrite is not None and name in {b"location", b"content-location"}:
            value = value.replace(*rewrite)
        headers[key.decode("latin-1")] = value.decode("latin-1")
    return headers


class Pool:
    """Keep-alive connections to every upstream, used at httpx's transport level: the gateway
    passes calls through, so a client's cookie jar (which would carry one partner's cookies to
    the next), redirects and auth flows have no place here, and cost time on every call. The
    transport is the gateway's own, with a compiled HTTP parser (see ``gateway.transport``)."""

    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int) -> None:
        self.transport = StreamTransport(max_connections)
        self._traced: httpx.AsyncBaseTransport | None = None
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout).as_dict()

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                   content: bytes | AsyncIterator[bytes] | None) -> httpx.Response:
        """The upstream's answer, its body still to be read (or closed)."""
        request = httpx.Request(method, url, headers=headers, content=content, extensions={"timeout": self.timeout})
        transport: httpx.AsyncBaseTransport = self.transport
        if telemetry.enabled():  # telemetry: a client span, and traceparent sent upstream
            transport = self._traced = self._traced or telemetry.traced_transport(self.transport)
        response = await transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()


class Upstream:
    """One API process reached over HTTP."""

    def __init__(self, name: str, url: str, public_url: str, client: Pool) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.client = client
        self._rewrite = (self.url.encode(), self.public_url.encode()) if self.url != self.public_url else None

    async def forward(self, request: Request) -> Response:
        target = self.url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        declared = request.headers.get("content-length", "")
        # A body of known, bounded size goes in one piece, as a direct call sends it; larger or
        # chunked ones are streamed through. Without either header there is no body (RFC 9112
        # §6.3), and none is sent: a stream would go out as an empty chunked body.
        content: bytes | AsyncIterator[bytes] | None = None
        if declared.isdigit() and int(declared) <= MAX_BUFFERED_BYTES:
            content = await request.body()
        elif declared or "transfer-encoding" in request.headers:
            content = request.stream()
        try:
            upstream = await self.client.send(request.method, target, _forwarded_headers(request), content)
        except httpx.TimeoutException:
            return tmf_error(504, "Gateway timeout", f"the {self.name} API did not answer in time; try again")
        except httpx.HTTPError as exc:
            log.warning("upstream unreachable", api=self.name, error=type(exc).__name__)
            return tmf_error(502, "Bad gateway", f"the {self.name} API cannot be reached; try again shortly",
                             {"Retry-After": "5"})
        headers = _response_headers(upstream.headers.raw, self._rewrite)
        content_type = upstream.headers.get("content-type", "")
        declared = upstream.headers.get("content-length")
        small = declared is not None and declared.isdigit() and int(declared) <= MAX_REWRITTEN_BYTES
        if self._rewrite is not None and "json" in content_type and small:
            try:
                body = await upstream.aread()
            except httpx.HTTPError:
                return tmf_error(502, "Bad gateway", f"the {self.name} API broke off its answer; try again")
            finally:
                await upstream.aclose()
            headers.pop("content-length", None)
            return Response(body.replace(*self._rewrite), status_code=upstream.status_code, headers=headers)
        return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code, headers=headers,
                                 background=BackgroundTask(upstream.aclose))


def route_table(base_paths: dict[str, str], upstreams: dict[str, Any]) -> list[tuple[str, Any]]:
    """(base path, upstream) pairs, longest base path first so that the most specific wins."""
    pairs = [(base_paths[name], upstream) for name, upstream in upstreams.items()]
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)
