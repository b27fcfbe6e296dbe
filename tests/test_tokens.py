"""`TokenValidator` on its own: one test per rule.

The rules are those of OpenID Connect Core 1.0 section 3.1.3.7 (login ID tokens), section 12.2
(ID tokens from a refresh) and Back-Channel Logout 1.0 section 2.6 (logout tokens).

Tokens are signed with joserfc. Every rejection asserts that the error names the rule that
fired (`detail` starts with the claim or the JOSE error), so a test cannot pass because some
other, unrelated check refused the token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from joserfc.jws import JWSRegistry

from pkce_middleware import IDTokenError, UnknownKeyId
from pkce_middleware._tokens import (
    MAX_ID_TOKEN_AGE,
    MAX_LOGOUT_TOKEN_AGE,
    LogoutClaims,
    TokenValidator,
)
from tests.support.hostile_provider import (
    BACKCHANNEL_LOGOUT_EVENT,
    REMOVE,
    b64url,
    deeply_nested,
    hs256_with_public_key,
    rsa_key,
    sign_compact,
    sign_raw,
    tamper_signature,
    unsigned,
)

ISSUER = "https://op.test"
CLIENT_ID = "app-client"
NONCE = "n-0S6_WzA2Mj"
ACCESS_TOKEN = "access-token-value"
NOW = 1_800_000_000
LEEWAY = 60

RSA = rsa_key("op-key-1")
OTHER_RSA = rsa_key("op-key-2")
RSA_ATTACKER = rsa_key("attacker-key")
EC = ECKey.generate_key("P-256", parameters={"kid": "op-ec-1", "use": "sig"})
#: An EC key, because a 2048-bit RSA JWK does not fit in joserfc's 512-byte header limit.
EC_ATTACKER = ECKey.generate_key("P-256", parameters={"kid": "attacker-ec", "use": "sig"})


def validator(*algorithms: str) -> TokenValidator:
    return TokenValidator(
        issuer=ISSUER, client_id=CLIENT_ID, algorithms=algorithms or ("RS256", "ES256"), leeway=LEEWAY
    )


def public(*keys: RSAKey | ECKey) -> KeySet:
    """The provider's JWKS as the middleware holds it: public halves only."""
    return KeySet.import_key_set({"keys": [key.as_dict(private=False) for key in keys]})


def claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": CLIENT_ID,
        "exp": NOW + 300,
        "iat": NOW,
        "nonce": NONCE,
        "at_hash": create_half_hash(ACCESS_TOKEN, "RS256").decode(),
    }
    for name, value in overrides.items():
        if value is REMOVE:
            del values[name]
        else:
            values[name] = value
    return values


def signed(payload: dict[str, Any] | None = None, *, key: RSAKey | ECKey = RSA, **header: Any) -> str:
    """A token signed by joserfc's own encoder (header members it validates)."""
    full_header: dict[str, Any] = {"alg": "RS256", "kid": key.kid, **header}
    return jwt.encode(full_header, claims() if payload is None else payload, key)


def validate(
    raw: str,
    keys: KeySet | None = None,
    *,
    nonce: str = NONCE,
    access_token: str | None = ACCESS_TOKEN,
    algorithms: tuple[str, ...] = (),
) -> dict[str, Any]:
    return validator(*algorithms).validate(
        raw, keys if keys is not None else public(RSA), nonce=nonce, access_token=access_token, now=NOW
    )


def rejected(raw: str, keys: KeySet | None = None, **kwargs: Any) -> IDTokenError:
    with pytest.raises(IDTokenError) as caught:
        validate(raw, keys, **kwargs)
    return caught.value


# -- accepted ---------------------------------------------------------------------------------


def test_valid_rs256_token_gives_its_claims() -> None:
    assert validate(signed()) == claims()


def test_valid_es256_token_is_checked_with_the_ec_key() -> None:
    token = signed(claims(at_hash=create_half_hash(ACCESS_TOKEN, "ES256").decode()), key=EC, alg="ES256")
    assert validate(token, public(RSA, EC))["sub"] == "alice"


def test_aud_list_naming_only_this_client_is_accepted() -> None:
    assert validate(signed(claims(aud=[CLIENT_ID])))["aud"] == [CLIENT_ID]


