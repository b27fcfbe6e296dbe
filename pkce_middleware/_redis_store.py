"""Server-side sessions in Redis (`PKCE_SESSION_STORE=redis://...`): `RedisStore`.

The browser's cookie holds only the session id, sealed with its own purpose key, so an id can be
neither guessed nor forged and the cookie stays under 100 characters however large the tokens are.
Redis holds the session sealed with the session key, so a copy of the database (a backup, a
replica, `MONITOR` output) gives away no token. Every value that comes from outside (session id,
`sid`, `sub`, `jti`) is hashed before it becomes part of a key: unhashed, a client could choose or
collide with arbitrary keys (see `_redis`).

Keys (`<h>` is a SHA-256 hex digest):

* `pkce:session:<h(id)>`: the sealed session; TTL until it expires.
* `pkce:sid:<h(sid)>`, `pkce:sub:<h(sub)>`: sorted sets of the session keys of one provider session
  and of one user, scored by when each session key expires, so back-channel logout finds them; each
  set expires with its last member and drops expired members whenever a session is created.
* `pkce:lock:<h(id)>`: held by the one process refreshing that session.
* `pkce:jti:<h(jti)>`: logout token ids already used (replay detection).

Redis round trips per request: an authenticated request whose session this process has read before
and nobody changed since is none (`_redis_cache.SessionCache`: every write below also announces the
keys it changed, in the same transaction where it can); otherwise one GET (plus, on a connection
idle for 30 s, the client's health-check PING); its write-back (the idle clock, at most twice per
idle timeout, or a key rotation) adds one EVALSHA; a login is one EVALSHA (plus a GET and a
MULTI/EXEC deleting the old session when the browser brought one); a logout is a GET and one
MULTI/EXEC; a request that refreshes is GET, SET NX (the lock), GET (under the lock), EVALSHA (the
save) and EVALSHA (the lock's release), and its write-back is not repeated. Waiting for another
process's refresh polls SET NX every 50 ms.

Every Redis failure becomes `StoreUnavailable` (a 503 saying so; the session is not touched). The
client reconnects by itself: a broken pooled connection is dropped and the command retried once on a
fresh one, so a restarted Redis serves the next request.

References:
    OpenID Connect Back-Channel Logout 1.0 sections 2.4-2.7; RFC 9700 section 4.14 (refresh token
    rotation); https://redis.io/docs/latest/develop/use/patterns/distributed-locks/
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import redis.asyncio
from redis.asyncio.lock import Lock
from redis.commands.core import AsyncScript
from redis.exceptions import LockError
from starlette.types import Scope

from ._cookies import CookiePolicy, CookieWriter, request_cookies
from ._crypto import Sealer
from ._exceptions import RefreshBusy, SessionEnded
from ._redis import REDIS_DOWN, connect, is_cluster, redacted, redis_key, text, unavailable
from ._redis_cache import CHANNEL, SessionCache, announcement
from ._redis_ids import SessionIds
from ._redis_writes import (
    GONE,
    SAVE_SCRIPT,
    SUPERSEDED,
    WRITTEN,
    delete_across_slots,
    fingerprint,
    sealed_part,
    write_across_slots,
)
from ._session import Session, SessionCodec
from ._store import PENDING, Loaded, Pending, Refresh, chunk_names, refresh_budget, refresh_key, refresh_within

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: The idle clock is written back in slots of up to a minute (`_lifecycle.IDLE_RESOLUTION`), and clocks
#: of several processes differ a little: a key outlives the idle timeout by this much.
_IDLE_SLACK = 120


class RedisStore:
    """Sessions in Redis, a sealed random id in the cookie; refresh coordinated across processes.

    `url` is a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL (`_redis`,
    README "Redis deployments"); its query string may tune the client (for
    example `?socket_timeout=0.5`), and wins over the defaults here. `idle_timeout`, when given,
    also bounds a session key's TTL, so abandoned sessions leave Redis with the idle timeout rather
    than at the absolute end. `lock_timeout` must exceed the longest refresh (a token call and a
    key fetch at the provider); `lock_wait` is how long another process's refresh is waited for.
    """

    def __init__(
        self,
        url: str,
        codec: SessionCodec,
        policy: CookiePolicy,
        id_sealer: Sealer,
        *,
        max_age: int,
        idle_timeout: int | None = None,
        lock_timeout: float = 30.0,
        lock_wait: float = 15.0,
        socket_timeout: float = 2.0,
        health_check_interval: int = 30,
        cache_size: int = 1024,
    ) -> None:
        self._refresh_budget = refresh_budget(lock_timeout)
        self._url = url
        self._codec = codec
        self._policy = policy
        self._idle_timeout = idle_timeout
        self._lock_timeout = lock_timeout
        self._lock_wait = lock_wait
        self._socket_timeout = socket_timeout
        self._health_check_interval = health_check_interval
        self._name = policy.session_name
        # Cookies a store switch (cookie -> Redis) may have left behind; deleted when seen.
        self._legacy_names = chunk_names(policy.session_name)
        self._client: redis.asyncio.Redis | None = None
        self._save_script: AsyncScript | None = None
        renew_after = max(1, (idle_timeout or max_age) // 2)
        self._ids = SessionIds(id_sealer, policy, cache_size=cache_size, max_age=max_age, renew_after=renew_after)
        self._cache_size = cache_size
        self._refreshing: dict[str, asyncio.Task[Session]] = {}
        # Sessions `single_flight` handed out exactly as they are in Redis (by id, the very object):
        # the write-back that follows a refresh then writes nothing (at most it renews the cookie),
        # instead of writing the same session again once per waiting request.
        self._in_redis: OrderedDict[str, Session] = OrderedDict()
        # Opened sessions by key, dropped when any process announces a change (`_redis_cache`).
        self._cache = SessionCache(size=cache_size)

    def __repr__(self) -> str:
        return f"RedisStore(url={redacted(self._url)!r})"

    # -- client --------------------------------------------------------------------------------

    def _redis(self) -> redis.asyncio.Redis:
        """The client, created on first use when no lifespan ran `startup()`."""
        if self._client is None:
            self._client = connect(
                self._url, socket_timeout=self._socket_timeout, health_check_interval=self._health_check_interval
            )
            self._save_script = self._client.register_script(SAVE_SCRIPT)
        self._cache.ensure_listening(self._client)
        return self._client

    @property
    def cache(self) -> SessionCache:
        """The local session cache (its `live` state and `flushes` count, for metrics)."""
        return self._cache

    async def startup(self) -> None:
        self._cache.reopen()
        client = self._redis()
        try:
            await client.ping()
        except REDIS_DOWN as exc:
            # Not fatal: the app can start (health checks, public pages) and sessions work as soon
            # as Redis answers; until then session requests get a 503.
            logger.warning("session store not answering at startup: store=%r error=%s", self, type(exc).__name__)

    async def aclose(self) -> None:
        await self._cache.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- keys ----------------------------------------------------------------------------------

    def _indexes(self, session: Session) -> list[str]:
        keys = [redis_key("sub", session.sub_key)]
        if session.sid_key is not None:
            keys.insert(0, redis_key("sid", session.sid_key))
        return keys

    # -- the protocol --------------------------------------------------------------------------

    def load_now(self, scope: Scope) -> Loaded | Literal[Pending.PENDING] | None:
        found = self._ids.found(scope)
        if found is None:
            return None  # no cookie, or one we did not seal: no Redis command at all
        value, _, key = found
        cached = self._cache.get(key)
        if cached is None:
            return PENDING
        kept, kept_current = cached
        return Loaded(kept, stale=not (kept_current and self._ids.is_current(value)))

    async def load(self, scope: Scope) -> Loaded | None:
        loaded = self.load_now(scope)
        if loaded is not PENDING:
            return loaded
        found = self._ids.found(scope)
        assert found is not None  # `load_now` found it
        value, session_id, key = found
        ticket = self._cache.begin(key)
        with unavailable("GET"):
            raw = await self._redis().get(key)
        if raw is None:
            return None  # expired, logged out, or revoked by a back-channel logout
        blob = sealed_part(raw)
        session = self._codec.open(blob)  # cached by the blob: no decryption while it is unchanged
        if session is None or session.id != session_id:
            # Sealed with a key no longer configured, or (only with write access to Redis) a
            # session copied under another id: either way not this cookie's session.
            return None
        current = self._codec.is_current(blob)
        self._cache.put(key, ticket, session, current=current)
        return Loaded(session, stale=not (current and self._ids.is_current(value)))

    async def save(self, session: Session, scope: Scope, cookies: CookieWriter) -> None:
        now = int(time.time())
        found = self._ids.found(scope)
        # The request's own session is updated only if it still exists; any other id is a new login.
        update = found is not None and found[1] == session.id
        refreshed = self._in_redis.get(session.id) is session
        if refreshed:
            outcome = WRITTEN  # saved by the refresh that made it
        else:
            # A write-back keeps the tokens of the session it loaded: it expects them in Redis.
            outcome = await self._write(session, now=now, update=update, expected=session)
        if outcome == WRITTEN:
            # The cookie is sent again even when it names this session already: browsers cap its
            # lifetime whatever its Max-Age says (Chrome 400 days, Safari's ITP down to 7), so the
            # one set at login would end an active user's session. The idle clock's write-backs
            # (at most twice per idle window) and key rotations renew it. A refresh skips it if this
            # process sent it within the same cadence: with access tokens shorter than half the
            # idle window, refreshes keep the idle clock young and are the only writes there are.
            named = update and found is not None and self._ids.is_current(found[0])
            if not (named and refreshed and self._ids.sent_lately(session.id, now)):
                self._ids.send(session.id, session.expires_at, now, cookies)
        elif outcome == SUPERSEDED:
            # Another process refreshed it since this request loaded it: its tokens stay, and this
            # request's idle clock is dropped (the next request writes its own). The cookie is right.
            logger.info("session not written back, refreshed meanwhile: sub=%r", session.sub)
        elif found is not None:
            # Ended meanwhile (logout elsewhere, back-channel logout, eviction): do not bring it back.
            logger.info("session not written, it ended meanwhile: sub=%r", session.sub)
            self._policy.delete(cookies, self._name)
        present = request_cookies(scope)
        for name in self._legacy_names:
            if name in present:
                self._policy.delete(cookies, name)

    async def _write(self, session: Session, *, now: int, update: bool, expected: Session) -> int:
        """Store `session` (atomically, with its index entries), if it is a new one or, for an
        update, if Redis still has the tokens of `expected`: `WRITTEN`, `GONE` (ended, or over)
        or `SUPERSEDED` (see `PUT`)."""
        ttl = session.expires_at - now
        if self._idle_timeout is not None:
            ttl = min(ttl, session.last_seen + self._idle_timeout + _IDLE_SLACK - now)
        if ttl <= 0:
            return GONE
        key = redis_key("session", session.id)
        value = f"{fingerprint(session)}!{self._codec.seal(session)}"
        flag, digest = ("1" if update else "0"), fingerprint(expected)
        client = self._redis()
        if is_cluster(client):
            outcome = await write_across_slots(
                client, key, value, self._indexes(session), ttl=ttl, now=now, update=flag, expected=digest
            )
            if outcome == WRITTEN:
                await self._announce([key])
            return outcome
        assert self._save_script is not None  # registered with the client
        with unavailable("EVALSHA save"):
            outcome = int(
                await self._save_script(
                    keys=[key, *self._indexes(session)], args=[value, ttl, now, flag, CHANNEL, digest], client=client
                )
            )
        if outcome == WRITTEN:
            self._cache.invalidate([key])  # announced by the script; this process drops it now
        return outcome

    async def discard(self, session: Session | None, scope: Scope, cookies: CookieWriter) -> None:
        found = self._ids.found(scope)
        ids = {found[1]} if found is not None else set()
        if session is not None:
            ids.add(session.id)
        if ids:
            keys = [redis_key("session", session_id) for session_id in sorted(ids)]
            client = self._redis()
            if is_cluster(client):
                members = (
                    {} if session is None else {i: [redis_key("session", session.id)] for i in self._indexes(session)}
                )
                await delete_across_slots(client, keys, members)
            else:
                with unavailable("MULTI discard"):
                    async with client.pipeline(transaction=True) as pipe:
                        pipe.delete(*keys)
                        # In the transaction: no process keeps serving a session deleted here.
                        pipe.publish(CHANNEL, announcement(keys))
                        if session is not None:
                            # Keeps the index sets small; entries of a session discarded by its cookie
                            # alone are pruned once they expire.
                            for index in self._indexes(session):
                                pipe.zrem(index, redis_key("session", session.id))
                        await pipe.execute()
            # After the deletion, not before: a concurrent request's GET that ran before it must not
            # leave the session in this process's cache until its own announcement comes back.
            self._cache.invalidate(keys)
        present = request_cookies(scope)
        for name in (self._name, *self._legacy_names):
            if name in present:
                self._policy.delete(cookies, name)

    async def single_flight(self, session: Session, refresh: Refresh) -> Session:
        key = refresh_key(session)
        task = self._refreshing.get(key)
        if task is None:
            # A task of its own, awaited through `shield`: a client that disconnects cancels its
            # request, but must not abort a refresh halfway (the provider may already have rotated
            # the token, and only the save makes the new one usable).
            task = asyncio.get_running_loop().create_task(self._refresh_in_redis(session, refresh))
            self._refreshing[key] = task
            task.add_done_callback(lambda done: self._refresh_done(key, done))
        return await asyncio.shield(task)

    def _refresh_done(self, key: str, task: asyncio.Task[Session]) -> None:
        if self._refreshing.get(key) is task:
            del self._refreshing[key]
        if not task.cancelled():
            task.exception()  # retrieved, so a refresh whose requests all went away logs no warning

    async def _refresh_in_redis(self, session: Session, refresh: Refresh) -> Session:
        result = await self._refresh_across_processes(session, refresh)
        self._in_redis[result.id] = result
        self._in_redis.move_to_end(result.id)
        if len(self._in_redis) > self._cache_size:
            self._in_redis.popitem(last=False)
        return result

    async def _refresh_across_processes(self, session: Session, refresh: Refresh) -> Session:
        """Under the session's Redis lock: use a result another process saved, or refresh and save."""
        client = self._redis()
        lock = Lock(
            client,
            redis_key("lock", session.id),
            timeout=self._lock_timeout,
            sleep=0.05,
            blocking_timeout=self._lock_wait,
            thread_local=False,
        )
        with unavailable("SET NX lock"):
            acquired = await lock.acquire(token=secrets.token_hex(16))
        if not acquired:
            current = await self._read(session.id)
            if current is not None and _tokens_changed(session, current):
                return current
            raise RefreshBusy(f"refresh lock held by another process for over {self._lock_wait}s")
        try:
            # Read again under the lock even without having waited: another process may have
            # refreshed and released between our load and our acquire, and the refresh token we
            # hold may already be rotated out.
            current = await self._read(session.id)
            if current is None:
                raise SessionEnded("the session ended (logout) while its refresh was due")
            if _tokens_changed(session, current):
                return current
            result = await refresh_within(self._refresh_budget, refresh, current)
            # Saved before the lock is released, so whoever acquires it next finds the new tokens.
            outcome = await self._write(result, now=int(time.time()), update=True, expected=current)
            if outcome == GONE:
                raise SessionEnded("the session ended (logout) during its refresh")
            if outcome == SUPERSEDED:
                # Only if our lock expired and another process refreshed too: its tokens are the
                # ones in Redis now, so they are the ones every process goes on with.
                newer = await self._read(result.id)
                if newer is None:
                    raise SessionEnded("the session ended (logout) during its refresh")
                return newer
            return result
        finally:
            await self._release(lock)

    async def _release(self, lock: Lock) -> None:
        try:
            await lock.release()
        except LockError:
            # Expired under us: `LOCK_SAFETY` makes this a refresh that was cut short anyway.
            logger.warning("refresh lock expired before release: store=%r", self)
        except REDIS_DOWN as exc:
            # The result is saved; the lock expires by itself within `lock_timeout`.
            logger.warning("refresh lock not released: store=%r error=%s", self, type(exc).__name__)

    async def _announce(self, keys: list[str]) -> None:
        """Drop `keys` from this process's cache now and from every other's within a second (on a
        Cluster, where the write could not announce itself)."""
        self._cache.invalidate(keys)
        try:
            await self._cache.publish(self._redis(), keys)
        except REDIS_DOWN as exc:
            # The write is done. Other processes read the key again by the cache's `max_age` at
            # the latest, and sooner if their channel is failing too (likely when Redis is).
            logger.warning("session change not announced: store=%r error=%s", self, type(exc).__name__)

    async def _read(self, session_id: str) -> Session | None:
        with unavailable("GET"):
            raw = await self._redis().get(redis_key("session", session_id))
        if raw is None:
            return None
        session = self._codec.open(sealed_part(raw))
        return session if session is not None and session.id == session_id else None

    async def revoke(self, *, sid: str | None, sub: str | None, now: float) -> None:
        # Back-Channel Logout 1.0 section 2.4: with a `sid`, only that provider session ends; a
        # token with only `sub` ends all of that user's sessions (as `CookieStore` does).
        if sid is not None:
            index = redis_key("sid", sid)
        elif sub is not None:
            index = redis_key("sub", sub)
        else:
            return
        client = self._redis()
        with unavailable("ZRANGE"):
            members = await client.zrange(index, 0, -1)
        if not members:
            return
        # Only the sessions listed now: a login that happens after the logout keeps its session.
        keys = [text(member) for member in members if isinstance(member, bytes | str)]
        if is_cluster(client):
            await delete_across_slots(client, keys, {index: keys})
        else:
            with unavailable("MULTI revoke"):
                async with client.pipeline(transaction=True) as pipe:
                    pipe.delete(*members)
                    pipe.publish(CHANNEL, announcement(keys))
                    pipe.zrem(index, *members)
                    await pipe.execute()
        self._cache.invalidate(keys)  # after the deletion (see `discard`)

    def is_revoked(self, session: Session) -> bool:
        return False  # a revoked session is deleted, so `load` no longer finds it

    def watch(self, ended: Callable[[], None]) -> bool:
        return False  # a session changes on the server; only the cache's invalidations tell

    async def alive(self, session: Session, scope: Scope) -> bool:
        loaded = await self.load(scope)
        return loaded is not None and loaded.session.id == session.id

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        with unavailable("SET NX jti"):
            return bool(await self._redis().set(redis_key("jti", jti), b"1", nx=True, ex=max(1, ttl)))


def _tokens_changed(before: Session, after: Session) -> bool:
    return (before.refresh_token, before.access_token) != (after.refresh_token, after.access_token)
