"""Cookie sessions in several processes: logouts shared through Redis (`PKCE_REVOCATION_STORE`).

Issue #10, finding 2: the hosts' clocks differ. A logout must reach every process however far
behind the clock of the host that recorded it, and a session must end whichever hosts created it
and logged it out (`ClockOffset` runs the second process as if on a host with another clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import cast
from unittest import mock

import httpx
import pytest
import redis.asyncio
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from pkce_middleware import PKCEMiddleware
from pkce_middleware._cookie_store import CookieStore
from pkce_middleware._redis_revocations import _LOG, SharedRevocations
from pkce_middleware._session import Session
from tests.support.redis_server import RedisServer
from tests.support.site import APP_ORIGIN, SESSION_COOKIE, Site, hello_app, login, make_client, open_site

pytestmark = pytest.mark.redis


_real_time = time.time


class ClockOffset:
    """`app` run as if on a host whose wall clock is `seconds` off (negative: behind).

    `time.time` is shifted while the app handles a request. The test awaits one request at a time;
    what runs meanwhile is the other process's background sync, which reads no wall clock.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with mock.patch.object(time, "time", lambda: _real_time() + self.seconds):
            await self.app(scope, receive, send)


def shared_revocations(middleware: PKCEMiddleware) -> SharedRevocations:
    store = cast(CookieStore, middleware._parts.store)
    return cast(SharedRevocations, store._revocations)


@contextlib.asynccontextmanager
async def open_two_processes(
    redis_url: str, *, clock_offset: float = 0.0
) -> AsyncIterator[tuple[Site, httpx.AsyncClient]]:
    """Site A (with its browser) and a second middleware B with the same configuration, on a
    host whose clock is `clock_offset` seconds off A's."""
    async with open_site(revocation_store=redis_url) as site:
        other = PKCEMiddleware(hello_app, config=site.config, transport=httpx.ASGITransport(app=site.hostile))
        async with make_client(ClockOffset(other, clock_offset)) as browser_on_b:
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


# -- issue #10, finding 2: clocks that differ -----------------------------------------------------------


@pytest.fixture
async def b_behind(redis_server: RedisServer) -> AsyncIterator[tuple[Site, httpx.AsyncClient]]:
    """A, and a browser on B, whose host's clock is 1.5 s behind A's."""
    async with open_two_processes(redis_server.url, clock_offset=-1.5) as opened:
        yield opened


async def test_a_logout_on_a_host_whose_clock_is_behind_reaches_the_other_host(
    b_behind: tuple[Site, httpx.AsyncClient],
) -> None:
    site, on_b = b_behind
    await login(on_b, site.hostile)
    copy_on_a = site.browser()
    copy_on_a.cookies.set(SESSION_COOKIE, on_b.cookies[SESSION_COOKIE], domain="app.test")
    assert (await copy_on_a.get("/")).text == "hello alice"
    # Someone else logs out on A, and A reads its log: it has now seen A's latest time stamp.
    bob = site.browser()
    site.hostile.sub = "bob"
    await login(bob, site.hostile)
    assert (await bob.post("/auth/logout", headers={"Origin": APP_ORIGIN})).status_code == 303
    await shared_revocations(site.middleware).sync()
    # Alice logs out on B, whose clock says it is 1.5 s earlier than the logout A has seen.
    assert (await on_b.post("/auth/logout", headers={"Origin": APP_ORIGIN})).status_code == 303
    await refused_within(copy_on_a, 3.0)


async def test_a_session_created_on_a_fast_host_and_logged_out_on_a_slow_one_ends_everywhere(
    b_behind: tuple[Site, httpx.AsyncClient],
) -> None:
    site, on_b = b_behind
    await login(site.client, site.hostile)  # on A, whose clock is 1.5 s ahead of B's
    cookie = site.client.cookies[SESSION_COOKIE]
    on_b.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
    assert (await on_b.get("/")).text == "hello alice"
    # Logged out on B well within 1.5 s: B's time stamp is before the session's creation on A.
    assert (await on_b.post("/auth/logout", headers={"Origin": APP_ORIGIN})).status_code == 303
    on_b.cookies.set(SESSION_COOKIE, cookie, domain="app.test")  # a copy of the cookie, replayed on B
    assert (await on_b.get("/", headers={"Accept": "application/json"})).status_code == 401
    await refused_within(site.client, 3.0)  # and the copy on A


