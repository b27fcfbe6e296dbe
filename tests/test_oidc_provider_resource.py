"""The test provider as the authorization server of protected APIs, and the OAuth client helpers.

Later resource-server tests take real access tokens from here; these tests pin down what those
tokens and the introspection answers look like, so a change in oidc-provider shows up here first.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.oauth_clients import (
    OAuthError,
    authorization_code_with_forms,
    client_credentials,
    dpop_key,
    dpop_proof,
    introspect,
    revoke,
)
from tests.support.oidc_provider import LocalProvider, login_with_forms

pytestmark = [pytest.mark.node]

JWT_API = "https://api.test/mcp"
ES_API = "https://es-api.test/"
OPAQUE_API = "https://opaque-api.test/v1"

MACHINE_ID, MACHINE_SECRET = "machine", "machine-secret"
RS_ID, RS_SECRET = "resource-server", "rs-secret"
WEB_ID, WEB_SECRET = "web-app", "web-secret"
SPA_ID = "spa"
#: Nothing listens here (port 9 is "discard"): authorization_code_with_forms stops at the redirect.
REDIRECT_URI = "http://127.0.0.1:9/callback"

RESOURCE_SERVERS: dict[str, dict[str, Any]] = {
    JWT_API: {"scope": "api:read api:write", "accessTokenFormat": "jwt"},
    ES_API: {"scope": "es:read", "jwtAlg": "ES256", "accessTokenTTL": 120},
    OPAQUE_API: {"scope": "api:read", "accessTokenFormat": "opaque"},
}
CLIENTS: list[dict[str, Any]] = [
    {
        "client_id": MACHINE_ID,
        "client_secret": MACHINE_SECRET,
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
    },
    # A resource server only introspects: no grant at all.
    {
        "client_id": RS_ID,
        "client_secret": RS_SECRET,
        "grant_types": [],
        "response_types": [],
        "redirect_uris": [],
    },
    {
        "client_id": WEB_ID,
        "client_secret": WEB_SECRET,
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
    },
    {
        "client_id": SPA_ID,
        "token_endpoint_auth_method": "none",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code"],
        # Without it the client default require_auth_time demands openid in every request.
        "require_auth_time": False,
    },
]


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    with LocalProvider(CLIENTS, extra={"resourceServers": RESOURCE_SERVERS}) as op:
        yield op


@pytest.fixture(scope="module")
def jwks(provider: LocalProvider) -> KeySet:
    response = httpx.get(provider.metadata["jwks_uri"], timeout=10)
    response.raise_for_status()
    return KeySet.import_key_set(response.json())


def jose_header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return header


def verified_claims(token: str, jwks: KeySet, alg: str = "RS256") -> dict[str, Any]:
    """The claims of a JWT access token after checking its signature against the provider's JWKS."""
    return dict(jwt.decode(token, jwks, algorithms=[alg]).claims)


def test_discovery_advertises_the_authorization_server_features(provider: LocalProvider) -> None:
    metadata = provider.metadata

    assert metadata["introspection_endpoint"] == f"{provider.issuer}/token/introspection"
    assert metadata["revocation_endpoint"] == f"{provider.issuer}/token/revocation"
    assert "ES256" in metadata["dpop_signing_alg_values_supported"]
    assert "client_credentials" in metadata["grant_types_supported"]
    # Resource server scopes are granted per resource, not advertised as OpenID scopes.
    assert "api:read" not in metadata["scopes_supported"]


def test_client_credentials_jwt_follows_rfc_9068(provider: LocalProvider, jwks: KeySet) -> None:
    before = int(time.time())
    answer = client_credentials(
        provider.metadata, MACHINE_ID, MACHINE_SECRET, resource=JWT_API, scope="api:read openid unknown"
    )

    assert answer["token_type"] == "Bearer"
    assert answer["scope"] == "api:read"  # only the resource's scopes survive
    token = answer["access_token"]
    header = jose_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    claims = verified_claims(token, jwks)
    assert set(claims) == {"iss", "aud", "sub", "client_id", "scope", "iat", "exp", "jti"}
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == JWT_API
    assert claims["sub"] == MACHINE_ID  # no user: oidc-provider puts the client id
    assert claims["client_id"] == MACHINE_ID
    assert claims["scope"] == "api:read"
    assert claims["iat"] >= before
    assert claims["exp"] - claims["iat"] == 600 == answer["expires_in"]  # client_credentials default
    assert claims["jti"]
    assert provider.grant_count("client_credentials", client_id=MACHINE_ID) >= 1


