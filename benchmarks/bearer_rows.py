"""The bearer rows of `bench_request`: an API request with a JWT access token (RFC 9068).

The provider is an in-memory `httpx.MockTransport` that serves discovery and a JWKS; the tokens
are signed here with its key, exactly as a provider would sign them. Two figures:

* `pkce bearer (cached JWT)`, a table row: the same token on every request, as an API client or
  agent sends it for its lifetime; after the first request it is a cache hit;
* the first verification (a token this process has not seen: signature, claims), timed apart
  over a few hundred fresh tokens, since a timed loop would otherwise hit the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from pkce_middleware import PKCEConfig, PKCEMiddleware

from .harness import Variant, call_capturing, require, status_and_body
from .scenarios import bare, browser_scope
from .session_data import CLIENT_ID, ISSUER

PKCE_BEARER = "pkce bearer (cached JWT)"
RESOURCE = "https://app.example/api"
API_PATH = "/api/items"
#: Fresh tokens timed for the first-verification figure.
FRESH_TOKENS = 300


@dataclasses.dataclass(frozen=True)
class BearerRows:
    variants: list[Variant]
    first_verification_us: float


def _provider(key: RSAKey) -> httpx.MockTransport:
    discovery = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    jwks = {"keys": [key.as_dict(private=False)]}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/openid-configuration"):
            return httpx.Response(200, json=discovery)
        if request.url.path == "/jwks":
            return httpx.Response(200, json=jwks)
        return httpx.Response(404)

    return httpx.MockTransport(answer)


def access_token(key: RSAKey, now: int) -> str:
    """A JWT access token as a provider issues it for `RESOURCE` (about 700 characters)."""
    claims = {
        "iss": ISSUER,
        "sub": "248289761001",
        "aud": RESOURCE,
        "client_id": "agent-cli",
        "scope": "api:read api:write",
        "iat": now,
        "exp": now + 3600,
        "jti": secrets.token_hex(16),
    }
    return jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": key.kid}, claims, key)


def api_scope(token: str) -> dict[str, Any]:
    scope = browser_scope("")
    scope["path"] = API_PATH
    scope["raw_path"] = API_PATH.encode()
    scope["headers"] = [
        (b"host", b"app.example"),
        (b"user-agent", b"agent-cli/1.0"),
        (b"accept", b"application/json"),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    return scope


async def bearer_rows(stack: contextlib.AsyncExitStack, secret_key: str) -> BearerRows:
    key = RSAKey.generate_key(2048, parameters={"kid": "bench-rsa"})
    config = PKCEConfig(
        issuer=ISSUER, client_id=CLIENT_ID, secret_key=secret_key, bearer_paths=("/api",), resource=RESOURCE
    )
    middleware = PKCEMiddleware(bare, config=config, transport=_provider(key))
    await stack.enter_async_context(middleware)
    scope = api_scope(access_token(key, int(time.time())))

    async def check() -> None:
        statuses, body = status_and_body(await call_capturing(middleware, scope))
        require(statuses == [200] and body == b"hello", f"{PKCE_BEARER}: expected 200 'hello', got {statuses} {body!r}")

    await check()  # the first request verifies and caches; every timed one is a hit
    fresh = [api_scope(access_token(key, int(time.time()))) for _ in range(FRESH_TOKENS)]
    started = time.perf_counter()
    for fresh_scope in fresh:
        statuses, _ = status_and_body(await call_capturing(middleware, fresh_scope))
        require(statuses == [200], f"{PKCE_BEARER}: a fresh token was refused ({statuses})")
    first_us = (time.perf_counter() - started) / FRESH_TOKENS * 1e6
    return BearerRows([Variant(PKCE_BEARER, middleware, scope, check)], first_us)
