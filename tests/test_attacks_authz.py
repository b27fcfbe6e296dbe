"""Attacks on the authorization rules and the resource server that currently succeed.

Each test shows one defect: it fails today and passes once the defect is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pkce_middleware import PKCEMiddleware, Require, restrict
from tests.support.hostile_provider import HostileProvider, sign_compact
from tests.support.oauth_clients import dpop_key, dpop_proof
from tests.support.site import APP_ORIGIN, ISSUER, SESSION_COOKIE, make_config

RESOURCE = f"{APP_ORIGIN}/api"
#: What a browser sends when it loads a page.
NAVIGATION = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


def access_token(hostile: HostileProvider, **overrides: Any) -> str:
    """An RFC 9068 access token for `RESOURCE`, signed with the provider's key."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": hostile.issuer,
        "aud": RESOURCE,
        "exp": now + 300,
        "iat": now,
        "sub": "mallory",
        "client_id": "agent",
        "scope": "api:read",
        "jti": secrets.token_urlsafe(12),
        **overrides,
    }
    header = {"alg": "RS256", "typ": "at+jwt", "kid": hostile.signing_key.kid}
    return sign_compact(header, claims, hostile.signing_key)


@contextlib.asynccontextmanager
async def resource_server(
    app: ASGIApp, *, rules: Mapping[str, Require] | None = None, **config: Any
) -> AsyncIterator[tuple[HostileProvider, PKCEMiddleware, httpx.AsyncClient]]:
    hostile = HostileProvider()
    middleware = PKCEMiddleware(
        app,
        config=make_config(bearer_paths=("/api",), resource=RESOURCE, **config),
        transport=httpx.ASGITransport(app=hostile),
        rules=rules,
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url=APP_ORIGIN)
    async with middleware, client:
        yield hostile, middleware, client


async def plain(request: Request) -> Response:
    return PlainTextResponse(f"hello {request.user.identity}")


# -- path rules ----------------------------------------------------------------------------------


async def test_a_path_rule_holds_when_the_app_is_mounted_under_a_root_path() -> None:
    """Under `Mount("/app", ...)` (or `uvicorn --root-path /app`), `scope["path"]` is `/app/admin`
    while the app routes `/admin`: the rule for `/admin` must still apply, not fail open."""
    inner = Starlette(routes=[Route("/admin", plain)])
    hostile = HostileProvider()
    middleware = PKCEMiddleware(
        inner,
        config=make_config(),
        transport=httpx.ASGITransport(app=hostile),
        rules={"/admin": Require(groups=["admins"])},
    )
    outer = Starlette(routes=[Mount("/app", app=middleware)])
    async with middleware, httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url=APP_ORIGIN) as client:
        headers = await middleware.create_session(
            claims={"sub": "mallory", "iss": ISSUER, "groups": ["staff"]},
            token={"access_token": "at-" + "x" * 40, "id_token": ""},
        )
        cookie: SimpleCookie = SimpleCookie()
        for header in headers:
            cookie.load(header)
        client.cookies.set(SESSION_COOKIE, cookie[SESSION_COOKIE].value)
        response = await client.get("/app/admin", headers={"Accept": "application/json"})
        assert response.status_code == 403, response.text


# -- route helpers on bearer paths -----------------------------------------------------------------


async def test_restrict_never_redirects_a_token_caller_to_the_browser_login() -> None:
    """README: bearer paths are "never a redirect", and a step-up for a token is the RFC 9470 401;
    `@restrict` answers "as the middleware does", yet sends a token caller to the login page."""

    @restrict(max_age=300)
    async def fresh(request: Request) -> Response:
        return PlainTextResponse("fresh")

    app = Starlette(routes=[Route("/api/fresh", fresh)])
    async with resource_server(app) as (hostile, _, client):
        token = access_token(hostile)
        response = await client.get("/api/fresh", headers={**NAVIGATION, "Authorization": f"Bearer {token}"})
        assert "location" not in response.headers
        assert response.status_code == 401