async def test_a_backchannel_logout_by_sub_on_a_host_whose_clock_is_behind_ends_sessions_made_elsewhere(
    b_behind: tuple[Site, httpx.AsyncClient],
) -> None:
    site, on_b = b_behind
    await login(site.client, site.hostile)  # on A, 1.5 s ahead
    token = site.hostile.logout_token(sub="alice")
    response = await on_b.post("/auth/backchannel-logout", data={"logout_token": token})  # the provider, to B
    assert response.status_code == 200
    await refused_within(site.client, 3.0)


# Store-level: two `SharedRevocations` (two processes) against one real redis-server. `add` gets
# its time stamp from the caller, so a host whose clock is behind is one that passes an earlier one.


@contextlib.asynccontextmanager
async def open_revocations(
    url: str, count: int, *, max_age: int = 3600, skew_margin: float | None = None
) -> AsyncIterator[list[SharedRevocations]]:
    if skew_margin is None:
        opened = [SharedRevocations(url, max_age=max_age) for _ in range(count)]
    else:
        opened = [SharedRevocations(url, max_age=max_age, skew_margin=skew_margin) for _ in range(count)]
    try:
        yield opened
    finally:
        for revocations in opened:
            await revocations.aclose()


def a_session(*, created_at: float) -> Session:
    return Session(
        id=secrets.token_urlsafe(24),
        claims={"sub": "alice"},
        access_token="at",
        id_token="",
        refresh_token=None,
        access_expires_at=None,
        scopes=("openid",),
        created_at=created_at,
        expires_at=int(created_at) + 3600,
        last_seen=int(created_at),
    )


async def test_logouts_reach_every_process_in_whatever_order_their_time_stamps_are(redis_server: RedisServer) -> None:
    async with open_revocations(redis_server.url, 2) as (fast, slow):
        now = time.time()
        ended_on_fast, ended_on_slow = a_session(created_at=now - 60), a_session(created_at=now - 60)
        await fast.add(f"id:{ended_on_fast.id}", now)
        await fast.sync()
        await slow.sync()
        await slow.add(f"id:{ended_on_slow.id}", now - 1.5)  # its clock is 1.5 s behind
        await fast.sync()
        assert fast.covers(ended_on_slow), "a logout stamped before one already read was never read"
        assert slow.covers(ended_on_fast)


async def test_a_process_reads_the_log_again_when_redis_lost_it() -> None:
    # Its own server: restarted empty, and written to with ids below those read before, as by a
    # Redis whose clock is behind the one that served before.
    with RedisServer() as server:
        async with open_revocations(server.url, 1) as (reader,):
            await reader.add("id:before", time.time())
            await reader.sync()
            server.stop()
            server.start()
            raw = redis.asyncio.from_url(server.url)
            try:
                milliseconds = (await raw.time())[0] * 1000
                await raw.xadd(_LOG, {"k": "id:after", "at": repr(time.time())}, id=f"{milliseconds - 60_000}-0")
            finally:
                await raw.aclose()
            for _ in range(2):  # the first sync may only notice the broken connection
                with contextlib.suppress(RedisError):
                    await reader.sync()
            assert "id:after" in reader.local.ended


async def test_the_log_keeps_entries_as_long_as_their_sessions_live_by_the_redis_clock(
    redis_server: RedisServer,
) -> None:
    short = 0.25  # skew margin: with max_age=1, entries are kept 1.5 s
    async with open_revocations(redis_server.url, 1, max_age=1, skew_margin=short) as (writer,):
        old = f"id:{secrets.token_urlsafe(8)}"
        await writer.add(old, time.time())
        async with open_revocations(redis_server.url, 1, max_age=1, skew_margin=short) as (early,):
            await early.sync()
            assert old in early.local.ended
        await asyncio.sleep(1.6)
        # A process starting now does not take the expired entry in, though it is still in the log.
        async with open_revocations(redis_server.url, 1, max_age=1, skew_margin=short) as (late,):
            await late.sync()
            assert old not in late.local.ended
        # The next logout trims it from the log.
        new = f"id:{secrets.token_urlsafe(8)}"
        await writer.add(new, time.time())
        raw = redis.asyncio.from_url(redis_server.url)
        try:
            entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", await raw.xrange(_LOG))
            keys = [fields[b"k"] for _, fields in entries]
        finally:
            await raw.aclose()
        assert old.encode() not in keys and new.encode() in keys
