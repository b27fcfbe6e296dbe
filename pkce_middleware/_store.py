"""Where sessions live between requests: `SessionStore`, and the default `CookieStore`.

The middleware asks a store five things: open the session a request carries, write one back,
drop one, coordinate a refresh so a rotating refresh token is redeemed once, and revoke sessions
named by a back-channel logout. `CookieStore` keeps everything in the browser and coordinates
within this process only; `RedisStore` (`_redis.py`) keeps sessions server-side and coordinates
across processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from starlette.types import Scope

from ._cookies import CookiePolicy, CookieWriter, read_cookie, request_cookies
from ._exceptions import PKCEMiddlewareError, ProviderError
from ._session import Session, SessionCodec

if TYPE_CHECKING:
    from ._redis import SharedRevocations

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: A browser drops a cookie whose name and value pass 4096 bytes; keep well under with attributes.
MAX_CHUNK_LENGTH = 3800
#: Hard cap on chunks, so a hostile count ("~99999999") costs nothing (mod_auth_openidc CVE-2024-24814).
MAX_CHUNKS = 4
#: How long the result of a refresh is handed to requests still carrying the pre-refresh cookie.
REFRESH_RESULT_TTL = 60.0

Refresh = Callable[[Session], Awaitable[Session]]


@dataclasses.dataclass(slots=True)
class Loaded:
    session: Session
    #: The cookie should be written again even if nothing changed (sealed with an old key).
    stale: bool


class SessionTooLarge(ProviderError):
    """The tokens do not fit in the cookies a browser keeps."""

    error = "session_too_large"
    message = "The sign-in service sent more data than fits in this browser's cookies."


class StoreUnavailable(PKCEMiddlewareError):
    """The session store (Redis) did not answer; sessions are intact and work again once it does."""

    error = "session_store_unavailable"
    status_code = 503
    message = "Sessions are temporarily unavailable. Please try again shortly."


class SessionStore(Protocol):
    async def load(self, scope: Scope) -> Loaded | None:
        """The session the request carries, opened and checked for integrity (not for expiry)."""

    async def save(self, session: Session, scope: Scope, cookies: CookieWriter) -> None:
        """Persist `session` and put the cookie(s) that point at it on the response."""

    async def discard(self, session: Session | None, scope: Scope, cookies: CookieWriter) -> None:
        """Forget the session (server-side too) and delete its cookie(s)."""

    async def single_flight(self, session: Session, refresh: Refresh) -> Session:
        """Run `refresh` once for all concurrent requests of `session`; they all get its result."""

    async def revoke(self, *, sid: str | None, sub: str | None, now: float) -> None:
        """End every session of `sid` (or all of `sub`) that started at or before `now`."""

    def is_revoked(self, session: Session) -> bool: ...

    async def alive(self, session: Session, scope: Scope) -> bool:
        """Whether `session` has not been logged out or revoked since the request opened it
        (asked now and then for a long-lived WebSocket)."""

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        """Record a logout token id; `False` if it was seen before (a replay)."""

    async def startup(self) -> None: ...

    async def aclose(self) -> None: ...


class CookieStore:
    """Sessions sealed into the browser's cookies, split into chunks when they are large.

    Coordination (refresh single-flight, revocations, logout token ids) lives in this process;
    `shared_revocations` (a Redis URL) shares revocations and logout token ids with every
    process. With several processes, refreshes are still per process: use `RedisStore` for that.
    """

    def __init__(
        self, codec: SessionCodec, policy: CookiePolicy, *, max_age: int, shared_revocations: str | None = None
    ) -> None:
        self._codec = codec
        self._policy = policy
        self._max_age = max_age
        self._name = policy.session_name
        self._name_bytes = policy.session_name.encode()
        self._chunk_names = [f"{policy.session_name}.{index}" for index in range(MAX_CHUNKS)]
        self._chunk_bytes = [name.encode() for name in self._chunk_names]
        self._refreshing: dict[str, asyncio.Future[Session]] = {}
        self._refreshed: OrderedDict[str, tuple[float, Session]] = OrderedDict()
        self._revocations = Revocations(max_age=max_age)
        self._jtis = Revocations(max_age=max_age)
        self._shared: SharedRevocations | None = None
        if shared_revocations is not None:
            from ._redis import SharedRevocations  # the redis package is needed only by those who use it

            self._shared = SharedRevocations(shared_revocations, self._revocations, max_age=max_age)

    def __repr__(self) -> str:
        return "CookieStore()"

    async def startup(self) -> None:
        if self._shared is not None:
            await self._shared.startup()

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()

    async def _revoke(self, key: str, at: float) -> None:
        if self._shared is None:
            self._revocations.add(key, at)
        else:
            await self._shared.add(key, at)

    async def load(self, scope: Scope) -> Loaded | None:
        value = read_cookie(scope, self._name_bytes)
        if value is None:
            return None
        if value.startswith("~"):
            value = self._join(scope, value)
            if value is None:
                return None
        session = self._codec.open(value)
        if session is None:
            return None
        return Loaded(session, stale=not self._codec.is_current(value))

    def _join(self, scope: Scope, marker: str) -> str | None:
        """All-or-nothing reassembly of `~N` chunks; anything odd means no session."""
        if len(marker) != 2 or not "2" <= marker[1] <= str(MAX_CHUNKS):
            return None
        parts = []
        for name in self._chunk_bytes[: int(marker[1])]:
            part = read_cookie(scope, name)
            if not part:
                return None
            parts.append(part)
        return "".join(parts)

    async def save(self, session: Session, scope: Scope, cookies: CookieWriter) -> None:
        value = self._codec.seal(session)
        count = -(-len(value) // MAX_CHUNK_LENGTH)
        if count > MAX_CHUNKS:
            raise SessionTooLarge(f"sealed session is {len(value)} characters, over {MAX_CHUNKS} cookies")
        if count == 1:
            self._policy.set(cookies, self._name, value, max_age=self._max_age)
        else:
            self._policy.set(cookies, self._name, f"~{count}", max_age=self._max_age)
            for index in range(count):
                chunk = value[index * MAX_CHUNK_LENGTH : (index + 1) * MAX_CHUNK_LENGTH]
                self._policy.set(cookies, self._chunk_names[index], chunk, max_age=self._max_age)
        # A session that shrank must not leave old chunks behind for the browser to send for ever.
        present = request_cookies(scope)
        for name in self._chunk_names[count if count > 1 else 0 :]:
            if name in present:
                self._policy.delete(cookies, name)

    async def discard(self, session: Session | None, scope: Scope, cookies: CookieWriter) -> None:
        if session is not None:
            # A copy of the cookie (another tab's socket, or a thief's) must not outlive the logout.
            try:
                await self._revoke(f"id:{session.id}", time.time())
            except StoreUnavailable as exc:  # the local logout still happens; other processes miss it
                logger.warning("logout not shared: reason=%s", exc.error)
        present = request_cookies(scope)
        for name in (self._name, *self._chunk_names):
            if name in present:
                self._policy.delete(cookies, name)

    async def single_flight(self, session: Session, refresh: Refresh) -> Session:
        now = time.monotonic()
        while self._refreshed and next(iter(self._refreshed.values()))[0] < now:
            self._refreshed.popitem(last=False)
        key = _refresh_key(session)
        done = self._refreshed.get(key)
        if done is not None:
            # The browser still sent the cookie from before the refresh; redeeming its refresh
            # token again would fail (rotation) and end a perfectly good session.
            return done[1]
        pending = self._refreshing.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._refreshing[key] = future
        try:
            result = await refresh(session)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so a refresh nobody else awaited logs no warning
            raise
        finally:
            del self._refreshing[key]
        future.set_result(result)
        self._refreshed[key] = (time.monotonic() + REFRESH_RESULT_TTL, result)
        return result

    async def revoke(self, *, sid: str | None, sub: str | None, now: float) -> None:
        if sid is not None:
            await self._revoke(f"sid:{sid}", now)
        if sub is not None and sid is None:
            # Back-Channel Logout 2.4: a token with only `sub` ends all of that user's sessions.
            await self._revoke(f"sub:{sub}", now)

    def is_revoked(self, session: Session) -> bool:
        if self._shared is not None:
            self._shared.ensure_syncing()
        return self._revocations.covers(session)

    async def alive(self, session: Session, scope: Scope) -> bool:
        return not self._revocations.covers(session)

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        key = f"jti:{jti}"
        if self._shared is not None:
            try:
                claimed = await self._shared.claim_jti(jti, ttl=ttl)
            except StoreUnavailable as exc:
                # Better to end the session here (and say 503 after) than to refuse the logout.
                logger.warning("logout token id checked in this process only: reason=%s", exc.error)
            else:
                self._jtis.add(key, time.time())
                return claimed
        if self._jtis.get(key) is not None:
            return False
        self._jtis.add(key, time.time())
        return True


def _refresh_key(session: Session) -> str:
    # Per refresh token, not per session: after a refresh the next one is for the new token.
    return hashlib.sha256(f"{session.id}:{session.refresh_token}".encode()).hexdigest()


class Revocations:
    """Times at which sessions were ended by a logout, kept as long as a session can live."""

    def __init__(self, *, max_age: int, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._max_age = max_age
        self._max_entries = max_entries

    def add(self, key: str, at: float) -> None:
        while self._entries and (
            len(self._entries) >= self._max_entries or next(iter(self._entries.values())) < at - self._max_age
        ):
            self._entries.popitem(last=False)
        self._entries[key] = at
        self._entries.move_to_end(key)

    def get(self, key: str) -> float | None:
        return self._entries.get(key)

    def covers(self, session: Session) -> bool:
        if not self._entries:
            return False
        keys = [f"id:{session.id}", f"sub:{session.sub}"]
        if session.sid is not None:
            keys.append(f"sid:{session.sid}")
        for key in keys:
            at = self._entries.get(key)
            if at is not None and session.created_at <= at:
                return True
        return False
