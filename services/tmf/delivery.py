"""Delivering events to hub subscribers: at least once, in order per resource and subscriber,
with retries, backoff and dead letters, shared safely by every process of a service through
leases on the deliveries.

Two ways in. The fast path: a change committed by this process hands its deliveries, created
already leased to this process, straight to the dispatcher, which sends them at once and
settles them in batches. The poll: the dispatcher claims due deliveries from the database,
which finds everything the fast path did not settle (other processes' commits, retries,
deliveries a crashed process held, once its lease has run out)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import random
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import httpx
import structlog

from . import outgoing, telemetry
from .auth.service import CredentialsUnavailable, ServiceCredentials
from .events import listener_path
from .repository.events import EventStore, Outcome, Staged, take_handed_off, utcnow
from .settings import Settings

log = structlog.get_logger("tmf.delivery")
SIGNATURE_HEADER = "X-Sqm-Signature"
SETTLE_DELAY = 0.01
# A lease outlasts the longest attempt by at least this much (the address check before the
# request, the settle write after it), so that no other process takes a delivery still being sent.
LEASE_MARGIN = 2.0
# Committed changes whose deliveries wait for the fast path; beyond this, the poll takes them.
FAST_QUEUE = 2_000
# The fast path writes the outcomes of what finished within this long together, in one write.
SETTLE_INTERVAL = 0.2
# How long the fast path trusts a subscription it read (its callback, secret, status).
SUBSCRIPTION_TTL = 1.0
# How many finished fast-path deliveries it remembers (a lane check reads from a snapshot a
# moment old; after this many more, a finished one is long written).
FINISHED_MEMORY = 50_000
# seq is version * 10 + the event's index: below this, the resource's first version, which no
# earlier delivery of the same resource to the same subscriber can precede.
FIRST_VERSION_END = 20

Row = tuple[dict[str, Any], dict[str, Any]]  # a delivery (with its subscription) and its event


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body, keyed with the secret>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance_seconds: int = 300, now: float | None = None) -> bool:
    """What a listener does with the signature header; kept here so tests prove the recipe."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def is_private_address(host: str) -> bool:
    """Whether ``host`` (a name or an address literal) is one this server must not call for a
    partner: loopback, private, link-local, shared (100.64.0.0/10), documentation, benchmarking,
    multicast, reserved or unspecified — anything not globally routable."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower() in {"localhost", "localhost.localdomain"} or host.lower().endswith(".localhost")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


@dataclass(frozen=True)
class Target:
    """Where to connect for a callback: the address that was checked, and the name the request
    must carry (Host header, TLS server name) so that the listener sees its own URL."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


async def checked_target(url: str) -> Target | None:
    """Resolve the callback's host once and check every address; None when any is private or
    special-use, or when the name does not resolve. The request then connects to the checked
    address itself, so a second lookup (DNS rebinding) cannot send it elsewhere."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or is_private_address(host):
        return None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or any(is_private_address(a) for a in addresses):
        return None
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Target(pinned, {"Host": parts.netloc.rpartition("@")[2]}, extensions)


async def resolves_privately(url: str) -> bool:
    """Whether a partner's callback must be refused: a private or special-use address, or a
    host that does not resolve."""
    return await checked_target(url) is None


def own_base_urls(settings: Settings) -> tuple[str, ...]:
    """The base URLs of the suite's own services, as configured in this process."""
    configured = (settings.public_url, settings.inventory.url, settings.problem.alarm_hub_url,
                  settings.problem.sla_hub_url, *settings.internal_urls)
    return tuple(url for url in configured if url)


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def is_own_url(url: str, settings: Settings) -> bool:
    """Whether ``url`` lies under one of the suite's own base URLs: same scheme, host and port,
    and a path at or below the base path, whole segments only. A path with dot segments never
    counts as own, whatever it would resolve to."""
    try:
        target = urlsplit(url)
        origin = _origin(target)
    except ValueError:
        return False
    if {".", ".."} & set(unquote(target.path).split("/")):
        return False
    path = target.path.rstrip("/") + "/"
    for base in own_base_urls(settings):
        try:
            own = urlsplit(base)
            if origin == _origin(own) and path.startswith(own.path.rstrip("/") + "/"):
                return True
        except ValueError:
            continue
    return False