def test_azp_naming_this_client_is_accepted() -> None:
    assert validate(signed(claims(azp=CLIENT_ID)))["azp"] == CLIENT_ID


def test_exp_just_inside_the_leeway_is_accepted() -> None:
    assert validate(signed(claims(exp=NOW - LEEWAY + 1)))["exp"] == NOW - LEEWAY + 1


def test_token_without_at_hash_is_accepted() -> None:
    assert "at_hash" not in validate(signed(claims(at_hash=REMOVE)))


def test_no_kid_with_a_single_key_uses_that_key() -> None:
    """Conformance rp-id_token-kid-absent-single-jwks: ACCEPT."""
    token = sign_compact({"alg": "RS256"}, claims(), RSA)
    assert validate(token)["sub"] == "alice"


def test_unknown_non_critical_header_member_is_ignored() -> None:
    """RFC 7515 section 4: header members not understood MUST be ignored unless listed in `crit`."""
    token = sign_compact({"alg": "RS256", "kid": RSA.kid, "typ": "JWT", "x-provider-build": "2024.1"}, claims(), RSA)
    assert validate(token)["sub"] == "alice"


# -- claims (steps 2-11) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "overrides"),
    [
        pytest.param("iss", {"iss": "https://evil.test"}, id="iss-wrong"),
        pytest.param("iss", {"iss": ISSUER + "/"}, id="iss-trailing-slash"),
        pytest.param("iss", {"iss": "https://op.tes"}, id="iss-prefix"),
        pytest.param("iss", {"iss": REMOVE}, id="iss-missing"),
        pytest.param("iss", {"iss": [ISSUER]}, id="iss-not-a-string"),
        pytest.param("aud", {"aud": "other-client"}, id="aud-wrong"),
        pytest.param("aud", {"aud": REMOVE}, id="aud-missing"),
        pytest.param("aud", {"aud": []}, id="aud-empty-list"),
        pytest.param("aud", {"aud": [CLIENT_ID, "https://untrusted.test"]}, id="aud-extra-untrusted"),
        pytest.param("aud", {"aud": [CLIENT_ID, "https://untrusted.test"], "azp": CLIENT_ID}, id="aud-extra-with-azp"),
        pytest.param("azp", {"azp": "other-client"}, id="azp-wrong"),
        pytest.param("exp", {"exp": NOW - LEEWAY}, id="exp-expired"),
        pytest.param("exp", {"exp": REMOVE}, id="exp-missing"),
        pytest.param("exp", {"exp": "tomorrow"}, id="exp-not-a-number"),
        pytest.param("iat", {"iat": REMOVE}, id="iat-missing"),
        pytest.param("iat", {"iat": NOW + LEEWAY + 1}, id="iat-future"),
        pytest.param("iat", {"iat": NOW - MAX_ID_TOKEN_AGE - LEEWAY - 1}, id="iat-too-old"),
        pytest.param("iat", {"iat": "now"}, id="iat-not-a-number"),
        pytest.param("nbf", {"nbf": NOW + LEEWAY + 1}, id="nbf-future"),
        pytest.param("sub", {"sub": REMOVE}, id="sub-missing"),
        pytest.param("sub", {"sub": ""}, id="sub-empty"),
        pytest.param("sub", {"sub": 42}, id="sub-not-a-string"),
        pytest.param("nonce", {"nonce": "attacker-nonce"}, id="nonce-wrong"),
        pytest.param("nonce", {"nonce": REMOVE}, id="nonce-missing"),
        pytest.param("nonce", {"nonce": ""}, id="nonce-empty"),
        pytest.param("nonce", {"nonce": [NONCE]}, id="nonce-not-a-string"),
        pytest.param("at_hash", {"at_hash": create_half_hash("another-token", "RS256").decode()}, id="at_hash-wrong"),
        pytest.param("at_hash", {"at_hash": 7}, id="at_hash-not-a-string"),
    ],
)
def test_claim_rule_refuses(claim: str, overrides: dict[str, Any]) -> None:
    error = rejected(signed(claims(**overrides)))
    assert error.detail.startswith(f"{claim}:"), error.detail
    assert claim in str(error)


