"""Logouts of cookie sessions remembered in this process: `MemoryRevocations`.

The default `RevocationLog` of `CookieStore`. It is enough for one process; with several, each
knows only the logouts it received (`PKCE_REVOCATION_STORE` shares them through Redis:
`_redis_revocations.SharedRevocations`, which keeps one of these as its local copy).

What a recorded logout covers, and for how long:

* `id:<session id>` and `sid:<provider session id>` cover every session with that id or `sid`,
  whatever its `created_at`: no time is compared, so no two hosts' clocks are. A new login gets a
  new session id and, at the provider, a new `sid`.
* `sub:<user>` (a back-channel logout without `sid`) covers that user's sessions created up to
  `at + SKEW_MARGIN`: `at` is read on the host that got the logout, `created_at` on the host that
  made the session, so a margin decides which way a disagreement between the two clocks errs.
* An entry is kept until every session it can cover is past its absolute expiry (`max_age` after
  creation), and never dropped before: the memory is bounded by age, not by count (a count would
  let anyone who can log out push older logouts out). Past `SOFT_CAP` entries a warning is logged
  and `soft_cap_crossings` counts up; nothing is forgotten.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from ._exceptions import Reason
from ._session import Session

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: Seconds by which the wall clocks of the hosts sharing sessions may disagree. A `sub`-wide logout
#: recorded at `at` ends the sessions created up to `at + SKEW_MARGIN`. This errs on the safe side:
#: every session that existed at the logout is ended if the clock of the host that created it is at
#: most this much ahead of the clock of the host that got the logout; the price is that a login
#: within about this long after such a logout is ended too (the user logs in once more). NTP keeps
#: hosts within milliseconds of each other; 5 s also covers a host whose sync lapsed for a while,
#: and is shorter than a new login through the provider right after it logged the user out.
SKEW_MARGIN = 5.0
#: Entries of one kind past which a warning is logged (and `soft_cap_crossings` counts up).
SOFT_CAP = 100_000
#: A warning is logged again only after the count fell below this share of the cap, so a list
#: hovering at the cap does not log on every logout.
_REARM = 0.9


class TimedKeys:
    """Keys, each with a time and a deadline (this process's monotonic clock) until which it is kept.

    An entry is dropped only once its deadline has passed (looked at on each `add`, from the
    oldest); a key added again keeps the later deadline and the later time. Past `soft_cap`
    entries a WARNING is logged once per crossing and `soft_cap_crossings` (a counter for metrics)
    goes up; `len()` is the current size.
    """

    def __init__(self, *, kind: str, soft_cap: int = SOFT_CAP, clock: Callable[[], float] = time.monotonic) -> None:
        #: key -> (deadline, at); insertion order follows the deadlines closely enough for pruning
        #: from the front (an entry out of order is only kept longer, never dropped early).
        self._entries: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._clock = clock
        self.kind = kind
        self.soft_cap = soft_cap
        #: How many times the size went over `soft_cap` (a counter: it never goes down).
        self.soft_cap_crossings = 0
        self._over_cap = False

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def at(self, key: str) -> float | None:
        """The time recorded with `key`, if it is kept."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def add(self, key: str, at: float, *, ttl: float) -> None:
        """Keep `key` (recorded at `at`) for at least `ttl` more seconds."""
        now = self._clock()
        self.prune(now)
        deadline = now + ttl
        kept = self._entries.get(key)
        if kept is not None:
            deadline, at = max(deadline, kept[0]), max(at, kept[1])
        self._entries[key] = (deadline, at)
        self._entries.move_to_end(key)
        if len(self._entries) >= self.soft_cap and not self._over_cap:
            self._over_cap = True
            self.soft_cap_crossings += 1
            logger.warning(
                "%s over their soft cap, nothing dropped: reason=%s entries=%d soft_cap=%d "
                "crossings=%d (more logouts than expected within PKCE_SESSION_MAX_AGE; each is kept until "
                "its sessions have expired)",
                self.kind,
                Reason.REVOCATION_SOFT_CAP,
                len(self._entries),
                self.soft_cap,
                self.soft_cap_crossings,
            )

    def prune(self, now: float | None = None) -> None:
        """Drop the entries whose deadline has passed (from the oldest, stopping at a live one)."""
        if now is None:
            now = self._clock()
        entries = self._entries
        while entries and next(iter(entries.values()))[0] <= now:
            entries.popitem(last=False)
        if self._over_cap and len(entries) < self.soft_cap * _REARM:
            self._over_cap = False


class MemoryRevocations:
    """Ended sessions and used logout token ids, in this process's memory."""

    def __init__(
        self,
        *,
        max_age: int,
        skew_margin: float = SKEW_MARGIN,
        soft_cap: int = SOFT_CAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ended = TimedKeys(kind="revoked sessions", soft_cap=soft_cap, clock=clock)
        self.jtis = TimedKeys(kind="used logout token ids", soft_cap=soft_cap, clock=clock)
        self.skew_margin = skew_margin
        #: How long after a logout an entry must be kept: a session it covers was created at most
        #: `skew_margin` after it (`sub:`; before it for `id:` and `sid:`) and is valid for
        #: `max_age`, as judged by clocks that may differ by up to `skew_margin` once more.
        self.entry_ttl = max_age + 2 * skew_margin
        self._watchers: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return "MemoryRevocations()"

    @property
    def soft_cap_crossings(self) -> int:
        """How many times either list went over its soft cap (for a metrics exporter)."""
        return self.ended.soft_cap_crossings + self.jtis.soft_cap_crossings

    async def add(self, key: str, at: float) -> None:
        self.record(key, at)

    def record(self, key: str, at: float, *, age: float = 0.0) -> None:
        """Record that `key` ended at `at`, a logout `age` seconds old (as long as it still matters)."""
        ttl = self.entry_ttl - max(0.0, age)
        if ttl > 0:
            self.ended.add(key, at, ttl=ttl)
        for recorded in self._watchers:
            recorded()

    def watch(self, recorded: Callable[[], None]) -> None:
        self._watchers.append(recorded)

    def covers(self, session: Session) -> bool:
        ended = self.ended
        if not len(ended):
            return False
        by_id, by_sid, by_sub = session.revocation_names()
        if by_id in ended or (by_sid is not None and by_sid in ended):
            return True
        at = ended.at(by_sub)
        return at is not None and session.created_at <= at + self.skew_margin

    def remember_jti(self, jti: str, *, ttl: float) -> bool:
        """Record `jti` for `ttl` seconds; `False` if it was recorded before."""
        key = f"jti:{jti}"
        if key in self.jtis:
            return False
        self.jtis.add(key, time.time(), ttl=ttl)
        return True

    async def claim_jti(self, jti: str, *, ttl: int) -> bool:
        return self.remember_jti(jti, ttl=ttl)

    async def startup(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
