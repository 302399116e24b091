"""The suite's one public entry point: routes each TMF base path to the process that serves it,
limits rates per client, writes the audit log, and serves the catalogue, the docs page and (for
the embedded default) the token endpoints."""

from .app import Identity, create_gateway
from .portal import ApiEntry
from .settings import GatewaySettings

__all__ = ["ApiEntry", "GatewaySettings", "Identity", "create_gateway"]
