"""What the provider's token endpoint and its JWTs say, checked without I/O.

`check_token_answer` checks a token endpoint answer (RFC 6749 sections 5.1 and 5.2) for a grant;
`TokenValidator` validates the JWTs the provider signs for this client.

Two steps, as joserfc separates them: `jwt.decode` checks the JWS (algorithm pinned, key from the
provider's JWKS only) and `JWTClaimsRegistry` checks the registered claims; then the rules that no
JWT library knows. Three kinds of token share those steps:

* the ID token of a login (Core section 3.1.3.7: `azp`, extra audiences, `iat` age, `nonce`, `at_hash`);
* an ID token from a refresh (Core section 12.2: the same checks without a `nonce`, plus the same
  `iss`, `sub`, `aud` and `auth_time` as the session's first ID token);
* a back-channel logout token (Back-Channel Logout section 2.6: `events`, `sid`/`sub`, `jti`, no `nonce`).

References:
    https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation
    https://openid.net/specs/openid-connect-core-1_0.html#CodeIDToken (at_hash)
    https://openid.net/specs/openid-connect-core-1_0.html#RefreshTokenResponse (section 12.2)
    https://openid.net/specs/openid-connect-backchannel-1_0.html#LogoutToken (sections 2.4 and 2.6)
    RFC 7515 section 4.1.11 (crit), RFC 8725 (JWT best current practices; 3.11 explicit typing)
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from typing import Any

from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from ._exceptions import (
    CallbackError,
    IDTokenError,
    PKCEMiddlewareError,
    ProviderError,
    Reason,
    SessionEnded,
    UnknownKeyId,
)

__all__: list[str] = []

#: Far above any real ID token, far below what would make parsing costly.
MAX_ID_TOKEN_LENGTH = 16384
#: An ID token from the token endpoint is minted seconds before we see it.
MAX_ID_TOKEN_AGE = 600
#: A logout token is posted as the user logs out; one older than this is refused, so a replay
#: store need only remember a `jti` for this long (plus the leeway).
MAX_LOGOUT_TOKEN_AGE = 600
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"

_KEY_TYPES: dict[str, type[Key]] = {"RS": RSAKey, "PS": RSAKey, "ES": ECKey, "Ed": OKPKey}
_ID_TOKEN_CLAIMS = ("iss", "sub", "aud", "exp", "iat")
#: Back-Channel Logout 1.0 section 2.4 makes `exp` REQUIRED too: a token without one is refused.
_LOGOUT_TOKEN_CLAIMS = ("iss", "aud", "iat", "exp", "jti")


@dataclasses.dataclass(frozen=True)
class Grant:
    """What one grant's token answer must hold, and the reason codes of its failures."""

    #: For messages: "token" or "refresh".
    name: str
    required: tuple[str, ...]
    #: The error for an OAuth error answer (RFC 6749 section 5.2): the grant itself was refused.
    rejected: Callable[[str], PKCEMiddlewareError]
    #: An error status without an OAuth error.
    endpoint_error: Reason
    #: Not JSON, or larger than we read.
    unreadable: Reason
    #: JSON, but not a usable token answer.
    response_invalid: Reason
    timeout: Reason


def _code_rejected(reason: str) -> PKCEMiddlewareError:
    # The provider refused this code (used, expired, wrong verifier): a login to redo, not an outage.
    return CallbackError(f"token endpoint said {reason}", error=Reason.CODE_REJECTED)


def _refresh_rejected(reason: str) -> PKCEMiddlewareError:
    # Revoked, expired or already rotated (RFC 9700 section 4.14): retrying cannot help, the session is over.
    return SessionEnded(f"token endpoint refused the refresh token: {reason}", error=Reason.REFRESH_REJECTED)


