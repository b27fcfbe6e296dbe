"""Refreshes of cookie sessions, single-flight across processes through the revocation store's Redis.

With cookie sessions on several replicas and a provider that rotates refresh tokens (RFC 9700
section 4.14), two replicas refreshing one session at once both redeem the same refresh token: the
provider refuses the second as a replay (and may revoke the whole grant), and the user is logged
out. `SharedRefresh` lets one process redeem it and hands its result to the others:

1. The first process to need the refresh takes `pkce:refresh-lock:<h>` (`SET NX PX`, a random
   value, `lock_timeout`), looks once more for a result (the holder before it may have just
   finished), then refreshes, bounded to `_store.LOCK_SAFETY` seconds less than the lock lives.
2. It stores the refreshed session under `pkce:refresh-result:<h>` for `result_ttl` seconds, then
   deletes the lock if the lock is still its own (compare-and-delete).
3. The other processes take the result, or take over once the lock is free (its holder failed,
   or died and the lock expired): every `poll` seconds, for at most `lock_wait` seconds, after
   which the request gets `RefreshBusy` (served while its access token lasts, a 503 after).

`<h>` is the SHA-256 of `_store.refresh_key(session)`, so the keys are per session and refresh token
and name neither. The result is sealed (AES-GCM) with a purpose of its own, not the session cookie's:
Redis never holds a token in clear, and what it holds is no cookie that would log anyone in.

Only requests that refresh come here (the store's in-process single flight first gathers a
process's concurrent ones into one); every other request never talks to Redis. A request that
refreshes costs GET, SET NX, GET, SET (the result) and EVAL (the release); one arriving after
another process's refresh, a GET.

If Redis does not answer before the refresh, the refresh goes ahead in this process alone, with a
warning: one replica works exactly as without Redis, and several risk what they risked before
this module (a second redemption refused, that user signing in again), which beats a 503 for every
refreshing user while Redis is down, since the cookie sessions themselves do not need it.

References:
    RFC 9700 section 4.14 (refresh token rotation);
    https://redis.io/docs/latest/develop/use/patterns/distributed-locks/
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from ._exceptions import RefreshBusy, StoreUnavailable
from ._redis import redis_key, text, unavailable
from ._redis_revocations import SharedRevocations
from ._session import Session, SessionCodec
from ._store import Refresh, refresh_budget, refresh_key, refresh_within

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

# Deletes the lock only if it still holds our random value: one that expired and was taken by
# another process is that process's to release.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class SharedRefresh:
    """One refresh per session and refresh token across every process sharing the Redis of
    `revocations`, whose client it uses (so one connection pool, closed with the revocations).

    `codec` seals the results; it must be built with a purpose other than the session cookie's.
    `lock_timeout` must exceed the longest refresh (a token call and a key fetch at the provider);
    `lock_wait` is how long another process's refresh is waited for; `result_ttl` how long its
    result is kept for requests still carrying the cookie from before the refresh.
    """

    def __init__(
        self,
        revocations: SharedRevocations,
        codec: SessionCodec,
        *,
        lock_timeout: float = 30.0,
        lock_wait: float = 15.0,
        result_ttl: float = 60.0,
        poll: float = 0.05,
    ) -> None:
        self._revocations = revocations
        self._codec = codec
        self._lock_ms = int(lock_timeout * 1000)
        self._refresh_budget = refresh_budget(lock_timeout)
        self._lock_wait = lock_wait
        self._result_ms = int(result_ttl * 1000)
        self._poll = poll

    def __repr__(self) -> str:
        return f"SharedRefresh(revocations={self._revocations!r})"

    async def single_flight(self, session: Session, refresh: Refresh) -> Session:
        """`refresh(session)` run by one process; the others get its result. Runs to its end only if
        the caller shields it from cancellation (`CookieStore.single_flight` does)."""
        key = refresh_key(session)
        lock, result = redis_key("refresh-lock", key), redis_key("refresh-result", key)
        token = secrets.token_hex(16)
        try:
            found = await self._turn(session, lock, result, token)
        except StoreUnavailable as exc:
            logger.warning(
                "refresh not coordinated across processes, redeemed by this one alone: reason=%s detail=%s",
                exc.error,
                exc.detail,
            )
            return await refresh(session)
        if found is not None:
            return found
        try:
            refreshed = await refresh_within(self._refresh_budget, refresh, session)
            await self._publish(result, refreshed)
            return refreshed
        finally:
            await self._release(lock, token)

    async def _turn(self, session: Session, lock: str, result: str, token: str) -> Session | None:
        """Another process's result, or `None` once this process holds the lock and none is there."""
        client = self._revocations.client()
        deadline = time.monotonic() + self._lock_wait
        while True:
            found = await self._result(result, session)
            if found is not None:
                return found
            with unavailable("SET NX refresh lock"):
                acquired = await client.set(lock, token, nx=True, px=self._lock_ms)
            if acquired:
                # Looked for again under the lock: the holder before us may have stored its result
                # and let go between our GET and our SET.
                try:
                    found = await self._result(result, session)
                except StoreUnavailable:
                    await self._release(lock, token)
                    raise
                if found is not None:
                    await self._release(lock, token)
                return found
            if time.monotonic() >= deadline:
                raise RefreshBusy(f"refresh lock held by another process for over {self._lock_wait}s")
            await asyncio.sleep(self._poll)

    async def _result(self, key: str, session: Session) -> Session | None:
        with unavailable("GET refresh result"):
            raw = await self._revocations.client().get(key)
        if raw is None:
            return None
        found = self._codec.open(text(raw))
        if found is None or found.id != session.id:
            # Sealed with keys no longer configured or (only with write access to Redis) another
            # session's: not this session's refresh, so it is refreshed (and the key overwritten).
            logger.warning("refresh result in redis ignored, it is not this session's: store=%r", self)
            return None
        return found

    async def _publish(self, key: str, refreshed: Session) -> None:
        try:
            with unavailable("SET refresh result"):
                await self._revocations.client().set(key, self._codec.seal(refreshed), px=self._result_ms)
        except StoreUnavailable as exc:
            # This request has its new tokens; another process that needs them redeems the old
            # refresh token, which a rotating provider refuses (that user signs in again).
            logger.warning("refresh result not shared with other processes: reason=%s detail=%s", exc.error, exc.detail)

    async def _release(self, lock: str, token: str) -> None:
        try:
            with unavailable("EVAL release refresh lock"):
                released = await self._revocations.client().eval(_RELEASE, 1, lock, token)
        except StoreUnavailable as exc:
            # The result (if any) is stored; the lock expires by itself within `lock_timeout`.
            logger.warning("refresh lock not released: reason=%s detail=%s", exc.error, exc.detail)
            return
        if not released:
            # Expired under us: `_store.LOCK_SAFETY` makes this a refresh that was cut short anyway.
            logger.warning("refresh lock expired before release: store=%r", self)
