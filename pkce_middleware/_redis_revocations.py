"""Logouts of cookie sessions shared by every process through Redis (`PKCE_REVOCATION_STORE`).

`SharedRevocations` is a `RevocationLog`: the hot path reads its in-memory copy only (no network
per request), and a background task folds in the other processes' entries every `sync_interval`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

import redis.asyncio
from redis.exceptions import RedisError

from ._exceptions import StoreUnavailable
from ._redis import PREFIX, connect, redacted, redis_key, text, unavailable
from ._revocations import MemoryRevocations
from ._session import Session

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: A sorted set: member = revocation key (`sid:...`, `sub:...`, `id:...`), score = when.
_REVOCATIONS = f"{PREFIX}revocations"


class SharedRevocations:
    """Back-channel and local logouts of cookie sessions, shared by every process through Redis.

    The hot path keeps reading the in-memory copy only (no network per request); a background
    task folds in the other processes' entries every `sync_interval` seconds, so a logout reaches
    every process within about that long. Entries live as long as a session can.
    """

    def __init__(self, url: str, *, max_age: int, sync_interval: float = 1.0) -> None:
        self._url = url
        self._local = MemoryRevocations(max_age=max_age)
        self._max_age = max_age
        self._sync_interval = sync_interval
        self._client: redis.asyncio.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._seen = 0.0
        self._failing = False
        self._closing = False

    def __repr__(self) -> str:
        return f"SharedRevocations(url={redacted(self._url)!r})"

    def _redis(self) -> redis.asyncio.Redis:
        if self._client is None:
            self._client = connect(self._url, socket_timeout=2.0, health_check_interval=30)
        return self._client

    async def startup(self) -> None:
        self._closing = False  # a second lifespan cycle syncs again
        self.ensure_syncing()

    def ensure_syncing(self) -> None:
        """Start the background sync (at startup, or on first use when no lifespan ran)."""
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self._closing = True
        if task is not None:
            task.cancel()
            # redis-py may turn a cancellation inside a command into a connection error, which the
            # loop survives; the flag ends it at its next turn, and this wait is bounded regardless.
            await asyncio.wait({task}, timeout=self._sync_interval + 3)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def add(self, key: str, at: float) -> None:
        await self._local.add(key, at)
        with unavailable("ZADD revocation"):
            await self._redis().zadd(_REVOCATIONS, {key: at})

    def covers(self, session: Session) -> bool:
        self.ensure_syncing()
        return self._local.covers(session)

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        try:
            with unavailable("SET NX jti"):
                claimed = bool(await self._redis().set(redis_key("jti", jti), b"1", nx=True, ex=max(1, ttl)))
        except StoreUnavailable as exc:
            # Better to end the session here (and say 503 after) than to refuse the logout.
            logger.warning("logout token id checked in this process only: reason=%s", exc.error)
            return self._local.remember_jti(jti, time.time())
        self._local.remember_jti(jti, time.time())
        return claimed

    async def sync(self) -> None:
        """Fold the entries written since the last sync into the local list (and prune old ones)."""
        client = self._redis()
        entries = cast(
            "list[tuple[bytes, float]]", await client.zrangebyscore(_REVOCATIONS, self._seen, "+inf", withscores=True)
        )
        for member, score in entries:
            await self._local.add(text(member), float(score))
            self._seen = max(self._seen, float(score))
        await client.zremrangebyscore(_REVOCATIONS, "-inf", time.time() - self._max_age)

    async def _sync_forever(self) -> None:
        while not self._closing:
            try:
                await self.sync()
                if self._failing:
                    logger.info("revocations syncing again: store=%r", self)
                self._failing = False
            except RedisError as exc:
                if not self._failing:  # once per outage, not once per second
                    logger.warning("revocations not syncing: store=%r error=%s", self, type(exc).__name__)
                self._failing = True
            await asyncio.sleep(self._sync_interval)
