"""Access tokens at the door, without I/O: `presented_token` (RFC 6750 section 2.1), JWT access
tokens (RFC 9068), introspection answers (RFC 7662), DPoP proofs (RFC 9449), the caches, and how
paths map to modes.

Each refusal is a `BearerError` whose reason code and status decide what the client is told; the
tests name both. Tokens and proofs are signed here with real keys (the hostile provider's RSA key,
fresh P-256 keys for DPoP), and times are built in the past or future rather than waited for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from pkce_middleware import BearerError, BearerUnavailable, Reason, UnknownKeyId
from pkce_middleware._bearer import (
    DPOP_ALGORITHMS,
    DPOP_PROOF_WINDOW,
    MAX_ACCESS_TOKEN_LENGTH,
    AccessTokenValidator,
    ExpiringCache,
    Presented,
    check_dpop_proof,
    check_introspection,
    presented_token,
    same_target,
    token_info,
)
from pkce_middleware._config import DEFAULT_ID_TOKEN_ALGORITHMS
from pkce_middleware._resource import Modes
from tests.support.hostile_provider import (
    REMOVE,
    access_token_claims,
    b64url,
    hs256_with_public_key,
    rsa_key,
    sign_compact,
    sign_raw,
    tamper_signature,
    unsigned,
)
from tests.support.oauth_clients import dpop_key, dpop_proof

ISSUER = "https://op.test"
RESOURCE = "https://app.test/api"
URL = "https://app.test/api/items"
KEY = rsa_key("op-key-1")
KEYS = KeySet([KEY])
HEADER = {"alg": "RS256", "typ": "at+jwt", "kid": "op-key-1"}


def claims(**overrides: Any) -> dict[str, Any]:
    """The access token's claims; an override of `...` leaves that claim out."""
    overrides = {name: REMOVE if value is ... else value for name, value in overrides.items()}
    return access_token_claims(ISSUER, RESOURCE, "token-1", overrides)


def access_token(header: dict[str, Any] | None = None, key: Any = KEY, **overrides: Any) -> str:
    return sign_compact(HEADER if header is None else header, claims(**overrides), key)


def validator(*, algorithms: tuple[str, ...] = DEFAULT_ID_TOKEN_ALGORITHMS, leeway: int = 60) -> AccessTokenValidator:
    return AccessTokenValidator(issuer=ISSUER, resource=RESOURCE, algorithms=algorithms, leeway=leeway)


def refused(raw: str, *, leeway: int = 60, keys: KeySet = KEYS) -> BearerError:
    with pytest.raises(BearerError) as caught:
        validator(leeway=leeway).validate(raw, keys, now=time.time())
    return caught.value


def ath(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


# -- the Authorization header (RFC 6750 section 2.1, RFC 9449 section 7.1) ----------------------


def headers(*values: bytes, dpop: tuple[bytes, ...] = ()) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"app.test"),
        *((b"authorization", value) for value in values),
        *((b"dpop", value) for value in dpop),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"Bearer abc.DEF-_~+/", Presented("bearer", "abc.DEF-_~+/", None), id="b64token"),
        pytest.param(b"Bearer abc==", Presented("bearer", "abc==", None), id="trailing-padding"),
        pytest.param(b"bearer abc", Presented("bearer", "abc", None), id="lowercase-scheme"),
        pytest.param(b"BEARER abc", Presented("bearer", "abc", None), id="uppercase-scheme"),
        pytest.param(b"Bearer    abc   ", Presented("bearer", "abc", None), id="extra-spaces"),
        pytest.param(b"DPoP abc", Presented("dpop", "abc", None), id="dpop-scheme"),
        pytest.param(b"Basic YWxpY2U6cHc=", None, id="basic-is-no-token"),
        pytest.param(b"Bearer=abc", None, id="no-space-is-another-scheme"),
        pytest.param(b"", None, id="empty-header"),
    ],
)
def test_presented_token_reads_the_scheme_and_the_token(value: bytes, expected: Presented | None) -> None:
    assert presented_token(headers(value)) == expected


