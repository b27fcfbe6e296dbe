"""The OAuth 2.0 / OpenID Connect pieces `FakeProvider` is built from: grants and codes, the
signing key, PKCE and client-authentication checks, error answers, and the browser's transport.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import secrets
import string
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import httpx
from joserfc.jwk import RSAKey
from starlette.responses import JSONResponse, Response

__all__: list[str] = []

#: RFC 7636 section 4.1: the verifier's alphabet; an S256 challenge is 43 characters of base64url.
PKCE_ALPHABET = frozenset(string.ascii_letters + string.digits + "-._~")
#: Seconds an authorization code can be redeemed.
CODE_LIFETIME = 60.0


@dataclasses.dataclass(frozen=True)
class Grant:
    """What the user allowed at the authorization endpoint; a code or refresh token redeems it."""

    client_id: str
    sub: str
    claims: dict[str, Any]
    scopes: tuple[str, ...]
    sid: str
    auth_time: int


@dataclasses.dataclass(frozen=True)
class Code:
    grant: Grant
    redirect_uri: str
    challenge: str
    nonce: str | None
    expires_at: float


@functools.cache
def signing_key() -> RSAKey:
    # Generated once per process: RSA key generation is the slowest step of a test otherwise.
    return RSAKey.generate_key(2048, parameters={"kid": "fake-provider-1", "use": "sig", "alg": "RS256"}, private=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def is_s256_challenge(challenge: str) -> bool:
    return len(challenge) == 43 and PKCE_ALPHABET.issuperset(challenge)


def verifier_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 section 4.6, S256: the verifier is well formed and hashes to the challenge."""
    if not (43 <= len(verifier) <= 128 and PKCE_ALPHABET.issuperset(verifier)):
        return False
    return secrets.compare_digest(b64url(hashlib.sha256(verifier.encode("ascii")).digest()), challenge)


def at_hash(access_token: str) -> str:
    """OIDC Core 3.1.3.6: the left half of the SHA-256 of the access token."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest()[:16])


def client_credentials(authorization: str | None, form: Mapping[str, str]) -> tuple[str, str | None] | None:
    """The client id and secret a token request authenticates with (RFC 6749 section 2.3.1),
    basic or post; `None` when the header is malformed or both methods are used at once."""
    if authorization is not None and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
        except ValueError:
            return None
        client_id, _, secret = decoded.partition(":")
        if "client_secret" in form:
            return None  # one authentication method per request
        # Both halves are form-encoded before they are joined.
        return unquote_plus(client_id), unquote_plus(secret)
    return form.get("client_id", ""), form.get("client_secret")


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment


def oauth_error(error: str, description: str, *, status_code: int = 400) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status_code,
        headers={"Cache-Control": "no-store", **({"WWW-Authenticate": "Basic"} if status_code == 401 else {})},
    )


class OriginRouter(httpx.AsyncBaseTransport):
    """Sends each request to the transport of its origin, the rest to `default`."""

    def __init__(
        self, routes: Mapping[tuple[str, bytes], httpx.AsyncBaseTransport], default: httpx.AsyncBaseTransport
    ) -> None:
        self._routes = dict(routes)
        self._default = default

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._routes.get((request.url.scheme, request.url.netloc), self._default)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (*self._routes.values(), self._default):
            await transport.aclose()
