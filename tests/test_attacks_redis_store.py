"""Attacks on the Redis store's cookie renewal (`_redis_store`), the session cache's `EPOCH` check
(`_redis_cache`) and sliding expiry with short idle timeouts (`_lifecycle`), against a real
`redis-server`.

The first test is a finding of a review, fixed; the others pin properties the code held under
attack and no other test covered. Two middlewares (or two
`RedisStore`s) on one Redis stand for two app processes.
"""

from __future__ import annotations

import asyncio
import logging
import re
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio

from pkce_middleware import _redis_store as redis_store_module
from pkce_middleware._redis_cache import EPOCH
from tests.support.clock import Clock
from tests.support.hostile_provider import HostileProvider
from tests.support.redis_checks import (
    cache_live,
    command_calls,
    difference,
    make_store,
    new_session,
    redis_site,
    request_with,
    saved,
    session_keys,
    stores,
    until,
)
from tests.support.redis_server import RedisServer
from tests.support.site import SESSION_COOKIE, login, session_cookies, strong_secret_key

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}
DAY = 86400


def max_age_of(set_cookie: str) -> int:
    found = re.search(r"Max-Age=(\d+)", set_cookie)
    assert found is not None, set_cookie
    return int(found.group(1))


# == found by this review, fixed ====================================================================