def test_no_authorization_header_is_no_token() -> None:
    assert presented_token(headers()) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"Bearer", id="no-token"),
        pytest.param(b"Bearer ", id="empty-token"),
        pytest.param(b"Bearer a b", id="space-inside"),
        pytest.param(b"Bearer a,b", id="comma"),
        pytest.param(b'Bearer "abc"', id="quoted"),
        pytest.param(b"Bearer abc=x", id="padding-in-the-middle"),
        pytest.param(b"Bearer ab\xc3\xa9", id="non-ascii"),
        pytest.param(b"Bearer a\x00b", id="nul"),
        pytest.param(b"DPoP abc;def", id="dpop-semicolon"),
        pytest.param(b"Bearer " + b"a" * (MAX_ACCESS_TOKEN_LENGTH + 1), id="huge"),
    ],
)
def test_a_malformed_token_is_a_400_invalid_request(value: bytes) -> None:
    with pytest.raises(BearerError) as caught:
        presented_token(headers(value))
    assert caught.value.error == Reason.BEARER_MALFORMED
    assert caught.value.status_code == 400
    assert caught.value.oauth_error == "invalid_request"


def test_the_longest_token_accepted_is_the_limit() -> None:
    presented = presented_token(headers(b"Bearer " + b"a" * MAX_ACCESS_TOKEN_LENGTH))
    assert presented is not None and len(presented.token) == MAX_ACCESS_TOKEN_LENGTH


def test_two_authorization_headers_are_refused_even_when_equal() -> None:
    with pytest.raises(BearerError) as caught:
        presented_token(headers(b"Bearer abc", b"Bearer abc"))
    assert (caught.value.error, caught.value.status_code) == (Reason.BEARER_MALFORMED, 400)


def test_the_dpop_proof_comes_along_and_two_of_them_are_refused() -> None:
    assert presented_token(headers(b"DPoP abc", dpop=(b" p.r.f ",))) == Presented("dpop", "abc", "p.r.f")
    with pytest.raises(BearerError) as caught:
        presented_token(headers(b"DPoP abc", dpop=(b"a.b.c", b"a.b.c")))
    assert caught.value.error == Reason.DPOP_INVALID
    assert caught.value.oauth_error == "invalid_dpop_proof"


# -- JWT access tokens (RFC 9068 section 4) ------------------------------------------------------


def test_a_valid_jwt_access_token_gives_its_caller() -> None:
    raw = access_token()
    assert AccessTokenValidator.is_jwt(raw)
    info = validator().validate(raw, KEYS, now=time.time())
    assert info.subject == "alice"
    assert info.client_id == "agent"
    assert info.scopes == ("api:read", "api:write")
    assert info.jkt is None
    assert info.claims["jti"] == "token-1"
    assert info.expires_at == claims()["exp"]


@pytest.mark.parametrize(
    "typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"], ids=lambda typ: typ.replace("/", "-")
)
def test_the_media_type_is_case_insensitive_and_may_have_its_prefix(typ: str) -> None:
    raw = access_token({**HEADER, "typ": typ})
    assert AccessTokenValidator.is_jwt(raw)
    assert validator().validate(raw, KEYS, now=time.time()).subject == "alice"


def test_an_audience_list_naming_the_resource_is_accepted() -> None:
    raw = access_token(aud=["https://other.test", RESOURCE])
    assert validator().validate(raw, KEYS, now=time.time()).subject == "alice"


@pytest.mark.parametrize(
    "aud",
    [
        pytest.param("https://other.test/api", id="another-api"),
        pytest.param(RESOURCE + "/", id="trailing-slash"),
        pytest.param(RESOURCE + "/v2", id="below-the-resource"),
        pytest.param("https://app.test", id="the-origin-only"),
        pytest.param(["https://other.test"], id="list-without-it"),
        pytest.param([], id="empty-list"),
        pytest.param("app-client", id="the-client-id-as-in-an-id-token"),
        pytest.param({"aud": RESOURCE}, id="object"),
        pytest.param(..., id="missing"),
    ],
)
def test_a_token_for_another_audience_is_refused(aud: Any) -> None:
    exc = refused(access_token(aud=aud))
    assert exc.error == Reason.BEARER_AUDIENCE
    assert (exc.status_code, exc.oauth_error) == (401, "invalid_token")


@pytest.mark.parametrize("iss", ["https://evil.test", ISSUER + "/", 5, ...], ids=["other", "slash", "number", "none"])
def test_a_token_of_another_issuer_is_refused(iss: Any) -> None:
    assert refused(access_token(iss=iss)).error == Reason.BEARER_INVALID


