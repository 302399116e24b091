"""Logging in to the console through an OpenID Connect provider: a small provider of our own on
loopback (authorization endpoint, token endpoint checking PKCE, signed ID tokens), and the
console checking state, nonce and the ID token."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from console.settings import LOGIN_COOKIE, SESSION_COOKIE
from services.tmf.embedded import free_port
from tests.support.console import Seeded, console_suite
from tests.support.server import serve

CLIENT_ID = "sqm-console"


class FakeProvider:
    """Just enough of a provider: it logs in whoever it is told to, and can be told to cheat."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.codes: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, Any] = {"sub": "user-1", "party_id": "acme", "role": "customer"}
        self.wrong_nonce = False
        self.signing_key: Any = self.key

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/.well-known/openid-configuration", self.metadata),
            Route("/authorize", self.authorize),
            Route("/token", self.token, methods=["POST"]),
            Route("/jwks", self.jwks),
        ])

    async def metadata(self, request: Request) -> Response:
        return JSONResponse({"issuer": self.url, "authorization_endpoint": f"{self.url}/authorize",
                             "token_endpoint": f"{self.url}/token", "jwks_uri": f"{self.url}/jwks"})

    async def jwks(self, request: Request) -> Response:
        jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]})

    async def authorize(self, request: Request) -> Response:
        params = request.query_params
        assert params["response_type"] == "code" and params["client_id"] == CLIENT_ID
        assert params["code_challenge_method"] == "S256" and params["state"] and params["nonce"]
        code = secrets.token_urlsafe(16)
        self.codes[code] = dict(params)
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode({'code': code, 'state': params['state']})}",
                                status_code=302)

    async def token(self, request: Request) -> Response:
        form = await request.form()
        asked = self.codes.pop(str(form["code"]), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if asked is None or challenge != asked["code_challenge"] or form["redirect_uri"] != asked["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {**self.claims, "iss": self.url, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                  "nonce": "not-the-nonce" if self.wrong_nonce else asked["nonce"]}
        id_token = jwt.encode(claims, self.signing_key, algorithm="ES256", headers={"kid": "k1"})
        return JSONResponse({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "id_token": id_token,
                             "expires_in": 300})


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    port = free_port()
    fake = FakeProvider(f"http://127.0.0.1:{port}")
    with serve(fake.app(), port):
        yield fake


@pytest.fixture(scope="module")
def suite(mongo_uri: str, provider: FakeProvider) -> Iterator[Seeded]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SQM_CONSOLE_OIDC_ISSUER", provider.url)
        patch.setenv("SQM_CONSOLE_OIDC_CLIENT_ID", CLIENT_ID)
        with console_suite(mongo_uri) as seeded:
            yield seeded


@pytest.fixture(autouse=True)
def honest(provider: FakeProvider) -> None:
    provider.wrong_nonce = False
    provider.signing_key = provider.key


def start(browser: httpx.Client) -> httpx.Response:
    """The browser's way to the provider and back: returns the provider's redirect to the console."""
    page = browser.get("/console/login")
    assert "Log in with your organisation" in page.text
    token = browser.cookies[LOGIN_COOKIE]
    leave = browser.post("/console/oidc/start", data={"login_token": token})
    assert leave.status_code == 303
    target = urlparse(leave.headers["location"])
    query = parse_qs(target.query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    back = httpx.get(leave.headers["location"])
    assert back.status_code == 302
    return back


def test_code_flow_with_pkce_logs_the_person_in_as_the_id_token_says(suite: Seeded) -> None:
    with httpx.Client(base_url=suite.url, timeout=30) as browser:
        back = start(browser)
        landed = browser.get(back.headers["location"])
        assert landed.status_code == 303 and landed.headers["location"] == "/console/graph"
        assert SESSION_COOKIE in browser.cookies
        page = browser.get("/console/graph")
        assert page.status_code == 200 and "customer of <strong>acme</strong>" in page.text


def test_a_callback_in_another_browser_is_refused(suite: Seeded) -> None:
    with httpx.Client(base_url=suite.url, timeout=30) as browser, \
            httpx.Client(base_url=suite.url, timeout=30) as other:
        back = start(browser)
        refused = other.get(back.headers["location"])
        assert refused.status_code == 403 and "not started in this browser" in refused.text
        assert SESSION_COOKIE not in other.cookies


def test_a_changed_state_is_refused(suite: Seeded) -> None:
    with httpx.Client(base_url=suite.url, timeout=30) as browser:
        back = urlparse(start(browser).headers["location"])
        code = parse_qs(back.query)["code"][0]
        refused = browser.get(f"/console/oidc/callback?{urlencode({'code': code, 'state': 'forged'})}")
        assert refused.status_code == 403 and SESSION_COOKIE not in browser.cookies


def test_a_wrong_nonce_is_refused(suite: Seeded, provider: FakeProvider) -> None:
    provider.wrong_nonce = True
    with httpx.Client(base_url=suite.url, timeout=30) as browser:
        refused = browser.get(start(browser).headers["location"])
        assert refused.status_code == 403 and "nonce" in refused.text
        assert SESSION_COOKIE not in browser.cookies


def test_an_id_token_signed_by_another_key_is_refused(suite: Seeded, provider: FakeProvider) -> None:
    provider.signing_key = ec.generate_private_key(ec.SECP256R1())
    with httpx.Client(base_url=suite.url, timeout=30) as browser:
        refused = browser.get(start(browser).headers["location"])
        assert refused.status_code == 403 and "ID token is not valid" in refused.text
        assert SESSION_COOKIE not in browser.cookies
