"""People and their sessions, kept in MongoDB beside the suite's data (``console_user``,
``console_session``). Passwords are argon2id hashes; a session is found by the SHA-256 of the
random id its cookie carries, so that the database never holds a usable session id."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.tmf.auth.identity import CLIENT_ROLES, PARTY_ID

USERS = "console_user"
SESSIONS = "console_session"
MAX_NAME_LENGTH = 64
MAX_PASSWORD_LENGTH = 1024
MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()
# Compared against when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UserExists(Exception):
    pass


def check_user(name: str, party_id: str, role: str, password: str) -> None:
    """ValueError says what is wrong with a new user's attributes."""
    if not name or len(name) > MAX_NAME_LENGTH or not PARTY_ID.fullmatch(name):
        raise ValueError(f"the user name must be 1 to {MAX_NAME_LENGTH} letters, digits or ._:@- , "
                         "starting with a letter or digit")
    if not PARTY_ID.fullmatch(party_id):
        raise ValueError("the party id must be 1 to 128 letters, digits or ._:@- , starting with a letter or digit")
    if role not in CLIENT_ROLES:
        raise ValueError(f"the role must be one of {', '.join(CLIENT_ROLES)}")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")


@dataclass(frozen=True)
class Session:
    """Who is logged in: the person (or the provider's subject), the party and role the APIs
    scope by, the CSRF token of the session, and with OIDC the person's access token."""

    key: str
    user: str
    party_id: str
    role: str
    csrf: str
    expires: datetime
    access_token: str | None = None


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ConsoleStore:
    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.users = database[USERS]
        self.sessions = database[SESSIONS]

    async def ensure_indexes(self) -> None:
        # Expired sessions are removed by the database; reads check the expiry themselves too.
        await self.sessions.create_index([("expires", ASCENDING)], expireAfterSeconds=0)

    # -- people ----------------------------------------------------------------------------------

    async def add_user(self, name: str, party_id: str, role: str, password: str) -> None:
        check_user(name, party_id, role, password)
        digest = await asyncio.to_thread(_hasher.hash, password)
        try:
            await self.users.insert_one({"_id": name, "party_id": party_id, "role": role,
                                         "password_hash": digest, "created": datetime.now(UTC)})
        except DuplicateKeyError:
            raise UserExists(f"a user named {name!r} exists already; sqm user remove it first") from None

    async def list_users(self) -> list[dict[str, Any]]:
        return [{"name": u["_id"], "party_id": u["party_id"], "role": u["role"],
                 "created": u["created"].isoformat()}
                async for u in self.users.find({}, {"password_hash": 0}).sort("_id", ASCENDING)]

    async def remove_user(self, name: str) -> bool:
        removed = await self.users.delete_one({"_id": name})
        await self.sessions.delete_many({"user": name})
        return removed.deleted_count == 1

    async def check_password(self, name: str, password: str) -> dict[str, Any] | None:
        """The user's record when the password is right, else None."""
        if len(name) > MAX_NAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
            return None
        user = await self.users.find_one({"_id": name})
        stored = user["password_hash"] if user else _DUMMY_HASH
        try:
            await asyncio.to_thread(_hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return user

    # -- sessions --------------------------------------------------------------------------------

    async def open_session(self, user: str, party_id: str, role: str, lifetime: int,
                           access_token: str | None = None) -> tuple[str, Session]:
        """A new session; returns the id for the cookie (not stored) and the session."""
        session_id = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(seconds=lifetime)
        session = Session(_key(session_id), user, party_id, role, secrets.token_urlsafe(32), expires, access_token)
        await self.sessions.insert_one({"_id": session.key, "user": user, "party_id": party_id, "role": role,
                                        "csrf": session.csrf, "expires": expires, "access_token": access_token})
        return session_id, session

    async def session(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        found = await self.sessions.find_one({"_id": _key(session_id)})
        if found is None or found["expires"] <= datetime.now(UTC):
            return None
        return Session(found["_id"], found["user"], found["party_id"], found["role"], found["csrf"],
                       found["expires"], found.get("access_token"))

    async def close_session(self, session: Session) -> None:
        await self.sessions.delete_one({"_id": session.key})
