"""How `SessionCodec` lays a session out in its sealed value, and that every layout opens.

The claims usually are the ID token's payload; they are sealed once, as the JSON text the provider
signed (so opening parses them with the rest of the session, not again from the token's base64),
and the token is put back around them, character for character. Values sealed before that, which
carry the whole token, still open to the same session.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

import pytest

from pkce_middleware._crypto import Sealer
from pkce_middleware._session import OIDCCredentials, OIDCUser, Session, SessionCodec

KEY = secrets.token_urlsafe(32)
CLAIMS: dict[str, Any] = {
    "sub": "alice",
    "iss": "https://idp.test",
    "aud": ["client", "other"],
    "name": "Zoë \u2603",
    "groups": ["staff"],
    "address": {"country": "NZ", "lines": ["1 Main St"]},
    "nonce": "n-1",
    "at_hash": "h",
}
KEPT = {k: v for k, v in CLAIMS.items() if k not in ("nonce", "at_hash")}
FROZEN_KEPT = {**KEPT, "aud": ("client", "other"), "groups": ("staff",)}
FROZEN_KEPT["address"] = {"country": "NZ", "lines": ("1 Main St",)}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADER = b64url(json.dumps({"alg": "RS256"}).encode())


def jwt_with_payload(payload: bytes) -> str:
    return f"{HEADER}.{b64url(payload)}.{b64url(secrets.token_bytes(64))}"


def new_session(claims: Mapping[str, Any] = CLAIMS, *, id_token: str | None = None) -> Session:
    token = {
        "access_token": "at",
        "id_token": jwt_with_payload(json.dumps(claims).encode()) if id_token is None else id_token,
    }
    return Session.new(claims=claims, token=token, scopes=["openid"], now=time.time(), max_age=3600)


def plaintext(sealer: Sealer, value: str) -> bytes:
    opened = sealer.open(value)
    assert opened is not None
    return opened


def reopened(session: Session) -> tuple[Session, bytes]:
    """`session` sealed, and opened by a codec that has not seen it (no cache)."""
    sealer = Sealer([KEY], "session")
    value = SessionCodec(sealer).seal(session)
    opened = SessionCodec(sealer, cache_size=0).open(value)
    assert opened is not None
    return opened, plaintext(sealer, value)


def assert_same_session(opened: Session, session: Session) -> None:
    assert opened.id_token == session.id_token  # the very token the provider signed (id_token_hint)
    assert dict(opened.claims) == dict(session.claims) == FROZEN_KEPT
    for name in ("id", "access_token", "refresh_token", "access_expires_at", "scopes", "expires_at", "last_seen"):
        assert getattr(opened, name) == getattr(session, name)


def test_the_claims_are_sealed_once_as_the_tokens_own_json() -> None:
    session = new_session()
    opened, sealed = reopened(session)
    assert_same_session(opened, session)
    signed_payload = base64.urlsafe_b64decode(session.id_token.split(".")[1] + "==")
    assert sealed.count(signed_payload) == 1  # verbatim, and only once
    assert session.id_token.split(".")[1].encode() not in sealed  # not the base64 of it as well
    data = json.loads(sealed)
    assert data["c"] is None and "it" not in data and data["ic"] == CLAIMS


def previous_layout(session: Session) -> bytes:
    """What the previous version sealed: the whole ID token under `it`, its claims parsed from it."""
    previous = {
        "id": session.id,
        "c": None,
        "at": session.access_token,
        "it": session.id_token,
        "rt": session.refresh_token,
        "ae": session.access_expires_at,
        "sc": " ".join(session.scopes),
        "ct": round(session.created_at, 3),
        "ex": session.expires_at,
        "ls": session.last_seen,
    }
    return json.dumps(previous, separators=(",", ":")).encode()


def test_the_cookie_is_smaller_than_with_the_token_in_base64() -> None:
    session = new_session({**CLAIMS, "groups": [f"group-{n}" for n in range(40)]})
    _, sealed = reopened(session)
    assert len(sealed) < len(previous_layout(session)) - 150


def test_a_value_sealed_by_the_previous_version_still_opens() -> None:
    session = new_session()
    sealer = Sealer([KEY], "session")
    opened = SessionCodec(sealer, cache_size=0).open(sealer.seal(previous_layout(session)))
    assert opened is not None
    assert_same_session(opened, session)
    with pytest.raises(AttributeError):
        opened.claims["groups"].append("admin")


def test_claims_of_their_own_are_sealed_beside_the_whole_token() -> None:
    """Userinfo's claims (or a refresh's) differ from the token's: both are kept, as before."""
    own = {**CLAIMS, "groups": ["staff", "ops"]}
    session = new_session(own, id_token=jwt_with_payload(json.dumps(CLAIMS).encode()))
    opened, sealed = reopened(session)
    data = json.loads(sealed)
    assert data["it"] == session.id_token and data["c"]["groups"] == ["staff", "ops"] and "ic" not in data
    assert opened.id_token == session.id_token and opened.claims["groups"] == ("staff", "ops")