# -- the caller's claims ---------------------------------------------------------------------------


async def test_a_token_callers_claims_are_read_only_and_not_shared_through_the_cache() -> None:
    """Session claims are deeply read-only; a token caller's are the cached verification result
    itself, so whatever the app writes there is what the next request's rule check reads."""

    async def whoami(request: Request) -> Response:
        with contextlib.suppress(TypeError):
            request.user.claims["groups"] = ["admins"]  # an app "enriching" its copy
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/api/whoami", whoami), Route("/api/admin/panel", plain)])
    async with resource_server(app, rules={"/api/admin": Require(groups=["admins"])}) as (hostile, _, client):
        auth = {"Authorization": f"Bearer {access_token(hostile)}", "Accept": "application/json"}
        assert (await client.get("/api/whoami", headers=auth)).status_code == 200
        response = await client.get("/api/admin/panel", headers=auth)
        assert response.status_code == 403, response.text


# -- DPoP --------------------------------------------------------------------------------------------


async def test_a_dpop_proof_is_not_replayable_after_other_proofs_fill_the_replay_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 9449 section 11.1 / README: "a `jti` used once per process". The seen-`jti` cache drops
    its oldest entry when full, so anyone with a bound token of their own can flush a captured proof
    (100,000 proofs in the three minutes it is accepted) and replay it. Shrunk here to 2 entries."""
    monkeypatch.setattr("pkce_middleware._resource.MAX_SEEN_PROOFS", 2)
    async with resource_server(Starlette(routes=[Route("/api/items", plain)])) as (hostile, _, client):
        victim, attacker = dpop_key(), dpop_key()
        token = access_token(hostile, cnf={"jkt": victim.thumbprint()})
        url = f"{APP_ORIGIN}/api/items"
        captured = dpop_proof(victim, "GET", url, access_token=token)
        headers = {"Authorization": f"DPoP {token}", "DPoP": captured, "Accept": "application/json"}
        assert (await client.get("/api/items", headers=headers)).status_code == 200

        own = access_token(hostile, cnf={"jkt": attacker.thumbprint()})
        for _ in range(2):
            proof = dpop_proof(attacker, "GET", url, access_token=own)
            await client.get("/api/items", headers={"Authorization": f"DPoP {own}", "DPoP": proof})

        replayed = await client.get("/api/items", headers=headers)
        assert replayed.status_code == 401, replayed.text
        assert replayed.json()["reason"] == "dpop_replayed"


# -- WebSockets --------------------------------------------------------------------------------------


async def test_a_websocket_opened_with_a_token_closes_when_the_token_expires() -> None:
    """A session's WebSocket is closed with 1008 when the session ends; one opened with an access
    token stays open for ever, long after the token expired (or was revoked at introspection)."""

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async with resource_server(stream, clock_leeway=0) as (hostile, middleware, _):
        middleware.websocket_check_interval = 0.05
        token = access_token(hostile, exp=int(time.time()) + 1)
        scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "wss",
            "path": "/api/stream",
            "raw_path": b"/api/stream",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"app.test"), (b"authorization", f"Bearer {token}".encode())],
            "subprotocols": [],
            "extensions": {},
        }
        to_app: asyncio.Queue[Message] = asyncio.Queue()
        to_app.put_nowait({"type": "websocket.connect"})
        sent: list[Message] = []
        closed = asyncio.Event()

        async def send(message: Message) -> None:
            sent.append(message)
            if message["type"] == "websocket.close":
                closed.set()

        task = asyncio.create_task(middleware(scope, to_app.get, send))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed.wait(), 2.5)  # the token expires within a second
        to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, 5)
        assert sent[0] == {"type": "websocket.accept"}
        assert [m.get("code") for m in sent if m["type"] == "websocket.close"] == [1008], sent