CODE_GRANT = Grant(
    "token",
    ("access_token", "id_token", "token_type"),
    _code_rejected,
    endpoint_error=Reason.TOKEN_ENDPOINT_ERROR,
    unreadable=Reason.TOKEN_INVALID,
    response_invalid=Reason.TOKEN_RESPONSE_INVALID,
    timeout=Reason.TOKEN_TIMEOUT,
)
#: A plain OAuth 2.0 provider (RFC 6749 section 5.1): an access token, and no ID token.
PLAIN_CODE_GRANT = dataclasses.replace(CODE_GRANT, required=("access_token", "token_type"))
#: OIDC Core section 12.2: a refresh answer "might not contain an id_token", nor a new refresh token.
REFRESH_GRANT = Grant(
    "refresh",
    ("access_token", "token_type"),
    _refresh_rejected,
    endpoint_error=Reason.REFRESH_ENDPOINT_ERROR,
    unreadable=Reason.REFRESH_INVALID,
    response_invalid=Reason.REFRESH_RESPONSE_INVALID,
    timeout=Reason.REFRESH_TIMEOUT,
)
_OPTIONAL_TOKENS = ("id_token", "refresh_token")
_VSCHARS = re.compile(r"[\x20-\x7e]+")


def check_token_answer(status_code: int, data: Any, grant: Grant) -> dict[str, Any]:
    """The token endpoint's answer for `grant`, checked (RFC 6749 sections 5.1 and 5.2)."""
    if status_code != 200:
        error = data.get("error") if isinstance(data, dict) else None
        reason = _printable(error) if isinstance(error, str) else f"HTTP {status_code}"
        if error == "invalid_client":
            # RFC 6749 section 5.2: our client id or secret, not the user's code or session: a setting to fix.
            raise ProviderError(
                "token endpoint refused the client's credentials (invalid_client)", error=Reason.CLIENT_REJECTED
            )
        # RFC 6749 section 5.2 answers errors with 400 (401 for client authentication); an OAuth
        # error under another status (403, 429 from a gateway) is not a verdict on the grant.
        if status_code in (400, 401) and isinstance(error, str):
            raise grant.rejected(reason)
        raise ProviderError(f"token endpoint answered {reason}", error=grant.endpoint_error)
    if not isinstance(data, dict):
        raise ProviderError("token answer is not a JSON object", error=grant.response_invalid)
    for member in _OPTIONAL_TOKENS:
        # Some providers send `null` for what they did not issue; callers then test `in`.
        if member in data and data[member] is None and member not in grant.required:
            del data[member]
    for member in (*grant.required, *(m for m in _OPTIONAL_TOKENS if m in data)):
        if not isinstance(data.get(member), str) or not data[member]:
            raise ProviderError(f"token answer lacks {member}", error=grant.response_invalid)
        # RFC 6749 Appendix A: tokens are printable ASCII (VSCHAR); anything else would break the
        # hashes, cookies and headers they go into, and no provider sends it.
        if not _VSCHARS.fullmatch(data[member]):
            raise ProviderError(f"token answer's {member} is not printable ASCII", error=grant.response_invalid)
    # RFC 6749 section 5.1: token_type is case-insensitive.
    if data["token_type"].lower() != "bearer":
        raise ProviderError("token_type is not Bearer", error=grant.response_invalid)
    return data