async def test_an_unreadable_epoch_key_leaves_the_cache_on_and_the_log_names_the_key(
    redis_server: RedisServer, inspector: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """`pkce:epoch` created as a string (a script, a name clash): every heartbeat's HGET fails with
    WRONGTYPE. It used to count as an outage: the cache off for good, the listener reconnecting four
    times a second, and a warning (`error=ResponseError`) that named neither the key nor the error.
    Now the cache works on, one warning says which key and why, and once the key is deleted a
    FLUSHALL is noticed again."""
    caplog.set_level(logging.INFO, logger="pkce_middleware")
    await inspector.set(EPOCH, "x")
    async with redis_site(redis_server.url) as site:
        assert (await login(site.client, site.hostile)).status_code == 303
        assert (await site.client.get("/")).text == "hello alice"
        await cache_live(site)
        assert (await site.client.get("/")).text == "hello alice"  # read once more, and kept
        before = await command_calls(inspector)
        for _ in range(3):
            assert (await site.client.get("/")).text == "hello alice"
        assert difference(before, await command_calls(inspector)) == {}  # served from the cache

        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len([m for m in warnings if EPOCH in m]) == 1, warnings
        assert any("WRONGTYPE" in m for m in warnings), warnings
        assert not any("session cache off" in m for m in warnings), warnings

        await inspector.delete(EPOCH)  # what the operator does once told
        await until(lambda: f"session cache reads {EPOCH} again" in caplog.text)
        await inspector.flushall()
        for _ in range(200):
            if (await site.client.get("/", headers=JSON)).status_code == 401:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("a FLUSHALL after the key was deleted was not noticed within 2 s")


# == attacks the code resisted ======================================================================


async def test_a_session_read_before_a_flushall_is_not_kept_after_it(
    redis_server: RedisServer, inspector: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GET answered just before a FLUSHALL whose answer is handled only after the listener saw
    the epoch change: the in-flight request may still be served (it came first), but the answer is
    not cached, so no later request is served a session Redis no longer has."""
    store = make_store(redis_server.url, strong_secret_key())
    async with stores(store):
        cookie = await saved(store, new_session(access_expires_at=10**10))
        store._redis()
        await until(lambda: store.cache.live)
        epoch = store.cache._epoch
        assert epoch

        client = store._redis()
        real_get = client.get
        answered, gate = asyncio.Event(), asyncio.Event()

        async def late_get(*args: Any, **kwargs: Any) -> Any:
            value = await real_get(*args, **kwargs)
            answered.set()
            await gate.wait()
            return value

        monkeypatch.setattr(client, "get", late_get)
        fill = asyncio.create_task(store.load(request_with(cookie)))
        await asyncio.wait_for(answered.wait(), 5)
        await inspector.flushall()  # every session ends; nothing is announced
        await until(lambda: store.cache._epoch != epoch)  # the next heartbeat read the new epoch
        gate.set()
        assert await asyncio.wait_for(fill, 5) is not None  # answered before the flush
        monkeypatch.setattr(client, "get", real_get)

        assert await session_keys(inspector) == []
        assert await store.load(request_with(cookie)) is None  # read again, not served from memory


@pytest.mark.parametrize("idle", [60, 119])
async def test_a_busy_user_on_redis_outlives_a_short_idle_timeout(
    redis_server: RedisServer, inspector: redis.asyncio.Redis, clock: Clock, monkeypatch: pytest.MonkeyPatch, idle: int
) -> None:
    """A request a second for three idle windows, the Redis store's own clock (`_redis_store.time`)
    moving with the lifecycle's: never a 401, the idle clock written back to Redis (and the cookie
    sent again) every half window, and the key's TTL covering what is left of the window."""
    monkeypatch.setattr(redis_store_module, "time", SimpleNamespace(time=clock.time))
    async with redis_site(redis_server.url, session_idle_timeout=idle) as site:
        site.hostile.token_overrides = {"expires_in": 10 * DAY}  # no refresh in the way
        assert (await login(site.client, site.hostile)).status_code == 303
        statuses, renewals = [], 0
        for _ in range(3 * idle):
            response = await site.client.get("/", headers=JSON)
            statuses.append(response.status_code)
            renewals += len(session_cookies(response))
            clock.now += 1
        assert statuses == [200] * (3 * idle)
        assert renewals >= 4  # about twice per window, not on every request
        [key] = await session_keys(inspector)
        assert await inspector.ttl(key) > idle // 2


async def test_a_quiet_user_on_redis_ends_after_between_half_and_all_of_a_short_idle_timeout(
    redis_server: RedisServer, inspector: redis.asyncio.Redis, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = 100
    monkeypatch.setattr(redis_store_module, "time", SimpleNamespace(time=clock.time))
    async with redis_site(redis_server.url, session_idle_timeout=idle) as site:
        site.hostile.token_overrides = {"expires_in": 10 * DAY}
        # Last seen at login; a request 40 s on moves nothing (under half the window) ...
        await login(site.client, site.hostile)
        clock.now += 40
        young = await site.client.get("/", headers=JSON)
        assert young.status_code == 200 and session_cookies(young) == []
        clock.now += 61  # ... so 61 s of quiet after it end the session (101 s since it was seen)
        assert (await site.client.get("/", headers=JSON)).status_code == 401
        assert await session_keys(inspector) == []

        # A request past half the window writes the idle clock back: a full window of quiet from it.
        await login(site.client, site.hostile)
        clock.now += 59
        reissued = await site.client.get("/", headers=JSON)
        assert reissued.status_code == 200 and len(session_cookies(reissued)) == 1
        clock.now += idle - 1
        assert (await site.client.get("/", headers=JSON)).status_code == 200  # (written back again)
        clock.now += idle
        assert (await site.client.get("/", headers=JSON)).status_code == 401


async def test_a_refresh_on_another_process_with_a_lowered_max_age_sends_a_cookie_to_the_session_end(
    redis_server: RedisServer,
) -> None:
    """Process one logs the user in (PKCE_SESSION_MAX_AGE 30 days) and sent the cookie; process two
    runs a lowered PKCE_SESSION_MAX_AGE (1 hour) and refreshes the session: it never sent this cookie,
    so its answer carries it, with a Max-Age to the session's own end (not the lowered hour), and
    then no more until half an idle window has passed."""
    hostile = HostileProvider()
    key = strong_secret_key()
    hostile.token_overrides = {"expires_in": 30}  # the login's access token: refreshed at once
    hostile.refresh_overrides = {"expires_in": 7200}
    async with (
        redis_site(redis_server.url, hostile=hostile, secret_key=key, session_max_age=30 * DAY) as one,
        redis_site(redis_server.url, hostile=hostile, secret_key=key, session_max_age=3600) as two,
    ):
        assert (await login(one.client, hostile)).status_code == 303
        elsewhere = two.browser()
        elsewhere.cookies.set(SESSION_COOKIE, one.client.cookies[SESSION_COOKIE], domain="app.test")

        refreshed = await elsewhere.get("/")
        assert refreshed.text == "hello alice" and hostile.calls["refresh"] == 1
        [set_cookie] = session_cookies(refreshed)
        assert 30 * DAY - 60 <= max_age_of(set_cookie) <= 30 * DAY
        again = await elsewhere.get("/")
        assert again.text == "hello alice" and session_cookies(again) == []
        assert (await one.client.get("/")).text == "hello alice"  # the same session on both
