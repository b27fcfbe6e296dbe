"""What the Redis tests share: a site on the Redis store, command counts, the session cache's state."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio

from pkce_middleware._redis_store import RedisStore
from tests.support.site import Site, open_site

__all__ = ["cache_live", "cache_off", "command_calls", "difference", "redis_site", "redis_store_of", "session_keys"]

#: Not counted: the `INFO` that takes the second snapshot; what the session caches' listeners send
#: in the background (SUBSCRIBE, heartbeats by PUBLISH, the subscriber's health-check PING;
#: tests/test_redis_cache.py watches the announcements of changes on the channel itself); and the
#: handshake of a connection the pool opens when its others are busy (HELLO, CLIENT SETINFO).
_BACKGROUND = {"info", "publish", "ping", "subscribe", "unsubscribe", "hello", "client|setinfo"}


@contextlib.asynccontextmanager
async def redis_site(url: str, **overrides: Any) -> AsyncIterator[Site]:
    """`open_site` with the Redis store, whose client is closed with the site."""
    async with open_site(session_store=url, **overrides) as site:
        try:
            yield site
        finally:
            await site.middleware.aclose()


async def command_calls(client: redis.asyncio.Redis) -> Counter[str]:
    stats: dict[str, Any] = await client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})


def difference(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    """Commands run in between, leaving out the background ones."""
    return {
        name: after[name] - before[name] for name in after if name not in _BACKGROUND and after[name] != before[name]
    }


async def session_keys(client: redis.asyncio.Redis) -> list[bytes]:
    return [key async for key in client.scan_iter(match="pkce:session:*")]


def redis_store_of(site: Site) -> RedisStore:
    store = site.middleware._parts.store
    assert isinstance(store, RedisStore)
    return store


async def cache_live(site: Site) -> None:
    """Wait (up to 30 s: a busy machine) until the site's session cache has heard its own heartbeat."""
    store = redis_store_of(site)
    for _ in range(3000):
        if store.cache.live:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the session cache never went live")


async def cache_off(site: Site) -> None:
    """Wait (bounded) until the site's session cache stops serving: its channel is down or silent."""
    store = redis_store_of(site)
    for _ in range(3000):
        if not store.cache.live:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the session cache kept serving")
