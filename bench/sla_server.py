"""The suite for the SLA benchmark: built and served as ``sqm serve`` serves it (bench/servers.py),
except that its clock is fixed, so that the benchmark's October 2026 has ended and can be closed
whatever the date of the run.

    python -m bench.sla_server --port P --mongodb-uri URI --database NAME
        [--now 2026-11-01T00:05:00Z] [--profile FILE]

``--profile`` runs the whole server under cProfile and writes the statistics to FILE when the
server stops (SIGTERM): where the suite's time went, at the cost of slower numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import signal
import sys
from datetime import datetime
from typing import Any

import uvicorn

from bench.servers import _die_with_parent

FIXED_NOW = "2026-11-01T00:05:00+00:00"


class _Terminated(BaseException):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Terminated


def suite_app(uri: str, database: str, public_url: str, now: datetime) -> Any:
    from services.app import create_app
    from services.tmf.logging import configure_logging
    from services.tmf.settings import Settings

    settings = Settings.from_env(mongodb_uri=uri, database=database, public_url=public_url)
    configure_logging(settings.log_level)
    return create_app(settings, clock=lambda: now)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sla_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mongodb-uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--now", default=FIXED_NOW, help="the suite's fixed clock (ISO 8601, with offset)")
    parser.add_argument("--profile", default=None, help="write cProfile statistics to this file at exit")
    args = parser.parse_args(argv)
    _die_with_parent()
    now = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
    if now.tzinfo is None:
        parser.error("--now needs a UTC offset, e.g. 2026-11-01T00:05:00Z")
    app = suite_app(args.mongodb_uri, args.database, f"http://{args.host}:{args.port}", now)
    # The uvicorn configuration of `sqm serve` (services/cli.py), as bench/servers.py has it.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, log_level="warning",
                            lifespan="on", server_header=False)
    server = uvicorn.Server(config)
    if args.profile is None:
        server.run()
        return 0
    # uvicorn stops gracefully on SIGTERM and then raises the signal again, which with the default
    # handler would end the process before the statistics are written (services/cli.py does the same).
    signal.signal(signal.SIGTERM, _stop)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        server.run()
    except _Terminated:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
