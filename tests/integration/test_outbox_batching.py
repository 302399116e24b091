"""The outbox's writes per transaction, counted on the wire: a transaction writing several
resources reads the hub version once and inserts its events and deliveries with one command
each; creates arriving together commit together, and one bad create among them fails no other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from services.app import create_app
from services.problem import ALARM, ALARM_API
from services.tmf.api import ApiContext
from services.tmf.call import OPERATOR
from services.tmf.delivery import Dispatcher
from services.tmf.embedded import free_port
from services.tmf.errors import Conflict
from services.tmf.events import STATE_CHANGE
from services.tmf.repository.events import EventStore, in_transaction
from services.tmf.resource import ResourceApi
from services.tmf.spec import load_document
from tests.conftest import make_settings
from tests.support.auth import bearer
from tests.support.server import serve

SUBSCRIBER = "hears-every-alarm"


class Commands(CommandListener):
    """Every command the client sends: its name, collection and how many documents it inserts."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int]] = []

    def started(self, event: CommandStartedEvent) -> None:
        name = event.command_name
        inserted = len(event.command.get("documents", ())) if name == "insert" else 0
        self.sent.append((name, str(event.command.get(name)), inserted))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def to(self, name: str, collection: str | None = None) -> list[int]:
        """The document counts of the ``name`` commands (to ``collection``) sent."""
        return [n for command, target, n in self.sent if command == name and collection in (None, target)]


@asynccontextmanager
async def alarms(mongo_uri: str) -> AsyncIterator[tuple[ResourceApi, Commands, AsyncDatabase[dict[str, Any]]]]:
    """The alarm API on a fresh database with one subscription that hears every alarm event."""
    settings = make_settings(mongo_uri)
    commands = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, uuidRepresentation="standard", event_listeners=[commands])
    database = client[settings.database]
    events = EventStore(database)
    context = ApiContext(ALARM_API.name, ALARM_API.base_path, settings, load_document(ALARM_API.document))
    api = context.resource_apis[ALARM.name] = ResourceApi(context, ALARM)
    dispatcher = Dispatcher(events, settings)  # never started: deliveries stay in the database
    context.connect(database, events, dispatcher, {})
    await database["hub"].insert_one({"_id": SUBSCRIBER, "api": ALARM_API.name, "hearsAll": True,
                                      "callback": "http://127.0.0.1:9/listener", "status": "active"})
    await in_transaction(database, lambda session: events.hub_changed(ALARM_API.name, session))
    try:
        yield api, commands, database
    finally:
        await dispatcher.client.aclose()
        await client.close()


def alarm(n: int) -> dict[str, Any]:
    return {"alarmType": "communicationsAlarm", "perceivedSeverity": "minor", "probableCause": "lossOfSignal",
            "alarmedObject": {"id": f"link-{n}", "@referredType": "Resource"}, "sourceSystemId": "nms",
            "state": "raised", "alarmRaisedTime": "2026-10-10T10:00:00Z"}


