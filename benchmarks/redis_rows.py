"""The Redis rows of `bench_request`: the Redis session store beside a bare app doing one GET.

The store serves a session it has read before from its local cache (`_redis_cache`), so a warm
request makes no Redis command; the bare app with one GET shows what each request would cost
without the cache (and what it costs while the cache's channel is down).

Imported only when the `redis` package and `redis-server` are installed. A private redis-server is
started on a free 127.0.0.1 port (by the test suite's launcher) and stopped when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from typing import Any

import httpx
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.types import ASGIApp, Receive, Scope, Send

from pkce_middleware import PKCEConfig, PKCEMiddleware
from tests.support.redis_server import RedisServer

from .harness import BenchmarkError, Variant, call_capturing, require
from .scenarios import (
    PKCE_REDIS,
    REDIS_GET,
    RESPONSE_BODY,
    RESPONSE_START,
    LiveSession,
    bare,
    browser_scope,
    check_pkce,
    require_hello,
)
from .session_data import CLIENT_ID, ISSUER, SessionData

#: A request of the Redis rows takes a loopback round trip (~0.1 ms, more on a busy machine): their
#: reps last at least this long, so even a `--quick` rep has enough chunks to find stalls among.
REDIS_MIN_REP_SECONDS = 0.2
#: Requests whose Redis commands are counted (with `INFO commandstats`) before and after timing.
REDIS_CHECKED_REQUESTS = 5


def store_like_client(url: str) -> redis.asyncio.Redis:
    """A client with the settings the Redis store documents for its own: 2 s timeouts, a health-check
    PING on a connection idle for 30 s, one immediate retry on a broken connection."""
    return redis.asyncio.from_url(
        url,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


@dataclasses.dataclass
class SessionKey:
    """The Redis key of the benchmark's session (it changes when the session is made anew)."""

    name: str = ""


def bare_with_redis_get(client: redis.asyncio.Redis, key: SessionKey) -> ASGIApp:
    """`bare` plus the one Redis GET a request costs the Redis store: the floor for `pkce (redis store)`.

    It GETs the very key (and so the very value) the store reads; a KeyError (not a silent fast
    path) if the key is gone.
    """

    async def bare_that_gets(scope: Scope, receive: Receive, send: Send) -> None:
        if await client.get(key.name) is None:
            raise KeyError(key.name)
        await send(RESPONSE_START)
        await send(RESPONSE_BODY)

    return bare_that_gets


async def key_read_by(app: ASGIApp, scope: Scope, inspector: redis.asyncio.Redis) -> str:
    """The one key that a request through `app` GETs, as the server's slow log records it."""
    setting = "slowlog-log-slower-than"
    previous = (await inspector.config_get(setting)).get(setting) or "10000"  # Redis's default
    await inspector.config_set(setting, 0)  # log every command
    try:
        await inspector.slowlog_reset()
        require_hello(await call_capturing(app, scope), PKCE_REDIS)
        entries: list[dict[str, Any]] = await inspector.slowlog_get(64)
    finally:
        await inspector.config_set(setting, previous)
    gets = [entry["command"].split() for entry in entries if entry["command"].split()[0].upper() == b"GET"]
    require(len(gets) == 1 and len(gets[0]) == 2, f"{PKCE_REDIS}: expected one GET of one key, the server saw {gets}")
    key: bytes = gets[0][1]
    return key.decode("latin-1")


async def redis_command_calls(inspector: redis.asyncio.Redis) -> Counter[str]:
    """Calls per command since the server started, as the server counts them (`INFO commandstats`)."""
    stats: dict[str, Any] = await inspector.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})


async def check_one_get(app: ASGIApp, scope: Scope, inspector: redis.asyncio.Redis, name: str) -> None:
    """Each request runs exactly one Redis command, a GET: no write-back, no health-check PING."""
    require_hello(await call_capturing(app, scope), name)  # the connection (and its CLIENT SETINFO) is set up
    before = await redis_command_calls(inspector)
    for _ in range(REDIS_CHECKED_REQUESTS):
        require_hello(await call_capturing(app, scope), name)
    after = await redis_command_calls(inspector)
    ran = {command: after[command] - before[command] for command in after if command != "info"}
    ran = {command: calls for command, calls in ran.items() if calls}
    require(
        ran == {"get": REDIS_CHECKED_REQUESTS},
        f"{name}: expected one GET per request, but {REDIS_CHECKED_REQUESTS} requests ran {ran}",
    )


