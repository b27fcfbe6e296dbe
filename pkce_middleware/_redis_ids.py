"""The Redis store's cookie: a sealed random session id, and the Redis key it names.

The same cookie comes with every request of a session, and opening it is an AES-GCM decryption
and a hash, so the last opened values are remembered; only an exact match hits.
"""

from __future__ import annotations

from collections import OrderedDict

from starlette.types import Scope

from ._cookies import read_cookie
from ._crypto import Sealer
from ._redis import redis_key

__all__: list[str] = []

#: A sealed 32-character id is under 100 characters; anything much longer is not ours (no decryption).
_MAX_ID_COOKIE = 200


class SessionIds:
    def __init__(self, sealer: Sealer, cookie_name: str, *, cache_size: int) -> None:
        self._sealer = sealer
        self._name = cookie_name.encode()
        self._opened: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._cache_size = cache_size
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