def test_at_hash_without_an_access_token_is_refused() -> None:
    error = rejected(signed(), access_token=None)
    assert error.detail.startswith("at_hash:")


def test_nonce_of_another_login_is_refused() -> None:
    error = rejected(signed(), nonce="the-nonce-this-browser-sent")
    assert error.detail.startswith("nonce:")


# -- signature and header (step 6, RFC 8725) --------------------------------------------------


def test_alg_none_is_refused() -> None:
    error = rejected(unsigned({"alg": "RS256", "kid": RSA.kid}, claims()))
    assert "unsupported_algorithm" in error.detail


def test_hs256_keyed_with_the_rsa_public_key_is_refused() -> None:
    token = hs256_with_public_key(RSA)({"alg": "HS256", "kid": RSA.kid}, claims())
    error = rejected(token)
    assert "unsupported_algorithm" in error.detail


def test_hs256_is_refused_even_when_allowed_by_name() -> None:
    """Even a validator told to allow HS256 never turns an RSA public key into an HMAC key."""
    token = hs256_with_public_key(RSA)({"alg": "HS256"}, claims())
    error = rejected(token, algorithms=("RS256", "HS256"))
    assert error.detail == "no kid and 0 candidate keys"


def test_algorithm_outside_the_allowlist_is_refused() -> None:
    token = sign_compact({"alg": "PS256", "kid": RSA.kid}, claims(), RSA)
    error = rejected(token, algorithms=("RS256",))
    assert "unsupported_algorithm" in error.detail


def test_bad_signature_is_refused() -> None:
    error = rejected(tamper_signature(signed()))
    assert "bad_signature" in error.detail


def test_signature_by_another_key_with_our_kid_is_refused() -> None:
    token = sign_compact({"alg": "RS256", "kid": RSA.kid}, claims(), RSA_ATTACKER)
    error = rejected(token)
    assert "bad_signature" in error.detail


def test_unknown_kid_asks_for_a_jwks_refetch() -> None:
    token = signed(key=OTHER_RSA)
    with pytest.raises(UnknownKeyId) as caught:
        validate(token)
    assert caught.value.kid == OTHER_RSA.kid


def test_no_kid_with_several_keys_is_refused() -> None:
    """Conformance rp-id_token-kid-absent-multiple-jwks: reject (or try each; we reject)."""
    token = sign_compact({"alg": "RS256"}, claims(), RSA)
    error = rejected(token, public(RSA, OTHER_RSA))
    assert error.detail == "no kid and 2 candidate keys"


def test_unknown_critical_header_is_refused() -> None:
    """Authlib CVE-2025-59420: a `crit` member we do not understand must fail the token."""
    header: dict[str, Any] = {"alg": "RS256", "kid": RSA.kid, "crit": ["urn:example:must-understand"]}
    header["urn:example:must-understand"] = True
    error = rejected(sign_compact(header, claims(), RSA))
    assert "unsupported_header" in error.detail


def test_crit_naming_an_absent_member_is_refused() -> None:
    header = {"alg": "RS256", "kid": RSA.kid, "crit": ["urn:example:absent"]}
    error = rejected(sign_compact(header, claims(), RSA))
    assert "crit" in error.detail


def test_embedded_jwk_header_is_not_trusted() -> None:
    """Authlib CVE-2026-27962: a key the token brings along proves nothing."""
    header = {"alg": "ES256", "jwk": EC_ATTACKER.as_dict(private=False)}
    error = rejected(sign_compact(header, claims(), EC_ATTACKER), public(RSA, EC))
    assert "bad_signature" in error.detail


def test_embedded_jwk_with_its_own_kid_is_not_trusted() -> None:
    header = {"alg": "ES256", "kid": EC_ATTACKER.kid, "jwk": EC_ATTACKER.as_dict(private=False)}
    with pytest.raises(UnknownKeyId):
        validate(sign_compact(header, claims(), EC_ATTACKER), public(RSA, EC))


def test_key_type_must_match_the_algorithm() -> None:
    """An ES256 header cannot select the RSA key by its kid."""
    token = sign_compact({"alg": "ES256", "kid": RSA.kid}, claims(), EC)
    with pytest.raises(UnknownKeyId):
        validate(token, public(RSA, EC))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("a.b", id="two-parts"),
        pytest.param("a.b.c.d.e", id="five-parts-jwe"),
        pytest.param("x" * 20000 + ".a.b", id="too-long"),
        pytest.param("!!.??.**", id="not-base64"),
    ],
)
def test_malformed_token_is_refused(raw: str) -> None:
    rejected(raw)