def test_an_id_token_is_not_an_access_token() -> None:
    """RFC 9068 section 4 / RFC 8725 section 3.11: explicit typing tells them apart. An ID token is
    not routed to local verification at all (it goes to introspection, which says inactive), and
    validating it anyway fails on `typ` before any claim is read."""
    id_token = sign_compact({"alg": "RS256", "typ": "JWT", "kid": "op-key-1"}, claims(aud="app-client"), KEY)
    assert not AccessTokenValidator.is_jwt(id_token)
    exc = refused(id_token)
    assert exc.error == Reason.BEARER_INVALID and "typ" in exc.detail
    untyped = sign_compact({"alg": "RS256", "kid": "op-key-1"}, claims(), KEY)
    assert not AccessTokenValidator.is_jwt(untyped)
    assert "typ" in refused(untyped).detail


def test_a_logout_token_is_not_an_access_token() -> None:
    logout = sign_compact(
        {"alg": "RS256", "typ": "logout+jwt", "kid": "op-key-1"},
        claims(events={"http://schemas.openid.net/event/backchannel-logout": {}}),
        KEY,
    )
    assert not AccessTokenValidator.is_jwt(logout)
    assert "typ" in refused(logout).detail


@pytest.mark.parametrize(
    "token",
    ["opaque-token", "a.b", "a.b.c.d", "!!!.e30.", "bm90IGpzb24.e30.", "WzFd.e30.", "e30.e30."],
    ids=["opaque", "two-parts", "four-parts", "bad-base64", "not-json", "json-array", "no-typ"],
)
def test_anything_but_a_typed_jwt_is_opaque(token: str) -> None:
    assert not AccessTokenValidator.is_jwt(token)


def test_alg_none_is_refused() -> None:
    exc = refused(unsigned(HEADER, claims()))
    assert exc.error == Reason.BEARER_INVALID and "signature" in exc.detail


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    exc = refused(hs256_with_public_key(KEY)(HEADER, claims()))
    assert exc.error == Reason.BEARER_INVALID and "signature" in exc.detail


def test_algorithms_are_pinned() -> None:
    """A key's algorithm the configuration does not list is refused, even for a genuine signature."""
    es = ECKey.generate_key("P-256", parameters={"kid": "es-1"}, private=True)
    raw = access_token({"alg": "ES256", "typ": "at+jwt", "kid": "es-1"}, key=es)
    keys = KeySet([KEY, es])
    assert validator().validate(raw, keys, now=time.time()).subject == "alice"
    with pytest.raises(BearerError):
        validator(algorithms=("RS256",)).validate(raw, keys, now=time.time())


def test_a_key_that_names_its_algorithm_is_used_for_that_one_only() -> None:
    """The provider's key says `alg: RS256`: a PS256 signature by the very same key is refused."""
    assert "unsupported_key_alg" in refused(access_token({**HEADER, "alg": "PS256"})).detail


def test_a_tampered_signature_and_a_foreign_key_are_refused() -> None:
    assert refused(tamper_signature(access_token())).error == Reason.BEARER_INVALID
    forged = access_token(key=rsa_key("attacker"))  # the provider's kid, another key
    assert refused(forged).error == Reason.BEARER_INVALID


def test_keys_the_token_brings_along_are_never_used() -> None:
    attacker = rsa_key("attacker")
    header = {**HEADER, "jwk": attacker.as_dict(private=False), "jku": "https://evil.test/jwks"}
    assert refused(sign_compact(header, claims(), attacker)).error == Reason.BEARER_INVALID


def test_an_unknown_kid_asks_for_a_refetch() -> None:
    with pytest.raises(UnknownKeyId):
        validator().validate(access_token({**HEADER, "kid": "op-key-9"}), KEYS, now=time.time())


def test_without_kid_the_only_key_is_used_and_two_keys_are_ambiguous() -> None:
    header = {"alg": "RS256", "typ": "at+jwt"}
    assert validator().validate(access_token(header), KEYS, now=time.time()).subject == "alice"
    two = KeySet([KEY, rsa_key("op-key-2")])
    assert refused(access_token(header), keys=two).error == Reason.BEARER_INVALID


def test_a_critical_header_extension_is_refused() -> None:
    assert refused(access_token({**HEADER, "crit": ["exp"], "exp": 1})).error == Reason.BEARER_INVALID


