"""Access tokens at the door, without I/O: the `Authorization` header, JWT access tokens, DPoP
proofs and introspection answers, each checked by a function that takes values and returns a
result or raises a `BearerError` naming the first rule broken.

The network steps (the provider's keys, its introspection endpoint) are `_provider_bearer`'s; the
caches and the answers are `_resource`'s.

References:
    RFC 6750 (bearer tokens: the header's syntax, the error codes),
    RFC 9068 (JWT access tokens: `typ` at+jwt, `iss`, `aud`, `exp`, `sub`, `client_id`),
    RFC 8707 (resource indicators: the audience is this resource),
    RFC 7662 (introspection: `active`, and the same claims as a JWT),
    RFC 9449 (DPoP: the proof, `cnf.jkt`, `ath`, replay of `jti`),
    RFC 8725 (JWT best current practices: explicit typing, pinned algorithms).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry
from joserfc.jws import JWSRegistry

from ._claims import frozen_claims
from ._exceptions import BearerError, BearerUnavailable, IDTokenError, Reason, UnknownKeyId
from ._tokens import _is_text, _pick_key

__all__: list[str] = []

#: An access token is a few kilobytes at most; more is not a token.
MAX_ACCESS_TOKEN_LENGTH = 16384
#: RFC 9449 section 11.1: proofs are accepted for a short time around their `iat`.
DPOP_PROOF_WINDOW = 60
#: Asymmetric only (RFC 9449 section 4.2: no MAC-based algorithm). Ed25519 is EdDSA's fully
#: specified name (RFC 9864), which newer clients send.
DPOP_ALGORITHMS = (
    "ES256",
    "ES384",
    "ES512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
    "Ed25519",
)
#: RFC 6750 section 2.1: b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_DPOP_KEY_TYPES = frozenset({"EC", "RSA", "OKP"})
#: A proof carries its public key in the header: an RSA-2048 `jwk` alone passes joserfc's default
#: 512-byte header limit, which would refuse every RSA proof. 4 KiB holds an RSA-8192 key.
_DPOP_REGISTRY = JWSRegistry(algorithms=list(DPOP_ALGORITHMS))
_DPOP_REGISTRY.max_header_length = 4096
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclasses.dataclass(frozen=True, slots=True)
class Presented:
    """The token a request brings: its scheme (`bearer` or `dpop`), the token and any DPoP proof."""

    scheme: str
    token: str
    proof: str | None


def presented_token(headers: list[tuple[bytes, bytes]]) -> Presented | None:
    """The access token of a request (RFC 6750 section 2.1, RFC 9449 section 7.1), or `None`.

    `None` for no `Authorization` header or another scheme (`Basic`): no token was presented.
    A malformed one, two of them, or two DPoP proofs is a `BearerError` (`invalid_request`).
    """
    authorization = [value for name, value in headers if name == b"authorization"]
    if not authorization:
        return None
    if len(authorization) > 1:
        raise BearerError("two Authorization headers", error=Reason.BEARER_MALFORMED, status_code=400)
    scheme, _, token = authorization[0].decode("latin-1").strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop"):
        return None
    token = token.strip()
    if not token or len(token) > MAX_ACCESS_TOKEN_LENGTH or not _B64TOKEN.fullmatch(token):
        raise BearerError("the token is not a b64token", error=Reason.BEARER_MALFORMED, status_code=400)
    proofs = [value for name, value in headers if name == b"dpop"]
    if len(proofs) > 1:
        raise BearerError("two DPoP headers", error=Reason.DPOP_INVALID)
    proof = proofs[0].decode("latin-1").strip() if proofs else None
    return Presented(scheme, token, proof)


@dataclasses.dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a valid access token says, from its JWT or from introspection."""

    claims: Mapping[str, Any]
    #: The client the token was issued to (`client_id`; RFC 9068 section 2.2).
    client_id: str
    scopes: tuple[str, ...]
    #: Unix time at which it stops being valid.
    expires_at: float
    #: RFC 7638 thumbprint of the key it is bound to (`cnf.jkt`), or `None` for a bearer token.
    jkt: str | None

    @property
    def subject(self) -> str:
        """`sub`; a client-credentials token's subject may be missing, and is then the client."""
        sub = self.claims.get("sub")
        return sub if isinstance(sub, str) and sub else self.client_id


def token_info(claims: Mapping[str, Any], *, jkt_bound: bool = False) -> TokenInfo:
    """The parts of checked claims the middleware uses (`client_id`, `scope`, `exp`, `cnf`)."""
    client_id = claims.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        # Some providers (Keycloak) name the client in `azp` only.
        client_id = claims.get("azp") if isinstance(claims.get("azp"), str) else ""
    if not client_id:
        raise BearerError("no client_id", error=Reason.BEARER_INVALID)
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise BearerError("scope is not a string", error=Reason.BEARER_INVALID)
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if cnf is not None and not (isinstance(jkt, str) and jkt):
        # A confirmation method we do not support (mTLS `x5t#S256`): the token cannot be used here.
        raise BearerError("bound to something other than a DPoP key", error=Reason.BEARER_INVALID)
    if jkt_bound and jkt is None:
        raise BearerError("introspection says DPoP but gives no cnf.jkt", error=Reason.BEARER_INVALID)
    # Read-only all the way down: the same claims serve every request of a cached token.
    return TokenInfo(frozen_claims(claims), client_id, tuple(scope.split()), float(claims["exp"]), jkt)


