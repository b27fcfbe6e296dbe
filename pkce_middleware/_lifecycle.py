"""A session's life after login: absolute and idle expiry, revocation, and silent refresh.

`SessionManager.current()` runs on every request. Usually it is local work only: open the
cookie (cached), compare a few timestamps; a request whose `Cookie` header came before, while
nothing but time can change the answer, skips even that (`_admissions`). It writes the session
back at most twice per idle window (sliding idle timeout), when a key rotation left it sealed
with an old key, and after a refresh.

A refresh happens when the access token is within `refresh_margin` of expiry. Concurrent
requests of one session share one refresh (the store's single-flight). A provider that refuses
the refresh token (`invalid_grant`) ends the session; a provider that is down does not: the
request is served while the access token is still valid, otherwise it gets a 503.

References:
    OpenID Connect Core 1.0 section 12 (refresh), RFC 6749 section 6, RFC 9700 section 4.14.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from starlette.types import Scope

from ._admissions import Admissions
from ._config import PKCEConfig
from ._exceptions import IDTokenError, ProviderError, RefreshBusy, SessionEnded, SessionUnavailable
from ._provider import Provider
from ._session import OIDCCredentials, OIDCUser, Session
from ._store import PENDING, Pending, SessionStore

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: Re-issues due within one slot of this many seconds share one new session (and one sealing);
#: a quarter of the idle timeout when that is shorter, so that a session re-issued at the start of
#: its slot and handed out at its end still has three quarters of the timeout ahead.
IDLE_RESOLUTION = 60
#: Re-issues remembered (by the session they replace), so that concurrent requests carrying the
#: same old cookie share one new session and one sealing.
MAX_REISSUES = 1024
#: For this many seconds after a re-issue, requests still carrying the old cookie get the new one
#: too (a page's parallel requests, sent before the browser stored it), up to `REISSUE_ANSWERS` of
#: them. Past that, a client still sending the old cookie keeps no cookies (a script, a load
#: balancer's health check): it gets no Set-Cookie again until the next slot's re-issue, rather
#: than a 2 kB header on every answer. A browser that lost every answer that carried it gets the
#: cookie with the next re-issue, long before the idle timeout (half of it is still ahead).
REISSUE_WINDOW = 5
#: One answer the browser reads is enough; a page's first requests carry it, a flood does not.
REISSUE_ANSWERS = 16


@dataclasses.dataclass(slots=True)
class _Reissue:
    #: Kept with the entry, so its id cannot be reused while the entry lives.
    old: Session
    slot: int
    renewed: Session
    at: int
    #: Answers that carried the renewed cookie so far.
    answers: int


@dataclasses.dataclass(slots=True)
class Current:
    session: Session
    user: OIDCUser
    credentials: OIDCCredentials
    #: Write the session back (and re-issue its cookie) on this response.
    write: bool


class SessionManager:
    def __init__(
        self, config: PKCEConfig, store: SessionStore, providers: Mapping[str, Provider], *, admissions: int = 1024
    ) -> None:
        """`admissions`: how many `Cookie` headers to remember the session of (0: none)."""
        self._config = config
        self._store = store
        self._providers = providers
        self._idle = config.session_idle_timeout
        self._margin = config.refresh_margin
        # ASP.NET Core's sliding rule: write the idle clock back once half of the window has passed.
        # A session then ends after between half and all of the idle timeout without requests,
        # and a busy one is re-issued twice per window, not on every request (no Set-Cookie).
        self._reissue_after = max(1, self._idle // 2)
        self._resolution = max(1, min(IDLE_RESOLUTION, self._idle // 4))
        self._reissued: dict[int, _Reissue] = {}
        #: `REISSUE_WINDOW` and `REISSUE_ANSWERS`, per instance (a benchmark widens them to measure
        #: a burst without end).
        self.reissue_window = REISSUE_WINDOW
        self.reissue_answers = REISSUE_ANSWERS
        self._admissions: Admissions | None = Admissions(admissions)
        if not store.watch(self._admissions.clear):
            self._admissions = None  # the store cannot say when a session ends: nothing is reused

    def current_now(self, scope: Scope) -> Current | Literal[Pending.PENDING] | None:
        """`current` when it needs no I/O (the store answers from memory, no refresh is due), else
        `PENDING`: the path of nearly every request, without the cost of a coroutine."""
        admissions = self._admissions
        if admissions is not None:
            admitted = admissions.get(scope)
            if admitted is not None and time.time() < admitted[0]:
                session = admitted[1]
                return Current(session, session.user(), session.credentials(), False)
        loaded = self._store.load_now(scope)
        if loaded is None or loaded is PENDING:
            return loaded
        session = loaded.session
        now = int(time.time())
        if not self._usable(session, now):
            return None
        if self._refresh_due(session, now):
            return PENDING
        current = self._settled(session, now, write=loaded.stale)
        if admissions is not None and not current.write:
            admissions.admit(scope, current.session, self._unchanged_until(session, now))
        return current

    async def current(self, scope: Scope) -> Current | None:
        """The live session of this request, refreshed if due; `None` if it has none or it ended."""
        loaded = await self._store.load(scope)
        if loaded is None:
            return None
        session = loaded.session
        now = int(time.time())
        if not self._usable(session, now):
            return None
        write = loaded.stale
        if self._refresh_due(session, now):
            expiry = session.access_expires_at
            assert expiry is not None  # `_refresh_due`
            try:
                session = await self._store.single_flight(session, self._refresh)
                write = True
            except (SessionEnded, IDTokenError) as exc:
                # The provider answered, and the answer means this login is over: the refresh token
                # is spent or refused, or the new ID token is not this session's.
                logger.info("session ended: reason=%s sub=%r", exc.error, session.sub)
                return None
            except (ProviderError, RefreshBusy) as exc:
                # An outage to ride out while the access token lasts.
                if now >= expiry:
                    raise SessionUnavailable(f"refresh failed ({exc.error}) and the access token expired") from exc
                logger.warning("refresh failed, serving with the current access token: reason=%s", exc.error)
        return self._settled(session, now, write=write)

    def _refresh_due(self, session: Session, now: int) -> bool:
        expiry = session.access_expires_at
        return session.refresh_token is not None and expiry is not None and expiry - self._margin <= now

    def _settled(self, session: Session, now: int, *, write: bool) -> Current:
        """The request's `Current`: with the idle clock moved to now when the session is written
        anyway, or re-issued once half the idle window has passed (`_reissue`)."""
        if write:
            # `<`: a refresh that ended in a later second than this request began keeps its own
            # (the very object the store saved, which then needs no second write).
            if session.last_seen < now:
                session = dataclasses.replace(session, last_seen=now)
        elif now - session.last_seen >= self._reissue_after:
            session, write = self._reissue(session, now)
        # Built per request: the app may change its copies without touching anyone else's.
        return Current(session, session.user(), session.credentials(), write)

    def _unchanged_until(self, session: Session, now: int) -> int:
        """Until when a request bringing `session` (as loaded, unwritten) gets the answer it got
        at `now`: the first moment it could end, idle out, be due for a refresh or a re-issue."""
        until = min(session.expires_at, session.last_seen + self._idle)
        if session.refresh_token is not None and session.access_expires_at is not None:
            until = min(until, session.access_expires_at - self._margin)
        if now - session.last_seen < self._reissue_after:
            return min(until, session.last_seen + self._reissue_after)
        # Re-issued already: the renewed session is this slot's (`_reissue`), the next is new.
        return min(until, (now // self._resolution + 1) * self._resolution)

    def _reissue(self, session: Session, now: int) -> tuple[Session, bool]:
        """`session` with its idle clock moved to now, the same object for every request that
        brings the same old session within a slot (so it is sealed once: `SessionCodec.seal`),
        and whether this answer should carry it (`REISSUE_WINDOW`, `REISSUE_ANSWERS`)."""
        slot = now // self._resolution
        known = self._reissued.get(id(session))
        if known is None or known.old is not session or known.slot != slot:
            if len(self._reissued) >= MAX_REISSUES:
                self._reissued.clear()
            known = _Reissue(session, slot, dataclasses.replace(session, last_seen=now), now, 0)
            self._reissued[id(session)] = known
        elif known.answers >= self.reissue_answers or now - known.at >= self.reissue_window:
            return known.renewed, False  # (the answer that made it carries it, whatever the limits)
        known.answers += 1
        return known.renewed, True

    async def live(self, scope: Scope) -> Session | None:
        """The request's session if it is still valid (not expired, idle or logged out), without
        refreshing it: for the login and logout paths, where a dead session is no session."""
        loaded = await self._store.load(scope)
        return loaded.session if loaded is not None and self._usable(loaded.session, int(time.time())) else None

    def _usable(self, session: Session, now: int) -> bool:
        return (
            session.expires_at > now
            and now - session.last_seen < self._idle
            # A provider taken out of the configuration takes its sessions with it.
            and session.provider in self._providers
            and not self._store.is_revoked(session)
        )

    async def _refresh(self, session: Session) -> Session:
        assert session.refresh_token is not None
        now = int(time.time())
        provider = self._providers[session.provider]  # `_usable` made sure it is still configured
        token, claims = await provider.refresh(session.refresh_token, previous_claims=session.claims, now=now)
        logger.info("session refreshed: sub=%r", session.sub)
        return self.keep(session.refreshed(token, claims, now))

    def start(self, claims: Mapping[str, Any], token: Mapping[str, Any], provider: str = "") -> Session:
        """The session of a finished login (or of `PKCEMiddleware.create_session`), as it is stored."""
        config = self._config
        scopes = next(own.scopes for name, _, own in config.each_provider if name == provider)
        session = Session.new(
            claims=claims,
            token=token,
            scopes=scopes,
            now=time.time(),
            max_age=config.session_max_age,
            provider=provider,
        )
        return self.keep(session)

    def keep(self, session: Session) -> Session:
        """The session as it is stored: without the raw ID token if the configuration says so."""
        return session if self._config.session_id_token else dataclasses.replace(session, id_token="")