def test_expiry_with_and_without_leeway() -> None:
    now = int(time.time())
    assert validator().validate(access_token(exp=now - 30), KEYS, now=now).subject == "alice"
    exc = refused(access_token(exp=now - 61))
    assert (exc.error, exc.oauth_error, exc.message) == (
        Reason.BEARER_EXPIRED,
        "invalid_token",
        "The access token expired.",
    )
    assert refused(access_token(exp=now - 1), leeway=0).error == Reason.BEARER_EXPIRED


def test_nbf_in_the_future_is_refused_beyond_the_leeway() -> None:
    now = int(time.time())
    assert validator().validate(access_token(nbf=now + 30), KEYS, now=now).subject == "alice"
    exc = refused(access_token(nbf=now + 600))
    assert exc.error == Reason.BEARER_INVALID and "nbf" in exc.detail


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        pytest.param({"exp": ...}, "exp", id="exp-missing"),
        pytest.param({"exp": None}, "exp", id="exp-null"),
        pytest.param({"exp": str(int(time.time()) + 300)}, "exp", id="exp-string"),
        pytest.param({"exp": True}, "exp", id="exp-bool"),
        pytest.param({"exp": 10**400}, "exp", id="exp-too-large-for-a-float"),
        pytest.param({"nbf": str(int(time.time()) + 600)}, "nbf", id="nbf-string"),
        pytest.param({"nbf": [0]}, "nbf", id="nbf-list"),
        pytest.param({"iat": "yesterday"}, "iat", id="iat-string"),
        pytest.param({"iat": ...}, "iat", id="iat-missing"),
        pytest.param({"sub": ...}, "sub", id="sub-missing"),
        pytest.param({"sub": ""}, "sub", id="sub-empty"),
        pytest.param({"sub": 42}, "sub", id="sub-number"),
        pytest.param({"client_id": ...}, "client_id", id="client-id-missing"),
        pytest.param({"client_id": ""}, "client_id", id="client-id-empty"),
        pytest.param({"scope": ["api:read"]}, "scope", id="scope-list"),
        pytest.param({"cnf": {"x5t#S256": "abc"}}, "bound", id="cnf-mtls"),
        pytest.param({"cnf": {"jkt": ""}}, "bound", id="cnf-empty-jkt"),
        pytest.param({"cnf": "jkt"}, "bound", id="cnf-string"),
    ],
)
def test_malformed_claims_are_refused(overrides: dict[str, Any], detail: str) -> None:
    exc = refused(access_token(**overrides))
    assert exc.error == Reason.BEARER_INVALID
    assert detail in exc.detail


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
def test_non_finite_dates_are_refused(name: str, value: str) -> None:
    """Python's JSON reads NaN: an `exp` of NaN compares false with every time and never expires."""
    base = claims()
    base.pop(name, None)
    payload = json.dumps(base)[:-1] + f', "{name}": {value}}}'
    exc = refused(sign_raw(HEADER, payload.encode(), KEY))
    assert exc.error == Reason.BEARER_INVALID
    assert f"{name} is not a finite number" in exc.detail


@pytest.mark.parametrize(
    "payload",
    [b"[1, 2]", b'"a string"', b"\xff\xfe", b'{"sub": "\\ud800"}', b"[" * 5000],
    ids=["array", "string", "not-utf8", "lone-surrogate", "deeply-nested"],
)
def test_unparsable_payloads_are_refused(payload: bytes) -> None:
    assert refused(sign_raw(HEADER, payload, KEY)).error == Reason.BEARER_INVALID


def test_a_client_named_only_in_azp_is_the_client() -> None:
    info = validator().validate(access_token(client_id=..., azp="keycloak-client"), KEYS, now=time.time())
    assert info.client_id == "keycloak-client"


def test_a_bound_token_carries_its_key_thumbprint() -> None:
    key = dpop_key()
    info = validator().validate(access_token(cnf={"jkt": key.thumbprint()}), KEYS, now=time.time())
    assert info.jkt == key.thumbprint()


# -- introspection answers (RFC 7662 section 2.2) ----------------------------------------------


def introspection(**overrides: Any) -> dict[str, Any]:
    return {"active": True, "token_type": "Bearer", **claims(**overrides)}


def introspected(data: Any, *, leeway: int = 60) -> Any:
    return check_introspection(data, issuer=ISSUER, resource=RESOURCE, now=time.time(), leeway=leeway)