class AccessTokenValidator:
    """RFC 9068 section 4: JWT access tokens for this resource, signed by the provider."""

    def __init__(self, *, issuer: str, resource: str, algorithms: Collection[str], leeway: int) -> None:
        self.issuer = issuer
        self.resource = resource
        self.leeway = leeway
        self._registry = JWSRegistry(algorithms=list(algorithms), strict_check_header=False)

    @staticmethod
    def is_jwt(token: str) -> bool:
        """Whether `token` is shaped as a JWT access token (else it is opaque: introspection)."""
        if token.count(".") != 2:
            return False
        try:
            header = _header(token)
        except ValueError:
            return False
        typ = header.get("typ")
        return isinstance(typ, str) and typ.lower().removeprefix("application/") == "at+jwt"

    def validate(self, raw: str, keys: Any, *, now: float) -> TokenInfo:
        """The checked token; `BearerError` (or `UnknownKeyId`, to refetch the keys once)."""
        try:
            token = jwt.decode(raw, lambda obj: _pick_key(keys, obj.headers()), registry=self._registry)
        except UnknownKeyId:
            raise
        except IDTokenError as exc:  # _pick_key: no usable key
            raise BearerError(exc.detail, error=Reason.BEARER_INVALID) from None
        except JoseError as exc:
            raise BearerError(f"signature: {exc.error}", error=Reason.BEARER_INVALID) from None
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise BearerError(f"malformed: {type(exc).__name__}", error=Reason.BEARER_INVALID) from None
        claims = token.claims
        if not isinstance(claims, dict) or not _is_text(claims):
            raise BearerError("malformed claims", error=Reason.BEARER_INVALID)
        typ = token.header.get("typ")
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") != "at+jwt":
            # RFC 9068 section 4 and RFC 8725 section 3.11: an ID token is no access token.
            raise BearerError("typ is not at+jwt", error=Reason.BEARER_INVALID)
        check_claims(claims, issuer=self.issuer, resource=self.resource, now=now, leeway=self.leeway)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or claims.get("iat") is None:
            # RFC 9068 section 2.2: both are required; an empty `sub` would pass for the client.
            raise BearerError("sub or iat missing (RFC 9068 section 2.2)", error=Reason.BEARER_INVALID)
        return token_info(claims)


def check_claims(claims: Mapping[str, Any], *, issuer: str | None, resource: str, now: float, leeway: int) -> None:
    """What a JWT access token and an introspection answer share: issuer, audience and lifetime."""
    if issuer is not None and claims.get("iss") != issuer:
        raise BearerError("iss is not our provider", error=Reason.BEARER_INVALID)
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if resource not in audiences:
        # RFC 8707 / RFC 9068 section 4: a token for another API must not open this one.
        raise BearerError("aud does not name this resource", error=Reason.BEARER_AUDIENCE)
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise BearerError("exp missing", error=Reason.BEARER_INVALID)
    if exp <= now - leeway:
        raise BearerError("expired", error=Reason.BEARER_EXPIRED)
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise BearerError("not valid yet (nbf)", error=Reason.BEARER_INVALID)
    _numeric_date(claims, "iat")
    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise BearerError("sub is not a string", error=Reason.BEARER_INVALID)


def check_introspection(data: Any, *, issuer: str, resource: str, now: float, leeway: int) -> TokenInfo:
    """RFC 7662 section 2.2: an active token for this resource, with its claims."""
    if not isinstance(data, dict) or not isinstance(data.get("active"), bool):
        # The provider's trouble, not the token's: a 503 the client retries, not a 401.
        raise BearerUnavailable("introspection answer has no active member", error=Reason.INTROSPECTION_UNAVAILABLE)
    if not data["active"]:
        raise BearerError("inactive (revoked, expired or unknown)", error=Reason.BEARER_INACTIVE)
    if not _is_text(data):
        raise BearerError("malformed introspection answer", error=Reason.BEARER_INVALID)
    # `iss` is optional in an introspection answer; when present it must be ours.
    check_claims(data, issuer=issuer if "iss" in data else None, resource=resource, now=now, leeway=leeway)
    token_type = data.get("token_type")
    bound = isinstance(token_type, str) and token_type.lower() == "dpop"
    claims = {k: v for k, v in data.items() if k not in ("active", "token_type")}
    return token_info(claims, jkt_bound=bound)