def _number(value: Any) -> float:
    """A numeric date, or NaN (which compares false with everything) for anything else."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _printable(value: str) -> str:
    return "".join(ch for ch in value[:40] if ch.isalnum() or ch in "_-.") or "?"


@dataclasses.dataclass(frozen=True, slots=True)
class LogoutClaims:
    """What a valid logout token says: whose sessions end (`sid` and/or `sub`), and its `jti`."""

    sid: str | None
    sub: str | None
    jti: str
    iat: int


class TokenValidator:
    """Validates the JWTs the provider signs for this client: ID tokens and logout tokens."""

    def __init__(self, *, issuer: str, client_id: str, algorithms: Collection[str], leeway: int) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.algorithms = tuple(algorithms)
        if not self.algorithms:
            # joserfc reads "no algorithms" as "any recommended one", HS256 included.
            raise ValueError("at least one ID token algorithm is needed")
        self.leeway = leeway
        # RFC 7515 section 4: header members not understood are ignored unless listed in `crit`
        # (joserfc's default registry refuses any unregistered member); `crit` is still enforced.
        self._registry = JWSRegistry(algorithms=self.algorithms, strict_check_header=False)

    def validate(self, raw: str, keys: KeySet, *, nonce: str, access_token: str | None, now: int) -> dict[str, Any]:
        """The validated claims of a login's ID token; raises `IDTokenError` (or `UnknownKeyId`)."""
        token = self._decode(raw, keys)
        claims = token.claims
        self._check_id_token(token, nonce=nonce, access_token=access_token, now=now)
        return claims

    def validate_refreshed(
        self, raw: str, keys: KeySet, *, previous_claims: Mapping[str, Any], access_token: str | None, now: int
    ) -> dict[str, Any]:
        """The validated claims of an ID token from a refresh (Core section 12.2).

        `previous_claims` are the session's claims; `sub` must be among them, and `iss`, `aud`,
        `iat`, `auth_time` and `nonce` are compared when they are (a session may keep only some claims).
        """
        token = self._decode(raw, keys)
        claims = token.claims
        # A refreshed ID token need not carry a nonce (errata 2: it SHOULD NOT).
        self._check_id_token(token, nonce=None, access_token=access_token, now=now)
        if claims["sub"] != previous_claims.get("sub"):
            raise IDTokenError("sub: differs from the session's")
        if "iss" in previous_claims and claims["iss"] != previous_claims["iss"]:
            raise IDTokenError("iss: differs from the session's")
        if "aud" in previous_claims and _audiences(claims["aud"]) != _audiences(previous_claims["aud"]):
            raise IDTokenError("aud: differs from the session's")
        # 12.2: iat is the new token's issue time; one older than the session's is a token replayed.
        if "iat" in previous_claims and claims["iat"] < previous_claims["iat"]:
            raise IDTokenError("iat: older than the session's")
        # auth_time is the original authentication's time (12.2); an earlier one would claim a login that
        # never happened. A later one is what django-oauth-toolkit and django-oidc-provider send (the
        # user's latest login anywhere): tolerated, and the session keeps its own (`Session.refreshed`).
        if (
            "auth_time" in claims
            and "auth_time" in previous_claims
            and not _number(claims["auth_time"]) >= _number(previous_claims["auth_time"])
        ):
            raise IDTokenError("auth_time: earlier than the session's login")
        # Errata 2: "if it is present, its value MUST be the same" as at login; comparable only if kept.
        if "nonce" in claims and "nonce" in previous_claims and claims["nonce"] != previous_claims["nonce"]:
            raise IDTokenError("nonce: differs from the session's")
        return claims

    def validate_logout_token(self, raw: str, keys: KeySet, *, now: int) -> LogoutClaims:
        """Back-Channel Logout 1.0 section 2.6; any failure is `IDTokenError` with `logout_token_invalid`.

        Replay detection is the caller's: it gets the `jti` to remember.
        """
        try:
            return self._check_logout_token(self._decode(raw, keys), now=now)
        except UnknownKeyId:
            raise
        except IDTokenError as exc:
            raise IDTokenError(exc.detail, error=Reason.LOGOUT_TOKEN_INVALID, status_code=400) from None

    def validate_userinfo(self, raw: str, keys: KeySet) -> dict[str, Any]:
        """A signed userinfo answer (OIDC Core 5.3.2): the provider's key and algorithm, and its
        `iss` and `aud` when present (they SHOULD be); `IDTokenError` otherwise."""
        claims = self._decode(raw, keys).claims
        if "iss" in claims and claims["iss"] != self.issuer:
            raise IDTokenError("userinfo iss: not our provider")
        # Not `_audiences`: an `aud` of another JSON type (a number, a list of objects) is refused, not a crash.
        aud = claims.get("aud")
        if "aud" in claims and aud != self.client_id and not (isinstance(aud, list) and self.client_id in aud):
            raise IDTokenError("userinfo aud: not this client")
        return claims

    def _decode(self, raw: str, keys: KeySet) -> jwt.Token:
        """The JWS step: size, shape, pinned algorithm and a key from the provider's JWKS."""
        if not isinstance(raw, str) or len(raw) > MAX_ID_TOKEN_LENGTH:
            raise IDTokenError("not a string, or too long")
        if raw.count(".") != 2:
            raise IDTokenError("not a JWS compact serialization")
        try:
            token = jwt.decode(raw, lambda obj: _pick_key(keys, obj.headers()), registry=self._registry)
        except UnknownKeyId:
            raise
        except JoseError as exc:
            raise IDTokenError(f"signature: {exc.error}") from None
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            # RecursionError: joserfc's json.loads, on a (validly signed) payload nested a thousand deep.
            raise IDTokenError(f"malformed: {type(exc).__name__}") from None
        if "crit" in token.header and not token.header["crit"]:
            raise IDTokenError("crit: an empty list (RFC 7515 section 4.1.11 forbids it)")
        if not isinstance(token.claims, dict) or not _is_text(token.claims):
            # "\ud800" is legal JSON but no Unicode text: as a `sub`, `sid` or `jti` it would break every
            # step that encodes it (keys, hashes, logs), so it is refused here, at the border.
            raise IDTokenError("malformed: a claim is not valid Unicode (a lone surrogate)")
        return token

    def _check_id_token(self, token: jwt.Token, *, nonce: str | None, access_token: str | None, now: int) -> None:
        """Section 3.1.3.7; `nonce=None` means none is required (a refresh)."""
        claims = token.claims
        # RFC 8725 section 3.11: a logout token, though signed by the same key, is no ID token.
        if _is_logout_type(token.header.get("typ")):
            raise IDTokenError("typ: a logout token is not an ID token")
        essential = _ID_TOKEN_CLAIMS if nonce is None else (*_ID_TOKEN_CLAIMS, "nonce")
        self._check_registered(claims, essential=essential, max_age=MAX_ID_TOKEN_AGE, now=now)
        # Steps 4-5 (errata 2: "validate per extensions"): a present azp must name us.
        if "azp" in claims and claims["azp"] != self.client_id:
            raise IDTokenError("azp: not this client")
        # Step 11; the comparison runs in constant time like every other secret comparison here.
        if nonce is not None and (
            not isinstance(claims["nonce"], str) or not secrets.compare_digest(_utf8(claims["nonce"]), _utf8(nonce))
        ):
            raise IDTokenError("nonce: mismatch")
        self._check_at_hash(claims, token.header["alg"], access_token)

    def _check_logout_token(self, token: jwt.Token, *, now: int) -> LogoutClaims:
        claims = token.claims
        # Section 2.4 (and RFC 8725 section 3.11): explicit typing keeps an ID token from passing as one.
        typ = token.header.get("typ")
        if typ is not None and not _is_logout_type(typ):
            raise IDTokenError("typ: not logout+jwt")
        # Section 2.4 marks jti REQUIRED, and mod_auth_openidc's 2026 hardening refuses logout tokens
        # without one: without it a replayed token cannot be told from a new one.
        self._check_registered(claims, essential=_LOGOUT_TOKEN_CLAIMS, max_age=MAX_LOGOUT_TOKEN_AGE, now=now)
        # Section 2.4: a nonce is forbidden, so an ID token (which has one) is never a logout token.
        if "nonce" in claims:
            raise IDTokenError("nonce: not allowed in a logout token")
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
            raise IDTokenError("events: no back-channel logout event")
        for name in ("sid", "sub"):
            if name in claims and (not isinstance(claims[name], str) or not claims[name]):
                raise IDTokenError(f"{name}: not a non-empty string")
        if "sid" not in claims and "sub" not in claims:
            raise IDTokenError("sid/sub: neither is present")
        return LogoutClaims(sid=claims.get("sid"), sub=claims.get("sub"), jti=claims["jti"], iat=int(claims["iat"]))

    def _check_registered(self, claims: dict[str, Any], *, essential: Collection[str], max_age: int, now: int) -> None:
        """The registered claims (RFC 7519 section 4.1) and the audience and age rules both tokens share."""
        options: dict[str, jwt.ClaimsOption] = {name: {"essential": True} for name in essential}
        options["iss"] = {"essential": True, "value": self.issuer}
        options["aud"] = {"essential": True, "value": self.client_id}
        registry = jwt.JWTClaimsRegistry(now=now, leeway=self.leeway, **options)
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise IDTokenError("exp: expired") from None
        except ClaimError as exc:
            raise IDTokenError(f"{exc.claim}: {exc.error}") from None
        # Step 3 and the former step 4: every audience must be trusted, and we trust only ourselves.
        if any(aud != self.client_id for aud in _audiences(claims["aud"])):
            raise IDTokenError("aud: untrusted additional audience")
        # Step 10: iat bounds how old a token may be, not only whether it is from the future.
        if claims["iat"] < now - max_age - self.leeway:
            raise IDTokenError("iat: too old")

    @staticmethod
    def _check_at_hash(claims: dict[str, Any], alg: str, access_token: str | None) -> None:
        """Section 3.1.3.8: if `at_hash` is present, it must match the access token."""
        at_hash = claims.get("at_hash")
        if at_hash is None:
            return
        try:
            expected = create_half_hash(access_token, alg) if access_token else None
        except UnicodeEncodeError:  # a lone surrogate: no hash of it can be the provider's
            expected = None
        if not isinstance(at_hash, str) or expected is None or not secrets.compare_digest(_utf8(at_hash), expected):
            raise IDTokenError("at_hash: mismatch")


