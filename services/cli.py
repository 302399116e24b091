"""``sqm``: the command that runs the suite."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import socket
import sys
import threading
import warnings
from pathlib import Path

# connexion imports starlette's test client, which warns about httpx on every start; it says
# nothing to someone running the suite.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import uvicorn  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from pymongo.errors import ConfigurationError, PyMongoError  # noqa: E402

from services import clients  # noqa: E402
from services.app import create_app  # noqa: E402
from services.tmf.api import is_ready  # noqa: E402
from services.tmf.embedded import EmbeddedDatabase, EmbeddedDatabaseError  # noqa: E402
from services.tmf.logging import configure_logging  # noqa: E402
from services.tmf.settings import Settings, SettingsError  # noqa: E402


class StartupError(Exception):
    """Bad configuration: reported in one line, never as a traceback."""


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so that the embedded database is stopped on the way out."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _stop_cleanly_on_sigterm() -> None:
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again; with the default
    # handler that kills the process before the embedded database is stopped and waited for, so
    # the database outlives us and keeps the data dir locked against the next start.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As uvicorn does: connections of a server that just stopped linger in TIME_WAIT on the
        # port, and they must not stop a restart. A socket still listening there does.
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"port {port} on {host} is already in use; choose another with --port") from None
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"data dir {path} is not writable: {exc.strerror}") from None


def _check_database(uri: str) -> None:
    try:
        client: MongoClient[dict[str, object]]
        with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            client.admin.command("ping")
    except ConfigurationError as exc:
        raise StartupError(f"the MongoDB URI is not valid: {exc}") from None
    except PyMongoError:
        raise StartupError("cannot reach MongoDB at the given URI within 5 s; check --mongodb-uri") from None


async def _serve(server: uvicorn.Server, host: str, port: int) -> None:
    async def announce() -> None:
        # Ready means what GET /health/ready means: serving, and every service subscribed to the
        # hubs it listens to (over HTTP, to this very process once it serves), so that nothing a
        # client sends after this line goes unheard. A producer that cannot be reached holds the
        # line back; the log says which, and /health/ready answers what is missing.
        while not (server.started and await is_ready(server.config.app)):
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        print(f"tmf-sqm ready on http://{host}:{port}", flush=True)

    watcher = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        watcher.cancel()


def serve(args: argparse.Namespace) -> int:
    host, port = args.host, args.port
    data_dir = Path(args.data_dir).resolve()
    uri = args.mongodb_uri or os.environ.get("SQM_MONGODB_URI", "")
    embedded: EmbeddedDatabase | None = None
    _stop_cleanly_on_sigterm()
    try:
        os.environ.setdefault("SQM_PUBLIC_URL", f"http://{host}:{port}")
        # All services run in this process and cooperate through their public APIs: the SLA
        # service checks covered services against this inventory, and the problem service
        # subscribes to this process's alarm and SLA hubs.
        public = os.environ["SQM_PUBLIC_URL"]
        os.environ.setdefault("SQM_INVENTORY_URL", f"{public}/tmf-api/serviceInventory/v4")
        os.environ.setdefault("SQM_ALARM_HUB_URL", f"{public}/tmf-api/alarmManagement/v4")
        os.environ.setdefault("SQM_SLA_HUB_URL", f"{public}/tmf-api/slaManagement/v4")
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        _check_port(host, port)
        if uri:
            _check_database(uri)
        else:
            # The embedded mode is a laptop or test bench: listeners on this machine are the norm.
            os.environ.setdefault("SQM_ALLOW_PRIVATE_CALLBACKS", "true")
            _check_data_dir(data_dir)
            embedded = EmbeddedDatabase(str(data_dir / "db"), log_path=data_dir / "database.log")
            uri = embedded.start()
        app = create_app(Settings.from_env(mongodb_uri=uri))
        config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level="warning",
                                lifespan="on", server_header=False)
        server = uvicorn.Server(config)
        asyncio.run(_serve(server, host, port))
        return 0 if server.started else 1
    except (StartupError, SettingsError, EmbeddedDatabaseError) as exc:
        print(f"sqm: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        if embedded is not None:
            embedded.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sqm", description="tmf-sqm: TM Forum service quality management")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run every API on one port")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    run.add_argument("--data-dir", default="./.sqm", help="where the embedded database keeps its data (default ./.sqm)")
    run.add_argument("--mongodb-uri", default=None,
                     help="use this MongoDB instead of the embedded database (or set SQM_MONGODB_URI)")
    clients.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "client":
        return clients.run(args)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