def check_dpop_proof(
    proof: str | None, *, method: str, url: str, access_token: str, jkt: str, now: float, leeway: int
) -> tuple[str, float]:
    """RFC 9449 section 4.3 (and 7.1 for `ath`): the proof's `(jti, iat)` if it is valid for this
    request, this token and the key the token is bound to; else `BearerError` (`dpop_invalid`)."""
    if not proof:
        raise BearerError("no DPoP proof", error=Reason.DPOP_INVALID)
    if len(proof) > MAX_ACCESS_TOKEN_LENGTH or proof.count(".") != 2:
        raise BearerError("the proof is not a JWS", error=Reason.DPOP_INVALID)
    try:
        header = _header(proof)
    except ValueError:
        raise BearerError("the proof's header does not decode", error=Reason.DPOP_INVALID) from None
    if header.get("typ") != "dpop+jwt":
        raise BearerError("typ is not dpop+jwt", error=Reason.DPOP_INVALID)
    alg = header.get("alg")
    jwk = header.get("jwk")
    if alg not in DPOP_ALGORITHMS or not isinstance(jwk, dict) or _PRIVATE_MEMBERS.intersection(jwk):
        raise BearerError("alg not allowed, or no public jwk", error=Reason.DPOP_INVALID)
    kty = jwk.get("kty")
    try:
        if kty not in _DPOP_KEY_TYPES:
            raise ValueError("kty")
        key = JWKRegistry.import_key(jwk, str(kty))
        thumbprint = key.thumbprint()
        # `alg` is one of DPOP_ALGORITHMS (checked above), and a key of another type fails here.
        token = jwt.decode(proof, key, registry=_DPOP_REGISTRY)
    except (JoseError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise BearerError(f"the proof does not verify: {type(exc).__name__}", error=Reason.DPOP_INVALID) from None
    if not secrets.compare_digest(thumbprint.encode(), jkt.encode("utf-8", "surrogatepass")):
        raise BearerError("the proof's key is not the token's (cnf.jkt)", error=Reason.DPOP_INVALID)
    claims = token.claims
    jti, iat = claims.get("jti"), claims.get("iat")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 256:
        raise BearerError("jti missing", error=Reason.DPOP_INVALID)
    if claims.get("htm") != method:
        raise BearerError("htm is not this request's method", error=Reason.DPOP_INVALID)
    if not isinstance(claims.get("htu"), str) or not same_target(claims["htu"], url):
        raise BearerError("htu is not this request's URL", error=Reason.DPOP_INVALID)
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise BearerError("iat missing", error=Reason.DPOP_INVALID)
    if not now - DPOP_PROOF_WINDOW - leeway <= iat <= now + leeway:
        raise BearerError("iat outside the accepted window", error=Reason.DPOP_INVALID)
    ath = base64.urlsafe_b64encode(hashlib.sha256(access_token.encode("ascii")).digest()).rstrip(b"=")
    if not isinstance(claims.get("ath"), str) or not secrets.compare_digest(
        claims["ath"].encode("utf-8", "surrogatepass"), ath
    ):
        raise BearerError("ath is not this token's hash", error=Reason.DPOP_INVALID)
    return jti, float(iat)


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """RFC 7519 section 2: a NumericDate claim as a finite number, `None` when absent.

    A string, a boolean, NaN, an infinity or an integer too large for a float is malformed: NaN
    compares false with everything (an `exp` of NaN would never expire) and the others would
    slip past the comparisons or fail later, outside any check.
    """
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BearerError(f"{name} is not a number", error=Reason.BEARER_INVALID)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise BearerError(f"{name} is not a finite number", error=Reason.BEARER_INVALID)
    return number


def same_target(htu: str, url: str) -> bool:
    """RFC 9449 section 4.3 step 9: the URIs compared without query and fragment, with the
    scheme and host case-insensitive and a default port left out (RFC 3986 section 6.2.3)."""
    try:
        a, b = urlsplit(htu), urlsplit(url)
        return (
            a.scheme.lower() == b.scheme.lower()
            and (a.hostname or "") == (b.hostname or "")
            and _port(a.port, a.scheme) == _port(b.port, b.scheme)
            and (a.path or "/") == (b.path or "/")
        )
    except ValueError:
        return False


def _port(port: int | None, scheme: str) -> int | None:
    return port if port is not None else {"https": 443, "http": 80}.get(scheme.lower())


def _header(token: str) -> dict[str, Any]:
    """A JWS's protected header, decoded without verifying anything (to route or reject it)."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError) as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValueError("header") from exc
    if not isinstance(header, dict):
        raise ValueError("header")
    return header


class ExpiringCache:
    """A bounded map whose entries end at their own deadline (verified tokens, introspection
    answers, seen DPoP `jti`s). Oldest first out when full; a hit costs one dictionary lookup."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._max_entries = max_entries

    def get(self, key: str, now: float) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, value: Any, until: float) -> None:
        self._entries[key] = (until, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def add_new(self, key: str, until: float, now: float) -> bool | None:
        """Record `key` until `until`; `False` if it was recorded and is still live (a replay), `None`
        if it cannot be recorded: full of live entries. A replay record is never evicted early, or
        a flood of fresh keys would make an old one new again."""
        if self.get(key, now) is not None:
            return False
        while self._entries and next(iter(self._entries.values()))[0] <= now:
            self._entries.popitem(last=False)  # expired ones first (oldest first, as they were added)
        if len(self._entries) >= self._max_entries:
            return None
        self.put(key, True, until)
        return True

    def __len__(self) -> int:
        return len(self._entries)