def test_payload_that_is_not_a_json_object_is_refused() -> None:
    header = b64url(json.dumps({"alg": "RS256", "kid": RSA.kid}).encode())
    signing_input = f"{header}.{b64url(b'[1,2,3]')}"
    signature = JWSRegistry.algorithms["RS256"].sign(signing_input.encode(), RSA)
    error = rejected(f"{signing_input}.{b64url(signature)}")
    assert "invalid_payload" in error.detail


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(deeply_nested(10_000), id="arrays"),
        pytest.param(b'{"sub":' + deeply_nested(10_000), id="inside-a-claim"),
        pytest.param(b'{"a":' * 2_000, id="objects"),
    ],
)
def test_deeply_nested_payload_is_refused(payload: bytes) -> None:
    """Validly signed, so only the JSON parser stands in the way; it must refuse, not crash."""
    error = rejected(sign_raw({"alg": "RS256", "kid": RSA.kid}, payload, RSA))
    assert error.detail == "malformed: RecursionError"


def test_validator_refuses_an_empty_algorithm_list() -> None:
    """joserfc reads "no algorithms" as "any recommended one", HS256 included."""
    with pytest.raises(ValueError, match="algorithm"):
        TokenValidator(issuer=ISSUER, client_id=CLIENT_ID, algorithms=(), leeway=LEEWAY)


def test_id_token_typed_as_a_logout_token_is_refused() -> None:
    """RFC 8725 section 3.11: explicit typing keeps one kind of JWT from passing as another."""
    error = rejected(sign_compact({"alg": "RS256", "kid": RSA.kid, "typ": "logout+jwt"}, claims(), RSA))
    assert error.detail.startswith("typ:")


# -- ID token from a refresh (Core section 12.2) ----------------------------------------------

AUTH_TIME = NOW - 3600
#: The session's claims: those of the login's ID token, less what validation alone needed.
SESSION_CLAIMS: dict[str, Any] = {
    "iss": ISSUER,
    "sub": "alice",
    "aud": CLIENT_ID,
    "iat": NOW - 300,
    "auth_time": AUTH_TIME,
}


def refreshed_claims(**overrides: Any) -> dict[str, Any]:
    values = claims(nonce=REMOVE, auth_time=AUTH_TIME)
    for name, value in overrides.items():
        if value is REMOVE:
            del values[name]
        else:
            values[name] = value
    return values


def validate_refreshed(raw: str, previous: Mapping[str, Any] = SESSION_CLAIMS) -> dict[str, Any]:
    return validator().validate_refreshed(
        raw, public(RSA), previous_claims=previous, access_token=ACCESS_TOKEN, now=NOW
    )


def refused_refresh(raw: str, previous: Mapping[str, Any] = SESSION_CLAIMS) -> IDTokenError:
    with pytest.raises(IDTokenError) as caught:
        validate_refreshed(raw, previous)
    return caught.value


def test_refreshed_id_token_needs_no_nonce() -> None:
    assert validate_refreshed(signed(refreshed_claims()))["sub"] == "alice"


def test_refreshed_id_token_with_the_login_nonce_is_accepted() -> None:
    assert validate_refreshed(signed(refreshed_claims(nonce=NONCE)), {**SESSION_CLAIMS, "nonce": NONCE})


def test_refreshed_id_token_with_a_nonce_the_session_did_not_keep_is_accepted() -> None:
    assert validate_refreshed(signed(refreshed_claims(nonce="any")))["nonce"] == "any"


def test_refreshed_id_token_without_auth_time_is_accepted() -> None:
    assert "auth_time" not in validate_refreshed(signed(refreshed_claims(auth_time=REMOVE)))


def test_refreshed_id_token_with_aud_as_a_list_matches_a_string_aud() -> None:
    assert validate_refreshed(signed(refreshed_claims(aud=[CLIENT_ID])))["aud"] == [CLIENT_ID]


