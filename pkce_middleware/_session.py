"""The logged-in session: what is kept in the sealed cookie, and what the app sees in the scope."""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.authentication import AuthCredentials, BaseUser

from . import _base64url
from ._claims import frozen_claims, frozen_parsed, kept, kept_parsed
from ._crypto import Sealer

__all__ = ["OIDCCredentials", "OIDCUser"]

_CACHE_KEY_CHARS = 24

#: How a sealed session starts when its claims are the ID token's payload, as the provider wrote
#: it (`SessionCodec._seal`); their JSON text follows, `il` bytes long.
_CLAIMS_FIRST = b'{"ic":'
_DECODER = json.JSONDecoder()


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
        # A person's name first: `preferred_username` is often an opaque login id.
        for claim in ("name", "preferred_username", "email"):
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
    """One login. Treated as immutable: every change makes a new one (`dataclasses.replace`)."""

    id: str
    #: Deeply read-only (see `_frozen`) when built by `new`, `refreshed` or `SessionCodec.open`:
    #: one Session serves every request of its cookie, and is sealed again at the next write.
    claims: Mapping[str, Any]
    access_token: str
    #: Empty when the configuration keeps ID tokens out of the cookie.
    id_token: str
    refresh_token: str | None
    access_expires_at: int | None
    scopes: tuple[str, ...]
    #: Sub-second, so a logout and a new login within the same second are still told apart.
    created_at: float
    #: Absolute end (`PKCE_SESSION_MAX_AGE` after login); refreshing never moves it.
    expires_at: int
    #: Last time the session was written back; the idle timeout counts from here.
    last_seen: int
    #: The provider it was made with, of several (`PKCE_PROVIDERS`); "" with one.
    provider: str = ""
    #: `revocation_names`, made on first use: once a process has seen a logout, every request
    #: looks its session up by these, and one Session serves every request of its cookie.
    _revocation_names: tuple[str, str | None, str] | None = dataclasses.field(default=None, init=False, compare=False)

    def __repr__(self) -> str:
        return f"Session(sub={self.claims.get('sub')!r}, expires_at={self.expires_at})"

    @property
    def sub(self) -> str:
        return str(self.claims["sub"])

    @property
    def sid(self) -> str | None:
        sid = self.claims.get("sid")
        return sid if isinstance(sid, str) else None

    @property
    def sid_key(self) -> str | None:
        """`sid` as logouts name it: two providers may hand out the same one."""
        return None if self.sid is None else revocation_key(self.provider, self.sid)

    @property
    def sub_key(self) -> str:
        """`sub` as logouts name it: `sub` is unique per provider only."""
        return revocation_key(self.provider, self.sub)

    def revocation_names(self) -> tuple[str, str | None, str]:
        """The entries of a revocation log that end this session: `id:`, `sid:` (if it has a
        `sid`) and `sub:` (`_revocations`)."""
        names = self._revocation_names
        if names is None:
            sid = self.sid_key
            names = (f"id:{self.id}", None if sid is None else f"sid:{sid}", f"sub:{self.sub_key}")
            self._revocation_names = names
        return names

    @classmethod
    def new(
        cls,
        *,
        claims: Mapping[str, Any],
        token: Mapping[str, Any],
        scopes: Sequence[str],
        now: float,
        max_age: int,
        provider: str = "",
    ) -> Session:
        seconds = int(now)
        return cls(
            id=secrets.token_urlsafe(24),
            claims=kept(claims),
            access_token=token["access_token"],
            # A plain OAuth 2.0 provider issues none.
            id_token=token.get("id_token", ""),
            refresh_token=_refresh_token(token, None),
            access_expires_at=_access_expiry(token, seconds),
            # RFC 6749 section 5.1: `scope` is in the answer only when it differs from the request.
            scopes=_scopes(token, tuple(scopes)),
            created_at=now,
            expires_at=seconds + max_age,
            last_seen=seconds,
            provider=provider,
        )

    def refreshed(self, token: Mapping[str, Any], claims: Mapping[str, Any] | None, now: int) -> Session:
        """The session after a refresh grant: new tokens, same login (OIDC Core 12.2)."""
        if claims is not None:
            # A refreshed ID token may leave out what only the first one had to carry; back-channel
            # logout still matches on `sid`, and `auth_time` still dates the original login.
            claims = {**{k: self.claims[k] for k in ("sid", "auth_time") if k in self.claims}, **claims}
            if "auth_time" in self.claims:
                claims["auth_time"] = self.claims["auth_time"]  # the original login's, whatever a refresh says
            claims = kept(claims)
        return dataclasses.replace(
            self,
            claims=claims if claims is not None else self.claims,
            access_token=token["access_token"],
            # A refresh answer may hold no new ID token (Core 12.2), even when the claims changed (userinfo).
            id_token=token.get("id_token", self.id_token) if claims is not None and self.id_token else self.id_token,
            # RFC 6749 section 6: without a new refresh token the old one stays valid.
            refresh_token=_refresh_token(token, self.refresh_token),
            access_expires_at=_access_expiry(token, now),
            scopes=_scopes(token, self.scopes),
            last_seen=now,
        )

    # `user` and `credentials` run on every request: they make what `OIDCUser(self.claims)` and
    # `OIDCCredentials(...)` make, without a class call's cost (keyword arguments, `super().__init__`),
    # which is several times that of the assignments.

    def user(self) -> OIDCUser:
        user = object.__new__(OIDCUser)
        user.claims = self.claims
        return user

    def credentials(self) -> OIDCCredentials:
        credentials = object.__new__(OIDCCredentials)
        credentials.scopes = list(self.scopes)
        credentials.access_token = self.access_token
        credentials.id_token = self.id_token
        credentials.expires_at = self.access_expires_at
        return credentials


