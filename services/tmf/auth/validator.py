"""Bearer token validation (RFC 6750) for the services, which are OAuth2 resource servers.

A token is a JWT signed with an asymmetric key of the configured issuer. The issuer's key set
(JWKS) is fetched once and kept; a token naming an unknown key id makes the validator fetch the
set again (the issuer rotated its keys), at most once per ``jwks_refetch_interval_seconds`` so
that tokens with made-up key ids cannot make us hammer the issuer. Apart from that, and from a
refresh when the set is ``jwks_max_age_seconds`` old, validating a token is local work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import jwt
import structlog

from .. import outgoing
from ..errors import TmfError, Unauthorized
from .identity import OPERATOR, PARTY_ID, REALM, ROLES, SERVICE, Caller
from .settings import AuthSettings

log = structlog.get_logger("tmf.auth")

# Only asymmetric algorithms: with a symmetric one the verification key is the public key,
# which anyone can fetch and then sign with ("none" is no signature at all).
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                        "ES256", "ES384", "ES512", "EdDSA"})
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
MAX_TOKEN_LENGTH = 16_384
MAX_DOCUMENT_BYTES = 262_144
FETCH_TIMEOUT_SECONDS = 5.0
_DESCRIPTION_UNSAFE = re.compile(r'[^\x20-\x21\x23-\x5b\x5d-\x7e]')

# Validated tokens kept; past this many the memory is simply emptied.
VERIFIED_CACHE_SIZE = 10_000

KeySetSource = Callable[[], Awaitable[Mapping[str, Any]]]


class IssuerUnavailable(TmfError):
    """The issuer's keys cannot be had: our problem, not the caller's."""

    status = 503
    reason = "Service unavailable"


def _challenge(description: str | None = None) -> str:
    if description is None:
        # RFC 6750 §3.1: a request without credentials gets no error code.
        return f'Bearer realm="{REALM}"'
    safe = _DESCRIPTION_UNSAFE.sub(" ", description)
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{safe}"'


def invalid_token(description: str) -> Unauthorized:
    return Unauthorized(f"the access token is not valid: {description}", challenge=_challenge(description))


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


async def _get_json(http: httpx.AsyncClient, url: str) -> Mapping[str, Any]:
    async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
        if response.status_code != 200:
            raise IssuerUnavailable(f"the token issuer answered {response.status_code} at {url}")
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise IssuerUnavailable(f"the token issuer's answer at {url} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise IssuerUnavailable(f"the token issuer's answer at {url} is not JSON") from None
    if not isinstance(document, dict):
        raise IssuerUnavailable(f"the token issuer's answer at {url} is not a JSON object")
    return document


def http_key_source(settings: AuthSettings) -> KeySetSource:
    """Fetch the key set over HTTP: from ``jwks_url``, or from the ``jwks_uri`` of the
    issuer's OpenID Connect discovery document (falling back to its RFC 8414 metadata)."""
    jwks_url = settings.jwks_url

    async def fetch() -> Mapping[str, Any]:
        nonlocal jwks_url
        async with outgoing.client(FETCH_TIMEOUT_SECONDS) as http:
            try:
                if not jwks_url:
                    jwks_url = await _discover(http, settings.issuer)
                return await _get_json(http, jwks_url)
            except httpx.HTTPError as exc:
                raise IssuerUnavailable(f"cannot reach the token issuer: {type(exc).__name__}") from None

    return fetch


async def _discover(http: httpx.AsyncClient, issuer: str) -> str:
    metadata: Mapping[str, Any] | None = None
    for suffix in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        try:
            metadata = await _get_json(http, issuer + suffix)
            break
        except IssuerUnavailable:
            continue
    if metadata is None:
        raise IssuerUnavailable(f"the token issuer {issuer} publishes no discovery document; set SQM_OAUTH_JWKS_URL")
    # OpenID Connect Discovery §4.3 and RFC 8414 §3.3: the metadata must name the issuer we asked.
    if metadata.get("issuer") != issuer:
        raise IssuerUnavailable(f"the discovery document of {issuer} names another issuer")
    jwks_uri = metadata.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
        raise IssuerUnavailable(f"the discovery document of {issuer} has no jwks_uri")
    return jwks_uri


