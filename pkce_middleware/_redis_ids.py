"""The Redis store's cookie: a sealed random session id, the Redis key it names, and when it is
sent again.

The same cookie comes with every request of a session, and opening it is an AES-GCM decryption
and a hash, so the last opened values are remembered; only an exact match hits.
"""

from __future__ import annotations

from collections import OrderedDict

from starlette.types import Scope

from ._cookies import CookiePolicy, CookieWriter, read_cookie
from ._crypto import Sealer
from ._redis import redis_key

__all__: list[str] = []

#: A sealed 32-character id is under 100 characters; anything much longer is not ours (no decryption).
_MAX_ID_COOKIE = 200


class SessionIds:
    def __init__(
        self, sealer: Sealer, policy: CookiePolicy, *, cache_size: int, max_age: int, renew_after: int
    ) -> None:
        self._sealer = sealer
        self._policy = policy
        self._name = policy.session_name.encode()
        self._opened: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._cache_size = cache_size
        self._max_age = max_age
        # When this process last sent each session's cookie, and how often a refresh renews it (as
        # often as the idle clock's re-issues, `_lifecycle.SessionManager`); see `RedisStore.save`.
        self._sent: OrderedDict[str, int] = OrderedDict()
        self._renew_after = renew_after
        #: Whether a cookie is sealed with the newest key (else it is sealed again on the next write).
        self.is_current = sealer.is_current

    def found(self, scope: Scope) -> tuple[str, str, str] | None:
        """The cookie's value, the session id sealed in it, and that session's key; `None` if the
        cookie is absent, forged or foreign."""
        value = read_cookie(scope, self._name)
        if value is None:
            return None
        cached = self._opened.get(value)
        if cached is not None:
            self._opened.move_to_end(value)
            return value, *cached
        if len(value) > _MAX_ID_COOKIE:
            return None
        plaintext = self._sealer.open(value)
        if plaintext is None:
            return None
        try:
            session_id = plaintext.decode("ascii")
        except UnicodeDecodeError:
            return None
        key = redis_key("session", session_id)
        self._opened[value] = (session_id, key)
        if len(self._opened) > self._cache_size:
            self._opened.popitem(last=False)
        return value, session_id, key

    def seal(self, session_id: str) -> str:
        return self._sealer.seal(session_id.encode())

    def sent_lately(self, session_id: str, now: int) -> bool:
        sent = self._sent.get(session_id)
        return sent is not None and now - sent < self._renew_after

    def send(self, session_id: str, expires_at: int, now: int, cookies: CookieWriter) -> None:
        # Max-Age is the larger of the configured maximum and what is left of this session: the
        # first alone would end the cookie before the session when PKCE_SESSION_MAX_AGE was lowered
        # after its login (a session keeps its `expires_at`), the second alone by however much
        # this process's clock runs ahead of the one serving its last requests. A cookie that
        # outlives its session costs one GET, which finds nothing and deletes it.
        max_age = max(self._max_age, expires_at - now)
        self._policy.set(cookies, self._policy.session_name, self.seal(session_id), max_age=max_age)
        self._sent[session_id] = now
        self._sent.move_to_end(session_id)
        if len(self._sent) > self._cache_size:
            self._sent.popitem(last=False)
