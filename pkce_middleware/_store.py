"""The contracts between the middleware and where sessions live: `SessionStore` and `RevocationLog`.

The middleware asks a store five things: open the session a request carries, write one back,
drop one, coordinate a refresh so a rotating refresh token is redeemed once, and revoke sessions
named by a back-channel logout. Each backend is a module of its own that imports this one, never
the reverse (the layout of Django's and aiohttp-session's session backends):

* `_cookie_store.CookieStore`: everything in the browser's cookies; logouts are kept by a
  `RevocationLog` it is given (`_revocations.MemoryRevocations` for one process,
  `_redis_revocations.SharedRevocations` for every process through Redis);
* `_redis_store.RedisStore`: sessions server-side, coordinated across processes.

`_components.build` picks and builds them from the configuration, in one place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from starlette.types import Scope

from ._cookies import CookieWriter
from ._exceptions import ProviderTimeout, Reason
from ._session import Session

__all__: list[str] = []

Refresh = Callable[[Session], Awaitable[Session]]

#: Cookies named `<session cookie>.<n>`, n below this, hold chunks of a large cookie session; the
#: Redis store deletes those a switch of store left behind. A hard cap, so a hostile count
#: ("~99999999") costs nothing (mod_auth_openidc CVE-2024-24814).
MAX_CHUNKS = 4


def chunk_names(session_name: str) -> list[str]:
    return [f"{session_name}.{index}" for index in range(MAX_CHUNKS)]


@dataclasses.dataclass(slots=True)
class Loaded:
    session: Session
    #: The cookie should be written again even if nothing changed (sealed with an old key).
    stale: bool


class Pending(enum.Enum):
    """`load_now`'s "only `load` can tell" (a store that must ask its server)."""

    PENDING = "pending"


PENDING: Literal[Pending.PENDING] = Pending.PENDING


class SessionStore(Protocol):
    async def load(self, scope: Scope) -> Loaded | None:
        """The session the request carries, opened and checked for integrity (not for expiry)."""

    def load_now(self, scope: Scope) -> Loaded | Literal[Pending.PENDING] | None:
        """`load` answered from memory, without I/O, or `PENDING` when only `load` can answer.

        Every request asks this first: most are answered here, and an `await` less per request is
        a measurable share of what the middleware costs.
        """

    async def save(self, session: Session, scope: Scope, cookies: CookieWriter) -> None:
        """Persist `session` and put the cookie(s) that point at it on the response."""

    async def discard(self, session: Session | None, scope: Scope, cookies: CookieWriter) -> None:
        """Forget the session (server-side too) and delete its cookie(s)."""

    async def single_flight(self, session: Session, refresh: Refresh) -> Session:
        """Run `refresh` once for all concurrent requests of `session`; they all get its result."""

    async def revoke(self, *, sid: str | None, sub: str | None, now: float) -> None:
        """End every session of `sid` (or all of `sub`) that started at or before `now`."""

    def is_revoked(self, session: Session) -> bool:
        """Whether a logout ended `session`, answered without I/O (it runs on every request)."""

    def watch(self, ended: Callable[[], None]) -> bool:
        """Call `ended` whenever a session may have ended other than by the passing of time (a
        logout recorded here, or learned from another process); `False` if this store cannot tell,
        and then no answer about its sessions may be reused (`_admissions`)."""

    async def alive(self, session: Session, scope: Scope) -> bool:
        """Whether `session` has not been logged out or revoked since the request opened it
        (asked now and then for a long-lived WebSocket)."""

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        """Record a logout token id; `False` if it was seen before (a replay)."""

    async def startup(self) -> None: ...

    async def aclose(self) -> None: ...


class RevocationLog(Protocol):
    """Logouts of sessions that live in cookies: the cookie cannot be deleted everywhere, so its
    session id (or `sid`, or `sub`) is remembered as ended for as long as such a session can live."""

    async def add(self, key: str, at: float) -> None:
        """Record that `key` (`id:<session id>`, `sid:<sid>` or `sub:<sub>`) ended at `at`."""

    def covers(self, session: Session) -> bool:
        """Whether a recorded logout ended `session`; no I/O (every request asks)."""

    def watch(self, recorded: Callable[[], None]) -> None:
        """Call `recorded` whenever a logout is recorded, here or learned from another process."""

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        """Record a logout token id; `False` if it was seen before (a replay)."""

    async def startup(self) -> None: ...

    async def aclose(self) -> None: ...


def refresh_key(session: Session) -> str:
    """Per refresh token, not per session: after a refresh the next one is for the new token."""
    return hashlib.sha256(f"{session.id}:{session.refresh_token}".encode("utf-8", "surrogatepass")).hexdigest()


#: A refresh under a cross-process lock must end this long before the lock expires, so its result
#: is saved while the lock is still held: a lock that expired under a running refresh would let a
#: second process redeem the same refresh token.
LOCK_SAFETY = 5.0


def refresh_budget(lock_timeout: float) -> float:
    """How long a refresh under a lock of `lock_timeout` seconds may take."""
    if lock_timeout <= 2 * LOCK_SAFETY:
        raise ValueError(f"lock_timeout must be more than {2 * LOCK_SAFETY} seconds")
    return lock_timeout - LOCK_SAFETY


async def refresh_within(seconds: float, refresh: Refresh, session: Session) -> Session:
    """`refresh(session)`, a `ProviderTimeout` (`refresh_timeout`) past `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await refresh(session)
    except TimeoutError:
        raise ProviderTimeout(f"refresh took longer than {seconds}s", error=Reason.REFRESH_TIMEOUT) from None
