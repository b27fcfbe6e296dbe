"""Attacks on the Redis store's session cache (`_redis_cache`) and the cookie store's shared refresh
(`_shared_refresh`), against a real `redis-server`.

The first three were findings of a review (each docstring: the claim that was broken, and the fix
now in place); the short ones after are attacks the code resisted from the start. Two `RedisStore`s
on one Redis stand for two app processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.client import Pipeline

from pkce_middleware._cookies import CookieWriter
from pkce_middleware._crypto import Sealer
from pkce_middleware._exceptions import ProviderError, StoreUnavailable
from pkce_middleware._redis import text
from pkce_middleware._redis_cache import CHANNEL
from pkce_middleware._redis_revocations import SharedRevocations
from pkce_middleware._redis_store import RedisStore
from pkce_middleware._session import Session, SessionCodec
from pkce_middleware._shared_refresh import SharedRefresh
from tests.support.redis_checks import make_store, new_session, request_with, saved, stores, until
from tests.support.redis_server import RedisServer
from tests.support.site import SESSION_COOKIE, open_site, seal_session, strong_secret_key

pytestmark = pytest.mark.redis

#: The bound the cache claims for another process (`stale_after`, 1 s) plus room for a busy machine.
SEEN_WITHIN = 2.0


def tokens(sub: str = "alice") -> dict[str, Any]:
    """The access token this module's sessions of `sub` carry: its own per user, valid for 5 minutes."""
    return {"access_token": f"at-1-{sub}", "access_expires_at": int(time.time()) + 300}


async def live(store: RedisStore) -> None:
    """The store's listener started (first Redis use) and its cache heard its own heartbeat."""
    store._redis()
    await until(lambda: store.cache.live)


async def served(store: RedisStore, cookie: str) -> Session | None:
    loaded = await store.load(request_with(cookie))
    return None if loaded is None else loaded.session


def listener_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if not t.done() and "_listen_forever" in repr(t.get_coro())]


# == findings (these fail) ===========================================================================


