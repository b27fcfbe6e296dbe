"""What the Redis tests share: a site on the Redis store, command counts, the session cache's state,
and `RedisStore`s used on their own (built, filled with sessions, closed)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio
from starlette.types import Scope

from pkce_middleware._cookies import CookiePolicy, CookieWriter
from pkce_middleware._crypto import Sealer
from pkce_middleware._redis_store import RedisStore
from pkce_middleware._session import Session, SessionCodec
from tests.support.site import SESSION_COOKIE, Site, open_site

__all__ = [
    "cache_live",
    "cache_off",
    "command_calls",
    "difference",
    "make_store",
    "new_session",
    "redis_site",
    "redis_store_of",
    "request_with",
    "saved",
    "session_keys",
    "set_cookie_value",
    "stores",
]

#: Not counted: the `INFO` that takes the second snapshot; what the session caches' listeners send
#: in the background (SUBSCRIBE, heartbeats by PUBLISH, the subscriber's health-check PING;
#: tests/test_redis_cache.py watches the announcements of changes on the channel itself); and the
#: handshake of a connection the pool opens when its others are busy (HELLO, CLIENT SETINFO).
_BACKGROUND = {"info", "publish", "hget", "hsetnx", "ping", "subscribe", "unsubscribe", "hello", "client|setinfo"}


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


# -- a store on its own ----------------------------------------------------------------------------

_POLICY = CookiePolicy(secure=True)


def make_store(url: str, key: str | list[str], **options: Any) -> RedisStore:
    """A store as one app process builds it (its own codec, caches, client and listener)."""
    keys = [key] if isinstance(key, str) else key
    return RedisStore(
        url, SessionCodec(Sealer(keys, "session")), _POLICY, Sealer(keys, "session-id"), max_age=3600, **options
    )


@contextlib.asynccontextmanager
async def stores(*made: RedisStore) -> AsyncIterator[None]:
    """Close the stores `made` on the way out."""
    try:
        yield
    finally:
        for store in made:
            await store.aclose()


def new_session(sub: str = "alice", sid: str | None = "op-1", **fields: Any) -> Session:
    """A fresh session of `sub` (with the provider session `sid`, none if `None`); `fields` override the rest."""
    now = int(time.time())
    claims = {"sub": sub, **({"sid": sid} if sid is not None else {})}
    values: dict[str, Any] = {
        "id": secrets.token_urlsafe(24),
        "claims": claims,
        "access_token": "at-1",
        "id_token": "",
        "refresh_token": "rt-1",
        "access_expires_at": now + 30,
        "scopes": ("openid",),
        "created_at": now,
        "expires_at": now + 3600,
        "last_seen": now,
    }
    values.update(fields)
    return Session(**values)


def request_with(cookie: str | None) -> Scope:
    """An HTTP request scope sending the session cookie `cookie` (no cookie if `None`)."""
    headers = [(b"cookie", f"{SESSION_COOKIE}={cookie}".encode())] if cookie is not None else []
    return {"type": "http", "headers": headers}


def set_cookie_value(writer: CookieWriter) -> str | None:
    """The session cookie's value `writer` sets, `""` if it deletes it, `None` if it leaves it alone."""
    for name, value in writer.raw_headers:
        text = value.decode("latin-1")
        if name == b"set-cookie" and text.startswith(f"{SESSION_COOKIE}="):
            return "" if "Max-Age=0" in text else text.split(";")[0].split("=", 1)[1].strip('"')
    return None


async def saved(store: RedisStore, session: Session) -> str:
    """Save `session` as a login does; the cookie value that points at it."""
    writer = CookieWriter()
    await store.save(session, request_with(None), writer)
    cookie = set_cookie_value(writer)
    assert cookie
    return cookie


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll `condition` every 10 ms; fails past `seconds`."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within the time allowed")
