"""Sessions sealed into the browser's cookies: `CookieStore`, the default store.

Nothing is kept server-side but what a logout must outlive: the `RevocationLog` the store is given
remembers ended sessions, since a copy of the cookie (another tab's, or a thief's) would otherwise
still open. Refreshes are coordinated within this process, and across processes when the store
is given a `SharedRefresh` (with `PKCE_REVOCATION_STORE=redis://...`), so a provider that rotates
refresh tokens sees each one redeemed once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.types import Scope

from ._cookies import CookiePolicy, CookieWriter, read_cookie, request_cookies
from ._exceptions import SessionTooLarge, StoreUnavailable
from ._session import Session, SessionCodec
from ._store import MAX_CHUNKS, Loaded, Refresh, RevocationLog, chunk_names, refresh_key

if TYPE_CHECKING:  # imports `redis`, needed only by those who configure a Redis URL
    from ._shared_refresh import SharedRefresh

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: A browser drops a cookie whose name and value pass 4096 bytes; keep well under with attributes.
MAX_CHUNK_LENGTH = 3800
#: How long the result of a refresh is handed to requests still carrying the pre-refresh cookie.
REFRESH_RESULT_TTL = 60.0


class CookieStore:
    """Sessions sealed into the browser's cookies, split into chunks when they are large."""

    def __init__(
        self,
        codec: SessionCodec,
        policy: CookiePolicy,
        *,
        max_age: int,
        revocations: RevocationLog,
        shared_refresh: SharedRefresh | None = None,
    ) -> None:
        self._codec = codec
        self._policy = policy
        self._max_age = max_age
        self._revocations = revocations
        self._shared_refresh = shared_refresh
        self._name = policy.session_name
        self._name_bytes = policy.session_name.encode()
        self._chunk_names = chunk_names(policy.session_name)
        self._chunk_bytes = [name.encode() for name in self._chunk_names]
        # Every chunk name is the session name and a dot: a Cookie header without that has none.
        self._chunk_mark = f"{policy.session_name}.".encode()
        self._refreshing: dict[str, asyncio.Task[Session]] = {}
        self._refreshed: OrderedDict[str, tuple[float, Session]] = OrderedDict()

    def __repr__(self) -> str:
        return f"CookieStore(revocations={self._revocations!r})"

    async def startup(self) -> None:
        await self._revocations.startup()

    async def aclose(self) -> None:
        await self._revocations.aclose()

    async def load(self, scope: Scope) -> Loaded | None:
        return self.load_now(scope)

    def load_now(self, scope: Scope) -> Loaded | None:
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
        # Looked for first without parsing the header: this runs on every re-issue.
        if any(key == b"cookie" and self._chunk_mark in value for key, value in scope["headers"]):
            present = request_cookies(scope)
            for name in self._chunk_names[count if count > 1 else 0 :]:
                if name in present:
                    self._policy.delete(cookies, name)

    async def discard(self, session: Session | None, scope: Scope, cookies: CookieWriter) -> None:
        if session is not None:
            # A copy of the cookie (another tab's socket, or a thief's) must not outlive the logout.
            try:
                await self._revocations.add(session.revocation_names()[0], time.time())
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
        key = refresh_key(session)
        done = self._refreshed.get(key)
        if done is not None:
            # The browser still sent the cookie from before the refresh; redeeming its refresh
            # token again would fail (rotation) and end a perfectly good session.
            return done[1]
        task = self._refreshing.get(key)
        if task is None:
            # A task of its own, awaited through `shield`: a client that disconnects cancels its
            # request, but must not abort a refresh halfway (the provider may already have rotated
            # the token, and only the result kept here, and in Redis, makes the new one usable).
            task = asyncio.get_running_loop().create_task(self._refresh(key, session, refresh))
            self._refreshing[key] = task
            task.add_done_callback(functools.partial(self._refresh_done, key))
        return await asyncio.shield(task)

    async def _refresh(self, key: str, session: Session, refresh: Refresh) -> Session:
        if self._shared_refresh is None:
            result = await refresh(session)
        else:
            result = await self._shared_refresh.single_flight(session, refresh)
        self._refreshed[key] = (time.monotonic() + REFRESH_RESULT_TTL, result)
        return result

    def _refresh_done(self, key: str, task: asyncio.Task[Session]) -> None:
        if self._refreshing.get(key) is task:
            del self._refreshing[key]
        if not task.cancelled():
            task.exception()  # retrieved, so a refresh whose requests all went away logs no warning

    async def revoke(self, *, sid: str | None, sub: str | None, now: float) -> None:
        if sid is not None:
            await self._revocations.add(f"sid:{sid}", now)
        elif sub is not None:
            # Back-Channel Logout 2.4: a token with only `sub` ends all of that user's sessions.
            await self._revocations.add(f"sub:{sub}", now)

    def is_revoked(self, session: Session) -> bool:
        return self._revocations.covers(session)

    def watch(self, ended: Callable[[], None]) -> bool:
        # The cookie is all there is to a session; only a logout ends one before its time.
        self._revocations.watch(ended)
        return True

    async def alive(self, session: Session, scope: Scope) -> bool:
        return not self._revocations.covers(session)

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        return await self._revocations.claim_jti(jti, ttl=ttl)
