"""A scriptable, in-process OpenID Provider that misbehaves on request.

`HostileProvider` is an ASGI app (Starlette) that serves discovery, a JWKS and a token
endpoint, signs ID tokens with joserfc, and records every request it gets. Plug it into the
middleware with `PKCEMiddleware(app, config=..., transport=httpx.ASGITransport(app=hostile))`.

It has no login UI: a test plays the browser, reads `nonce` and `code_challenge` from the
authorization URL the middleware redirected to, and calls `issue_code(...)` to get the `code`
the provider would have sent back. By default the provider behaves correctly (it even enforces
PKCE and single-use codes); each test then sets a few attributes to make it lie:

* `claim_overrides` / `header_overrides`: replace ID token claims or header members
  (`REMOVE` deletes one);
* `id_token_encoder`: build the ID token by hand (`unsigned`, `hs256_with_public_key`, ...);
* `discovery_issuer`, `iss_parameter_supported`, `metadata_overrides`: lie in discovery;
* `rotate_key()`, `jwks_keys`, `signing_key`: key rotation and key set tricks; `jwks_extra`
  appends raw JWK members (keys that do not import), `jwks_behaviour` (`"ok"`, `"error_500"`)
  makes the JWKS endpoint fail;
* `raw_bodies`: a body to serve (HTTP 200, JSON media type) instead of the real answer of
  `"discovery"`, `"jwks"`, `"token"`, `"refresh"` or `"userinfo"` (e.g. `deeply_nested()`);
* `token_behaviour` (`"ok"`, `"error_500"`, `"garbage"`, `"hang"`, `"invalid_grant"`) and
  `token_overrides`: a failing or incomplete token endpoint.

The userinfo endpoint (OIDC Core 5.3, `/userinfo`, named in discovery as `userinfo_endpoint`)
answers for the user of the access token it is given (HTTP 401 for an unknown one): `sub`,
`name` ("Alice Example") and `email` (`<sub>@example.test`) by default, then
`userinfo_overrides` (e.g. another `sub`, or an `acr` it has no business sending; `REMOVE`
deletes one). Its knobs:

* `userinfo_format`: `"json"` (default), `"jwt"` (`application/jwt`, signed with
  `userinfo_signing_key` or else the provider's key, `iss` and `aud` added, header
  `userinfo_header_overrides`; `userinfo_jwt_encoder` builds it by hand like `id_token_encoder`)
  or `"jwe"` (`application/jwt`, five parts: encrypted to a client key, as a client that registered
  `userinfo_encrypted_response_alg` would get it);
* `userinfo_behaviour` (`"ok"`, `"error_500"`, `"error_401"`, `"garbage"`, `"hang"`);
* `userinfo_requests` records the `Authorization` header of every userinfo request, and
  `calls["userinfo"]` counts them.

Refresh (`grant_type=refresh_token`) has its own knobs, so a test can log in normally and then
make only the refresh fail. Every login answer carries a refresh token (`issue_refresh_tokens`);
`issue_refresh_token(...)` mints one without a login. A refresh token is single use when
`rotate_refresh_tokens` is on (the default, as for public clients at most providers):

* `refresh_behaviour` (the same values as `token_behaviour`) and `refresh_delay` (a slow but
  successful refresh, for single-flight tests);
* `refresh_issues_id_token`, `refresh_claim_overrides` (e.g. another `sub`, `iss` or `aud`) and
  `refresh_overrides` (members of the refresh answer).

`calls["token"]` counts code redemptions, `calls["refresh"]` refresh grants and
`calls["refresh_invalid_grant"]` refresh tokens refused as unknown or already used (a replay).
`logout_token(...)` signs a back-channel logout token with the provider's current key.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qs

from authlib.oidc.core.util import create_half_hash
from joserfc import jwe
from joserfc.jwk import Key, RSAKey
from joserfc.jws import JWSRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_ISSUER",
    "REMOVE",
    "HostileProvider",
    "IDTokenEncoder",
    "JWKSBehaviour",
    "TokenBehaviour",
    "TokenRequest",
    "UserinfoBehaviour",
    "UserinfoFormat",
    "access_token_claims",
    "b64url",
    "deeply_nested",
    "hs256_with_public_key",
    "rsa_key",
    "sign_compact",
    "sign_raw",
    "tamper_signature",
    "unsigned",
]

DEFAULT_ISSUER = "https://op.test"
DEFAULT_CLIENT_ID = "app-client"
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"

TokenBehaviour = Literal["ok", "error_500", "garbage", "hang", "invalid_grant"]
JWKSBehaviour = Literal["ok", "error_500"]
UserinfoBehaviour = Literal["ok", "error_500", "error_401", "garbage", "hang"]
UserinfoFormat = Literal["json", "jwt", "jwe"]
#: Builds the compact ID token from the (already overridden) header and claims.
IDTokenEncoder = Callable[[dict[str, Any], dict[str, Any]], str]


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


#: Value for `claim_overrides`, `header_overrides` and `token_overrides` that deletes the member.
REMOVE: Any = _Remove()


@functools.cache
def rsa_key(kid: str) -> RSAKey:
    """A 2048-bit RSA signing key, generated once per process for each `kid` (keygen is slow)."""
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)


@functools.cache
def _client_encryption_key() -> RSAKey:
    """The key a client would have registered for encrypted userinfo answers (never ours to read)."""
    return RSAKey.generate_key(2048, parameters={"kid": "client-enc", "use": "enc"}, private=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_compact(header: dict[str, Any], claims: dict[str, Any], key: Key) -> str:
    """A JWS compact serialization signed with joserfc's algorithm for `header["alg"]`.

    Unlike `joserfc.jwt.encode`, this puts any header members in as they are (`crit`, `jwk`, ...):
    a hostile provider does not validate what it sends.
    """
    return sign_raw(header, _json(claims), key)


def sign_raw(header: dict[str, Any], payload: bytes, key: Key) -> str:
    """Like `sign_compact`, with any bytes as the payload (validly signed, so only parsing can refuse it)."""
    signing_input = f"{b64url(_json(header))}.{b64url(payload)}"
    signature = JWSRegistry.algorithms[header["alg"]].sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{b64url(signature)}"


def deeply_nested(depth: int = 100_000) -> bytes:
    """JSON arrays opened `depth` deep: `json.loads` gives up with RecursionError, not ValueError."""
    return b"[" * depth


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """`alg: none`, empty signature (the RFC 7519 section 6.1 "Unsecured JWT")."""
    header = {key: value for key, value in header.items() if key != "kid"}
    header["alg"] = "none"
    return f"{b64url(_json(header))}.{b64url(_json(claims))}."


def hs256_with_public_key(key: RSAKey) -> IDTokenEncoder:
    """An encoder for the classic key confusion: HMAC-SHA256 keyed with the RSA public key's PEM."""
    pem = key.as_pem(private=False)

    def encode(header: dict[str, Any], claims: dict[str, Any]) -> str:
        header = {**header, "alg": "HS256"}
        signing_input = f"{b64url(_json(header))}.{b64url(_json(claims))}"
        return f"{signing_input}.{b64url(hmac.digest(pem, signing_input.encode('ascii'), 'sha256'))}"

    return encode