def test_session_keeping_only_sub_is_enough() -> None:
    assert validate_refreshed(signed(refreshed_claims()), {"sub": "alice"})["sub"] == "alice"


@pytest.mark.parametrize(
    ("rule", "overrides", "previous"),
    [
        pytest.param("sub", {"sub": "mallory"}, SESSION_CLAIMS, id="sub-changed"),
        pytest.param("sub", {}, {k: v for k, v in SESSION_CLAIMS.items() if k != "sub"}, id="session-without-sub"),
        pytest.param("iss", {}, {**SESSION_CLAIMS, "iss": "https://old-op.test"}, id="iss-changed"),
        pytest.param("aud", {}, {**SESSION_CLAIMS, "aud": "old-client"}, id="aud-changed"),
        pytest.param("auth_time", {"auth_time": AUTH_TIME - 10}, SESSION_CLAIMS, id="auth_time-earlier"),
        pytest.param("auth_time", {"auth_time": "later"}, SESSION_CLAIMS, id="auth_time-not-a-number"),
        pytest.param("iat", {"iat": NOW - 301}, SESSION_CLAIMS, id="iat-older-than-the-session"),
        pytest.param("nonce", {"nonce": "other"}, {**SESSION_CLAIMS, "nonce": NONCE}, id="nonce-changed"),
        # The login rules still apply.
        pytest.param("iss", {"iss": "https://evil.test"}, SESSION_CLAIMS, id="iss-wrong"),
        pytest.param("aud", {"aud": [CLIENT_ID, "https://untrusted.test"]}, SESSION_CLAIMS, id="aud-extra"),
        pytest.param("azp", {"azp": "other-client"}, SESSION_CLAIMS, id="azp-wrong"),
        pytest.param("exp", {"exp": NOW - LEEWAY}, SESSION_CLAIMS, id="exp-expired"),
        pytest.param("iat", {"iat": NOW - MAX_ID_TOKEN_AGE - LEEWAY - 1}, {"sub": "alice"}, id="iat-too-old"),
        pytest.param("at_hash", {"at_hash": create_half_hash("x", "RS256").decode()}, SESSION_CLAIMS, id="at_hash"),
    ],
)
def test_refreshed_id_token_rule_refuses(rule: str, overrides: dict[str, Any], previous: dict[str, Any]) -> None:
    error = refused_refresh(signed(refreshed_claims(**overrides)), previous)
    assert error.detail.startswith(f"{rule}:"), error.detail


def test_a_later_auth_time_at_refresh_is_tolerated() -> None:
    # django-oauth-toolkit and django-oidc-provider send the user's latest login (against Core 12.2);
    # the session keeps its own (Session.refreshed), so nothing claims a login that did not happen.
    assert validate_refreshed(signed(refreshed_claims(auth_time=AUTH_TIME + 600)))["auth_time"] == AUTH_TIME + 600


def test_refreshed_id_token_signature_is_checked() -> None:
    error = refused_refresh(tamper_signature(signed(refreshed_claims())))
    assert "bad_signature" in error.detail


# -- logout tokens (Back-Channel Logout 1.0 section 2.6) ---------------------------------------

JTI = "bWJq-jti-1"
SID = "08a5019c-17e1-4977-8f42-65a12843ea02"


def logout_claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "sid": SID,
        "aud": CLIENT_ID,
        "iat": NOW,
        "exp": NOW + 120,
        "jti": JTI,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    for name, value in overrides.items():
        if value is REMOVE:
            del values[name]
        else:
            values[name] = value
    return values


def logout_token(payload: dict[str, Any] | None = None, *, key: RSAKey | ECKey = RSA, **header: Any) -> str:
    full_header: dict[str, Any] = {"alg": "RS256", "kid": key.kid, "typ": "logout+jwt"}
    for name, value in header.items():
        if value is REMOVE:
            del full_header[name]
        else:
            full_header[name] = value
    return sign_compact(full_header, logout_claims() if payload is None else payload, key)


def validate_logout(raw: str, keys: KeySet | None = None) -> LogoutClaims:
    return validator().validate_logout_token(raw, keys if keys is not None else public(RSA), now=NOW)