def test_resource_server_alg_and_ttl(provider: LocalProvider, jwks: KeySet) -> None:
    answer = client_credentials(provider.issuer, MACHINE_ID, MACHINE_SECRET, resource=ES_API, scope="es:read")

    token = answer["access_token"]
    assert jose_header(token)["alg"] == "ES256"
    claims = verified_claims(token, jwks, alg="ES256")
    assert claims["aud"] == ES_API
    assert claims["exp"] - claims["iat"] == 120 == answer["expires_in"]


def test_opaque_token_introspects_until_revoked(provider: LocalProvider) -> None:
    answer = client_credentials(provider.metadata, MACHINE_ID, MACHINE_SECRET, resource=OPAQUE_API, scope="api:read")
    token = answer["access_token"]
    assert token.count(".") == 0
    introspections = provider.introspections()

    info = introspect(provider.metadata, RS_ID, RS_SECRET, token)

    assert info["active"] is True
    assert info["aud"] == OPAQUE_API
    assert info["scope"] == "api:read"
    assert info["client_id"] == MACHINE_ID
    assert info["sub"] == MACHINE_ID  # added by server.mjs, as in the JWT form
    assert info["token_type"] == "Bearer"
    assert info["iss"] == provider.issuer
    assert info["exp"] > time.time()
    assert "cnf" not in info

    revoke(provider.metadata, MACHINE_ID, MACHINE_SECRET, token)
    assert introspect(provider.metadata, RS_ID, RS_SECRET, token) == {"active": False}

    assert provider.introspections() == introspections + 2
    assert provider.introspections(client_id=RS_ID, outcome="false") >= 1
    assert provider.revocations(client_id=MACHINE_ID, outcome="ok") >= 1
    assert f"OPLOG introspection {RS_ID} true" in provider.log_lines
    assert f"OPLOG revocation {MACHINE_ID} ok" in provider.log_lines


def test_jwt_access_tokens_cannot_be_introspected(provider: LocalProvider) -> None:
    token = client_credentials(provider.metadata, MACHINE_ID, MACHINE_SECRET, resource=JWT_API, scope="api:read")[
        "access_token"
    ]

    with pytest.raises(OAuthError) as refused:
        introspect(provider.metadata, RS_ID, RS_SECRET, token)

    assert refused.value.error == "unsupported_token_type"
    assert provider.introspections(client_id=RS_ID, outcome="unsupported_token_type") == 1


def test_introspection_needs_client_authentication(provider: LocalProvider) -> None:
    with pytest.raises(OAuthError) as refused:
        introspect(provider.metadata, RS_ID, "wrong", "whatever")

    assert refused.value.error == "invalid_client"
    # The log names the client the request claimed to be, authenticated or not.
    assert provider.introspections(client_id=RS_ID, outcome="invalid_client") == 1


def test_dpop_bound_client_credentials_tokens(provider: LocalProvider, jwks: KeySet) -> None:
    key = dpop_key()

    jwt_answer = client_credentials(
        provider.metadata, MACHINE_ID, MACHINE_SECRET, resource=JWT_API, scope="api:write", dpop=key
    )
    opaque_answer = client_credentials(
        provider.metadata, MACHINE_ID, MACHINE_SECRET, resource=OPAQUE_API, scope="api:read", dpop=key
    )

    assert jwt_answer["token_type"] == "DPoP"
    claims = verified_claims(jwt_answer["access_token"], jwks)
    assert claims["cnf"] == {"jkt": key.thumbprint()}  # RFC 7638 thumbprint of the public key
    assert claims["scope"] == "api:write"
    assert opaque_answer["token_type"] == "DPoP"
    info = introspect(provider.metadata, RS_ID, RS_SECRET, opaque_answer["access_token"])
    assert info["active"] is True
    assert info["token_type"] == "DPoP"
    assert info["cnf"] == {"jkt": key.thumbprint()}