async def test_the_logging_out_process_never_serves_the_session_after_its_logout(
    redis_server: RedisServer, inspector: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claim: "a logout is seen by the process that did it at once (it drops the keys itself) ...
    whatever happens to the channel". `discard` (and `revoke`) drop the keys *before* their MULTI:
    a request of the same session (another tab, or a thief's copy) whose GET reaches Redis between
    that drop and the DEL takes a fresh ticket, reads the old session and caches it; the process then
    serves it after the logout was answered, until its own `k` message comes back on the channel
    (up to `stale_after` when the channel is slow). Fix: invalidate the keys again after the
    MULTI/EXEC (and after `_delete_across_slots`), as `save` does via `_announce`."""
    store = make_store(redis_server.url, strong_secret_key())
    async with stores(store):
        cookie = await saved(store, new_session(**tokens()))
        await live(store)
        assert await served(store, cookie) is not None  # filled; served from memory from now on

        # A slow channel: every message handled 0.4 s late, in order (heartbeats too; still live).
        loop = asyncio.get_running_loop()
        handle = store.cache._receive

        def late(data: str) -> bool:
            loop.call_later(0.4, handle, data)
            return False

        monkeypatch.setattr(store.cache, "_receive", late)
        await asyncio.sleep(0.5)
        assert store.cache.live

        # The logout's MULTI is slow to reach Redis (a busy connection); a GET gets in first.
        sent, gate = asyncio.Event(), asyncio.Event()
        execute = Pipeline.execute

        async def delayed(self: Pipeline, raise_on_error: bool = True) -> list[Any]:
            sent.set()
            await gate.wait()
            return await execute(self, raise_on_error)

        monkeypatch.setattr(Pipeline, "execute", delayed)
        logout = asyncio.create_task(store.discard(None, request_with(cookie), CookieWriter()))
        await asyncio.wait_for(sent.wait(), 5)
        assert await served(store, cookie) is not None  # the other tab, just before the DEL
        gate.set()
        await asyncio.wait_for(logout, 5)
        still = await served(store, cookie)  # right after the logout's answer, no await in between
        assert [k async for k in inspector.scan_iter(match="pkce:session:*")] == []  # the logout is done
        assert still is None, "served by the very process that logged it out"


async def test_an_idle_clock_write_back_cannot_undo_a_refresh_of_another_process(redis_server: RedisServer) -> None:
    """A request of process one holds the session as loaded (from its cache, possibly up to
    `stale_after` after another process changed it); process two refreshes (rt-1 -> rt-2, saved,
    announced); process one's request then writes its idle clock back: `_SAVE_SCRIPT` with
    `update=1` is a plain `SET ... XX`, so the pre-refresh tokens replace the new ones in Redis and
    every process reads rt-1 again, a refresh token the provider already rotated out: the next
    refresh is refused (a rotating provider may revoke the whole grant) and the user is logged out.
    The cache widens the window (a stale entry loaded after the refresh completed), the store
    always had it. Fix: make write-backs that do not change tokens conditional on the tokens in
    Redis: e.g. store `refresh_key(session)` beside the sealed blob (a hash field, or a prefix) and
    have the script compare it with the loaded session's (ARGV) before `SET XX`; on mismatch skip
    the write (the idle clock of the newer session will be written by its next request)."""
    key = strong_secret_key()
    one, two, reader = (make_store(redis_server.url, key) for _ in range(3))
    async with stores(one, two, reader):
        session = new_session(**tokens())
        cookie = await saved(one, session)
        loaded = await served(one, cookie)  # a request on process one began
        assert loaded is not None

        async def refresh(current: Session) -> Session:
            return dataclasses.replace(current, access_token="at-2", refresh_token="rt-2")

        assert (await two.single_flight(session, refresh)).refresh_token == "rt-2"

        # Process one's request ends: its idle clock is due and is written back.
        renewed = dataclasses.replace(loaded, last_seen=loaded.last_seen + 61)
        await one.save(renewed, request_with(cookie), CookieWriter())

        now = await served(reader, cookie)  # a process with an empty cache reads Redis
        assert now is not None
        assert now.refresh_token == "rt-2", "the refreshed tokens were overwritten by the pre-refresh session"


async def test_a_forged_heartbeat_cannot_keep_a_silent_channel_trusted(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    """Claim: the cache serves only until `stale_after` (1 s) past the sending of the last heartbeat
    it got back. The heartbeat carries the process nonce and the send time in clear: anyone who can
    SUBSCRIBE learns the nonce, and one `PUBLISH pkce:invalidations "h <nonce> 1e18"` makes
    `_live_until` practically infinite (`max(...)` never lowers it), so a channel that then goes
    silent (a NAT dropping the idle subscriber, a paused server) is trusted until the listener
    gives up after `reconnect_after` (5 s) instead of 1 s; a PUBLISH can do more than evict. Fix:
    never take a time from the channel: send `h <random token>`, remember token -> send time
    locally (a few entries), and on receipt pop the token and use the remembered time; unknown or
    replayed tokens are ignored."""
    store = make_store(redis_server.url, strong_secret_key())
    async with stores(store):
        await live(store)
        spy = inspector.pubsub()
        await spy.psubscribe(f"{CHANNEL}:*")  # the heartbeat channels of every process
        nonce, channel = None, None
        for _ in range(200):
            message = await spy.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message is not None and message["data"].startswith(b"h "):
                nonce, channel = message["data"].split(b" ")[1].decode(), message["channel"]
                break
        await spy.aclose()  # type: ignore[no-untyped-call]
        assert nonce is not None and channel is not None  # read off the channel by an outsider
        for forged in (f"h {nonce} 1e18", f"h {nonce}"):  # a time of its own, and a replay
            await inspector.publish(channel, forged)
        await asyncio.sleep(0.2)

        # The channel goes silent (writes paused: no heartbeat is published, none comes back).
        await inspector.client_pause(1700, all=False)
        paused = time.monotonic()
        await until(lambda: time.monotonic() - paused > 1.5, seconds=3)
        assert not store.cache.live, "still trusting a channel silent for 1.5 s"


# == attacks that hold ================================================================================


async def test_crafted_messages_only_evict_and_never_stop_the_listener(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    store = make_store(redis_server.url, strong_secret_key())
    async with stores(store):
        cookie = await saved(store, new_session(**tokens()))
        await live(store)
        assert await served(store, cookie) is not None
        for junk in (b"\xff\xfe\x00", b"h", b"h x nan", b"h x inf", b"k", b"k " + b"pkce:session:x " * 5000, b"z k"):
            await inspector.publish(CHANNEL, junk)
        flushes = store.cache.flushes
        await asyncio.sleep(0.4)
        assert store.cache.live and listener_tasks() and store.cache.flushes == flushes
        entry_key = next(iter(store.cache._entries))
        assert store.cache.get(entry_key) is not None  # nothing it was not told about was touched
        await inspector.publish(CHANNEL, f"k {entry_key}")
        await until(lambda: store.cache.get(entry_key) is None)
        session = await served(store, cookie)  # evicted: read again, the same session
        assert session is not None and session.sub == "alice"


async def test_two_users_interleaved_always_get_their_own_session(redis_server: RedisServer) -> None:
    key = strong_secret_key()
    one, two = make_store(redis_server.url, key), make_store(redis_server.url, key)
    async with stores(one, two):
        cookies = {sub: await saved(one, new_session(sub, **tokens(sub))) for sub in ("alice", "bob")}
        await live(one)
        for _ in range(10):
            subs = list(cookies) * 5
            results = await asyncio.gather(*(served(one if i % 2 else two, cookies[s]) for i, s in enumerate(subs)))
            assert [r.sub if r is not None else None for r in results] == subs


async def test_a_logout_elsewhere_beats_fills_racing_it_and_a_killed_subscriber(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    key = strong_secret_key()
    one, two = make_store(redis_server.url, key), make_store(redis_server.url, key)
    async with stores(one, two):
        cookie = await saved(one, new_session(**tokens()))
        await live(one)
        await live(two)
        await inspector.client_kill_filter(_type="pubsub")  # resubscribed silently by redis-py
        racing = [asyncio.create_task(served(one, cookie)) for _ in range(20)]
        await two.discard(None, request_with(cookie), CookieWriter())
        await asyncio.gather(*racing)
        ended = time.monotonic()
        while await served(one, cookie) is not None:
            assert time.monotonic() - ended < SEEN_WITHIN, "served past the bound after a logout elsewhere"
            await asyncio.sleep(0.02)


async def test_concurrent_save_and_backchannel_logout_leave_no_session(redis_server: RedisServer) -> None:
    key = strong_secret_key()
    one, two = make_store(redis_server.url, key), make_store(redis_server.url, key)
    async with stores(one, two):
        session = new_session(sid="op-9", **tokens())
        cookie = await saved(one, session)
        await live(one)
        assert await served(one, cookie) is not None
        renewed = dataclasses.replace(session, last_seen=session.last_seen + 61)
        await asyncio.gather(
            one.save(renewed, request_with(cookie), CookieWriter()),
            two.revoke(sid="op-9", sub=None, now=time.time()),
        )
        ended = time.monotonic()
        while await served(one, cookie) is not None:
            assert time.monotonic() - ended < SEEN_WITHIN
            await asyncio.sleep(0.02)
        assert await served(two, cookie) is None


async def test_a_redis_restart_that_empties_it_drops_what_the_cache_held() -> None:
    with RedisServer() as server:
        store = make_store(server.url, strong_secret_key())
        async with stores(store):
            cookie = await saved(store, new_session(**tokens()))
            await live(store)
            assert await served(store, cookie) is not None
            server.stop()
            server.start()  # empty: no persistence
            restarted = time.monotonic()
            for _ in range(500):
                try:
                    if await served(store, cookie) is None:
                        break
                except StoreUnavailable:
                    pass
                assert time.monotonic() - restarted < SEEN_WITHIN, "a session gone from Redis still served"
                await asyncio.sleep(0.01)
            assert await served(store, cookie) is None


async def test_the_listener_stops_on_aclose_and_comes_back_for_a_second_lifespan(redis_server: RedisServer) -> None:
    store = make_store(redis_server.url, strong_secret_key())
    before = len(listener_tasks())
    for _ in range(2):
        await store.startup()
        await until(lambda: store.cache.live)
        assert len(listener_tasks()) == before + 1
        await store.aclose()
        assert not store.cache.live
        await until(lambda: len(listener_tasks()) == before, seconds=5)


async def test_bookkeeping_stays_bounded_under_dead_cookies(redis_server: RedisServer) -> None:
    key = strong_secret_key()
    store = make_store(redis_server.url, key, cache_size=8)
    async with stores(store):
        await live(store)
        sealer = Sealer([key], "session-id")
        for index in range(100):  # ids sealed by us, sessions long gone: every one a GET that misses
            assert await served(store, sealer.seal(f"gone-{index}".encode())) is None
        cookies = [await saved(store, new_session(f"user{i}", **tokens(f"user{i}"))) for i in range(20)]
        for cookie in cookies:
            assert await served(store, cookie) is not None
        cache = store.cache
        assert len(cache._pending) <= 8 and len(cache._entries) <= 8 and len(store._ids._opened) <= 8


async def test_a_shared_refresh_result_is_no_cookie_and_leaves_no_lock(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with open_site(revocation_store=redis_server.url) as site:
        site.hostile.sub = "carol"
        cookie = seal_session(
            site.middleware,
            id=secrets.token_urlsafe(24),
            refresh_token=site.hostile.issue_refresh_token(sub="carol"),
            access_expires_at=int(time.time()) - 5,
        )
        site.client.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
        assert (await site.client.get("/")).text == "hello carol"  # refreshed, result shared
        results = [k async for k in inspector.scan_iter(match="pkce:refresh-result:*")]
        assert len(results) == 1
        assert [k async for k in inspector.scan_iter(match="pkce:refresh-lock:*")] == []

        raw = await inspector.get(results[0])
        assert raw is not None
        thief = site.browser()
        thief.cookies.set(SESSION_COOKIE, text(raw), domain="app.test")
        response = await thief.get("/", headers={"Accept": "application/json"})
        assert response.status_code == 401


async def test_a_failed_shared_refresh_releases_its_lock(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    revocations = SharedRevocations(redis_server.url, max_age=3600)
    shared = SharedRefresh(revocations, SessionCodec(Sealer([strong_secret_key()], "refresh-result")))

    async def failing(session: Session) -> Session:
        raise ProviderError("the provider answered 500")

    try:
        with pytest.raises(ProviderError):
            await shared.single_flight(new_session(**tokens()), failing)
        assert [k async for k in inspector.scan_iter(match="pkce:refresh-lock:*")] == []
    finally:
        await revocations.aclose()


async def test_no_exception_escapes_the_middleware_when_redis_dies_under_a_warm_cache() -> None:
    with RedisServer() as server:
        async with open_site(session_store=server.url) as site:
            store = site.middleware._parts.store
            assert isinstance(store, RedisStore)
            session = new_session(claims={"sub": "alice", "iss": site.config.issuer}, **tokens())
            site.client.cookies.set(SESSION_COOKIE, await saved(store, session), domain="app.test")
            await live(store)
            server.stop()
            statuses = set()
            for _ in range(60):
                response = await site.client.get("/", headers={"Accept": "application/json"})
                statuses.add(response.status_code)
                await asyncio.sleep(0.02)
            assert statuses <= {200, 503} and 503 in statuses
            assert (await site.client.post("/auth/logout", headers={"Origin": "https://app.test"})).status_code == 503
            token = site.hostile.logout_token(sid="op-1")
            response = await site.browser().post("/auth/backchannel-logout", data={"logout_token": token})
            assert response.status_code == 503