def refused_logout(raw: str, keys: KeySet | None = None) -> IDTokenError:
    with pytest.raises(IDTokenError) as caught:
        validate_logout(raw, keys)
    error = caught.value
    assert error.error == "logout_token_invalid"
    assert error.status_code == 400
    return error


def test_valid_logout_token_gives_sid_sub_jti_and_iat() -> None:
    assert validate_logout(logout_token()) == LogoutClaims(sid=SID, sub="alice", jti=JTI, iat=NOW)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({"sub": REMOVE}, LogoutClaims(sid=SID, sub=None, jti=JTI, iat=NOW), id="sid-only"),
        pytest.param({"sid": REMOVE}, LogoutClaims(sid=None, sub="alice", jti=JTI, iat=NOW), id="sub-only"),
        pytest.param({"aud": [CLIENT_ID]}, LogoutClaims(sid=SID, sub="alice", jti=JTI, iat=NOW), id="aud-list"),
        pytest.param(
            {"events": {BACKCHANNEL_LOGOUT_EVENT: {"x": 1}, "urn:example:other": {}}},
            LogoutClaims(sid=SID, sub="alice", jti=JTI, iat=NOW),
            id="events-with-more-members",
        ),
        pytest.param(
            {"iat": NOW - MAX_LOGOUT_TOKEN_AGE},
            LogoutClaims(sid=SID, sub="alice", jti=JTI, iat=NOW - MAX_LOGOUT_TOKEN_AGE),
            id="iat-old",
        ),
    ],
)
def test_logout_token_variants_are_accepted(overrides: dict[str, Any], expected: LogoutClaims) -> None:
    assert validate_logout(logout_token(logout_claims(**overrides))) == expected


@pytest.mark.parametrize("typ", [REMOVE, "logout+jwt", "Logout+JWT", "application/logout+jwt"])
def test_logout_token_typ_absent_or_logout_jwt_is_accepted(typ: Any) -> None:
    assert validate_logout(logout_token(typ=typ)).jti == JTI


@pytest.mark.parametrize(
    ("rule", "overrides"),
    [
        pytest.param("iss", {"iss": "https://evil.test"}, id="iss-wrong"),
        pytest.param("iss", {"iss": ISSUER + "/"}, id="iss-trailing-slash"),
        pytest.param("iss", {"iss": REMOVE}, id="iss-missing"),
        pytest.param("aud", {"aud": "other-client"}, id="aud-wrong"),
        pytest.param("aud", {"aud": REMOVE}, id="aud-missing"),
        pytest.param("aud", {"aud": [CLIENT_ID, "https://untrusted.test"]}, id="aud-extra-untrusted"),
        pytest.param("iat", {"iat": REMOVE}, id="iat-missing"),
        pytest.param("iat", {"iat": NOW + LEEWAY + 1}, id="iat-future"),
        pytest.param("iat", {"iat": NOW - MAX_LOGOUT_TOKEN_AGE - LEEWAY - 1}, id="iat-too-old"),
        pytest.param("iat", {"iat": "now"}, id="iat-not-a-number"),
        pytest.param("exp", {"exp": NOW - LEEWAY}, id="exp-expired"),
        pytest.param("exp", {"exp": "soon"}, id="exp-not-a-number"),
        pytest.param("nbf", {"nbf": NOW + LEEWAY + 1}, id="nbf-future"),
        pytest.param("jti", {"jti": REMOVE}, id="jti-missing"),
        pytest.param("exp", {"exp": REMOVE}, id="exp-missing"),
        pytest.param("jti", {"jti": ""}, id="jti-empty"),
        pytest.param("jti", {"jti": 7}, id="jti-not-a-string"),
        pytest.param("events", {"events": REMOVE}, id="events-missing"),
        pytest.param("events", {"events": [BACKCHANNEL_LOGOUT_EVENT]}, id="events-not-an-object"),
        pytest.param("events", {"events": {}}, id="events-empty"),
        pytest.param("events", {"events": {"urn:example:other": {}}}, id="events-other-event-only"),
        pytest.param("events", {"events": {BACKCHANNEL_LOGOUT_EVENT: True}}, id="event-value-not-an-object"),
        pytest.param("events", {"events": {BACKCHANNEL_LOGOUT_EVENT: None}}, id="event-value-null"),
        pytest.param("sid/sub", {"sid": REMOVE, "sub": REMOVE}, id="neither-sid-nor-sub"),
        pytest.param("sid", {"sid": ""}, id="sid-empty"),
        pytest.param("sid", {"sid": 42}, id="sid-not-a-string"),
        pytest.param("sub", {"sub": ""}, id="sub-empty"),
        pytest.param("sub", {"sub": ["alice"]}, id="sub-not-a-string"),
        pytest.param("nonce", {"nonce": NONCE}, id="nonce-present"),
        pytest.param("nonce", {"nonce": ""}, id="nonce-empty"),
    ],
)
def test_logout_token_rule_refuses(rule: str, overrides: dict[str, Any]) -> None:
    error = refused_logout(logout_token(logout_claims(**overrides)))
    assert error.detail.startswith(f"{rule}:"), error.detail


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/jwt", "logout+jwt+x", "secevent+jwt"])
def test_logout_token_typ_other_than_logout_jwt_is_refused(typ: str) -> None:
    error = refused_logout(logout_token(typ=typ))
    assert error.detail.startswith("typ:"), error.detail


