"""A session's life after login: absolute and idle expiry, revocation, and silent refresh.

`SessionManager.current()` runs on every request. Usually it is local work only: open the
cookie (cached), compare a few timestamps. It writes the session back at most once a minute
(sliding idle timeout), when a key rotation left it sealed with an old key, and after a refresh.

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

from starlette.types import Scope

from ._config import PKCEConfig
from ._exceptions import PKCEMiddlewareError, ProviderError
from ._provider import Provider
from ._session import OIDCCredentials, OIDCUser, Session
from ._store import SessionStore

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: The provider answered, and the answer means this login is over (the refresh token is spent or
#: refused, or the new ID token is for someone else); anything else is an outage to ride out.
SESSION_ENDING_ERRORS = frozenset({"refresh_rejected", "refresh_id_token_invalid"})
#: The idle clock is kept to the minute, so a busy session is not rewritten on every request.
IDLE_RESOLUTION = 60


class SessionUnavailable(PKCEMiddlewareError):
    """The session needs the provider (an expired access token) and the provider is not answering."""

    error = "session_unavailable"
    status_code = 503
    message = "Your session needs the sign-in service, which is not answering. Please try again shortly."


@dataclasses.dataclass(slots=True)
class Current:
    session: Session
    user: OIDCUser
    credentials: OIDCCredentials
    #: Write the session back (and re-issue its cookie) on this response.
    write: bool


class SessionManager:
    def __init__(self, config: PKCEConfig, store: SessionStore, provider: Provider) -> None:
        self._config = config
        self._store = store
        self._provider = provider
        self._idle = config.session_idle_timeout
        self._margin = config.refresh_margin

    async def current(self, scope: Scope) -> Current | None:
        """The live session of this request, refreshed if due; `None` if it has none or it ended."""
        loaded = await self._store.load(scope)
        if loaded is None:
            return None
        session = loaded.session
        now = int(time.time())
        if session.expires_at <= now or now - session.last_seen >= self._idle or self._store.is_revoked(session):
            return None
        write = loaded.stale
        expiry = session.access_expires_at
        if session.refresh_token is not None and expiry is not None and expiry - self._margin <= now:
            try:
                session = await self._store.single_flight(session, self._refresh)
                write = True
            except ProviderError as exc:
                if exc.error in SESSION_ENDING_ERRORS:
                    logger.info("session ended: reason=%s sub=%r", exc.error, session.sub)
                    return None
                if now >= expiry:
                    raise SessionUnavailable(f"refresh failed ({exc.error}) and the access token expired") from exc
                logger.warning("refresh failed, serving with the current access token: reason=%s", exc.error)
        if write or now - session.last_seen >= IDLE_RESOLUTION:
            write = True
            if session.last_seen != now:
                session = dataclasses.replace(session, last_seen=now)
        # Built per request: the app may change its copies without touching anyone else's.
        return Current(session, session.user(), session.credentials(), write=write)

    async def _refresh(self, session: Session) -> Session:
        assert session.refresh_token is not None
        now = int(time.time())
        token, claims = await self._provider.refresh(session.refresh_token, previous_claims=session.claims, now=now)
        logger.info("session refreshed: sub=%r", session.sub)
        return self.keep(session.refreshed(token, claims, now))

    def keep(self, session: Session) -> Session:
        """The session as it is stored: without the raw ID token if the configuration says so."""
        return session if self._config.session_id_token else dataclasses.replace(session, id_token="")