def test_an_active_answer_gives_the_caller_without_the_answers_own_members() -> None:
    info = introspected(introspection())
    assert info.subject == "alice" and info.client_id == "agent" and info.scopes == ("api:read", "api:write")
    assert "active" not in info.claims and "token_type" not in info.claims
    assert info.claims["jti"] == "token-1"


def test_a_client_credentials_answer_without_sub_is_the_client() -> None:
    assert introspected(introspection(sub=...)).subject == "agent"


def test_iss_is_optional_in_an_answer_but_must_be_ours_when_present() -> None:
    assert introspected(introspection(iss=...)).subject == "alice"
    with pytest.raises(BearerError) as caught:
        introspected(introspection(iss="https://evil.test"))
    assert caught.value.error == Reason.BEARER_INVALID


def test_an_inactive_token_is_a_401() -> None:
    with pytest.raises(BearerError) as caught:
        introspected({"active": False})
    assert (caught.value.error, caught.value.status_code, caught.value.oauth_error) == (
        Reason.BEARER_INACTIVE,
        401,
        "invalid_token",
    )


@pytest.mark.parametrize(
    "data",
    [None, [], "active", {}, {"active": "true"}, {"active": 1}, {"active": None}],
    ids=["null", "list", "string", "empty", "active-string", "active-number", "active-null"],
)
def test_an_answer_without_a_boolean_active_is_the_providers_trouble(data: Any) -> None:
    """Not the token's fault: a 503 the client retries, never a 401 that makes it drop the token."""
    with pytest.raises(BearerUnavailable) as caught:
        introspected(data)
    assert caught.value.status_code == 503
    assert caught.value.error == Reason.INTROSPECTION_UNAVAILABLE
    assert caught.value.oauth_error is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param({"aud": "https://other.test"}, Reason.BEARER_AUDIENCE, id="other-audience"),
        pytest.param({"aud": ...}, Reason.BEARER_AUDIENCE, id="no-audience"),
        pytest.param({"exp": int(time.time()) - 3600}, Reason.BEARER_EXPIRED, id="expired"),
        pytest.param({"exp": ...}, Reason.BEARER_INVALID, id="no-exp"),
        pytest.param({"client_id": ...}, Reason.BEARER_INVALID, id="no-client"),
        pytest.param({"sub": 7}, Reason.BEARER_INVALID, id="sub-number"),
        pytest.param({"token_type": "DPoP"}, Reason.BEARER_INVALID, id="dpop-without-cnf"),
        pytest.param({"nbf": int(time.time()) + 3600}, Reason.BEARER_INVALID, id="nbf-future"),
    ],
)
def test_an_active_answer_is_still_checked(overrides: dict[str, Any], reason: Reason) -> None:
    with pytest.raises(BearerError) as caught:
        introspected(introspection(**overrides))
    assert caught.value.error == reason
    assert caught.value.status_code == 401


def test_an_answer_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(BearerError) as caught:
        introspected(introspection(name="\ud800"))
    assert caught.value.error == Reason.BEARER_INVALID and "malformed" in caught.value.detail


def test_a_dpop_answer_with_its_thumbprint_is_bound() -> None:
    info = introspected(introspection(token_type="DPoP", cnf={"jkt": "thumb"}))
    assert info.jkt == "thumb"


def test_token_info_falls_back_to_azp_and_refuses_no_client() -> None:
    assert token_info({"exp": 1, "azp": "kc"}).client_id == "kc"
    with pytest.raises(BearerError):
        token_info({"exp": 1, "azp": 5})


# -- DPoP proofs (RFC 9449 section 4.3) ----------------------------------------------------------


TOKEN = "the-access-token"


def check(proof: str | None, key: ECKey | None = None, **overrides: Any) -> tuple[str, float]:
    values: dict[str, Any] = {
        "method": "GET",
        "url": URL,
        "access_token": TOKEN,
        "jkt": (key or PROOF_KEY).thumbprint(),
        "now": time.time(),
        "leeway": 5,
    }
    values.update(overrides)
    return check_dpop_proof(proof, **values)


def proof_refused(proof: str | None, key: ECKey | None = None, **overrides: Any) -> BearerError:
    with pytest.raises(BearerError) as caught:
        check(proof, key, **overrides)
    assert caught.value.error == Reason.DPOP_INVALID
    assert caught.value.status_code == 401
    assert caught.value.oauth_error == "invalid_dpop_proof"
    return caught.value


PROOF_KEY = dpop_key()