#: The claims that are about the token rather than the user: from the ID token only, whatever
#: userinfo says (OIDC Core 5.3.2 lets userinfo carry any claim, but it proves no login).
PROTOCOL_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "auth_time", "nonce", "acr", "amr", "azp", "sid"}
    | {"at_hash", "c_hash", "s_hash", "cnf"}
)


def check_userinfo(data: Any, *, sub: str) -> dict[str, Any]:
    """OIDC Core 5.3.2: a JSON object whose `sub` is exactly the ID token's."""
    if not isinstance(data, dict) or not _is_text(data):
        raise IDTokenError("userinfo is not a JSON object", error=Reason.USERINFO_INVALID)
    if not isinstance(data.get("sub"), str) or not secrets.compare_digest(_utf8(data["sub"]), _utf8(sub)):
        raise IDTokenError("userinfo sub differs from the ID token's", error=Reason.USERINFO_SUB_MISMATCH)
    return data


def plain_profile(data: Any, *, id_claim: str, sub: str | None) -> dict[str, Any]:
    """A plain OAuth 2.0 provider's profile as the user's claims: `sub` is the member `id_claim`
    names (a string, or a whole number such as GitHub's `id`), and must be `sub` when given."""
    if not isinstance(data, dict) or not _is_text(data):
        raise IDTokenError("the profile is not a JSON object", error=Reason.USERINFO_INVALID)
    value = data.get(id_claim)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise IDTokenError(f"the profile has no usable {id_claim!r}", error=Reason.USERINFO_INVALID)
    user = str(value)
    if sub is not None and not secrets.compare_digest(_utf8(user), _utf8(sub)):
        raise IDTokenError("the profile is another user's", error=Reason.USERINFO_SUB_MISMATCH)
    return {**data, "sub": user}