def revocation_key(provider: str, value: str) -> str:
    """A `sid` or `sub` of `provider`, as revocations name it ("" for the only provider: as before)."""
    return f"{provider}\x1f{value}" if provider else value


def _claims_of(id_token: str) -> Mapping[str, Any]:
    """The payload of an ID token we validated before sealing it (so no signature check here)."""
    payload = id_token.split(".")[1]
    return kept_parsed(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _same_claims(session: Session) -> bool:
    try:
        # Both frozen, so a list in the token compares equal to the tuple it became in the session.
        return bool(session.id_token) and _claims_of(session.id_token) == frozen_claims(session.claims)
    except (ValueError, IndexError, AttributeError):
        return False


def _id_token_parts(session: Session) -> tuple[str, bytes, str] | None:
    """The ID token as header, claims (its payload: JSON text) and signature, when the session's
    claims are the token's and the payload can travel as JSON and be put back exactly."""
    header, _, rest = session.id_token.partition(".")
    segment, _, signature = rest.partition(".")
    if not signature or "." in signature:
        return None
    # Only a canonical segment is put back exactly as the provider signed it (an id_token_hint must be it).
    payload = _base64url.decode(segment)
    if payload is None:
        return None
    try:
        # Decoded to text first: a byte order mark, which bytes would be forgiven, cannot be embedded.
        claims = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    if kept_parsed(claims) != frozen_claims(session.claims):
        return None
    return header, payload, signature


def _loads(plaintext: bytes) -> Any:
    """What `_dumps` wrote (sealed, so nobody else could have), decoded.

    Not orjson: it turns integers past 64 bits into floats, so a claim would change.
    """
    # Text, not bytes (which json.loads first guesses the encoding of), and no whitespace to skip
    # around what `_dumps` wrote.
    text = plaintext.decode()
    data, end = _DECODER.raw_decode(text)
    if end != len(text):
        raise ValueError("data after the JSON value")
    return data


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _refresh_token(token: Mapping[str, Any], previous: str | None) -> str | None:
    value = token.get("refresh_token")
    return value if isinstance(value, str) and value else previous


def _access_expiry(token: Mapping[str, Any], now: int) -> int | None:
    expires_in = token.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not 0 < expires_in < 10**9:
        return None
    return now + int(expires_in)


def _scopes(token: Mapping[str, Any], requested: tuple[str, ...]) -> tuple[str, ...]:
    scope = token.get("scope")
    return tuple(scope.split()) if isinstance(scope, str) else requested


class SessionCodec:
    """Seals sessions into cookie values and opens them, remembering recently opened values.

    Opening is AES-GCM plus JSON, a few microseconds per request; the same cookie arrives on
    every request of a session, so the last `cache_size` opened values are kept. A cached entry
    is exactly what opening the same bytes again would give, so the cache changes no decision;
    expiry is still checked on every request.
    """

    def __init__(self, sealer: Sealer, *, cache_size: int = 1024, bindings: Mapping[str, str] | None = None) -> None:
        self._sealer = sealer
        #: With several providers: the provider and client each provider's sessions are bound to.
        self._bindings = bindings
        self._cache: OrderedDict[str, tuple[str, Session]] = OrderedDict()
        self._cache_size = cache_size
        #: Sessions sealed lately, by identity (each kept with its entry, so its id stays its own).
        self._sealed: dict[int, tuple[Session, str]] = {}
        #: Whether a value is sealed with the newest key (else it is re-sealed on its next write);
        #: the sealer's own method, as every request asks.
        self.is_current: Callable[[str], bool] = sealer.is_current

    def seal(self, session: Session) -> str:
        """The cookie value of `session`; the same `Session` object is sealed once (concurrent
        requests re-issuing one session share it), and what is sealed here opens from the cache."""
        known = self._sealed.get(id(session))
        if known is not None and known[0] is session:
            return known[1]
        value = self._seal(session)
        if len(self._sealed) >= self._cache_size:
            self._sealed.clear()
        self._sealed[id(session)] = (session, value)
        self._remember(value, session)
        return value

    def _seal(self, session: Session) -> str:
        payload: dict[str, Any] = {
            "id": session.id,
            "at": session.access_token,
            "rt": session.refresh_token,
            "ae": session.access_expires_at,
            "sc": " ".join(session.scopes),
            "ct": round(session.created_at, 3),
            "ex": session.expires_at,
            "ls": session.last_seen,
        }
        if session.provider:
            payload["pv"] = session.provider
        if self._bindings is not None:
            payload["pb"] = self._bindings.get(session.provider, "")
        parts = _id_token_parts(session) if session.id_token else None
        if parts is not None:
            # The claims are usually the ID token's payload; storing both would double the cookie.
            # They go in once, as the JSON text the provider signed, so that opening parses them
            # with the rest (not again from base64) and the token is put back around them.
            header, claims, signature = parts
            payload.update({"il": len(claims), "c": None, "ih": header, "is": signature})
            return self._sealer.seal(_CLAIMS_FIRST + claims + b"," + _dumps(payload)[1:])
        # Claims of their own (userinfo's, or no ID token kept). Frozen claims are JSON as they
        # are: a `_FrozenDict` is a dict, a tuple a list.
        payload["c"] = None if _same_claims(session) else dict(session.claims)
        payload["it"] = session.id_token
        return self._sealer.seal(_dumps(payload))

    def open(self, value: str) -> Session | None:
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
            data = _loads(plaintext)
            if type(data) is not dict:
                return None
            # Read-only all the way down: the same Session serves every request of this cookie.
            if data["c"] is not None:
                claims, id_token = frozen_parsed(data["c"]), data["it"]
            elif plaintext.startswith(_CLAIMS_FIRST):
                claims = kept_parsed(data["ic"])
                signed = plaintext[len(_CLAIMS_FIRST) : len(_CLAIMS_FIRST) + data["il"]]
                id_token = f"{data['ih']}.{_base64url.encode(signed)}.{data['is']}"
            else:  # sealed before the claims travelled as JSON: they are parsed from the token
                id_token = data["it"]
                claims = _claims_of(id_token)
            session = Session(
                id=data["id"],
                claims=claims,
                access_token=data["at"],
                id_token=id_token,
                refresh_token=data["rt"],
                access_expires_at=data["ae"],
                scopes=tuple(data["sc"].split()),
                created_at=data["ct"],
                expires_at=data["ex"],
                last_seen=data["ls"],
                provider=data.get("pv", ""),
            )
            if self._bindings is not None and data.get("pb") != self._bindings.get(session.provider):
                # Sealed for a provider (or client) that is no longer this one under that name.
                return None
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
            # Only we can seal, so this is a cookie from an incompatible version: treat it as absent.
            return None
        self._remember(value, session)
        return session

    def _remember(self, value: str, session: Session) -> None:
        if self._cache_size <= 0:
            return
        self._cache[value[-_CACHE_KEY_CHARS:]] = (value, session)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