def run(mongo_uri: str, scenario: Callable[[ResourceApi, Commands, AsyncDatabase[dict[str, Any]]],
                                           Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with alarms(mongo_uri) as (api, commands, database):
            commands.sent.clear()
            await scenario(api, commands, database)

    asyncio.run(main())


async def event_types_by_resource(database: AsyncDatabase[dict[str, Any]]) -> dict[str, list[tuple[int, str]]]:
    """Each resource's stored events as (seq, type), in the order they were inserted."""
    found: dict[str, list[tuple[int, str]]] = {}
    async for event in database["event"].find({}):
        found.setdefault(event["resourceId"], []).append((event["seq"], event["eventType"]))
    return found


def test_a_transaction_writing_several_resources_reads_the_hub_version_once(mongo_uri: str) -> None:
    async def scenario(api: ResourceApi, commands: Commands, database: AsyncDatabase[dict[str, Any]]) -> None:
        async def write(session: Any) -> list[dict[str, Any]]:
            return [await api.insert(alarm(n), OPERATOR, session=session, also=[(STATE_CHANGE, None)])
                    for n in range(5)]

        created = await in_transaction(database, write)

        assert len(commands.to("find", "hub_version")) == 1
        # Ten events (a create and a state change for each alarm), ten deliveries: one insert each.
        assert commands.to("insert", "event") == [10]
        assert commands.to("insert", "delivery") == [10]
        assert len(commands.to("commitTransaction")) == 1
        # Each resource's events in the order announced, numbered in that order.
        by_resource = await event_types_by_resource(database)
        assert by_resource == {a["id"]: [(10, "AlarmCreateEvent"), (11, "AlarmStateChangeEvent")] for a in created}
        lanes = await database["delivery"].find({}, {"lane": 1, "seq": 1}).to_list()
        assert sorted((d["lane"], d["seq"]) for d in lanes) == sorted(
            (f"{SUBSCRIBER}/{a['id']}", seq) for a in created for seq in (10, 11))

    run(mongo_uri, scenario)


def test_a_retried_transaction_reads_the_hub_version_again_and_keeps_only_its_last_writes(mongo_uri: str) -> None:
    async def scenario(api: ResourceApi, commands: Commands, database: AsyncDatabase[dict[str, Any]]) -> None:
        attempts = 0

        async def write(session: Any) -> list[dict[str, Any]]:
            nonlocal attempts
            attempts += 1
            created = [await api.insert(alarm(attempts * 10 + n), OPERATOR, session=session) for n in range(3)]
            if attempts == 1:
                # What a write conflict with another transaction looks like: the driver runs the
                # whole body again.
                raise OperationFailure("conflict staged by the test", code=112,
                                       details={"errorLabels": ["TransientTransactionError"]})
            return created

        created = await in_transaction(database, write)

        assert attempts == 2
        assert len(commands.to("find", "hub_version")) == 2
        assert commands.to("insert", "event") == [3]  # the first attempt held its events back and lost them
        stored = await database["alarm"].find({}, {"_id": 1}).to_list()
        assert sorted(a["_id"] for a in stored) == sorted(a["id"] for a in created)
        by_resource = await event_types_by_resource(database)
        assert by_resource == {a["id"]: [(10, "AlarmCreateEvent")] for a in created}
        assert await database["delivery"].count_documents({}) == 3

    run(mongo_uri, scenario)


def test_creates_arriving_together_commit_in_one_transaction(mongo_uri: str) -> None:
    async def scenario(api: ResourceApi, commands: Commands, database: AsyncDatabase[dict[str, Any]]) -> None:
        created = await asyncio.gather(*(api.insert(alarm(n), OPERATOR) for n in range(8)))

        assert commands.to("insert", "alarm") == [8]
        assert len(commands.to("find", "hub_version")) == 1
        assert commands.to("insert", "event") == [8]
        assert commands.to("insert", "delivery") == [8]
        assert len(commands.to("commitTransaction")) == 1
        stored = {a["_id"]: a for a in await database["alarm"].find({}).to_list()}
        assert sorted(stored) == sorted(a["id"] for a in created)
        assert all(stored[a["id"]]["alarmedObject"] == a["alarmedObject"] for a in created)
        # The events in the order the creates arrived, each with its own resource.
        events = await database["event"].find({}).to_list()
        assert [e["resourceId"] for e in events] == [a["id"] for a in created]
        assert [e["event"]["event"]["alarm"]["id"] for e in events] == [a["id"] for a in created]

    run(mongo_uri, scenario)


def test_one_bad_create_in_a_group_fails_alone_and_the_others_are_stored(mongo_uri: str) -> None:
    async def scenario(api: ResourceApi, commands: Commands, database: AsyncDatabase[dict[str, Any]]) -> None:
        existing = await api.insert(alarm(0), OPERATOR)
        commands.sent.clear()
        # The fourth create takes an id that exists (as a system create naming its own id can).
        outcomes = await asyncio.gather(
            *(api.insert(alarm(n), OPERATOR, resource_id=existing["id"] if n == 4 else None) for n in range(1, 9)),
            return_exceptions=True)

        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failed) == 1 and isinstance(failed[0], Conflict) and failed[0].status == 409
        assert isinstance(outcomes[3], Conflict)
        created = [o for o in outcomes if isinstance(o, dict)]
        assert len(created) == 7
        # Tried together first (and refused whole), then each alone.
        assert commands.to("insert", "alarm")[0] == 8
        assert commands.to("insert", "alarm")[1:] == [1] * 8
        stored = {a["_id"]: a for a in await database["alarm"].find({}).to_list()}
        assert sorted(stored) == sorted([existing["id"], *(a["id"] for a in created)])
        assert stored[existing["id"]]["alarmedObject"]["id"] == "link-0"  # the existing alarm is untouched
        # Exactly one create event (and delivery) per stored alarm: nothing from the failed group.
        by_resource = await event_types_by_resource(database)
        assert by_resource == {alarm_id: [(10, "AlarmCreateEvent")] for alarm_id in stored}
        assert await database["delivery"].count_documents({}) == len(stored)

    run(mongo_uri, scenario)


def test_alarms_posted_at_once_are_each_answered_201_once_stored_with_their_event(mongo_uri: str) -> None:
    port = free_port()
    settings = make_settings(mongo_uri, public_url=f"http://127.0.0.1:{port}")
    with serve(create_app(settings, apis=[ALARM_API.name]), port) as base, \
            httpx.Client(base_url=base + ALARM_API.base_path, headers=bearer(settings), timeout=60) as client:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: client.post("/alarm", json=alarm(n)), range(40)))
        assert [a.status_code for a in answers] == [201] * 40, [a.text for a in answers if a.status_code != 201]
        # Answered only once committed: each one is there to read at once.
        for answer in answers:
            assert client.get(f"/alarm/{answer.json()['id']}").json() == answer.json()
    with MongoClient(mongo_uri) as mongo:
        database = mongo[settings.database]
        created = sorted(a.json()["id"] for a in answers)
        assert sorted(d["_id"] for d in database["alarm"].find({}, {"_id": 1})) == created
        events = list(database["event"].find({}, {"resourceId": 1, "eventType": 1}))
        assert sorted(e["resourceId"] for e in events) == created
        assert {e["eventType"] for e in events} == {"AlarmCreateEvent"}