def test_without_an_id_token_the_claims_are_sealed_alone() -> None:
    opened, sealed = reopened(new_session(id_token=""))
    assert json.loads(sealed)["it"] == "" and opened.id_token == ""
    assert dict(opened.claims) == FROZEN_KEPT


@pytest.mark.parametrize(
    "payload",
    [
        b"\xef\xbb\xbf" + json.dumps(CLAIMS).encode(),  # a byte order mark: JSON bytes may start with one, text not
        json.dumps(CLAIMS).encode("utf-16"),  # JSON, but not UTF-8
        json.dumps(CLAIMS).encode() + b"\n",  # trailing whitespace: embeds as it is, and comes back with it
    ],
)
def test_odd_payloads_come_back_exactly(payload: bytes) -> None:
    token = jwt_with_payload(payload)
    opened, _ = reopened(new_session(id_token=token))
    assert opened.id_token == token
    assert dict(opened.claims) == FROZEN_KEPT


def test_a_payload_segment_with_stray_bits_is_kept_as_it_was_signed() -> None:
    """Base64 decoders forgive unused low bits in the last character; re-encoding would drop them,
    and the token would no longer be the one the provider signed."""
    header, segment, signature = jwt_with_payload(json.dumps(CLAIMS).encode()).split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 in (2, 3), "the test needs a final group with unused bits"
    stray = segment[:-1] + alphabet[alphabet.index(segment[-1]) | 1]
    assert stray != segment and base64.urlsafe_b64decode(stray + "==") == base64.urlsafe_b64decode(segment + "==")
    token = f"{header}.{stray}.{signature}"
    opened, sealed = reopened(new_session(id_token=token))
    assert opened.id_token == token and json.loads(sealed)["it"] == token
    assert dict(opened.claims) == FROZEN_KEPT


def test_credentials_made_per_request_are_what_the_constructor_makes() -> None:
    session = new_session()
    made = session.credentials()
    built = OIDCCredentials(session.scopes, access_token="at", id_token=session.id_token, expires_at=None)
    assert type(made) is type(built)
    assert vars(made) == vars(built) and type(made.scopes) is list
    for name in OIDCCredentials.__slots__:
        assert getattr(made, name) == getattr(built, name)
    assert repr(made) == repr(built)
    first, second = session.credentials(), session.credentials()
    first.scopes.append("admin")  # one request's copy; the next request's is untouched
    assert second.scopes == ["openid"] and session.scopes == ("openid",)


def test_users_made_per_request_are_what_the_constructor_makes() -> None:
    session = new_session()
    made = session.user()
    assert type(made) is OIDCUser and made.claims is session.claims
    assert (made.identity, made.display_name, repr(made)) == ("alice", "Zoë \u2603", "OIDCUser(identity='alice')")
    assert made is not session.user()
