"""The logged-in session: what is kept in the sealed cookie, and what the app sees in the scope."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.authentication import AuthCredentials, BaseUser

from ._crypto import Sealer

__all__ = ["OIDCCredentials", "OIDCUser"]

_CACHE_KEY_CHARS = 24

#: ID token members that only served validation; they would only make the cookie larger.
_VALIDATION_ONLY_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash"})


class OIDCUser(BaseUser):
    """The signed-in user, built from the validated ID token; `request.user` in Starlette."""

    __slots__ = ("claims",)

    def __init__(self, claims: Mapping[str, Any]) -> None:
        self.claims: Mapping[str, Any] = claims

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def identity(self) -> str:
        """The ID token's `sub`: stable and unique at this provider."""
        return str(self.claims["sub"])

    @property
    def display_name(self) -> str:
        for claim in ("preferred_username", "name", "email"):
            value = self.claims.get(claim)
            if isinstance(value, str) and value:
                return value
        return self.identity

    def __repr__(self) -> str:
        return f"OIDCUser(identity={self.identity!r})"


class OIDCCredentials(AuthCredentials):
    """Granted scopes and the tokens; `request.auth` in Starlette, so `@requires(...)` works."""

    __slots__ = ("access_token", "expires_at", "id_token")

    def __init__(self, scopes: Sequence[str], *, access_token: str, id_token: str, expires_at: int | None) -> None:
        super().__init__(scopes)
        self.access_token = access_token
        self.id_token = id_token
        #: Unix time at which the access token expires, when the provider said.
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"OIDCCredentials(scopes={self.scopes!r}, expires_at={self.expires_at!r})"


@dataclasses.dataclass(repr=False, slots=True)
class Session:
    claims: Mapping[str, Any]
    access_token: str
    id_token: str
    refresh_token: str | None
    access_expires_at: int | None
    scopes: tuple[str, ...]
    created_at: int
    expires_at: int

    def __repr__(self) -> str:
        return f"Session(sub={self.claims.get('sub')!r}, expires_at={self.expires_at})"

    @classmethod
    def new(
        cls, *, claims: Mapping[str, Any], token: Mapping[str, Any], scopes: Sequence[str], now: int, max_age: int
    ) -> Session:
        expires_in = token.get("expires_in")
        return cls(
            claims={k: v for k, v in claims.items() if k not in _VALIDATION_ONLY_CLAIMS},
            access_token=token["access_token"],
            id_token=token["id_token"],
            refresh_token=token.get("refresh_token") if isinstance(token.get("refresh_token"), str) else None,
            access_expires_at=now + int(expires_in) if isinstance(expires_in, int | float) else None,
            # RFC 6749 section 5.1: `scope` is in the answer only when it differs from the request.
            scopes=tuple(token["scope"].split()) if isinstance(token.get("scope"), str) else tuple(scopes),
            created_at=now,
            expires_at=now + max_age,
        )

    def user(self) -> OIDCUser:
        return OIDCUser(self.claims)

    def credentials(self) -> OIDCCredentials:
        return OIDCCredentials(
            self.scopes, access_token=self.access_token, id_token=self.id_token, expires_at=self.access_expires_at
        )


class SessionCodec:
    """Seals sessions into cookie values and opens them, remembering recently opened values.

    Opening is AES-GCM plus JSON, a few microseconds per request; the same cookie arrives on
    every request of a session, so the last `cache_size` opened values are kept. A cached entry
    is exactly what opening the same bytes again would give, so the cache changes no decision;
    expiry is still checked on every request.
    """

    def __init__(self, sealer: Sealer, *, cache_size: int = 1024) -> None:
        self._sealer = sealer
        self._cache: OrderedDict[str, tuple[str, tuple[Session, OIDCUser, OIDCCredentials]]] = OrderedDict()
        self._cache_size = cache_size

    def seal(self, session: Session) -> str:
        payload = {
            "c": session.claims,
            "at": session.access_token,
            "it": session.id_token,
            "rt": session.refresh_token,
            "ae": session.access_expires_at,
            "sc": " ".join(session.scopes),
            "ct": session.created_at,
            "ex": session.expires_at,
        }
        return self._sealer.seal(json.dumps(payload, separators=(",", ":")).encode())

    def open(self, value: str) -> tuple[Session, OIDCUser, OIDCCredentials] | None:
        # Keyed by the value's tail (the GCM tag: unique per seal, as the nonce is random) because
        # hashing a fresh 3 KB string on every request costs more than the rest of the lookup;
        # the full value is still compared, so only an exact match is a hit.
        key = value[-_CACHE_KEY_CHARS:]
        cached = self._cache.get(key)
        if cached is not None and cached[0] == value:
            self._cache.move_to_end(key)
            return cached[1]
        plaintext = self._sealer.open(value)
        if plaintext is None:
            return None
        try:
            data = json.loads(plaintext)
            session = Session(
                claims=data["c"],
                access_token=data["at"],
                id_token=data["it"],
                refresh_token=data["rt"],
                access_expires_at=data["ae"],
                scopes=tuple(data["sc"].split()),
                created_at=data["ct"],
                expires_at=data["ex"],
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            # Only we can seal, so this is a cookie from an incompatible version: treat it as absent.
            return None
        opened = (session, session.user(), session.credentials())
        self._cache[key] = (value, opened)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return opened
