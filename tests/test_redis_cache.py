"""The Redis store's local session cache (`_redis_cache`) against a real `redis-server`.

What a user and an operator would check: a warm session makes no Redis command per request; a
logout (local, RP-initiated or back-channel) on one process is seen at once by that process and
within about a second by another; when the invalidation channel drops or goes silent, every request
reads Redis again until the channel is back; Redis down is a 503 and recovers without a restart.
Two middlewares sharing one Redis stand for two app processes, as in tests/test_redis.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio

from pkce_middleware._redis_cache import CHANNEL, SessionCache
from pkce_middleware._session import Session
from tests.support.hostile_provider import HostileProvider
from tests.support.redis_checks import cache_live, command_calls, difference, new_session, redis_site, redis_store_of
from tests.support.redis_server import RedisServer
from tests.support.site import SESSION_COOKIE, Site, login, strong_secret_key

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}
ORIGIN = {"Origin": "https://app.test"}
#: How long another process may keep serving an ended session: the cache's `stale_after` (1 s),
#: plus the heartbeat period and room for a busy machine.
SEEN_WITHIN = 2.0


async def refused_within(client: httpx.AsyncClient, seconds: float) -> float:
    """Poll until the session is refused (401); how long it took. Fails past `seconds`."""
    started = time.monotonic()
    while True:
        response = await client.get("/", headers=JSON)
        if response.status_code == 401:
            return time.monotonic() - started
        assert response.status_code == 200, response.text
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"still served {elapsed:.2f}s after the logout"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def two_processes(url: str) -> AsyncIterator[tuple[Site, Site, HostileProvider]]:
    """Two middlewares (app processes) with one provider, one secret key and one Redis."""
    hostile = HostileProvider()
    key = strong_secret_key()
    async with (
        redis_site(url, hostile=hostile, secret_key=key) as one,
        redis_site(url, hostile=hostile, secret_key=key) as two,
    ):
        yield one, two, hostile


def same_browser(site: Site, cookie: str) -> httpx.AsyncClient:
    """A client of `site` sending `cookie`: the same browser balanced to another process, or a copy."""
    client = site.browser()
    client.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
    return client


async def logged_in_on_both(one: Site, two: Site, hostile: HostileProvider) -> httpx.AsyncClient:
    """Log in on `one`; warm the session there and in `two`, for a copy of the cookie, returned."""
    await login(one.client, hostile)
    elsewhere = same_browser(two, one.client.cookies[SESSION_COOKIE])
    await warm(one, one.client)
    await warm(two, elsewhere)
    return elsewhere


async def warm(site: Site, client: httpx.AsyncClient, user: str = "alice") -> None:
    """Channel live, and the session read once (the fill) and served again from the cache."""
    assert (await client.get("/")).text == f"hello {user}"  # the first Redis use starts the listener
    await cache_live(site)
    for _ in range(2):
        assert (await client.get("/")).text == f"hello {user}"


# -- through the middleware ------------------------------------------------------------------------


async def test_a_warm_session_makes_no_redis_command(redis_server: RedisServer, inspector: redis.asyncio.Redis) -> None:
    async with redis_site(redis_server.url) as site:
        await login(site.client, site.hostile)
        await warm(site, site.client)

        before = await command_calls(inspector)
        for _ in range(20):
            response = await site.client.get("/")
            assert response.text == "hello alice"
            assert "set-cookie" not in response.headers
        assert difference(before, await command_calls(inspector)) == {}


async def test_logout_is_seen_at_once_here_and_within_a_second_elsewhere(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with two_processes(redis_server.url) as (one, two, hostile):
        elsewhere = await logged_in_on_both(one, two, hostile)
        cookie = one.client.cookies[SESSION_COOKIE]

        announced = inspector.pubsub()
        await announced.subscribe(CHANNEL)
        response = await one.client.post("/auth/logout", headers=ORIGIN)
        assert response.status_code == 303

        # The answer deleted the cookie; a copy taken before (another tab's, a thief's) is what is left.
        assert (await same_browser(one, cookie).get("/", headers=JSON)).status_code == 401  # here: at once
        assert await refused_within(elsewhere, SEEN_WITHIN) < SEEN_WITHIN

        # The change went out on the channel as a `k <key>` message.
        messages = []
        for _ in range(200):
            message = await announced.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message is not None and message["data"].startswith(b"k "):
                messages.append(message["data"])
                break
        assert messages and messages[0].startswith(b"k pkce:session:")
        await announced.aclose()  # type: ignore[no-untyped-call]


async def test_backchannel_logout_reaches_a_process_serving_from_its_cache(redis_server: RedisServer) -> None:
    async with two_processes(redis_server.url) as (one, two, hostile):
        hostile.sid = "op-session-7"
        copy = await logged_in_on_both(one, two, hostile)

        token = hostile.logout_token(sid="op-session-7")
        assert (await one.client.post("/auth/backchannel-logout", data={"logout_token": token})).status_code == 200
        assert (await one.client.get("/", headers=JSON)).status_code == 401
        assert await refused_within(copy, SEEN_WITHIN) < SEEN_WITHIN


async def test_a_flushall_ends_cached_sessions_everywhere_within_a_second(
    redis_server: RedisServer, inspector: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with two_processes(redis_server.url) as (one, two, hostile):
        elsewhere = await logged_in_on_both(one, two, hostile)

        await inspector.flushall()  # an operator ending every session at once: nothing is announced
        assert await refused_within(one.client, SEEN_WITHIN) < SEEN_WITHIN
        assert await refused_within(elsewhere, SEEN_WITHIN) < SEEN_WITHIN
        # (A process whose heartbeat was late may have read Redis and refused before it noticed.)
        assert "session cache emptied: Redis lost its data" in caplog.text

        await login(one.client, hostile)  # and a new login is served from the cache again
        await warm(one, one.client)


async def test_a_dropped_channel_means_a_get_per_request_until_it_is_back(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with two_processes(redis_server.url) as (one, two, hostile):
        copy = await logged_in_on_both(one, two, hostile)
        cache = redis_store_of(two).cache
        flushes = cache.flushes

        # Every subscriber connection is cut: no process can hear of changes until it resubscribes.
        await inspector.client_kill_filter(_type="pubsub")
        for _ in range(3000):
            if not cache.live:
                break
            await asyncio.sleep(0.01)
        assert not cache.live
        before = await command_calls(inspector)
        for _ in range(3):
            assert (await copy.get("/")).text == "hello alice"
        calls = difference(before, await command_calls(inspector))
        if cache.live:  # it may have come back meanwhile; then at least the first request read Redis
            assert calls.get("get", 0) >= 1
        else:
            assert calls == {"get": 3}

        await cache_live(two)
        assert cache.flushes > flushes  # what it held before the drop was dropped, not trusted
        await warm(two, copy)
        before = await command_calls(inspector)
        assert (await copy.get("/")).text == "hello alice"
        assert difference(before, await command_calls(inspector)) == {}


async def test_a_silent_channel_stops_the_cache_within_a_second(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with redis_site(redis_server.url) as site:
        await login(site.client, site.hostile)
        await warm(site, site.client)
        cache = redis_store_of(site).cache

        # Writes paused (PUBLISH included, reads not): no heartbeat comes back, though the
        # connection stays open. The cache must stop trusting itself within `stale_after`.
        await inspector.client_pause(1500, all=False)
        paused = time.monotonic()
        for _ in range(300):
            if not cache.live:
                break
            await asyncio.sleep(0.01)
        assert not cache.live
        assert time.monotonic() - paused < SEEN_WITHIN
        before = await command_calls(inspector)
        assert (await site.client.get("/")).text == "hello alice"  # read from Redis: reads still work
        assert difference(before, await command_calls(inspector)) == {"get": 1}
        await cache_live(site)  # the pause ends, heartbeats come back


async def test_redis_down_is_a_503_and_recovery_needs_no_restart() -> None:
    with RedisServer() as server:
        async with redis_site(server.url) as site:
            await login(site.client, site.hostile)
            await warm(site, site.client)

            server.stop()
            # Within about a second the cache stops serving, and requests need Redis again.
            for _ in range(300):
                response = await site.client.get("/", headers=JSON)
                if response.status_code == 503:
                    break
                assert response.text == "hello alice"
                await asyncio.sleep(0.02)
            assert response.status_code == 503
            assert response.json()["error"] == "session_store_unavailable"

            server.start()  # empty again (no persistence): the session is gone, not brought back
            for _ in range(300):
                response = await site.client.get("/", headers=JSON)
                if response.status_code != 503:
                    break
                await asyncio.sleep(0.05)
            assert response.status_code == 401
            await login(site.client, site.hostile)
            assert (await site.client.get("/")).text == "hello alice"
            await cache_live(site)


# -- the cache alone -------------------------------------------------------------------------------


def live_cache(**options: float) -> SessionCache:
    """A cache that has heard its own heartbeat (as its listener would make it)."""
    cache = SessionCache(**options)  # type: ignore[arg-type]
    cache._beats["beat-1"] = time.monotonic()  # as the listener records a heartbeat it sends
    assert cache._receive("h beat-1")
    assert cache.live
    return cache


def some_session(session_id: str = "s1") -> Session:
    return new_session(
        sid=None, id=session_id, access_token="at", refresh_token=None, access_expires_at=int(time.time()) + 300
    )


def test_a_fill_begun_before_an_invalidation_is_not_kept() -> None:
    cache = live_cache()
    ticket = cache.begin("pkce:session:a")
    assert cache._receive("k pkce:session:b pkce:session:a") is False  # another process wrote it
    cache.put("pkce:session:a", ticket, some_session(), current=True)
    assert cache.get("pkce:session:a") is None

    ticket = cache.begin("pkce:session:a")
    cache.put("pkce:session:a", ticket, some_session(), current=True)
    assert cache.get("pkce:session:a") is not None


def test_a_fill_begun_before_a_flush_is_not_kept() -> None:
    cache = live_cache()
    ticket = cache.begin("pkce:session:a")
    cache.flush()
    cache.put("pkce:session:a", ticket, some_session(), current=True)
    assert cache.get("pkce:session:a") is None


def test_nothing_is_kept_or_served_before_the_first_heartbeat() -> None:
    cache = SessionCache()
    assert not cache.live
    assert cache.begin("pkce:session:a") is None
    cache.put("pkce:session:a", None, some_session(), current=True)
    assert cache.get("pkce:session:a") is None
    assert not cache._receive("h someone-else")  # another process's heartbeat proves nothing here
    assert not cache.live


def test_entries_are_read_again_after_max_age_and_the_cache_is_bounded() -> None:
    cache = live_cache(max_age=0.0)
    cache.put("pkce:session:a", cache.begin("pkce:session:a"), some_session(), current=True)
    assert cache.get("pkce:session:a") is None

    cache = live_cache(size=2)
    for name in "abc":
        cache.put(f"pkce:session:{name}", cache.begin(f"pkce:session:{name}"), some_session(name), current=True)
    assert cache.get("pkce:session:a") is None  # the oldest went
    assert [cache.get(f"pkce:session:{name}") is not None for name in "bc"] == [True, True]


def test_garbage_on_the_channel_changes_nothing() -> None:
    cache = live_cache()
    cache.put("pkce:session:a", cache.begin("pkce:session:a"), some_session(), current=True)
    cache._beats["beat-2"] = time.monotonic()
    for data in ("", "x", "h", "h beat-1", "h beat-2 1e18", "h beat-3", "k"):
        assert cache._receive(data) is False
    assert cache.get("pkce:session:a") is not None
