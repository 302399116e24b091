"""Event listeners for the benchmarks: one process serving any number of listeners, each on its
own loopback port (so each is its own origin to the dispatcher, as separate partners are), all
answering 201 at once and recording what arrived and when.

    python -m bench.listeners --count 20

The process binds its ports itself and prints one JSON line on stdout,
``{"control": URL, "listeners": [URL, ...]}``; each listener URL is a callback to subscribe
with (events arrive at ``<callback>/listener/<eventName>``). The control URL serves:

- ``GET  /_control/wait?count=N&timeout=S``: answers once N distinct events (listener and
  eventId) arrived in all, or after S seconds, with ``{"received": n}``;
- ``GET  /_control/records``: every POST so far, one row each: ``[listener, arrival monotonic
  seconds, arrival Unix seconds, eventId, eventType, eventTime, resource id, description]``
  (``time.monotonic()`` is the system-wide CLOCK_MONOTONIC on Linux, so the benchmark process
  can compare it with its own);
- ``POST /_control/reset``: forget everything received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import signal
import socket
import sys
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HOST = "127.0.0.1"


class Recorder:
    def __init__(self) -> None:
        self.records: list[list[Any]] = []
        self.distinct: set[tuple[int, Any]] = set()
        self._changed = asyncio.Event()

    async def receive(self, request: Request) -> Response:
        arrived, wall = time.monotonic(), time.time()
        body = await request.body()
        listener = int(request.path_params["listener"])
        try:
            event = json.loads(body)
            resource: dict[str, Any] = next(iter(event.get("event", {}).values()), {})
            self.records.append([listener, arrived, wall, event.get("eventId"), event.get("eventType"),
                                 event.get("eventTime"), resource.get("id"), resource.get("description")])
        except (ValueError, AttributeError, StopIteration):
            self.records.append([listener, arrived, wall, None, None, None, None, None])
        self.distinct.add((listener, self.records[-1][3]))
        self._changed.set()
        return Response(status_code=201)

    async def wait(self, request: Request) -> Response:
        count = int(request.query_params.get("count", "0"))
        deadline = time.monotonic() + float(request.query_params.get("timeout", "1"))
        while len(self.distinct) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return JSONResponse({"received": len(self.distinct)})

    async def dump(self, request: Request) -> Response:
        return JSONResponse(self.records)

    async def reset(self, request: Request) -> Response:
        self.records = []
        self.distinct = set()
        return JSONResponse({"received": 0})


def bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listeners")
    parser.add_argument("--count", type=int, default=1, help="listeners, each on its own port")
    args = parser.parse_args(argv)
    with contextlib.suppress(Exception):  # Linux: go when the benchmark goes (PR_SET_PDEATHSIG)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    recorder = Recorder()
    app = Starlette(routes=[
        Route("/_control/wait", recorder.wait, methods=["GET"]),
        Route("/_control/records", recorder.dump, methods=["GET"]),
        Route("/_control/reset", recorder.reset, methods=["POST"]),
        Route("/l{listener:int}/{rest:path}", recorder.receive, methods=["POST"]),
    ])
    control = bind()
    sockets = [bind() for _ in range(args.count)]
    ports = [s.getsockname()[1] for s in sockets]
    print(json.dumps({"control": f"http://{HOST}:{control.getsockname()[1]}",
                      "listeners": [f"http://{HOST}:{port}/l{i}" for i, port in enumerate(ports)]}), flush=True)
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                            server_header=False, date_header=False, backlog=2048)
    uvicorn.Server(config).run(sockets=[control, *sockets])
    return 0


if __name__ == "__main__":
    sys.exit(main())
