"""Logouts of cookie sessions shared by every process through Redis (`PKCE_REVOCATION_STORE`).

`SharedRevocations` is a `RevocationLog`: the hot path reads its in-memory copy only (no network
per request), and a background task folds in the other processes' entries every `sync_interval`.

The entries are a Redis stream (`XADD`), read by entry id (`XREAD` after the last id read). Redis
alone assigns the ids, each greater than the last, so an entry is read by every process whatever
the clocks of the hosts that wrote it: no host's clock orders or selects anything. The id's time
part is the Redis server's clock, which is also what an entry's age is measured by (against
`TIME`, in the same transaction), so trimming old entries does not depend on the hosts' clocks
either. Which sessions an entry covers is `MemoryRevocations.covers`: only `sub:` entries compare
times, with `SKEW_MARGIN`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio

from ._exceptions import StoreUnavailable
from ._redis import PREFIX, REDIS_DOWN, connect, is_cluster, redacted, redis_key, text, unavailable
from ._revocations import SKEW_MARGIN, SOFT_CAP, MemoryRevocations
from ._session import Session

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: A stream; each entry has `k` (the revocation key: `id:...`, `sid:...`, `sub:...`) and `at` (when,
#: on the clock of the host that recorded it; only `sub:` entries use it). Not the sorted set
#: `pkce:revocations` of earlier versions, which ordered entries by the writers' clocks.
_LOG = f"{PREFIX}revocation-log"
#: Entries read per round trip while catching up (a process starting reads the whole log).
_BATCH = 1000
_START = (0, 0)
#: The Redis server's clock, [seconds, microseconds].
_CLOCK = "return redis.call('TIME')"


def _entry_id(raw: bytes | str) -> tuple[int, int]:
    milliseconds, _, sequence = text(raw).partition("-")
    return int(milliseconds), int(sequence or 0)


class SharedRevocations:
    """Back-channel and local logouts of cookie sessions, shared by every process through Redis.

    The hot path keeps reading the in-memory copy only (no network per request); a background
    task folds in the other processes' entries every `sync_interval` seconds, so a logout reaches
    every process within about that long. Entries live as long as a session they cover can.
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: int,
        sync_interval: float = 1.0,
        skew_margin: float = SKEW_MARGIN,
        soft_cap: int = SOFT_CAP,
    ) -> None:
        self._url = url
        self._local = MemoryRevocations(max_age=max_age, skew_margin=skew_margin, soft_cap=soft_cap)
        self._sync_interval = sync_interval
        self._client: redis.asyncio.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        #: The id of the last log entry read; the next sync reads the entries after it.
        self._last_id = _START
        self._failing = False
        self._closing = False

    def __repr__(self) -> str:
        return f"SharedRevocations(url={redacted(self._url)!r})"

    @property
    def local(self) -> MemoryRevocations:
        """This process's copy (its sizes and `soft_cap_crossings` are for a metrics exporter)."""
        return self._local

    def _redis(self) -> redis.asyncio.Redis:
        if self._client is None:
            self._client = connect(self._url, socket_timeout=2.0, health_check_interval=30)
        return self._client

    def client(self) -> redis.asyncio.Redis:
        """The client (made on first use), shared with `_shared_refresh`, which keeps its locks here."""
        return self._redis()

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
        self._local.record(key, at)
        client = self._redis()
        with unavailable("XADD revocation"):
            added = await client.xadd(_LOG, {"k": key, "at": repr(at)})
        # Entries older than any session they can cover, by the Redis clock (the new id's time).
        oldest = _entry_id(added)[0] - int(self._local.entry_ttl * 1000)
        try:
            await client.xtrim(_LOG, minid=f"{max(0, oldest)}-0", approximate=False)
        except REDIS_DOWN as exc:  # the logout is shared; the next one trims
            logger.info("revocation log not trimmed: store=%r error=%s", self, type(exc).__name__)

    def covers(self, session: Session) -> bool:
        self.ensure_syncing()
        return self._local.covers(session)

    def watch(self, recorded: Callable[[], None]) -> None:
        self._local.watch(recorded)  # where the other processes' logouts are folded in too

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        try:
            with unavailable("SET NX jti"):
                claimed = bool(await self._redis().set(redis_key("jti", jti), b"1", nx=True, ex=max(1, ttl)))
        except StoreUnavailable as exc:
            # Better to end the session here (and say 503 after) than to refuse the logout.
            logger.warning("logout token id checked in this process only: reason=%s", exc.error)
            return self._local.remember_jti(jti, ttl=ttl)
        self._local.remember_jti(jti, ttl=ttl)
        return claimed

    async def sync(self) -> None:
        """Fold the log entries written since the last sync into the local copy."""
        while True:
            after = f"{self._last_id[0]}-{self._last_id[1]}"
            client = self._redis()
            # One transaction, except on a Redis Cluster, whose client handles MULTI badly; there the
            # commands still go to the log's node in one batch, in this order, and a clock read
            # before the entries can only make them look younger (kept a little longer).
            async with client.pipeline(transaction=not is_cluster(client)) as pipe:
                # TIME through EVAL on the log's key: the clock of the server holding the log; a bare
                # TIME names no key, which a Redis Cluster cannot route.
                pipe.eval(_CLOCK, 1, _LOG)
                pipe.xrevrange(_LOG, count=1)
                pipe.xread({_LOG: after}, count=_BATCH)
                (seconds, micros), newest, read = await pipe.execute()
            if not newest:
                self._last_id = _START  # an empty log has nothing to skip: read all that comes
            elif _entry_id(newest[0][0]) < self._last_id:
                # Newer than everything in the log: it was recreated (Redis restarted empty, or was
                # flushed) and its ids started again below ours. Read all of it.
                logger.warning("revocation log was recreated, reading it again: store=%r", self)
                self._last_id = _START
                continue
            entries: list[tuple[bytes, dict[bytes, bytes]]] = read[0][1] if read else []
            self._fold(entries, now=int(seconds) + int(micros) / 1e6)
            if len(entries) < _BATCH:
                return

    def _fold(self, entries: list[tuple[bytes, dict[bytes, bytes]]], *, now: float) -> None:
        for raw_id, fields in entries:
            entry_id = _entry_id(raw_id)
            self._last_id = max(self._last_id, entry_id)
            key, at = fields.get(b"k"), fields.get(b"at")
            if key is None or at is None:
                continue  # not written by this module
            with contextlib.suppress(ValueError):
                self._local.record(text(key), float(text(at)), age=now - entry_id[0] / 1000)

    async def _sync_forever(self) -> None:
        while not self._closing:
            try:
                await self.sync()
                if self._failing:
                    logger.info("revocations syncing again: store=%r", self)
                self._failing = False
            except REDIS_DOWN as exc:
                if not self._failing:  # once per outage, not once per second
                    logger.warning("revocations not syncing: store=%r error=%s", self, type(exc).__name__)
                self._failing = True
            await asyncio.sleep(self._sync_interval)