def test_dpop_proof_shape() -> None:
    key = dpop_key()

    # The access token of RFC 9449's example in section 7.1, whose ath the RFC gives.
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    proof = dpop_proof(key, "get", "https://api.test/mcp?x=1#frag", access_token=token, nonce="n")

    header = jose_header(proof)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == "ES256"
    assert header["jwk"] == key.as_dict(private=False)
    assert "d" not in header["jwk"]
    claims = jwt.decode(proof, key, algorithms=["ES256"]).claims
    assert claims["htm"] == "GET"
    assert claims["htu"] == "https://api.test/mcp"
    assert claims["ath"] == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    assert claims["nonce"] == "n"
    assert abs(claims["iat"] - time.time()) < 5
    assert claims["jti"]
    assert dpop_proof(key, "GET", "https://x.test/", jti="j", iat=1)  # chosen values for bad proofs


def test_a_reused_dpop_proof_is_refused(provider: LocalProvider) -> None:
    key = dpop_key()
    token_endpoint = provider.metadata["token_endpoint"]
    proof = dpop_proof(key, "POST", token_endpoint)
    form = {"grant_type": "client_credentials", "scope": "api:read", "resource": JWT_API}

    first = httpx.post(token_endpoint, data=form, auth=(MACHINE_ID, MACHINE_SECRET), headers={"DPoP": proof})
    again = httpx.post(token_endpoint, data=form, auth=(MACHINE_ID, MACHINE_SECRET), headers={"DPoP": proof})

    assert first.status_code == 200, first.text
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"  # "DPoP proof JWT Replay detected"


