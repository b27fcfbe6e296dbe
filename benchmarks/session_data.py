"""Realistic session contents, and the Starlette SessionMiddleware cookie holding the same data.

A typical provider's login: profile claims, an ~800-character access token and an ~900-character
ID token (JWT-shaped, with random signature parts; nothing here validates them), as a token
endpoint returns them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
from typing import Any

import itsdangerous

ISSUER = "https://op.example"
CLIENT_ID = "bench"
SCOPES = ("openid", "profile", "email")
ACCESS_TOKEN_LIFETIME = 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def fake_jwt(length: int, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A JWT-shaped string of exactly `length` characters (the signature part fills up the rest)."""
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    missing = length - len(head) - len(body) - 2
    if missing < 16:
        raise ValueError(f"a JWT of {length} characters cannot hold this payload")
    return f"{head}.{body}.{_b64(os.urandom(missing))[:missing]}"


@dataclasses.dataclass(frozen=True)
class SessionData:
    """What a finished login knows: the ID token's claims and the token endpoint's answer."""

    claims: dict[str, Any]
    access_token: str
    id_token: str
    created_at: int

    @property
    def token(self) -> dict[str, Any]:
        """The token endpoint's answer (no refresh token, so nothing ever calls a provider)."""
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "id_token": self.id_token,
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "scope": " ".join(SCOPES),
        }


def realistic_session(now: int) -> SessionData:
    """Profile claims as a typical provider returns them, an ~800-char access and ~900-char ID token."""
    sub = "248289761001"
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": sub,
        "aud": CLIENT_ID,
        "exp": now + 300,
        "iat": now,
        "auth_time": now - 5,
        "sid": "b1a3c5e7-9d2f-4b6a-8c0e-1f3a5b7d9e2c",
        "name": "Jane Q. Doe",
        "given_name": "Jane",
        "family_name": "Doe",
        "preferred_username": "jane.doe",
        "email": "jane.doe@example.com",
        "email_verified": True,
        "groups": ["staff", "engineering"],
        "locale": "en-GB",
        "picture": "https://op.example/avatars/248289761001.png",
    }
    jwt_header = {"alg": "RS256", "typ": "JWT", "kid": "2024-11-rsa-1"}
    access_token = fake_jwt(
        800,
        {**jwt_header, "typ": "at+jwt"},
        {
            "iss": ISSUER,
            "sub": sub,
            "aud": "https://api.example",
            "client_id": CLIENT_ID,
            "exp": now + ACCESS_TOKEN_LIFETIME,
            "iat": now,
            "jti": secrets.token_hex(16),
            "scope": " ".join(SCOPES),
            "sid": claims["sid"],
        },
    )
    id_token = fake_jwt(
        900, jwt_header, {**claims, "nonce": secrets.token_urlsafe(24), "at_hash": secrets.token_urlsafe(16)}
    )
    return SessionData(claims=claims, access_token=access_token, id_token=id_token, created_at=now)


def starlette_cookie(secret_key: str, data: SessionData, target_length: int) -> str:
    """A SessionMiddleware cookie holding the same data, within 4 characters of `target_length`.

    Encoded the way SessionMiddleware does it: `TimestampSigner.sign(b64encode(json.dumps(session)))`.
    Its JSON is less compact than the sealed one (default separators, longer keys), so the access
    token's signature part is shortened, or a CSRF-token-like string added, until both middlewares
    parse cookies of the same size.
    """
    signer = itsdangerous.TimestampSigner(secret_key)

    def encode(trim: int, padding: int) -> str:
        # Like the sealed session, the claims travel once, inside the ID token.
        session: dict[str, Any] = {
            "access_token": data.access_token[: len(data.access_token) - trim],
            "id_token": data.id_token,
            "scope": " ".join(SCOPES),
            "access_expires_at": data.created_at + ACCESS_TOKEN_LIFETIME,
            "login_at": data.created_at,
        }
        if padding:
            session["csrf"] = "x" * padding
        return signer.sign(base64.b64encode(json.dumps(session).encode("utf-8"))).decode("utf-8")

    trim = padding = 0
    value = encode(trim, padding)
    while len(value) > target_length:
        trim += 1
        value = encode(trim, padding)
    while len(value) < target_length - 3:  # base64 grows in steps of 4 characters
        padding += 1
        value = encode(trim, padding)
    if trim > len(data.access_token) // 4:
        raise ValueError("the SessionMiddleware cookie cannot be brought to the target length")
    return value