def merged_claims(id_claims: Mapping[str, Any], userinfo: Mapping[str, Any]) -> dict[str, Any]:
    """The user's claims: the ID token's protocol claims, and userinfo's word on everything else."""
    return {**id_claims, **{k: v for k, v in userinfo.items() if k not in PROTOCOL_CLAIMS}}


def _utf8(value: str) -> bytes:
    # `compare_digest` refuses non-ASCII str; bytes compare in constant time whatever the text.
    return value.encode("utf-8", "surrogatepass")


def _is_text(value: Any) -> bool:
    """Whether every string in a JSON value (keys included) encodes as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError, TypeError):
        return False
    return True


def _audiences(aud: Any) -> set[str]:
    """`aud` as a set: RFC 7519 section 4.1.3 allows one string or a list of them."""
    return {aud} if isinstance(aud, str) else set(aud)


def _is_logout_type(typ: Any) -> bool:
    # RFC 7515 section 4.1.9: media types are case-insensitive and "application/" may be left out.
    return isinstance(typ, str) and typ.lower().removeprefix("application/") == "logout+jwt"


def _pick_key(keys: KeySet, header: dict[str, Any]) -> Key:
    """The verification key, chosen only from the provider's JWKS.

    Header members that carry or point at keys (`jwk`, `jku`, `x5u`, `x5c`) are never read: a key
    the token brings along proves nothing (Authlib CVE-2026-27962).
    """
    key_type = _KEY_TYPES.get(str(header.get("alg", ""))[:2])
    candidates = [
        key
        for key in keys.keys
        if key_type is not None and isinstance(key, key_type) and key.get("use", "sig") == "sig"
    ]
    kid = header.get("kid")
    if kid is not None:
        candidates = [key for key in candidates if key.kid == kid]
        if not candidates:
            raise UnknownKeyId(str(kid)[:64])
        return candidates[0]
    # Without a kid only an unambiguous key set will do (conformance: rp-id_token-kid-absent-*).
    if len(candidates) != 1:
        raise IDTokenError(f"no kid and {len(candidates)} candidate keys")
    return candidates[0]
