"""Cookie sessions in several processes: logouts shared through Redis (`PKCE_REVOCATION_STORE`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from pkce_middleware import PKCEMiddleware
from tests.support.redis_server import RedisServer
from tests.support.site import APP_ORIGIN, SESSION_COOKIE, Site, hello_app, login, make_client, open_site

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def open_two_processes(redis_url: str) -> AsyncIterator[tuple[Site, httpx.AsyncClient]]:
    """Site A (with its browser) and a second middleware B with the same configuration."""
    async with open_site(revocation_store=redis_url) as site:
        other = PKCEMiddleware(hello_app, config=site.config, transport=httpx.ASGITransport(app=site.hostile))
        async with make_client(other) as browser_on_b:
            try:
                yield site, browser_on_b
            finally:
                await other.aclose()


@pytest.fixture
async def two_processes(redis_server: RedisServer) -> AsyncIterator[tuple[Site, httpx.AsyncClient]]:
    async with open_two_processes(redis_server.url) as opened:
        yield opened


async def refused_within(client: httpx.AsyncClient, seconds: float) -> float:
    """How long until `client`'s session is refused (fails the test after `seconds`)."""
    started = time.monotonic()
    while (await client.get("/", headers={"Accept": "application/json"})).status_code != 401:
        assert time.monotonic() - started < seconds, "the other process still accepts the session"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_a_backchannel_logout_reaches_the_other_process(two_processes: tuple[Site, httpx.AsyncClient]) -> None:
    site, on_b = two_processes
    site.hostile.sid = "shared-1"
    await login(site.client, site.hostile)
    on_b.cookies.set(SESSION_COOKIE, site.client.cookies[SESSION_COOKIE], domain="app.test")
    assert (await on_b.get("/")).text == "hello alice"

    token = site.hostile.logout_token(sid="shared-1")
    assert (await site.client.post("/auth/backchannel-logout", data={"logout_token": token})).status_code == 200
    assert (await site.client.get("/", headers={"Accept": "application/json"})).status_code == 401
    await refused_within(on_b, 3.0)
    # The token id is shared too: the same token replayed at the other process is refused.
    replay = await on_b.post("/auth/backchannel-logout", data={"logout_token": token})
    assert replay.status_code == 400 and replay.json() == {"error": "logout_token_replayed"}


async def test_a_logout_ends_copies_of_the_cookie_in_the_other_process(
    two_processes: tuple[Site, httpx.AsyncClient],
) -> None:
    site, on_b = two_processes
    await login(site.client, site.hostile)
    on_b.cookies.set(SESSION_COOKIE, site.client.cookies[SESSION_COOKIE], domain="app.test")
    assert (await on_b.get("/")).text == "hello alice"
    assert (await site.client.post("/auth/logout", headers={"Origin": APP_ORIGIN})).status_code == 303
    await refused_within(on_b, 3.0)


async def test_redis_down_a_backchannel_logout_is_a_503_and_sessions_keep_working() -> None:
    # Its own server, so stopping it leaves the session's shared one alone.
    with RedisServer() as server:
        async with open_two_processes(server.url) as (site, _):
            await login(site.client, site.hostile)
            bob = site.browser()
            site.hostile.sub = "bob"
            await login(bob, site.hostile)
            server.stop()
            try:
                token = site.hostile.logout_token(sub="alice")
                response = await site.client.post("/auth/backchannel-logout", data={"logout_token": token})
                # Not shared, so the provider is told to retry; this process has ended the session anyway.
                assert response.status_code == 503
                assert (await site.client.get("/", headers={"Accept": "application/json"})).status_code == 401
                # Requests never needed Redis: other sessions carry on during the outage.
                assert (await bob.get("/")).text == "hello bob"
            finally:
                server.start()  # back before the two processes close their Redis clients, as in production
