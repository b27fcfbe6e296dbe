"""Logouts of cookie sessions remembered in this process: `MemoryRevocations`.

The default `RevocationLog` of `CookieStore`. It is enough for one process; with several, each
knows only the logouts it received (`PKCE_REVOCATION_STORE` shares them through Redis:
`_redis_revocations.SharedRevocations`, which keeps one of these as its local copy).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from ._session import Session

__all__: list[str] = []


class TimedKeys:
    """Keys with the time they were recorded, kept as long as a session can live."""

    def __init__(self, *, max_age: int, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._max_age = max_age
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: str, at: float) -> None:
        while self._entries and (
            len(self._entries) >= self._max_entries or next(iter(self._entries.values())) < at - self._max_age
        ):
            self._entries.popitem(last=False)
        self._entries[key] = at
        self._entries.move_to_end(key)

    def get(self, key: str) -> float | None:
        return self._entries.get(key)


class MemoryRevocations:
    """Ended sessions and used logout token ids, in this process's memory."""

    def __init__(self, *, max_age: int) -> None:
        self.ended = TimedKeys(max_age=max_age)
        self.jtis = TimedKeys(max_age=max_age)

    def __repr__(self) -> str:
        return "MemoryRevocations()"

    async def add(self, key: str, at: float) -> None:
        self.ended.add(key, at)

    def covers(self, session: Session) -> bool:
        if not len(self.ended):
            return False
        keys = [f"id:{session.id}", f"sub:{session.sub}"]
        if session.sid is not None:
            keys.append(f"sid:{session.sid}")
        for key in keys:
            at = self.ended.get(key)
            if at is not None and session.created_at <= at:
                return True
        return False

    def remember_jti(self, jti: str, at: float) -> bool:
        """Record `jti`; `False` if it was recorded before."""
        key = f"jti:{jti}"
        if self.jtis.get(key) is not None:
            return False
        self.jtis.add(key, at)
        return True

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        return self.remember_jti(jti, time.time())

    async def startup(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