class TokenValidator:
    """Turns an ``Authorization`` header into a :class:`Caller`, or raises ``Unauthorized``
    (401, RFC 6750 challenge). ``key_source`` defaults to fetching over HTTP; a process that
    runs the built-in issuer itself may pass the issuer's ``jwks`` method instead."""

    def __init__(self, settings: AuthSettings, key_source: KeySetSource | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.key_source = key_source or http_key_source(settings)
        self.clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._parsed: dict[tuple[str, str], jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        # SHA-256 of a verified token -> (caller, when to stop believing it); a digest rather
        # than the token keeps each entry small (a token may be up to MAX_TOKEN_LENGTH long).
        self._verified: dict[bytes, tuple[Caller, float]] = {}

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller the bearer token in ``authorization`` stands for."""
        if not authorization:
            raise Unauthorized("this operation needs an access token: send Authorization: Bearer <token>",
                               challenge=_challenge())
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("send the access token as Authorization: Bearer <token>", challenge=_challenge())
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise invalid_token("the bearer token is empty or too long")
        # A client sends the same token for its whole lifetime: its signature is checked once,
        # and the caller it stands for is kept until the token expires (never longer).
        digest = hashlib.sha256(token.encode()).digest()
        remembered = self._verified.get(digest)
        if remembered is not None and time.time() < remembered[1]:
            return remembered[0]
        claims = await self._verify(token)
        caller = self._caller(claims)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[digest] = (caller, float(claims["exp"]) + self.settings.clock_skew_seconds)
        return caller

    async def verify(self, token: str) -> tuple[dict[str, Any], Caller]:
        """The verified claims of a token and the caller they stand for, for a caller that must
        check more claims itself (an OpenID Connect ID token's ``nonce``)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise invalid_token("the token is empty or too long")
        claims = await self._verify(token)
        return claims, self._caller(claims)

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise invalid_token("the token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise invalid_token(f"algorithm {str(algorithm)[:16]!r} is not accepted; tokens must be signed "
                                "with an asymmetric key")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise invalid_token("the key id (kid) must be a string")
        key = await self._key(kid, algorithm)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[algorithm], audience=self.settings.audience, issuer=self.settings.issuer,
                leeway=self.settings.clock_skew_seconds, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise invalid_token("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise invalid_token("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise invalid_token(f"the token is not meant for this audience ({self.settings.audience})") from None
        except jwt.InvalidIssuerError:
            raise invalid_token("the token comes from another issuer") from None
        except jwt.InvalidSignatureError:
            raise invalid_token("the signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise invalid_token(f"the token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise invalid_token("the token cannot be verified") from None
        return claims

    async def _key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        if self._stale():
            await self._refresh(force=True)
        jwk = self._find(kid)
        if jwk is None:
            # Perhaps the issuer rotated its keys since we fetched them.
            await self._refresh(force=False)
            jwk = self._find(kid)
        if jwk is None:
            raise invalid_token("the token was signed with a key the issuer does not publish")
        if jwk.get("alg") not in (None, algorithm) or jwk.get("kty") != _KEY_TYPES[algorithm[:2]]:
            raise invalid_token(f"the signing key does not belong to algorithm {algorithm}")
        cache_key = (jwk["_cache_id"], algorithm)
        if cache_key not in self._parsed:
            try:
                self._parsed[cache_key] = jwt.PyJWK({k: v for k, v in jwk.items() if k != "_cache_id"}, algorithm)
            except jwt.PyJWTError:
                raise invalid_token("the issuer's key for this token cannot be used") from None
        return self._parsed[cache_key]

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            # Without a key id, only a set of exactly one key says which key is meant.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at >= self.settings.jwks_max_age_seconds

    async def _refresh(self, *, force: bool) -> None:
        previous = self._fetched_at
        async with self._lock:
            if self._fetched_at != previous:
                return  # another request fetched the set while this one waited
            if not force and previous is not None and \
                    self.clock() - previous < self.settings.jwks_refetch_interval_seconds:
                return
            if not self._keys and self._failed_at is not None and \
                    self.clock() - self._failed_at < self.settings.jwks_refetch_interval_seconds:
                raise IssuerUnavailable("the token issuer's keys could not be fetched; try again shortly")
            try:
                document = await self.key_source()
            except IssuerUnavailable:
                self._failed_at = self.clock()
                if self._keys:
                    # Keep the keys we have; try again after the refetch interval.
                    log.warning("key set refresh failed; keeping the cached keys")
                    self._fetched_at = self.clock() - self.settings.jwks_max_age_seconds + \
                        self.settings.jwks_refetch_interval_seconds
                    return
                raise
            self.fetches += 1
            self._fetched_at = self.clock()
            self._keys = self._usable_keys(document)

    def _usable_keys(self, document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        keys: dict[str, dict[str, Any]] = {}
        listed = document.get("keys")
        for index, jwk in enumerate(listed if isinstance(listed, list) else []):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or jwk.get("kty") not in _KEY_TYPES.values():
                continue
            kid = jwk.get("kid")
            # The parsed-key cache is keyed by content, so that a key id reused for new key
            # material after a refetch is never verified against the old key.
            cache_id = json.dumps(jwk, sort_keys=True)
            keys[kid if isinstance(kid, str) else f"#{index}"] = {**jwk, "_cache_id": cache_id}
        return keys

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        settings = self.settings
        role_value = _claim(claims, settings.role_claim)
        candidates = role_value if isinstance(role_value, list) else [role_value]
        role = next((r for r in candidates if isinstance(r, str) and r in ROLES), None)
        if role is None:
            raise invalid_token(f"the token's {settings.role_claim} claim names none of the roles {', '.join(ROLES)}")
        party = _claim(claims, settings.party_claim)
        if party is not None and (not isinstance(party, str) or not PARTY_ID.fullmatch(party)):
            raise invalid_token(f"the token's {settings.party_claim} claim is not a valid party id")
        if party is None and role not in (OPERATOR, SERVICE):
            raise invalid_token(f"a {role} token must name its party in the {settings.party_claim} claim")
        scope_value = _claim(claims, settings.scope_claim)
        if isinstance(scope_value, str):
            scopes = frozenset(scope_value.split())
        elif isinstance(scope_value, list):
            scopes = frozenset(s for s in scope_value if isinstance(s, str))
        else:
            scopes = frozenset()
        client_id = next((c for c in (claims.get("client_id"), claims.get("azp"), claims.get("sub"))
                          if isinstance(c, str) and c), "")
        return Caller(party_id=party, role=role, client_id=client_id, scopes=scopes)