def raw_proof(header: dict[str, Any] | None = None, key: Any = PROOF_KEY, public: Any = None, **overrides: Any) -> str:
    """A proof built member by member, for the ones `dpop_proof` will not make."""
    jwk = (public if public is not None else key).as_dict(private=False)
    values: dict[str, Any] = {
        "jti": "proof-jti-0001",
        "htm": "GET",
        "htu": URL,
        "iat": int(time.time()),
        "ath": ath(TOKEN),
    }
    values.update(overrides)
    values = {name: value for name, value in values.items() if value is not ...}
    base = {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}
    return sign_compact(base if header is None else {**base, **header}, values, key)


def test_a_valid_proof_gives_its_jti_and_iat() -> None:
    now = int(time.time())
    jti, iat = check(dpop_proof(PROOF_KEY, "GET", URL, access_token=TOKEN, jti="jti-0000001", iat=now))
    assert (jti, iat) == ("jti-0000001", now)


def test_htu_is_compared_without_query_fragment_case_and_default_port() -> None:
    htu = "HTTPS://APP.test:443/api/items?page=2#top"
    check(raw_proof(htu=htu))
    check(dpop_proof(PROOF_KEY, "GET", URL + "?page=2", access_token=TOKEN))


@pytest.mark.parametrize(
    "htu",
    [
        "https://evil.test/api/items",
        "http://app.test/api/items",
        "https://app.test:8443/api/items",
        "https://app.test/api/items/",
        "https://app.test/api/other",
        "https://app.test/API/items",
        "/api/items",
        "https://app.test:99999/api/items",
    ],
    ids=["other-host", "http", "other-port", "trailing-slash", "other-path", "path-case", "relative", "bad-port"],
)
def test_a_proof_for_another_target_is_refused(htu: str) -> None:
    assert "htu" in proof_refused(raw_proof(htu=htu)).detail


def test_a_proof_for_another_method_is_refused() -> None:
    assert "htm" in proof_refused(dpop_proof(PROOF_KEY, "POST", URL, access_token=TOKEN)).detail
    assert "htm" in proof_refused(raw_proof(htm="get")).detail


def test_a_proof_for_another_token_is_refused() -> None:
    assert "ath" in proof_refused(dpop_proof(PROOF_KEY, "GET", URL, access_token="another-token")).detail
    assert "ath" in proof_refused(dpop_proof(PROOF_KEY, "GET", URL)).detail  # no ath at all
    assert "ath" in proof_refused(raw_proof(ath=7)).detail


def test_a_proof_by_another_key_than_the_tokens_is_refused() -> None:
    other = dpop_key()
    exc = proof_refused(dpop_proof(other, "GET", URL, access_token=TOKEN))
    assert "cnf.jkt" in exc.detail


def test_a_proof_signed_by_another_key_than_its_jwk_is_refused() -> None:
    exc = proof_refused(raw_proof(key=dpop_key(), public=PROOF_KEY))
    assert "verify" in exc.detail


@pytest.mark.parametrize(
    ("age", "accepted"),
    [(0, True), (DPOP_PROOF_WINDOW + 4, True), (DPOP_PROOF_WINDOW + 6, False), (-4, True), (-6, False)],
    ids=["now", "old-within-leeway", "too-old", "future-within-leeway", "too-far-ahead"],
)
def test_the_iat_window(age: int, accepted: bool) -> None:
    now = int(time.time())
    proof = dpop_proof(PROOF_KEY, "GET", URL, access_token=TOKEN, iat=now - age)
    if accepted:
        check(proof, now=now)
    else:
        assert "iat" in proof_refused(proof, now=now).detail


@pytest.mark.parametrize("iat", ["0", True, None, ...], ids=["string", "bool", "null", "missing"])
def test_iat_must_be_a_number(iat: Any) -> None:
    assert "iat" in proof_refused(raw_proof(iat=iat)).detail


@pytest.mark.parametrize(
    "jti", [..., "", "short", 12345678, "j" * 257], ids=["missing", "empty", "short", "int", "long"]
)
def test_jti_must_be_a_reasonable_string(jti: Any) -> None:
    assert "jti" in proof_refused(raw_proof(jti=jti)).detail


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "dpop", 1, ...], ids=["jwt", "at-jwt", "dpop", "number", "missing"])
def test_the_typ_must_be_dpop_jwt(typ: Any) -> None:
    header: dict[str, Any] = {"alg": "ES256", "jwk": PROOF_KEY.as_dict(private=False)}
    if typ is not ...:
        header["typ"] = typ
    values = {"jti": "proof-jti-0001", "htm": "GET", "htu": URL, "iat": int(time.time())}
    assert "typ" in proof_refused(sign_compact(header, values, PROOF_KEY)).detail


