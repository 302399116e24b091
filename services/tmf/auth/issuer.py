"""The built-in OAuth2 authorization server of the embedded default: registered clients, the
client-credentials grant (RFC 6749 §4.4) at ``/oauth2/token``, the signing keys at
``/oauth2/jwks`` and the server metadata (RFC 8414).

Keys are EC P-256 (ES256): generating one takes microseconds (so a first start or a rotation
costs nothing), tokens stay short, and the strength matches RSA 3072. Private keys live in
the database, next to the clients: for the embedded default the database is the trust root.

Rotation: :meth:`TokenIssuer.rotate` adds a new signing key and retires the others; retired
keys stay in the JWKS until every token they signed has expired (lifetime plus clock skew),
then they are deleted. Validators meet the new key id in a token and fetch the set again.

A removed client gets no new token; tokens it already holds stay valid until they expire,
at most ``SQM_TOKEN_LIFETIME_SECONDS`` later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..repository.oauth import ClientStore, KeyStore
from .identity import DEFAULT_SCOPES, PARTY_ID, REALM, ROLES, SCOPES, check_scopes
from .settings import AuthSettings

TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a path, not a password
JWKS_PATH = "/oauth2/jwks"
METADATA_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
ALGORITHM = "ES256"
CLIENT_CREDENTIALS = "client_credentials"
FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 8192
MAX_CREDENTIAL_LENGTH = 256
MAX_NAME_LENGTH = 100

# scrypt with N=2^14, r=8, p=1 (16 MiB, tens of milliseconds): slow enough that a stolen
# database does not give the secrets away cheaply, fast enough for a token request.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def hash_secret(secret: str) -> str:
    """A salted scrypt hash of a client secret, as ``scrypt$n$r$p$salt$hash`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    params = "$".join(str(_SCRYPT[k]) for k in ("n", "r", "p"))
    return f"scrypt${params}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a hash made by :func:`hash_secret` (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), dklen=len(expected),
                                n=int(n), r=int(r), p=int(p))
    except (ValueError, binascii.Error):
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


def _public_jwk(private_pem: str, kid: str) -> dict[str, Any]:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def _thumbprint(jwk: dict[str, Any]) -> str:
    # RFC 7638: SHA-256 over the required members in lexicographic order, without whitespace.
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def check_client(name: str, party_id: str, role: str, scopes: Iterable[str] | None) -> tuple[str, ...]:
    """Validate a new client's attributes (ValueError says what is wrong); returns the scopes
    it gets: those given, or its role's defaults."""
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ValueError(f"the client name must be 1 to {MAX_NAME_LENGTH} printable characters")
    if not PARTY_ID.fullmatch(party_id):
        raise ValueError("the party id must be 1 to 128 letters, digits or ._:@- , starting with a letter or digit")
    if role not in ROLES:
        raise ValueError(f"the role must be one of {', '.join(ROLES)}")
    return check_scopes(scopes) if scopes is not None else DEFAULT_SCOPES[role]


@dataclass(frozen=True)
class NewClient:
    client_id: str
    client_secret: str


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer of the token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
        return JSONResponse({"error": self.error, "error_description": self.description},
                            status_code=self.status, headers=headers)


class TokenIssuer:
    """Registers clients and issues signed access tokens to them. ``connect`` it to the
    database, then ``await start()`` once (indexes, first signing key)."""

    def __init__(self, settings: AuthSettings, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self._clients: ClientStore | None = None
        self._keys: KeyStore | None = None
        self._private: dict[str, Any] = {}
        self._jwks: dict[str, dict[str, Any]] = {}

    def connect(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self._clients = ClientStore(database)
        self._keys = KeyStore(database)

    @property
    def clients(self) -> ClientStore:
        if self._clients is None:
            raise RuntimeError("the token issuer is not connected to the database yet")
        return self._clients

    @property
    def keys(self) -> KeyStore:
        if self._keys is None:
            raise RuntimeError("the token issuer is not connected to the database yet")
        return self._keys

    async def start(self) -> None:
        await self.clients.ensure_indexes()
        await self.keys.ensure_indexes()
        if await self.keys.signing_key() is None:
            await self._new_key()

    # -- clients ---------------------------------------------------------------------------

    async def register(self, name: str, party_id: str, role: str, scopes: Iterable[str] | None = None,
                       grant_types: Iterable[str] = (CLIENT_CREDENTIALS,)) -> NewClient:
        """Register a client; the secret is returned here and nowhere else. ValueError says
        which argument is wrong; Conflict means the name is taken."""
        granted = check_client(name, party_id, role, scopes)
        # Hex: URL-safe, and never starts with "-", which a command line would take for an option.
        client_id = secrets.token_hex(12)
        secret = secrets.token_urlsafe(32)
        secret_hash = await asyncio.to_thread(hash_secret, secret)
        await self.clients.add({"_id": client_id, "name": name, "party_id": party_id, "role": role,
                                "scopes": list(granted), "grant_types": list(grant_types),
                                "secret_hash": secret_hash, "created": self.clock()})
        return NewClient(client_id, secret)

    async def authenticate(self, client_id: str, secret: str) -> dict[str, Any] | None:
        """The client's record if the secret is right, else None."""
        client = await self.clients.get(client_id)
        if client is None:
            return None
        # scrypt is deliberately slow; keep it off the event loop.
        ok = await asyncio.to_thread(verify_secret, secret, client.get("secret_hash", ""))
        return client if ok else None

    # -- keys and tokens -------------------------------------------------------------------

    async def _new_key(self) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        kid = _thumbprint(ECAlgorithm.to_jwk(key.public_key(), as_dict=True))
        await self.keys.add(kid, ALGORITHM, pem, self.clock())
        return kid

    async def rotate(self) -> str:
        """Start signing with a new key; returns its key id. Older keys stay published until
        the tokens they signed have expired, and are deleted after that."""
        kid = await self._new_key()
        now = self.clock()
        await self.keys.retire_others(kid, now)
        await self.keys.prune(now - self._verification_window())
        return kid

    def _verification_window(self) -> timedelta:
        return timedelta(seconds=self.settings.token_lifetime_seconds + self.settings.clock_skew_seconds)

    async def jwks(self) -> dict[str, Any]:
        """The public keys that verify this issuer's tokens (RFC 7517 key set)."""
        published = await self.keys.published(self.clock() - self._verification_window())
        keys = []
        for document in published:
            kid = document["_id"]
            if kid not in self._jwks:
                self._jwks[kid] = _public_jwk(document["private_pem"], kid)
            keys.append(self._jwks[kid])
        return {"keys": keys}

    async def issue(self, client: dict[str, Any], scopes: Iterable[str]) -> tuple[str, int]:
        """A signed access token for the client with the given scopes, and its lifetime."""
        document = await self.keys.signing_key()
        if document is None:
            raise RuntimeError("the token issuer has no signing key; start() creates one")
        kid = document["_id"]
        if kid not in self._private:
            self._private[kid] = serialization.load_pem_private_key(document["private_pem"].encode(), password=None)
        now = int(self.clock().timestamp())
        lifetime = self.settings.token_lifetime_seconds
        claims: dict[str, Any] = {
            "iss": self.settings.issuer, "aud": self.settings.audience, "sub": client["_id"],
            "client_id": client["_id"], "party_id": client["party_id"], "role": client["role"],
            "scope": " ".join(scopes), "iat": now, "nbf": now, "exp": now + lifetime,
            "jti": secrets.token_hex(16),
        }
        token = jwt.encode(claims, self._private[kid], algorithm=ALGORITHM,
                           headers={"kid": kid, "typ": "at+jwt"})
        return token, lifetime

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        issuer = self.settings.issuer
        return {
            "issuer": issuer,
            "token_endpoint": f"{issuer}{TOKEN_PATH}",
            "jwks_uri": f"{issuer}{JWKS_PATH}",
            "grant_types_supported": [CLIENT_CREDENTIALS],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": list(SCOPES),
            # There is no authorization endpoint, so no response type is supported.
            "response_types_supported": [],
        }

    # -- HTTP --------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The issuer's endpoints, to mount at the root of the public URL."""
        return [
            Route(TOKEN_PATH, self._token_endpoint, methods=["POST"]),
            Route(JWKS_PATH, self._jwks_endpoint, methods=["GET"]),
            *(Route(path, self._metadata_endpoint, methods=["GET"]) for path in METADATA_PATHS),
        ]

    async def _jwks_endpoint(self, request: Request) -> Response:
        # Validators cache the set and come back for an unknown key id; a short max-age lets a
        # rotation show quickly.
        return JSONResponse(await self.jwks(), headers={"Cache-Control": "public, max-age=60"})

    async def _metadata_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.metadata())

    async def _token_endpoint(self, request: Request) -> Response:
        try:
            client, scopes = await self._grant(request)
        except OAuthError as error:
            return error.response()
        token, lifetime = await self.issue(client, scopes)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": lifetime,
                             "scope": " ".join(scopes)}, headers=_NO_STORE)

    async def _grant(self, request: Request) -> tuple[dict[str, Any], list[str]]:
        form = await _read_form(request)
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise OAuthError("invalid_request", "grant_type is missing; send grant_type=client_credentials")
        if grant_type != CLIENT_CREDENTIALS:
            raise OAuthError("unsupported_grant_type",
                             f"grant_type {grant_type[:64]!r} is not supported; use client_credentials")
        client_id, secret = _client_credentials(request, form)
        client = await self.authenticate(client_id, secret)
        if client is None:
            raise OAuthError("invalid_client", "unknown client or wrong secret", 401)
        if CLIENT_CREDENTIALS not in client.get("grant_types", []):
            raise OAuthError("unauthorized_client", "this client may not use the client_credentials grant")
        allowed = list(client.get("scopes", []))
        requested = form.get("scope")
        if requested is None:
            return client, allowed
        wanted = requested.split(" ")
        refused = sorted({s for s in wanted if s not in allowed})
        if refused or "" in wanted:
            detail = f"{', '.join(s[:64] for s in refused)} not granted to this client" if refused else \
                "scopes are separated by single spaces"
            raise OAuthError("invalid_scope", f"{detail}; allowed: {' '.join(allowed)}")
        return client, [s for s in allowed if s in wanted]


def issuer_app(issuer: TokenIssuer, mongodb_uri: str, database: str) -> Starlette:
    """The issuer alone as an ASGI app on its own database connection (a gateway in front of
    separate API processes, or tests)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
        try:
            issuer.connect(client[database])
            await issuer.start()
            yield
        finally:
            await client.close()

    return Starlette(routes=issuer.routes(), lifespan=lifespan)


async def _read_form(request: Request) -> dict[str, str]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM:
        raise OAuthError("invalid_request", f"send the parameters as {FORM}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", f"the request body exceeds {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a valid UTF-8 form of at most 32 fields") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name[:64]!r} appears more than once")
        # RFC 6749 §3.1: a parameter sent without a value is treated as if it were omitted.
        if value:
            form[name] = value
    return form


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    authorization = request.headers.get("authorization")
    if authorization is None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id is None or secret is None:
            raise OAuthError("invalid_client", "authenticate with HTTP Basic, or with client_id and client_secret", 401)
    else:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise OAuthError("invalid_client", "the token endpoint takes HTTP Basic client authentication", 401)
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "the Basic credentials are not valid base64 of id:secret", 401) from None
        raw_id, colon, raw_secret = decoded.partition(":")
        if not colon:
            raise OAuthError("invalid_client", "the Basic credentials are not valid base64 of id:secret", 401)
        # RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined.
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if "client_secret" in form:
            raise OAuthError("invalid_request", "authenticate one way only: HTTP Basic or client_secret, not both")
        if form.get("client_id", client_id) != client_id:
            raise OAuthError("invalid_request", "client_id differs from the client in the Basic credentials")
    if len(client_id) > MAX_CREDENTIAL_LENGTH or len(secret) > MAX_CREDENTIAL_LENGTH:
        raise OAuthError("invalid_client", "unknown client or wrong secret", 401)
    return client_id, secret