def tamper_signature(token: str) -> str:
    """The same token with its signature's first character changed.

    The first character carries six full bits; changing the last one may only touch padding bits
    and leave the decoded signature, and so its validity, unchanged.
    """
    signing_input, signature = token.rsplit(".", 1)
    first = "B" if signature[0] == "A" else "A"
    return f"{signing_input}.{first}{signature[1:]}"


def access_token_claims(
    issuer: str, audience: str, jti: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The claims of an RFC 9068 access token from `issuer` for `audience`: `alice`'s, through the
    client `agent`, with the scope `api:read api:write`, issued now for five minutes.

    `overrides` replace claims or add others; `REMOVE` deletes one.
    """
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "exp": now + 300,
        "iat": now,
        "sub": "alice",
        "client_id": "agent",
        "scope": "api:read api:write",
        "jti": jti,
    }
    return _apply(claims, overrides or {})


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _apply(target: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for name, value in overrides.items():
        if value is REMOVE:
            result.pop(name, None)
        else:
            result[name] = value
    return result


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    """What arrived at the token endpoint."""

    form: dict[str, list[str]]
    authorization: str | None
    content_type: str | None

    def one(self, name: str) -> str:
        """The single value of form field `name` (fails the test if absent or repeated)."""
        values = self.form.get(name, [])
        assert len(values) == 1, f"{name!r} sent {len(values)} times"
        return values[0]


@dataclasses.dataclass(frozen=True)
class _Grant:
    nonce: str
    challenge: str
    challenge_method: str
    sub: str


@dataclasses.dataclass(frozen=True)
class _RefreshGrant:
    sub: str
    auth_time: int


class HostileProvider:
    """See the module docstring. Every attribute may be changed between requests."""

    def __init__(self, *, issuer: str = DEFAULT_ISSUER, client_id: str = DEFAULT_CLIENT_ID) -> None:
        self.issuer = issuer
        self.client_id = client_id
        # Discovery
        self.discovery_issuer: str | None = None
        self.iss_parameter_supported = True
        self.metadata_overrides: dict[str, Any] = {}
        # Keys
        self.signing_key: Key = rsa_key("op-key-1")
        self.jwks_keys: list[Key] = [self.signing_key]
        self.jwks_extra: list[Any] = []
        self.jwks_behaviour: JWKSBehaviour = "ok"
        self.raw_bodies: dict[str, bytes] = {}
        # ID token
        self.sub = "alice"
        #: The `sid` claim of ID tokens (and default of logout tokens); `None` leaves it out.
        self.sid: str | None = None
        self.claim_overrides: dict[str, Any] = {}
        self.header_overrides: dict[str, Any] = {}
        self.id_token_encoder: IDTokenEncoder | None = None
        # Token endpoint
        self.token_behaviour: TokenBehaviour = "ok"
        #: Far above the 0.5 s timeouts tests configure, so "cut off, not waited for" holds on a busy machine.
        self.hang_seconds = 2.0
        self.token_overrides: dict[str, Any] = {}
        # Refresh
        self.issue_refresh_tokens = True
        self.rotate_refresh_tokens = True
        self.refresh_behaviour: TokenBehaviour = "ok"
        self.refresh_delay = 0.0
        self.refresh_issues_id_token = True
        self.refresh_claim_overrides: dict[str, Any] = {}
        self.refresh_overrides: dict[str, Any] = {}
        # Userinfo
        self.userinfo_overrides: dict[str, Any] = {}
        self.userinfo_format: UserinfoFormat = "json"
        self.userinfo_behaviour: UserinfoBehaviour = "ok"
        #: Signs `"jwt"` answers; `None`: the provider's `signing_key` (so a test may pass a foreign key).
        self.userinfo_signing_key: Key | None = None
        self.userinfo_header_overrides: dict[str, Any] = {}
        self.userinfo_jwt_encoder: IDTokenEncoder | None = None
        self.userinfo_requests: list[str | None] = []
        # Records
        self.calls: Counter[str] = Counter()
        self.token_requests: list[TokenRequest] = []
        self.issued_id_tokens: list[str] = []
        self.issued_access_tokens: list[str] = []
        self.issued_refresh_tokens: list[str] = []
        self._grants: dict[str, _Grant] = {}
        self._refresh_grants: dict[str, _RefreshGrant] = {}
        #: access token -> the `sub` it was issued for (what the userinfo endpoint answers about).
        self._access_subjects: dict[str, str] = {}
        self._app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery, methods=["GET"]),
                Route("/jwks", self._jwks, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/authorize", self._authorize, methods=["GET"]),
                Route("/userinfo", self._userinfo, methods=["GET"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    # -- what tests call ---------------------------------------------------------------------

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/authorize"

    @property
    def last_token_request(self) -> TokenRequest:
        assert self.token_requests, "no token request was made"
        return self.token_requests[-1]

    def issue_code(self, *, nonce: str, challenge: str, challenge_method: str = "S256", sub: str | None = None) -> str:
        """Register a completed authorization (what the login UI would do) and return its code."""
        code = secrets.token_urlsafe(24)
        self._grants[code] = _Grant(nonce, challenge, challenge_method, self.sub if sub is None else sub)
        return code

    def issue_refresh_token(self, *, sub: str | None = None, auth_time: int | None = None) -> str:
        """A valid refresh token for `sub`, as if a login (at `auth_time`) had just got it."""
        auth_time = int(time.time()) - 5 if auth_time is None else auth_time
        return self._new_refresh_token(_RefreshGrant(self.sub if sub is None else sub, auth_time))

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token issued so far is refused from now on (the user logged out at the OP)."""
        self._refresh_grants.clear()

    def logout_token(
        self,
        *,
        sub: str | None = None,
        sid: str | None = None,
        claim_overrides: dict[str, Any] | None = None,
        header_overrides: dict[str, Any] | None = None,
        key: Key | None = None,
    ) -> str:
        """A back-channel logout token (Back-Channel Logout 1.0 section 2.4) signed with `key`.

        `sub` defaults to `self.sub` and `sid` to `self.sid` (left out when `None`).
        """
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.sub if sub is None else sub,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        }
        sid = self.sid if sid is None else sid
        if sid is not None:
            claims["sid"] = sid
        signing_key = self.signing_key if key is None else key
        header = {"alg": "RS256", "typ": "logout+jwt", "kid": signing_key.kid}
        claims = _apply(claims, claim_overrides or {})
        header = _apply(header, header_overrides or {})
        return sign_compact(header, claims, signing_key)

    def rotate_key(self, kid: str = "op-key-2") -> Key:
        """Sign with a new key from now on and publish only that one."""
        self.signing_key = rsa_key(kid)
        self.jwks_keys = [self.signing_key]
        return self.signing_key

    def metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "issuer": self.issuer if self.discovery_issuer is None else self.discovery_issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "end_session_endpoint": f"{self.issuer}/logout",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "code_challenge_methods_supported": ["S256"],
            # A hostile provider happily advertises what the client must never accept.
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "HS256", "none"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "authorization_response_iss_parameter_supported": self.iss_parameter_supported,
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
        }
        return _apply(data, self.metadata_overrides)

    def id_token_for(
        self,
        grant_nonce: str | None,
        sub: str,
        access_token: str,
        *,
        auth_time: int | None = None,
        extra_overrides: dict[str, Any] | None = None,
    ) -> str:
        """An ID token; without `grant_nonce` it has no `nonce` (as a refreshed one, Core 12.2)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": self.client_id,
            "exp": now + 300,
            "iat": now,
            "auth_time": now - 5 if auth_time is None else auth_time,
            "nonce": grant_nonce,
            "at_hash": create_half_hash(access_token, "RS256").decode("ascii"),
            "name": "Alice Example",
        }
        if grant_nonce is None:
            del claims["nonce"]
        if self.sid is not None:
            claims["sid"] = self.sid
        header = {"alg": "RS256", "typ": "JWT", "kid": self.signing_key.kid}
        claims = _apply(_apply(claims, self.claim_overrides), extra_overrides or {})
        header = _apply(header, self.header_overrides)
        if self.id_token_encoder is not None:
            return self.id_token_encoder(header, claims)
        return sign_compact(header, claims, self.signing_key)

    # -- endpoints ---------------------------------------------------------------------------

    async def _discovery(self, request: Request) -> Response:
        self.calls["discovery"] += 1
        return self._raw("discovery") or JSONResponse(self.metadata())

    async def _jwks(self, request: Request) -> Response:
        self.calls["jwks"] += 1
        if self.jwks_behaviour == "error_500":
            return PlainTextResponse("Internal Server Error", status_code=500)
        keys = [key.as_dict(private=False) for key in self.jwks_keys]
        return self._raw("jwks") or JSONResponse({"keys": [*keys, *self.jwks_extra]})

    async def _authorize(self, request: Request) -> Response:
        self.calls["authorize"] += 1
        return PlainTextResponse("a login form would be here")

    async def _token(self, request: Request) -> Response:
        body = (await request.body()).decode("utf-8")
        self.token_requests.append(
            TokenRequest(
                form=parse_qs(body, keep_blank_values=True),
                authorization=request.headers.get("authorization"),
                content_type=request.headers.get("content-type"),
            )
        )
        if self.token_requests[-1].form.get("grant_type") == ["refresh_token"]:
            return await self._refresh()
        self.calls["token"] += 1
        failure = await self._misbehave(self.token_behaviour, "the code is not valid")
        if failure is not None:
            return failure
        raw = self._raw("token")
        if raw is not None:
            return raw

        form = self.token_requests[-1].form
        grant = self._grants.pop(form.get("code", [""])[0], None)  # single use, as RFC 6749 4.1.2 asks
        if grant is None or form.get("grant_type") != ["authorization_code"]:
            return _oauth_error("invalid_grant", "unknown or used code")
        verifier = form.get("code_verifier", [""])[0]
        if grant.challenge_method != "S256" or b64url(hashlib.sha256(verifier.encode()).digest()) != grant.challenge:
            return _oauth_error("invalid_grant", "PKCE verification failed")

        access_token = secrets.token_urlsafe(32)
        auth_time = int(time.time()) - 5
        id_token = self.id_token_for(grant.nonce, grant.sub, access_token, auth_time=auth_time)
        self.issued_access_tokens.append(access_token)
        self._access_subjects[access_token] = grant.sub
        self.issued_id_tokens.append(id_token)
        answer = {"access_token": access_token, "token_type": "Bearer", "expires_in": 300, "id_token": id_token}
        if self.issue_refresh_tokens:
            answer["refresh_token"] = self._new_refresh_token(_RefreshGrant(grant.sub, auth_time))
        return JSONResponse(_apply(answer, self.token_overrides), headers={"Cache-Control": "no-store"})

    async def _refresh(self) -> Response:
        self.calls["refresh"] += 1
        failure = await self._misbehave(self.refresh_behaviour, "the refresh token is not valid")
        if failure is not None:
            return failure
        raw = self._raw("refresh")
        if raw is not None:
            return raw
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        presented = self.token_requests[-1].form.get("refresh_token", [""])[0]
        grant = self._refresh_grants.get(presented)
        if grant is None:
            self.calls["refresh_invalid_grant"] += 1
            return _oauth_error("invalid_grant", "unknown, revoked or already used refresh token")
        access_token = secrets.token_urlsafe(32)
        self.issued_access_tokens.append(access_token)
        self._access_subjects[access_token] = grant.sub
        answer: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer", "expires_in": 300}
        if self.rotate_refresh_tokens:
            del self._refresh_grants[presented]  # single use: a second redemption is a replay
            answer["refresh_token"] = self._new_refresh_token(grant)
        if self.refresh_issues_id_token:
            id_token = self.id_token_for(
                None, grant.sub, access_token, auth_time=grant.auth_time, extra_overrides=self.refresh_claim_overrides
            )
            self.issued_id_tokens.append(id_token)
            answer["id_token"] = id_token
        return JSONResponse(_apply(answer, self.refresh_overrides), headers={"Cache-Control": "no-store"})

    async def _userinfo(self, request: Request) -> Response:
        self.calls["userinfo"] += 1
        authorization = request.headers.get("authorization")
        self.userinfo_requests.append(authorization)
        if self.userinfo_behaviour == "hang":
            await asyncio.sleep(self.hang_seconds)
        elif self.userinfo_behaviour == "error_500":
            return PlainTextResponse("Internal Server Error", status_code=500)
        elif self.userinfo_behaviour == "garbage":
            return Response(b"<html>\x00\xff not json", status_code=200, media_type="application/json")
        raw = self._raw("userinfo")
        if raw is not None:
            return raw
        scheme, _, token = (authorization or "").partition(" ")
        sub = self._access_subjects.get(token) if scheme.lower() == "bearer" else None
        if sub is None or self.userinfo_behaviour == "error_401":
            # RFC 6750 section 3.1: what a provider answers for a missing, unknown or expired token.
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        claims: dict[str, Any] = {"sub": sub, "name": "Alice Example", "email": f"{sub}@example.test"}
        if self.userinfo_format == "json":
            return JSONResponse(_apply(claims, self.userinfo_overrides))
        if self.userinfo_format == "jwe":
            protected = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "cty": "JWT"}
            plaintext = _json(_apply(claims, self.userinfo_overrides))
            registry = jwe.JWERegistry(algorithms=["RSA-OAEP-256", "A256GCM"])
            body = jwe.encrypt_compact(protected, plaintext, _client_encryption_key(), registry=registry)
            return Response(body, media_type="application/jwt")
        # Core 5.3.2: a signed answer SHOULD carry iss and aud (overridable, or REMOVE-able, like the rest).
        signed = _apply({"iss": self.issuer, "aud": self.client_id, **claims}, self.userinfo_overrides)
        key = self.userinfo_signing_key if self.userinfo_signing_key is not None else self.signing_key
        header = _apply({"alg": "RS256", "typ": "JWT", "kid": key.kid}, self.userinfo_header_overrides)
        encoder = self.userinfo_jwt_encoder
        body = encoder(header, signed) if encoder is not None else sign_compact(header, signed, key)
        return Response(body, media_type="application/jwt")

    async def _misbehave(self, behaviour: TokenBehaviour, description: str) -> Response | None:
        """The scripted failure of `behaviour`, or `None` to answer normally (after a hang)."""
        if behaviour == "hang":
            await asyncio.sleep(self.hang_seconds)
        elif behaviour == "error_500":
            return PlainTextResponse("Internal Server Error", status_code=500)
        elif behaviour == "garbage":
            return Response(b"<html>\x00\xff not json", status_code=200, media_type="application/json")
        elif behaviour == "invalid_grant":
            return _oauth_error("invalid_grant", description)
        return None

    def _raw(self, endpoint: str) -> Response | None:
        body = self.raw_bodies.get(endpoint)
        return None if body is None else Response(body, media_type="application/json")

    def _new_refresh_token(self, grant: _RefreshGrant) -> str:
        token = secrets.token_urlsafe(32)
        self._refresh_grants[token] = grant
        self.issued_refresh_tokens.append(token)
        return token


def _oauth_error(error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)