def test_a_proof_with_alg_none_is_refused() -> None:
    header = {"typ": "dpop+jwt", "jwk": PROOF_KEY.as_dict(private=False)}
    proof = unsigned(header, {"jti": "proof-jti-0001", "htm": "GET", "htu": URL, "iat": int(time.time())})
    assert "alg" in proof_refused(proof).detail


def test_only_asymmetric_algorithms_are_offered() -> None:
    assert not [alg for alg in DPOP_ALGORITHMS if alg.startswith("HS") or alg == "none"]


def test_a_mac_is_refused_even_keyed_with_a_symmetric_jwk() -> None:
    secret = b"s" * 32
    jwk = {"kty": "oct", "k": b64url(secret)}
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(b'{}')}"
    proof = f"{signing_input}.{b64url(hmac.digest(secret, signing_input.encode(), 'sha256'))}"
    assert "alg" in proof_refused(proof).detail


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "k"])
def test_a_jwk_with_private_members_is_refused(member: str) -> None:
    """Section 4.3 step 7: a private key in the header means the client leaked it; never accept it."""
    jwk = PROOF_KEY.as_dict(private=True) if member == "d" else {**PROOF_KEY.as_dict(private=False), member: "AQAB"}
    assert "jwk" in proof_refused(raw_proof({"jwk": jwk})).detail


@pytest.mark.parametrize(
    "jwk",
    [
        ...,
        "a key",
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA"},
        {"kty": "EC", "crv": "P-256", "x": 1, "y": None},
        {"kty": "RSA", "n": "AA", "e": "AQAB"},
        {"kty": "OKP", "crv": "X25519", "x": "AA"},
        {"kty": "oct"},
        {"crv": "P-256", "x": "AA", "y": "AA"},
    ],
    ids=["missing", "string", "oct", "unknown-curve", "bad-members", "rsa-for-es256", "x25519", "oct-public", "no-kty"],
)
def test_a_jwk_that_is_no_usable_public_key_is_refused(jwk: Any) -> None:
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": "ES256"}
    if jwk is not ...:
        header["jwk"] = jwk
    proof = sign_compact(header, {"jti": "proof-jti-0001"}, PROOF_KEY)
    proof_refused(proof)


@pytest.mark.parametrize("alg", ["PS256", "RS512"])
def test_rsa_proofs_verify(alg: str) -> None:
    """An RSA `jwk` makes a header larger than joserfc's default limit of 512 bytes."""
    rsa = RSAKey.generate_key(2048, private=True)
    proof = dpop_proof(rsa, "GET", URL, access_token=TOKEN, alg=alg)  # type: ignore[arg-type]
    check(proof, jkt=rsa.thumbprint())


def test_ed25519_proofs_verify_under_both_names() -> None:
    ed = OKPKey.generate_key("Ed25519", private=True)
    check(dpop_proof(ed, "GET", URL, access_token=TOKEN, alg="Ed25519"), jkt=ed.thumbprint())  # type: ignore[arg-type]
    with pytest.warns(SecurityWarning, match="RFC 9864"):  # joserfc's, for the deprecated name
        proof = dpop_proof(ed, "GET", URL, access_token=TOKEN, alg="EdDSA")  # type: ignore[arg-type]
        check(proof, jkt=ed.thumbprint())


def test_es384_proofs_verify() -> None:
    es = ECKey.generate_key("P-384", private=True)
    check(dpop_proof(es, "GET", URL, access_token=TOKEN, alg="ES384"), jkt=es.thumbprint())


@pytest.mark.parametrize(
    "proof",
    [None, "", "not-a-jws", "a.b", "a.b.c.d", "!!!.e30.sig", "W10.e30.sig", "x" * (MAX_ACCESS_TOKEN_LENGTH + 1)],
    ids=["none", "empty", "not-a-jws", "two-parts", "four-parts", "bad-base64", "header-array", "huge"],
)
def test_a_missing_or_unreadable_proof_is_refused(proof: str | None) -> None:
    proof_refused(proof)