def test_authorization_code_with_resource_gives_a_user_jwt(provider: LocalProvider, jwks: KeySet) -> None:
    with httpx.Client(timeout=10) as browser:
        answer = authorization_code_with_forms(
            browser,
            provider.issuer,
            WEB_ID,
            REDIRECT_URI,
            "alice",
            resource=JWT_API,
            scope="openid api:read",
            client_secret=WEB_SECRET,
        )

    assert answer["token_type"] == "Bearer"
    assert answer["scope"] == "api:read"
    assert answer["id_token"]
    claims = verified_claims(answer["access_token"], jwks)
    assert set(claims) == {"iss", "aud", "sub", "client_id", "scope", "iat", "exp", "jti"}
    assert claims["sub"] == "alice"
    assert claims["aud"] == JWT_API
    assert claims["client_id"] == WEB_ID
    assert claims["scope"] == "api:read"
    assert claims["exp"] - claims["iat"] == 3600  # AccessToken default

    # The refresh token remembers the resource (useGrantedResource): no `resource` needed again.
    refreshed = httpx.post(
        provider.metadata["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": answer["refresh_token"]},
        auth=(WEB_ID, WEB_SECRET),
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    refreshed_claims = verified_claims(refreshed.json()["access_token"], jwks)
    assert refreshed_claims["aud"] == JWT_API
    assert refreshed_claims["sub"] == "alice"


def test_public_client_code_flow_with_dpop_and_opaque_token(provider: LocalProvider) -> None:
    key = dpop_key()
    with httpx.Client(timeout=10) as browser:
        answer = authorization_code_with_forms(
            browser, provider.metadata, SPA_ID, REDIRECT_URI, "bob", resource=OPAQUE_API, scope="api:read", dpop=key
        )

    assert answer["token_type"] == "DPoP"
    assert "id_token" not in answer  # no openid: a plain OAuth request
    info = introspect(provider.metadata, RS_ID, RS_SECRET, answer["access_token"])
    assert info["active"] is True
    assert info["sub"] == "bob"
    assert info["client_id"] == SPA_ID
    assert info["aud"] == OPAQUE_API
    assert info["scope"] == "api:read"
    assert info["token_type"] == "DPoP"
    assert info["cnf"] == {"jkt": key.thumbprint()}


def test_the_browser_session_skips_the_forms_the_second_time(provider: LocalProvider) -> None:
    posted: list[str] = []

    def record(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.startswith("/interaction/"):
            posted.append(dict(parse_qsl(request.read().decode()))["prompt"])

    with httpx.Client(timeout=10, event_hooks={"request": [record]}) as browser:
        for _ in range(2):
            authorization_code_with_forms(
                browser, provider.issuer, SPA_ID, REDIRECT_URI, "carol", resource=JWT_API, scope="api:read"
            )

    assert posted == ["login", "consent"]


def test_unknown_resource_is_refused(provider: LocalProvider) -> None:
    with pytest.raises(OAuthError) as token_endpoint:
        client_credentials(provider.metadata, MACHINE_ID, MACHINE_SECRET, resource="https://other.test/", scope="x")
    with httpx.Client(timeout=10) as browser, pytest.raises(OAuthError) as authorization:
        authorization_code_with_forms(
            browser,
            provider.issuer,
            SPA_ID,
            REDIRECT_URI,
            "dave",
            resource="https://other.test/",
            scope="api:read",
        )

    assert (token_endpoint.value.error, token_endpoint.value.status) == ("invalid_target", 400)
    assert (authorization.value.error, authorization.value.status) == ("invalid_target", 0)
    # Indicators are compared exactly: a trailing slash makes another resource.
    with pytest.raises(OAuthError, match="invalid_target"):
        client_credentials(provider.metadata, MACHINE_ID, MACHINE_SECRET, resource=JWT_API + "/", scope="api:read")


def test_without_resource_nothing_changes(provider: LocalProvider) -> None:
    answer = client_credentials(provider.metadata, MACHINE_ID, MACHINE_SECRET, resource=None, scope="api:read")

    assert "scope" not in answer  # api:read belongs to resources only
    info = introspect(provider.metadata, RS_ID, RS_SECRET, answer["access_token"])
    assert info["active"] is True
    assert "aud" not in info


def test_dpop_nonces_when_configured() -> None:
    with LocalProvider(CLIENTS, extra={"resourceServers": RESOURCE_SERVERS, "dpopNonces": True}) as op:
        answer = client_credentials(
            op.metadata, MACHINE_ID, MACHINE_SECRET, resource=JWT_API, scope="api:read", dpop=dpop_key()
        )

        assert answer["token_type"] == "DPoP"
        # The first attempt met the nonce challenge; the helper retried with the nonce.
        assert op.grant_count("client_credentials", "use_dpop_nonce") == 1
        assert op.grant_count("client_credentials") == 1


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ({"not a url": {"scope": "a"}}, "absolute URL"),
        ({JWT_API: {"scope": "a", "format": "jwt"}}, "unknown key"),
        ({JWT_API: {"accessTokenFormat": "paseto"}}, "accessTokenFormat"),
        ({JWT_API: {"jwtAlg": "HS256"}}, "jwtAlg"),
        ({JWT_API: {"accessTokenTTL": 0}}, "accessTokenTTL"),
    ],
)
def test_bad_resource_servers_fail_at_start(servers: dict[str, Any], message: str) -> None:
    with pytest.raises(RuntimeError, match="before it was ready") as excinfo:
        LocalProvider([], extra={"resourceServers": servers}).start()

    assert "OP CONFIG ERROR" in str(excinfo.value)
    assert message in str(excinfo.value)


def test_login_walk_stops_at_the_redirect_uri(provider: LocalProvider) -> None:
    """``stop_at`` hands back the redirect to the client instead of requesting it (nothing listens)."""
    start = f"{provider.metadata['authorization_endpoint']}?" + urlencode(
        {
            "client_id": SPA_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
    )
    with httpx.Client(timeout=10) as browser:
        final, visited = login_with_forms(browser, start, "erin", stop_at=REDIRECT_URI)

    assert final.status_code == 303
    location = final.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    assert dict(parse_qsl(urlsplit(location).query))["code"]
    assert visited[0] == start
    assert not any(url.startswith(REDIRECT_URI) for url in visited)
