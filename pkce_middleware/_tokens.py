"""ID token validation, OpenID Connect Core 1.0 section 3.1.3.7 (errata set 2).

Two steps, as joserfc separates them: `jwt.decode` checks the JWS (algorithm pinned, key from the
provider's JWKS only) and `JWTClaimsRegistry` checks the claims; then the OIDC-specific rules that
no JWT library knows (`azp`, extra audiences, `iat` age, `nonce`, `at_hash`).

References:
    https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation
    https://openid.net/specs/openid-connect-core-1_0.html#CodeIDToken (at_hash)
    RFC 7515 section 4.1.11 (crit), RFC 8725 (JWT best current practices)
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Any

from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from ._exceptions import IDTokenError

__all__: list[str] = []

#: Far above any real ID token, far below what would make parsing costly.
MAX_ID_TOKEN_LENGTH = 16384
#: An ID token from the token endpoint is minted seconds before we see it.
MAX_ID_TOKEN_AGE = 600

_KEY_TYPES: dict[str, type[Key]] = {"RS": RSAKey, "PS": RSAKey, "ES": ECKey, "Ed": OKPKey}


class UnknownKeyId(Exception):
    """The token names a `kid` the cached JWKS does not have: refetch the JWKS once and retry."""


class IDTokenValidator:
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
        """The validated claims; raises `IDTokenError` (or `UnknownKeyId`)."""
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
        except (ValueError, TypeError, KeyError) as exc:
            raise IDTokenError(f"malformed: {type(exc).__name__}") from None
        claims = token.claims
        self._check_claims(claims, nonce=nonce, now=now)
        self._check_at_hash(claims, token.header["alg"], access_token)
        return claims

    def _check_claims(self, claims: dict[str, Any], *, nonce: str, now: int) -> None:
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise IDTokenError("exp: expired") from None
        except ClaimError as exc:
            raise IDTokenError(f"{exc.claim}: {exc.error}") from None
        # Step 3 and the former step 4: every audience must be trusted, and we trust only ourselves.
        audiences = [claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"]
        if any(aud != self.client_id for aud in audiences):
            raise IDTokenError("aud: untrusted additional audience")
        # Steps 4-5 (errata 2: "validate per extensions"): a present azp must name us.
        if "azp" in claims and claims["azp"] != self.client_id:
            raise IDTokenError("azp: not this client")
        # Step 10: iat bounds how old a token may be, not only whether it is from the future.
        if claims["iat"] < now - MAX_ID_TOKEN_AGE - self.leeway:
            raise IDTokenError("iat: too old")
        # Step 11; the comparison runs in constant time like every other secret comparison here.
        if not isinstance(claims["nonce"], str) or not secrets.compare_digest(claims["nonce"], nonce):
            raise IDTokenError("nonce: mismatch")

    @staticmethod
    def _check_at_hash(claims: dict[str, Any], alg: str, access_token: str | None) -> None:
        """Section 3.1.3.8: if `at_hash` is present, it must match the access token."""
        at_hash = claims.get("at_hash")
        if at_hash is None:
            return
        expected = create_half_hash(access_token, alg) if access_token else None
        if not isinstance(at_hash, str) or expected is None or not secrets.compare_digest(at_hash, expected.decode()):
            raise IDTokenError("at_hash: mismatch")


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