@pytest.mark.parametrize(
    "payload", [b"[]", b'"claims"', b"\xff", b"[" * 5000], ids=["array", "string", "not-utf8", "nested"]
)
def test_a_proof_whose_payload_is_no_object_is_refused(payload: bytes) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": PROOF_KEY.as_dict(private=False)}
    proof_refused(sign_raw(header, payload, PROOF_KEY))


def test_a_critical_extension_in_a_proof_is_refused() -> None:
    proof_refused(raw_proof({"crit": ["nonsense"], "nonsense": 1}))


def test_same_target() -> None:
    assert same_target("https://App.Test/x", "https://app.test/x")
    assert same_target("http://127.0.0.1:80/x", "http://127.0.0.1/x")
    assert same_target("https://app.test", "https://app.test/")
    assert not same_target("https://app.test/x", "https://app.test/y")
    assert not same_target("https://app.test:x/x", "https://app.test/x")
    assert not same_target("https://[::1/x", "https://app.test/x")


# -- the caches --------------------------------------------------------------------------------


def test_expiring_cache_entries_end_at_their_deadline() -> None:
    cache = ExpiringCache(10)
    cache.put("a", "value", until=100.0)
    assert cache.get("a", now=99.9) == "value"
    assert cache.get("a", now=100.0) is None
    assert len(cache) == 0  # a dead entry is dropped when met


def test_expiring_cache_drops_the_oldest_when_full() -> None:
    cache = ExpiringCache(2)
    cache.put("a", 1, until=1e12)
    cache.put("b", 2, until=1e12)
    cache.put("a", 3, until=1e12)  # renewed: now the newest
    cache.put("c", 4, until=1e12)
    assert (cache.get("a", 0), cache.get("b", 0), cache.get("c", 0)) == (3, None, 4)
    assert len(cache) == 2


def test_add_new_reports_a_replay_while_the_entry_lives() -> None:
    cache = ExpiringCache(10)
    assert cache.add_new("jkt jti", until=110.0, now=100.0)
    assert not cache.add_new("jkt jti", until=120.0, now=105.0)
    assert cache.add_new("jkt jti", until=130.0, now=111.0)  # the first had ended: no longer a replay


# -- modes per path ----------------------------------------------------------------------------


def test_modes_longest_prefix_wins_and_sessions_are_the_default() -> None:
    modes = Modes(["/api"], {"/api/public-ish": "either", "/both/": "either", "/api/v1/x": "session"})
    assert modes.active
    assert modes.for_request("/") == "session"
    assert modes.for_request("/apix") == "session"
    assert modes.for_request("/api") == "bearer"
    assert modes.for_request("/api/") == "bearer"
    assert modes.for_request("/api/items") == "bearer"
    assert modes.for_request("/api/public-ish/x") == "either"
    assert modes.for_request("/api/v1/x/y") == "session"
    assert modes.for_request("/both") == "either"
    assert modes.for_request("/both/x") == "either"


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("/api/../page", None),
        ("/page/../api/x", None),
        ("//api/x", None),
        ("/api/./x", "bearer"),
        ("/api//x", "bearer"),
        ("/page/./x", "session"),
        ("/both/../api", None),
    ],
)
def test_a_path_that_resolves_across_modes_has_none(path: str, mode: str | None) -> None:
    assert Modes(["/api"], {"/both": "either"}).for_request(path) == mode


def test_a_bearer_path_of_slash_covers_everything() -> None:
    modes = Modes(["/"], {})
    assert modes.for_request("/") == "bearer" and modes.for_request("/anything/at/all") == "bearer"


def test_without_token_modes_nothing_is_looked_up() -> None:
    assert not Modes([], {}).active
    assert not Modes([], {"/x": "session"}).active


@pytest.mark.parametrize(
    "modes",
    [{"/api": "token"}, {"api": "bearer"}, {"//api": "bearer"}, {"/api?x": "bearer"}, {"/api#x": "bearer"}],
    ids=["unknown-mode", "relative", "double-slash", "query", "fragment"],
)
def test_bad_modes_are_refused(modes: Any) -> None:
    with pytest.raises(ValueError, match="modes"):
        Modes([], modes)


def test_the_b64token_grammar_matches_what_base64_produces() -> None:
    raw = base64.b64encode(bytes(range(256))).decode()
    assert presented_token(headers(f"Bearer {raw}".encode())) == Presented("bearer", raw, None)
