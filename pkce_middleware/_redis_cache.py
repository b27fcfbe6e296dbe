"""Opened Redis sessions kept in process, true for as long as invalidations arrive: `SessionCache`.

Without it every authenticated request with the Redis store is a GET (and the decryption it
brings), a network round trip the cookie store does not pay. With it, a session unchanged since
this process last read it is served from memory, and the request makes no Redis command at all.

How it stays true. Every write of the store (a save, a logout, a back-channel logout) publishes
the keys it changed on `CHANNEL`, and every process listens there and drops those keys. This is a
publish on write rather than Redis's server-assisted `CLIENT TRACKING`: the same code then works on
a single server, behind Sentinel (PUBLISH is replicated, so a process still subscribed to a demoted
master hears the new master's writes) and on a Cluster (PUBLISH reaches every node), and on RESP2
and RESP3 alike. What does not publish is covered otherwise: a key expiring by its TTL is a session
the middleware finds expired by its own clocks anyway; a FLUSHALL or FLUSHDB (an operator ending
every session at once, or a restart that kept no data) takes `EPOCH` with it, which the listener
reads with each heartbeat, so it is noticed as fast as a logout; and for a key evicted or deleted
by hand an entry is used for at most `max_age` seconds before it is read again.

Three races, and what closes each:

* A GET answered before another process's write, whose invalidation is handled before the GET's
  answer is stored: each fill takes a ticket before its GET; an invalidation of that key (or a
  flush) voids the ticket, and the answer is not stored.
* Writes published while this process was not subscribed (not yet, or between a dropped
  connection and the next): the cache serves nothing until the listener has received its own
  heartbeat, published after it subscribed, and empties itself at that moment. Every message
  published before the heartbeat arrives before it on the one subscriber connection.
* A subscription that looks alive but stopped delivering (a partition that keeps the TCP stream
  open, an overloaded server): the listener publishes a heartbeat every `heartbeat` seconds, and
  the cache serves only until `stale_after` seconds past the sending of the last heartbeat it got
  back. Past that every request reads Redis again; long past it, the listener reconnects.

So a logout is seen by the process that did it at once (it drops the keys itself) and by every
other one within about `stale_after` (1 s), whatever happens to the channel.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable

import redis.asyncio
from redis.exceptions import ReadOnlyError, ResponseError

from ._redis import PREFIX, REDIS_DOWN, described, text
from ._session import Session

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: Messages: `k <key> <key> ...` (keys changed). Each process sends its heartbeats, `h <random
#: token>`, on a channel of its own (`CHANNEL:<random>`) on the same subscriber connection: Redis
#: delivers the messages of one connection's channels in the order it published them, so a
#: heartbeat back means every announcement before it arrived, and no process hears the others'
#: heartbeats (their traffic grows with the number of processes, not with its square). The sender
#: alone knows when it sent a token, so a forged or replayed heartbeat proves nothing.
CHANNEL = f"{PREFIX}invalidations"
#: A hash whose `id` field, random, names this generation of the data: set by the first listener to
#: find it missing, it changes only when the data went away together (FLUSHALL, FLUSHDB, a restart
#: without persistence; on a Cluster, the flush of the node holding it). A hash, read with HGET,
#: so the heartbeat's reads are told apart from the sessions' GETs in Redis's command counts.
EPOCH = f"{PREFIX}epoch"


def announcement(keys: Iterable[str]) -> str:
    """The message saying `keys` changed."""
    return "k " + " ".join(keys)


class SessionCache:
    """Sessions by Redis key, served only while the invalidation channel is proven live.

    `fill` tickets, `invalidate` and `flush` are what the store calls; `run` is the listener,
    started by `ensure_listening` and stopped by `aclose`.
    """

    def __init__(
        self,
        *,
        size: int = 1024,
        max_age: float = 30.0,
        heartbeat: float = 0.25,
        stale_after: float = 1.0,
        reconnect_after: float = 5.0,
    ) -> None:
        self._size = size
        self._max_age = max_age
        self._heartbeat = heartbeat
        self._stale_after = stale_after
        self._reconnect_after = reconnect_after
        #: key -> (monotonic time after which it is read again, session, sealed with current keys)
        self._entries: OrderedDict[str, tuple[float, Session, bool]] = OrderedDict()
        #: key -> the ticket of the last fill begun; an invalidation removes it.
        self._pending: dict[str, int] = {}
        self._tickets = itertools.count(1)
        #: Entries are served until this monotonic time; 0 while the channel is not live.
        self._live_until = 0.0
        #: Heartbeats sent and not yet heard back: token -> monotonic time sent (a few at most).
        self._beats: dict[str, float] = {}
        self._beat_channel = f"{CHANNEL}:{secrets.token_hex(8)}"
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failing = False
        #: The `EPOCH` last read; `None` until the first heartbeat.
        self._epoch: str | None = None
        self._epoch_unreadable = False
        #: Times the cache was emptied because the channel (re)started: for tests and metrics.
        self.flushes = 0

    @property
    def live(self) -> bool:
        return time.monotonic() < self._live_until

    # -- the store's side ------------------------------------------------------------------------

    def get(self, key: str) -> tuple[Session, bool] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        if now >= self._live_until:
            return None
        if now >= entry[0]:
            del self._entries[key]
            return None
        return entry[1], entry[2]

    def begin(self, key: str) -> int | None:
        """A ticket for storing what a GET about to be sent returns; `None` when not live."""
        if not self.live or self._size <= 0:
            return None
        if len(self._pending) >= self._size:
            self._pending.clear()  # fills whose GET failed leave tickets; voiding all is safe
        ticket = next(self._tickets)
        self._pending[key] = ticket
        return ticket

    def put(self, key: str, ticket: int | None, session: Session, *, current: bool) -> None:
        """Keep what the GET of `ticket` returned, unless `key` changed since it began."""
        if ticket is None or self._pending.get(key) != ticket:
            return
        del self._pending[key]
        self._entries[key] = (time.monotonic() + self._max_age, session, current)
        self._entries.move_to_end(key)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def invalidate(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._entries.pop(key, None)
            self._pending.pop(key, None)

    def flush(self) -> None:
        self._entries.clear()
        self._pending.clear()

    # -- the listener ----------------------------------------------------------------------------

    def ensure_listening(self, client: redis.asyncio.Redis) -> None:
        if self._task is None and not self._closing and self._size > 0:
            self._task = asyncio.get_running_loop().create_task(self._listen_forever(client))

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self._closing = True
        self._live_until = 0.0
        self.flush()
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=self._heartbeat + 3)

    def reopen(self) -> None:
        """Allow listening again (a second lifespan cycle)."""
        self._closing = False

    @staticmethod
    async def publish(client: redis.asyncio.Redis, keys: Iterable[str]) -> None:
        """Tell every process `keys` changed (the store's writes call this after writing)."""
        await client.publish(CHANNEL, announcement(keys))

    async def _listen_forever(self, client: redis.asyncio.Redis) -> None:
        while not self._closing:
            unexpected: Exception | None = None
            try:
                cause = await self._listen(client)
            except (*REDIS_DOWN, OSError) as exc:
                cause = type(exc).__name__
            except Exception as exc:
                # Not a Redis outage but a client surprise (redis-py's cluster pubsub has raised
                # KeyError): the requests still work by reading Redis, so log it loudly and carry
                # on rather than let the listener die and the cache stay off for good unnoticed.
                cause, unexpected = type(exc).__name__, exc
            if cause is not None and not self._failing:  # once per outage
                logger.warning(
                    "session cache off, reading Redis on every request: error=%s", cause, exc_info=unexpected
                )
                self._failing = True
            self._live_until = 0.0
            self.flush()
            if not self._closing:
                await asyncio.sleep(self._heartbeat)

    async def _listen(self, client: redis.asyncio.Redis) -> str | None:
        """Subscribe and serve invalidations; returns why it stopped (`None`: closing)."""
        # Any first command: a cluster client learns its nodes with it, which its pubsub needs.
        await client.ping()
        pubsub = client.pubsub()
        connection = None
        try:
            await pubsub.subscribe(CHANNEL, self._beat_channel)
            # redis-py reconnects a dropped subscriber and subscribes again by itself, silently:
            # whatever was published in between is lost, so the cache must start over.
            connection = pubsub.connection
            assert connection is not None  # subscribing took one
            connection.register_connect_callback(self._resubscribed)
            heard = time.monotonic()  # the last time our own heartbeat came back (or we started)
            next_beat = 0.0
            self._beats.clear()
            while not self._closing:
                now = time.monotonic()
                if now - heard > self._reconnect_after:
                    return "heartbeat_lost"
                if now >= next_beat:
                    token = secrets.token_hex(8)
                    self._beats[token] = now
                    if len(self._beats) > 64:  # a silent channel: keep the newest few
                        del self._beats[next(iter(self._beats))]
                    await self._read_epoch(client)
                    await client.publish(self._beat_channel, f"h {token}")
                    next_beat = now + self._heartbeat
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._heartbeat)
                if message is not None and self._receive(text(message["data"])):
                    heard = time.monotonic()
        finally:
            if connection is not None:  # back to the pool, where its reconnects are not ours
                connection.deregister_connect_callback(self._resubscribed)
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        return None

    async def _read_epoch(self, client: redis.asyncio.Redis) -> None:
        try:
            epoch = await _epoch(client)
        except ResponseError as exc:
            if isinstance(exc, ReadOnlyError):
                raise  # a demoted master: an outage of this connection, like any other
            # Redis answers, but not this (the key holds another type, an ACL refuses HGET/HSETNX):
            # the cache works on, only a FLUSHALL goes unnoticed, so say that once, not the outage
            # that tearing the subscription down for it would look like.
            if not self._epoch_unreadable:
                logger.warning(
                    "session cache cannot read %s, so a FLUSHALL will not empty it (delete the key or allow "
                    "HGET and HSETNX on it): %s",
                    EPOCH,
                    described(exc),
                )
                self._epoch_unreadable = True
            return
        if self._epoch_unreadable:
            logger.info("session cache reads %s again", EPOCH)
            self._epoch_unreadable = False
        self._check_epoch(epoch)

    def _check_epoch(self, epoch: str) -> None:
        # Whatever was cached before the change names keys that are gone; a fill under way read
        # either the old data (its ticket is voided here) or the new (nothing, or a new login).
        if self._epoch is not None and epoch != self._epoch:
            logger.warning("session cache emptied: Redis lost its data (FLUSHALL, FLUSHDB, no persistence)")
            self.flush()
        self._epoch = epoch

    def _resubscribed(self, connection: object) -> None:
        self._live_until = 0.0  # until our own heartbeat comes back through the new connection
        self.flush()

    def _receive(self, data: str) -> bool:
        """Handle one message; `True` if it is our own heartbeat."""
        kind, _, rest = data.partition(" ")
        if kind == "k":
            self.invalidate(rest.split(" "))
            return False
        if kind != "h":
            return False
        sent_at = self._beats.pop(rest, None)
        if sent_at is None:
            return False  # another process's, or not a heartbeat of ours at all
        # Older ones still out will not come back before this one (one connection, in order).
        for token in [token for token, sent in self._beats.items() if sent < sent_at]:
            del self._beats[token]
        if self._live_until == 0.0:
            # Going live: what was cached (or being filled) before this subscription was
            # confirmed may have missed invalidations.
            self.flush()
            self.flushes += 1
            if self._failing:
                logger.info("session cache on again")
            self._failing = False
        self._live_until = max(self._live_until, sent_at + self._stale_after)
        return True


async def _epoch(client: redis.asyncio.Redis) -> str:
    """The data's `EPOCH`, created when it is missing."""
    value = await client.hget(EPOCH, "id")
    if value is None:
        await client.hsetnx(EPOCH, "id", secrets.token_hex(8))
        value = await client.hget(EPOCH, "id")
    return "" if value is None else text(value)
