"""The built-in token issuer's storage: OAuth clients (``oauth_client``) and signing keys
(``oauth_key``). For the embedded default the database is the trust root: whoever can write
these collections can mint tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..errors import Conflict

CLIENT_COLLECTION = "oauth_client"
KEY_COLLECTION = "oauth_key"


class ClientStore:
    """Registered clients. A document: ``_id`` (the client id), ``name`` (unique), ``party_id``,
    ``role``, ``scopes``, ``grant_types``, ``secret_hash`` and ``created``. The secret itself is
    never stored."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = database[CLIENT_COLLECTION]

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes([IndexModel([("name", ASCENDING)], unique=True)])

    async def add(self, client: dict[str, Any]) -> None:
        try:
            await self.collection.insert_one(dict(client))
        except DuplicateKeyError:
            raise Conflict(f"a client named {client['name']!r} already exists; "
                           "remove it first or choose another name") from None

    async def get(self, client_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": client_id})

    async def list(self) -> list[dict[str, Any]]:
        return await self.collection.find({}, {"secret_hash": 0}).sort("created", ASCENDING).to_list()

    async def remove(self, client_id: str) -> bool:
        result = await self.collection.delete_one({"_id": client_id})
        return result.deleted_count == 1


class KeyStore:
    """Signing keys. A document: ``_id`` (the key id), ``alg``, ``private_pem``, ``created`` and
    ``retired`` (None while the key may sign). Retired keys stay published until every token
    they signed has expired."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.collection = database[KEY_COLLECTION]

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes([IndexModel([("retired", ASCENDING), ("created", DESCENDING)])])

    async def signing_key(self) -> dict[str, Any] | None:
        """The newest key that is not retired. Two processes that each created a first key at
        the same moment agree on this one (ties broken by key id); both keys are published."""
        return await self.collection.find_one({"retired": None}, sort=[("created", DESCENDING), ("_id", DESCENDING)])

    async def published(self, retired_after: datetime) -> list[dict[str, Any]]:
        """Keys that verify tokens: the active ones and those retired after ``retired_after``."""
        query = {"$or": [{"retired": None}, {"retired": {"$gt": retired_after}}]}
        return await self.collection.find(query).sort([("created", DESCENDING), ("_id", ASCENDING)]).to_list()

    async def add(self, kid: str, alg: str, private_pem: str, created: datetime) -> None:
        await self.collection.insert_one({"_id": kid, "alg": alg, "private_pem": private_pem,
                                          "created": created, "retired": None})

    async def retire_others(self, kid: str, at: datetime) -> None:
        await self.collection.update_many({"_id": {"$ne": kid}, "retired": None}, {"$set": {"retired": at}})

    async def prune(self, retired_before: datetime) -> int:
        result = await self.collection.delete_many({"retired": {"$ne": None, "$lt": retired_before}})
        return result.deleted_count
