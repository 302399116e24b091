"""Live updates. The console subscribes to every API's hub as one of the suite's own services
(a service token, a signed listener under ``/console/hook``) and turns each event into a
"panel changed" signal for the browsers connected to ``/console/events``. The signal carries
no data: the page fetches the panel again through its own session, so scoping holds."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.tmf.auth.service import CredentialsUnavailable, ServiceAuth, ServiceCredentials
from services.tmf.delivery import SIGNATURE_HEADER, verify

from .suite import ALARM, INVENTORY, PROBLEM, SLA

log = structlog.get_logger("console.live")

# Which panels an event of each API may change.
PANELS: dict[str, tuple[str, ...]] = {
    "serviceInventory": ("graph",),
    "alarmManagement": ("graph",),
    "serviceProblemManagement": ("graph", "problems"),
    "slaManagement": ("graph", "sla", "settlement"),
}
BASE_PATHS = {"serviceInventory": INVENTORY, "alarmManagement": ALARM,
              "serviceProblemManagement": PROBLEM, "slaManagement": SLA}
SECRETS = "console_secret"
SIGNATURE_TOLERANCE_SECONDS = 300
# Signals to one browser waiting to be sent; past this the oldest are dropped (a panel is
# fetched whole, so one signal per panel is as good as many).
QUEUE_SIZE = 32
RETRY_MAX_SECONDS = 5.0


class Broker:
    """Fans "panel changed" signals out to the connected browsers."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[str]] = set()
        self.closed = False

    def close(self) -> None:
        """Streams end at their next check: the server is stopping."""
        self.closed = True

    @property
    def listeners(self) -> int:
        return len(self._queues)

    def publish(self, panels: tuple[str, ...]) -> None:
        for queue in self._queues:
            for panel in panels:
                if queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                queue.put_nowait(panel)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[str]]:
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


class HubSubscriber:
    """Registers ``{public}/console/hook/{api}`` on each API's hub, with a secret kept in the
    database (shared by every gateway replica and kept across restarts), and checks that
    secret's signature on every delivery."""

    def __init__(self, api_url: str, public_url: str, credentials: ServiceCredentials, broker: Broker) -> None:
        self.api_url = api_url
        self.public_url = public_url
        self.credentials = credentials
        self.broker = broker
        self.secret: str | None = None
        self.subscribed: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def load_secret(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        await database[SECRETS].update_one({"_id": "hub"}, {"$setOnInsert": {"secret": secrets.token_urlsafe(32)}},
                                           upsert=True)
        found = await database[SECRETS].find_one({"_id": "hub"})
        assert found is not None
        self.secret = str(found["secret"])

    def start(self) -> None:
        self._task = asyncio.create_task(self._subscribe_all())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _subscribe_all(self) -> None:
        # The hubs may be this very process, which serves only once startup is over: keep trying.
        pause = 0.05
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10.0,
                                     auth=ServiceAuth(self.credentials)) as http:
            while len(self.subscribed) < len(BASE_PATHS):
                for api, base_path in BASE_PATHS.items():
                    if api in self.subscribed:
                        continue
                    try:
                        answer = await http.post(f"{base_path}/hub", json={
                            "callback": f"{self.public_url}/console/hook/{api}", "secret": self.secret})
                    except (httpx.HTTPError, PyMongoError, CredentialsUnavailable, RuntimeError) as exc:
                        # RuntimeError: the in-process issuer has not started yet.
                        log.debug("console not subscribed yet", api=api, problem=type(exc).__name__)
                        continue
                    if answer.status_code in (200, 201):
                        self.subscribed.add(api)
                        log.info("console subscribed", api=api, subscription=answer.json().get("id"))
                    else:
                        log.warning("console subscription refused", api=api, status=answer.status_code)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_SECONDS)

    def accept(self, api: str, signature: str | None, body: bytes) -> bool:
        """Whether a delivery is signed with the console's secret; if so, signal its panels."""
        if api not in PANELS or self.secret is None or not signature:
            return False
        if not verify(self.secret, signature, body, SIGNATURE_TOLERANCE_SECONDS):
            return False
        self.broker.publish(PANELS[api])
        return True


__all__ = ["SIGNATURE_HEADER", "Broker", "HubSubscriber"]
