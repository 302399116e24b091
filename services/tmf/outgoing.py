"""Outgoing HTTP for calls between services and to partners."""

from __future__ import annotations

import ssl
from functools import cache

import httpx


@cache
def _tls() -> ssl.SSLContext:
    # Building a default TLS context costs tens of milliseconds of CPU; one serves every client.
    return ssl.create_default_context()


def client(timeout: float, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    """An httpx client that verifies TLS with the system's trust store and follows no redirects;
    ``auth`` adds credentials to every request (the suite's services calling each other)."""
    return httpx.AsyncClient(timeout=timeout, verify=_tls(), follow_redirects=False, auth=auth)