async def may_call(url: str, settings: Settings, *, internal: bool = False) -> bool:
    """The address guard for hub callbacks, at registration: a callback to a private or
    special-use address, or to a host that does not resolve, is refused unless private
    callbacks are allowed, or the subscription is the suite's own (``internal``: made by one of
    its services) and the callback one of its own services (its subscriptions must work
    wherever the suite runs)."""
    return await delivery_target(url, settings, internal=internal) is not None


async def delivery_target(url: str, settings: Settings, *, internal: bool = False) -> Target | None:
    """Where a delivery to ``url`` connects, or None when the guard refuses it. The single place
    that decides whom this server calls."""
    if settings.allow_private_callbacks or (internal and is_own_url(url, settings)):
        return Target(url, {}, {})
    return await checked_target(url)


class Dispatcher:
    """One per process. Claims due deliveries in batches, sends them concurrently (bounded
    overall and per subscriber, so one slow listener cannot hold up the others), and settles
    the outcomes in batches."""

    def __init__(self, store: EventStore, settings: Settings, client: httpx.AsyncClient | None = None,
                 apis: Collection[str] | None = None, credentials: ServiceCredentials | None = None) -> None:
        self.store = store
        self.settings = settings
        # The APIs whose events this process delivers (None: every API's).
        self.apis = None if apis is None else tuple(apis)
        # The suite's own bearer token goes with deliveries to the suite's own listeners (and to
        # no one else), so that a gateway on the way knows them for the suite's.
        self.credentials = credentials
        self.client = client or outgoing.client(settings.delivery.timeout_seconds)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._in_flight: Counter[str] = Counter()
        # The suite's own subscriptions (its services consuming each other's events): their
        # listeners are ours, so they get the whole delivery concurrency, not a partner's share.
        self._internal: set[str] = set()
        self._outcomes: list[Outcome] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake_scheduled = False
        timeout = settings.delivery.timeout_seconds
        # A lease shorter than an attempt could let another process send it a second time.
        self.lease = timedelta(seconds=max(settings.delivery.lease_seconds, timeout + LEASE_MARGIN))
        # The fast path's lease is short, so that after a crash the poll soon takes what it held;
        # it sends a delivery only while at least an attempt and the margin are left of it.
        self.fast_lease = timedelta(seconds=timeout + 2 * LEASE_MARGIN)
        self._fast_runner: asyncio.Task[None] | None = None
        self._committed: asyncio.Queue[Staged] = asyncio.Queue(maxsize=FAST_QUEUE)
        # Fast-path deliveries from the hand-off until they finish: id -> lane.
        self._held: dict[str, str] = {}
        # Fast-path deliveries lately delivered or dead-lettered (whether written yet or not): a
        # lane check that read one of them as undelivered must not take it for another's.
        self._finished: dict[str, None] = {}
        # Per lane (subscriber and resource) with a fast-path delivery ready or in flight, the
        # ones behind it, in order; per subscriber, the lane heads ready to send.
        self._lanes: dict[str, deque[Row]] = {}
        self._ready: dict[str, deque[Row]] = {}
        self._released: list[str] = []
        self._subscriptions: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._settle_scheduled = False
        self._sending: set[str] = set()  # fast-path deliveries being sent
        self._settling: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Something was committed: look for work, unless the commit handed all of its
        deliveries to the fast path already."""
        if not take_handed_off():
            self._wake.set()

    def start(self) -> None:
        with telemetry.untraced():  # telemetry: the polling loop starts no traces; deliveries do
            self._runner = asyncio.create_task(self._run(), name="event-dispatcher")
            self._fast_runner = asyncio.create_task(self._run_committed(), name="event-dispatcher-fast-path")
        self.store.hand_off_to(self.owner, self.fast_lease, self._take, self.apis)

    @property
    def running(self) -> bool:
        return (self._runner is not None and not self._runner.done() and not self._stopping
                and self._fast_runner is not None and not self._fast_runner.done())

    async def stop(self) -> None:
        self._stopping = True
        self.store.stop_hand_off()
        self._wake.set()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._fast_runner is not None:
            self._fast_runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fast_runner
        # What the fast path holds but has not started goes back to the poll of whichever
        # process comes first, rather than waiting for its lease to run out.
        self._lanes.clear()
        self._ready.clear()
        self._give_back([held for held in self._held if held not in self._sending])
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.delivery.timeout_seconds + 1)
        if self._settling:
            await asyncio.wait(self._settling)
        await self._flush()
        await self.client.aclose()

    def _limit(self, subscription_id: str) -> int:
        if subscription_id in self._internal:
            return self.settings.delivery.concurrency
        return self.settings.delivery.per_subscription

    def _capacity(self, subscription_id: str) -> int:
        return self._limit(subscription_id) - self._in_flight[subscription_id]

    async def _run(self) -> None:
        lease = self.lease
        while not self._stopping:
            claimed: list[tuple[dict[str, Any], dict[str, Any]]] = []
            try:
                await self._flush()
                free = self.settings.delivery.concurrency - len(self._tasks)
                if free > 0:
                    saturated = [s for s, n in self._in_flight.items() if n >= self._limit(s)]
                    claimed = await self.store.claim(self.owner, self._capacity, free, lease, saturated, self.apis)
            except Exception:  # the database may be restarting; try again after a pause
                log.exception("claiming deliveries failed")
            for delivery, event in claimed:
                if (delivery.get("subscription") or {}).get("internal"):
                    self._internal.add(delivery["subscriptionId"])
                self._in_flight[delivery["subscriptionId"]] += 1
                task = asyncio.create_task(self._deliver(delivery, event))
                self._tasks.add(task)
                task.add_done_callback(self._done(delivery["subscriptionId"]))
            if not claimed:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.delivery.poll_seconds)

    def _done(self, subscription_id: str) -> Any:
        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._in_flight[subscription_id] -= 1
            if self._in_flight[subscription_id] <= 0:
                del self._in_flight[subscription_id]
            # Finished deliveries may unblock the next event of their lanes; waking a moment
            # later lets one claim round serve many of them, and settles their outcomes together.
            if not self._wake_scheduled:
                self._wake_scheduled = True
                asyncio.get_running_loop().call_later(SETTLE_DELAY, self._scheduled_wake)
        return finished

    def _scheduled_wake(self) -> None:
        self._wake_scheduled = False
        self._wake.set()

    async def _flush(self) -> None:
        if not self._outcomes and not self._released:
            return
        outcomes, self._outcomes = self._outcomes, []
        released, self._released = self._released, []
        try:
            await self.store.settle(outcomes, released, self.owner)
        except Exception:
            # Unsettled deliveries stay leased and are sent again after the lease: at least once.
            log.exception("recording delivery outcomes failed", count=len(outcomes) + len(released))
        if released:
            self._wake.set()

    # -- the fast path: deliveries this process committed itself ----------------------------------

    def _take(self, staged: Staged) -> bool:
        """The hand-off, right after the commit: queue them, or give them back when full."""
        if not self._stopping:
            with contextlib.suppress(asyncio.QueueFull):
                self._committed.put_nowait(staged)
                self._held.update((d["_id"], d["lane"]) for d in staged.deliveries)
                return True
        self._give_back(d["_id"] for d in staged.deliveries)
        return False

    @staticmethod
    def _rows(staged: Staged) -> list[Row]:
        return [(d, staged.events[d["eventId"]]) for d in staged.deliveries]

    def _give_back(self, delivery_ids: Iterable[str]) -> None:
        """Release leased, unattempted deliveries to the poll (written with the next settle)."""
        for delivery_id in delivery_ids:
            self._held.pop(delivery_id, None)
            self._released.append(delivery_id)
        self._schedule_settle()

    async def _run_committed(self) -> None:
        while True:
            batch = [await self._committed.get()]
            while not self._committed.empty():
                batch.append(self._committed.get_nowait())
            rows = [row for staged in batch for row in self._rows(staged)]
            try:
                await self._admit(rows)
            except Exception:  # the database may be restarting: the poll takes them instead
                log.exception("sending committed deliveries failed", count=len(rows))
                # Nothing of the batch was queued (the reads come first): all of it goes to the poll.
                self._give_back(d["_id"] for d, _ in rows if d["_id"] in self._held)
            self._pump()

    async def _admit(self, rows: list[Row]) -> None:
        """Queue each delivery behind the ones this process holds in its lane; give back those an
        undelivered delivery this process does not hold precedes (another process's, a retry):
        the poll sends them in order once that one is done."""
        later = {d["lane"] for d, _ in rows if d["seq"] >= FIRST_VERSION_END}
        foreign: dict[str, int] = {}
        for other in await self.store.undelivered_in_lanes(later) if later else []:
            if other["_id"] not in self._held and other["_id"] not in self._finished:
                foreign[other["lane"]] = min(other["seq"], foreign.get(other["lane"], other["seq"]))
        subscriptions = await self._subscriptions_of({d["subscriptionId"] for d, _ in rows})
        for delivery, event in sorted(rows, key=lambda row: row[0]["seq"]):
            lane = delivery["lane"]
            if delivery["_id"] not in self._held:
                continue  # given back meanwhile (the process is stopping)
            if foreign.get(lane, delivery["seq"]) < delivery["seq"]:
                self._give_back([delivery["_id"]])
                continue
            subscription = subscriptions.get(delivery["subscriptionId"])
            if subscription is not None and subscription.get("internal"):
                self._internal.add(delivery["subscriptionId"])
            row = ({**delivery, "subscription": subscription}, event)
            if lane in self._lanes:
                self._lanes[lane].append(row)
            else:
                self._lanes[lane] = deque()
                self._ready.setdefault(delivery["subscriptionId"], deque()).append(row)

    async def _subscriptions_of(self, ids: Collection[str]) -> dict[str, dict[str, Any] | None]:
        now = time.monotonic()
        stale = [i for i in ids if i not in self._subscriptions or self._subscriptions[i][0] < now]
        if stale:
            if len(self._subscriptions) > 10_000:
                self._subscriptions.clear()
            found = await self.store.subscriptions_by_id(stale)
            for subscription_id in stale:
                self._subscriptions[subscription_id] = (now + SUBSCRIPTION_TTL, found.get(subscription_id))
        return {i: self._subscriptions[i][1] for i in ids}

    def _pump(self) -> None:
        """Start ready deliveries as far as the overall and per-subscriber limits allow."""
        overall = self.settings.delivery.concurrency
        must_end_after = utcnow() + timedelta(seconds=self.settings.delivery.timeout_seconds + LEASE_MARGIN)
        for subscription_id in list(self._ready):
            ready = self._ready[subscription_id]
            while ready and len(self._tasks) < overall and self._capacity(subscription_id) > 0:
                delivery, event = ready.popleft()
                if delivery["leaseUntil"] < must_end_after:
                    # Too little of its lease is left for an attempt: the poll takes it, and its lane.
                    self._give_back([delivery["_id"], *(d["_id"] for d, _ in self._lanes.pop(delivery["lane"], ()))])
                    continue
                self._in_flight[subscription_id] += 1
                self._sending.add(delivery["_id"])
                task = asyncio.create_task(self._send(delivery, event))
                self._tasks.add(task)
                task.add_done_callback(self._sent(subscription_id))
            if not ready:
                del self._ready[subscription_id]

    async def _send(self, delivery: dict[str, Any], event: dict[str, Any]) -> None:
        try:
            await self._deliver(delivery, event)
        except Exception:
            log.exception("delivery failed", delivery=delivery["_id"])
            state = "failed"
        else:
            # ``_deliver`` records its outcome last, with nothing awaited after it.
            state = next((o.state for o in reversed(self._outcomes) if o.delivery_id == delivery["_id"]),
                         "suspended")
        self._held.pop(delivery["_id"], None)
        self._sending.discard(delivery["_id"])
        lane = delivery["lane"]
        behind = self._lanes.pop(lane, deque())
        if state in {"delivered", "dead"}:
            self._finished[delivery["_id"]] = None
            if len(self._finished) > FINISHED_MEMORY:
                del self._finished[next(iter(self._finished))]
            if behind:
                self._lanes[lane] = behind
                self._ready.setdefault(delivery["subscriptionId"], deque()).append(behind.popleft())
        elif state == "suspended":
            # The listener answered 410: the subscription's undelivered deliveries, these
            # included, are suspended in the database; redelivery brings them back.
            subscription_id = delivery["subscriptionId"]
            self._subscriptions.pop(subscription_id, None)
            dropped = [*behind, *self._ready.pop(subscription_id, ())]
            for other in [lane for lane in self._lanes if lane.startswith(f"{subscription_id}/")]:
                dropped += self._lanes.pop(other)
            for row in dropped:
                self._held.pop(row[0]["_id"], None)
        else:
            # Retrying (or failed without an outcome): what follows in its lane waits for it,
            # which the poll sees to.
            self._give_back([*(d["_id"] for d, _ in behind), *([delivery["_id"]] if state == "failed" else [])])

    def _sent(self, subscription_id: str) -> Any:
        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._in_flight[subscription_id] -= 1
            if self._in_flight[subscription_id] <= 0:
                del self._in_flight[subscription_id]
            self._schedule_settle()
            self._pump()
        return finished

    def _schedule_settle(self) -> None:
        if not self._settle_scheduled:
            self._settle_scheduled = True
            asyncio.get_running_loop().call_later(SETTLE_INTERVAL, self._settle_now)

    def _settle_now(self) -> None:
        self._settle_scheduled = False
        if self._settling:
            return  # one settle write at a time: what finishes meanwhile goes in the next one
        task = asyncio.create_task(self._flush())
        self._settling.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        if self._outcomes or self._released:
            self._schedule_settle()

    @telemetry.observed_delivery  # telemetry: delivery span continuing the stored trace, delivery metrics
    async def _deliver(self, delivery: dict[str, Any], event: dict[str, Any]) -> None:
        subscription = delivery.get("subscription")
        if subscription is None or subscription.get("status") == "suspended":
            self._outcomes.append(Outcome(delivery["_id"], "dead", error="the subscription no longer exists"))
            return
        url = subscription["callback"].rstrip("/") + listener_path(event["eventType"])
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Sqm-Event-Id": event["eventId"]}
        if subscription.get("secret"):
            headers[SIGNATURE_HEADER] = sign(subscription["secret"], int(time.time()), body)
        status: int | None = None
        internal = bool(subscription.get("internal"))
        try:
            target = await delivery_target(url, self.settings, internal=internal)
            if target is None:
                refused = "callback resolves to a private or special-use address, or not at all"
                self._outcomes.append(Outcome(delivery["_id"], "dead", error=refused))
                return
            if internal and self.credentials is not None and is_own_url(url, self.settings):
                with contextlib.suppress(CredentialsUnavailable):
                    headers.update(await self.credentials.headers())
            response = await self.client.post(target.url, content=body, headers={**headers, **target.headers},
                                              extensions=target.extensions)
            status = response.status_code
            if 200 <= status < 300:
                self._outcomes.append(Outcome(delivery["_id"], "delivered", status=status))
                return
            if status == 410:
                await self._flush()
                await self.store.suspend(subscription["_id"], f"the listener answered 410 Gone at {url}")
                log.warning("subscription suspended", subscription=subscription["_id"],
                            callback=subscription["callback"])
                return
            error = f"the listener answered {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        self._outcomes.append(self._retry_or_dead(delivery, status, error))

    def _retry_or_dead(self, delivery: dict[str, Any], status: int | None, error: str) -> Outcome:
        attempts = delivery.get("attempts", 0) + 1
        created: datetime = delivery["createdAt"]
        if created.tzinfo is None:
            created = created.replace(tzinfo=utcnow().tzinfo)
        age = (utcnow() - created).total_seconds()
        if attempts >= self.settings.delivery.max_attempts or age >= self.settings.delivery.max_age_seconds:
            log.warning("delivery dead-lettered", delivery=delivery["_id"], attempts=attempts, error=error)
            return Outcome(delivery["_id"], "dead", status=status, error=error)
        backoff = min(self.settings.delivery.backoff_max_seconds,
                      self.settings.delivery.backoff_seconds * 2 ** (attempts - 1))
        delay = backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
        return Outcome(delivery["_id"], "retrying", status=status, error=error,
                       next_attempt_at=utcnow() + timedelta(seconds=delay))
