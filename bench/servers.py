"""The two HTTP servers a benchmark drives, each run as its own process so that the load
generator never shares an event loop or a core's time slice bookkeeping with them.

``suite``: the tmf-sqm application, built and served exactly as ``sqm serve`` does (uvicorn,
one process, lifespan on, structlog logging at ``SQM_LOG_LEVEL``, default INFO).
``baseline``: a bare Starlette app with its own ``AsyncMongoClient``, answering
``GET /service/{id}`` with one ``find_one`` by ``_id`` on the same server and collection.

    python -m bench.servers suite|baseline --port P --mongodb-uri URI --database NAME
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import signal
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

# The same filter `sqm serve` applies: connexion imports starlette's test client, which warns.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import uvicorn  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402


def _die_with_parent() -> None:
    # Linux: if the benchmark is killed, its servers go too (PR_SET_PDEATHSIG).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def suite_app(uri: str, database: str, public_url: str) -> Any:
    from services.app import create_app
    from services.tmf.logging import configure_logging
    from services.tmf.settings import Settings

    settings = Settings.from_env(mongodb_uri=uri, database=database, public_url=public_url)
    configure_logging(settings.log_level)
    return create_app(settings)


def baseline_app(uri: str, database: str) -> Starlette:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
        state["services"] = client[database]["service"]
        try:
            yield
        finally:
            await client.close()

    async def get_service(request: Request) -> Response:
        doc = await state["services"].find_one({"_id": request.path_params["id"]}, {"_id": 0, "_meta": 0})
        if doc is None:
            return JSONResponse({"code": "404", "reason": "Not found"}, status_code=404)
        return JSONResponse(doc)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "up"})

    return Starlette(routes=[Route("/service/{id}", get_service), Route("/health", health)],
                     lifespan=lifespan)


def suite_workers(args: argparse.Namespace) -> int:
    """The suite as ``sqm serve --workers N`` runs it, without the in-process gateway."""
    import os

    from services import workers

    os.environ.update({"SQM_MONGODB_URI": args.mongodb_uri, "SQM_DATABASE": args.database,
                       "SQM_PUBLIC_URL": f"http://{args.host}:{args.port}"})
    sock = workers.bind(args.host, args.port)
    pool = workers.Workers(sock, args.workers, None, with_gateway=False,
                           log_level=os.environ.get("SQM_LOG_LEVEL", "INFO").upper())
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if not pool.start(f"http://{args.host}:{args.port}/health/ready"):
            return 1
        return pool.wait(lambda: False)
    except KeyboardInterrupt:
        return 0
    finally:
        pool.stop()
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=["suite", "baseline"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mongodb-uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--workers", type=int, default=1, help="suite only: processes serving the port")
    args = parser.parse_args(argv)
    _die_with_parent()
    if args.kind == "suite" and args.workers > 1:
        return suite_workers(args)
    if args.kind == "suite":
        app = suite_app(args.mongodb_uri, args.database, f"http://{args.host}:{args.port}")
    else:
        app = baseline_app(args.mongodb_uri, args.database)
    # The uvicorn configuration of `sqm serve` (services/cli.py), for both.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, log_level="warning",
                            lifespan="on", server_header=False)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