async def cache_live(middleware: PKCEMiddleware) -> None:
    """Wait (up to 30 s) until the store's session cache trusts its channel: it serves from memory
    only then. The timed loop never yields to the event loop, so the listener runs between reps;
    a rep is far shorter than the second the cache stays live without a heartbeat."""
    store = middleware._parts.store
    for _ in range(3000):
        if getattr(store, "cache", None) is not None and store.cache.live:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.01)
    raise BenchmarkError(f"{PKCE_REDIS}: the session cache never went live")


async def check_served_from_cache(middleware: PKCEMiddleware, scope: Scope, inspector: redis.asyncio.Redis) -> None:
    """After one request (the fill), requests run no Redis command at all."""
    await cache_live(middleware)
    require_hello(await call_capturing(middleware, scope), PKCE_REDIS)
    before = await redis_command_calls(inspector)
    for _ in range(REDIS_CHECKED_REQUESTS):
        require_hello(await call_capturing(middleware, scope), PKCE_REDIS)
    after = await redis_command_calls(inspector)
    # Left out: the cache's heartbeats (PUBLISH), which its listener sends in the background.
    ran = {command: after[command] - before[command] for command in after if command not in ("info", "publish")}
    ran = {command: calls for command, calls in ran.items() if calls}
    require(not ran, f"{PKCE_REDIS}: expected no Redis command on a warm session, {REDIS_CHECKED_REQUESTS} ran {ran}")


async def check_pkce_redis(middleware: PKCEMiddleware, scope: Scope, inspector: redis.asyncio.Redis) -> None:
    """Authenticated, the session opened from the codec's cache (same blob), served from the store's cache."""
    await check_pkce(middleware, scope, cached=True, name=PKCE_REDIS)
    await check_served_from_cache(middleware, scope, inspector)


@dataclasses.dataclass(frozen=True)
class RedisRows:
    variants: list[Variant]
    session: LiveSession
    server: str


async def redis_rows(
    stack: contextlib.AsyncExitStack, data: SessionData, secret_key: str, transport: httpx.AsyncBaseTransport
) -> RedisRows:
    """Start a private redis-server (stopped by `stack`), store a real session in it, build the two rows."""
    try:
        server = stack.enter_context(RedisServer())  # stopped when the run ends, also on errors
    except RuntimeError as exc:
        raise BenchmarkError(f"redis-server did not start: {exc}") from exc
    config = PKCEConfig(issuer=ISSUER, client_id=CLIENT_ID, secret_key=secret_key, session_store=server.url)
    middleware = PKCEMiddleware(bare, config=config, transport=transport)
    stack.push_async_callback(middleware.aclose)
    inspector = redis.asyncio.from_url(server.url)  # looks into Redis on a connection of its own
    stack.push_async_callback(inspector.aclose)
    # The reference's client has the store's settings, and GETs the key the store reads (so the same
    # ~2.5 kB value crosses the socket).
    client = store_like_client(server.url)
    stack.push_async_callback(client.aclose)
    key = SessionKey()

    # A session written by the store itself, as a login writes it (one EVALSHA: the session and its
    # indexes); the cookie is the one that login would have set.
    session = LiveSession(middleware, data, browser_scope(""))

    async def find_key() -> None:
        key.name = await key_read_by(middleware, session.scope, inspector)

    session.renewed = find_key
    await session.renew()
    get_app = bare_with_redis_get(client, key)
    scope = session.scope

    info: dict[str, Any] = await inspector.info("server")

    async def prepare_pkce(seconds: float) -> None:
        await cache_live(middleware)  # first: the prepared request is then the fill
        await session.preparing(middleware)(seconds)

    variants = [
        Variant(
            REDIS_GET,
            get_app,
            scope,
            lambda: check_one_get(get_app, scope, inspector, REDIS_GET),
            prepare=session.preparing(get_app),
            min_rep_seconds=REDIS_MIN_REP_SECONDS,
        ),
        Variant(
            PKCE_REDIS,
            middleware,
            scope,
            lambda: check_pkce_redis(middleware, scope, inspector),
            prepare=prepare_pkce,
            min_rep_seconds=REDIS_MIN_REP_SECONDS,
        ),
    ]
    return RedisRows(
        variants=variants,
        session=session,
        server=f"redis-server {info.get('redis_version', '?')} on {server.url.removesuffix('/0')} (loopback TCP)",
    )