def test_id_token_is_not_a_logout_token() -> None:
    """An ID token of the same provider, for the same client, must not end anyone's session."""
    error = refused_logout(signed())
    assert error.detail.startswith("typ:")


def test_untyped_id_token_with_events_is_still_refused_for_its_nonce() -> None:
    error = refused_logout(sign_compact({"alg": "RS256", "kid": RSA.kid}, {**logout_claims(), "nonce": NONCE}, RSA))
    assert error.detail.startswith("nonce:")


def test_unsigned_logout_token_is_refused() -> None:
    error = refused_logout(unsigned({"alg": "RS256", "kid": RSA.kid, "typ": "logout+jwt"}, logout_claims()))
    assert "unsupported_algorithm" in error.detail


def test_logout_token_hs256_keyed_with_the_public_key_is_refused() -> None:
    token = hs256_with_public_key(RSA)({"alg": "HS256", "kid": RSA.kid, "typ": "logout+jwt"}, logout_claims())
    assert "unsupported_algorithm" in refused_logout(token).detail


def test_logout_token_algorithm_outside_the_allowlist_is_refused() -> None:
    token = logout_token(key=EC, alg="ES256")
    with pytest.raises(IDTokenError) as caught:
        validator("RS256").validate_logout_token(token, public(RSA, EC), now=NOW)
    assert "unsupported_algorithm" in caught.value.detail
    assert caught.value.error == "logout_token_invalid"


def test_logout_token_with_a_bad_signature_is_refused() -> None:
    assert "bad_signature" in refused_logout(tamper_signature(logout_token())).detail


def test_logout_token_signed_by_another_key_with_our_kid_is_refused() -> None:
    token = sign_compact({"alg": "RS256", "kid": RSA.kid, "typ": "logout+jwt"}, logout_claims(), RSA_ATTACKER)
    assert "bad_signature" in refused_logout(token).detail


def test_logout_token_with_an_embedded_jwk_is_not_trusted() -> None:
    header = {"alg": "ES256", "typ": "logout+jwt", "jwk": EC_ATTACKER.as_dict(private=False)}
    assert "bad_signature" in refused_logout(sign_compact(header, logout_claims(), EC_ATTACKER), public(RSA, EC)).detail


def test_logout_token_with_an_unknown_kid_asks_for_a_jwks_refetch() -> None:
    with pytest.raises(UnknownKeyId):
        validate_logout(logout_token(key=OTHER_RSA))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("a.b.c.d.e", id="jwe"),
        pytest.param("x" * 20000 + ".a.b", id="too-long"),
        pytest.param("!!.??.**", id="not-base64"),
    ],
)
def test_malformed_logout_token_is_refused(raw: str) -> None:
    refused_logout(raw)


def test_logout_token_with_a_deeply_nested_payload_is_refused() -> None:
    token = sign_raw({"alg": "RS256", "kid": RSA.kid, "typ": "logout+jwt"}, deeply_nested(10_000), RSA)
    error = refused_logout(token)
    assert (error.error, error.status_code, error.detail) == ("logout_token_invalid", 400, "malformed: RecursionError")
