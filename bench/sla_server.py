"""The suite for the SLA benchmark: built and served as ``sqm serve`` serves it (bench/servers.py),
except that its clock is fixed, so that the benchmark's October 2026 has ended and can be closed
whatever the date of the run, and that it counts its database commands.

    python -m bench.sla_server --port P --mongodb-uri URI --database NAME
        [--now 2026-11-01T00:05:00Z] [--command-stats FILE] [--profile FILE]

``--command-stats``: a PyMongo command listener counts the suite's database commands by command,
collection and the fields of their filter, with their total round-trip time; each SIGUSR1
writes the totals so far to FILE (JSON, with the number of signals received as ``seq``).
``--profile``: the whole server runs under cProfile and writes its statistics to FILE when it
stops (SIGTERM): where the suite's own time went, at the cost of slower numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import signal
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn
from pymongo import monitoring

from bench.servers import _die_with_parent

FIXED_NOW = "2026-11-01T00:05:00+00:00"


class _Terminated(BaseException):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Terminated


def _filter_of(name: str, command: Any) -> Any:
    if name in ("find", "count", "findAndModify"):
        return command.get("filter") or command.get("query") or {}
    if name in ("update", "delete"):
        statements = command.get("updates" if name == "update" else "deletes") or [{}]
        return statements[0].get("q") or {}
    if name == "aggregate":
        return next((stage["$match"] for stage in command.get("pipeline") or [] if "$match" in stage), {})
    return {}


class CommandStats(monitoring.CommandListener):
    """Count and round-trip seconds per (command, collection, filter fields)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending: dict[tuple[Any, int], tuple[str, str, str]] = {}
        self.totals: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        self.seq = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get(name)
        collection = target if isinstance(target, str) else str(event.command.get("collection", ""))
        found = _filter_of(name, event.command)
        fields = ",".join(sorted(found)) if isinstance(found, dict) else ""
        self.pending[(event.connection_id, event.request_id)] = (name, collection, fields[:120])

    def _done(self, event: Any) -> None:
        key = self.pending.pop((event.connection_id, event.request_id), None)
        if key is not None:
            total = self.totals[key]
            total[0] += 1
            total[1] += event.duration_micros / 1e6

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event)

    def write(self, signum: int, frame: object) -> None:
        self.seq += 1
        rows = [[*key, int(count), seconds] for key, (count, seconds) in self.totals.items()]
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps({"seq": self.seq, "commands": rows}))
        os.replace(scratch, self.path)


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
    parser.add_argument("--command-stats", type=Path, default=None,
                        help="count database commands; each SIGUSR1 writes the totals to this file")
    parser.add_argument("--profile", default=None, help="write cProfile statistics to this file at exit")
    args = parser.parse_args(argv)
    _die_with_parent()
    now = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
    if now.tzinfo is None:
        parser.error("--now needs a UTC offset, e.g. 2026-11-01T00:05:00Z")
    if args.command_stats is not None:
        # Registered before the app's client exists (it is made in the lifespan), so it applies.
        stats = CommandStats(args.command_stats)
        monitoring.register(stats)
        signal.signal(signal.SIGUSR1, stats.write)
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
