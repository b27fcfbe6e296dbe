"""The resource server against the real provider (panva's oidc-provider): real access tokens, real apps.

`examples/mcp_api.py` serves under uvicorn three times, each with its own confidential client (for
introspection) and `PKCE_BEARER_PATHS=/mcp`, `PKCE_BEARER_REQUIRED_SCOPES=mcp:tools`:

* `api`: its resource is a JWT resource at oidc-provider (RFC 9068 access tokens, checked locally);
* `opaque`: its resource gets opaque tokens (RFC 7662 introspection, cached);
* `short`: a JWT resource whose tokens live 2 seconds, with `PKCE_CLOCK_LEEWAY=0`, to see expiry.

Tokens come from oidc-provider as clients would get them (client credentials, authorization code
+ PKCE through its login forms, DPoP-bound ones). What the client sees is asserted: the status,
the `WWW-Authenticate` challenges and the JSON, of the app or of the middleware. The last test is
the MCP-style flow of `examples/agent.py`, run with the example's own functions.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from examples.agent import CallbackListener, Protected, authorization_url, discover, redeem
from tests.support.oauth_clients import (
    authorization_code_with_forms,
    client_credentials,
    dpop_key,
    dpop_proof,
    revoke,
)
from tests.support.oidc_provider import LocalProvider, login_with_forms
from tests.support.processes import free_port
from tests.support.real_apps import app_client, app_env
from tests.support.servers import AppServer, serve_all

pytestmark = [pytest.mark.node, pytest.mark.servers]

APP = "examples.mcp_api:app"
SHORT_TTL = 2
#: A resource the provider knows and none of the apps is: its tokens carry the wrong audience.
OTHER_API = "https://other-api.test/mcp"
MACHINE_ID, MACHINE_SECRET = "machine", "machine-secret"
WEB_ID, WEB_SECRET = "web", "web-secret"
AGENT_ID = "agent"
#: Nothing listens here (port 9 is "discard"): authorization_code_with_forms stops at the redirect.
WEB_REDIRECT_URI = "http://127.0.0.1:9/callback"
#: What a browser sends when it loads a page (the middleware redirects only those).
NAVIGATION = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
METADATA_PATH = "/.well-known/oauth-protected-resource"


@dataclass
class App:
    url: str
    client_id: str

    @property
    def resource(self) -> str:
        """The app's PKCE_RESOURCE, and the URL agents call."""
        return f"{self.url}/mcp"


@dataclass
class Setup:
    provider: LocalProvider
    api: App
    opaque: App
    short: App
    agent_port: int


def _app_client(name: str, port: int) -> dict[str, Any]:
    return app_client(name, port, secret=f"secret-{name}", logout=False)


def _env(provider: LocalProvider, client: dict[str, Any], port: int, **extra: str) -> dict[str, str]:
    return app_env(
        provider,
        client,
        port,
        PKCE_BEARER_PATHS="/mcp",
        PKCE_RESOURCE=f"http://127.0.0.1:{port}/mcp",
        PKCE_BEARER_REQUIRED_SCOPES="mcp:tools",
        **extra,
    )


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    ports = {name: free_port() for name in ("api", "opaque", "short")}
    agent_port = free_port()
    apps = {name: App(f"http://127.0.0.1:{port}", f"mcp-{name}") for name, port in ports.items()}
    app_clients = {name: _app_client(apps[name].client_id, port) for name, port in ports.items()}
    clients: list[dict[str, Any]] = [
        *app_clients.values(),
        {
            "client_id": MACHINE_ID,
            "client_secret": MACHINE_SECRET,
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
        },
        {
            "client_id": WEB_ID,
            "client_secret": WEB_SECRET,
            "redirect_uris": [WEB_REDIRECT_URI],
            "grant_types": ["authorization_code"],
        },
        # The agent of examples/agent.py: a public client with a loopback redirect (RFC 8252).
        {
            "client_id": AGENT_ID,
            "token_endpoint_auth_method": "none",
            "application_type": "native",
            "redirect_uris": [f"http://127.0.0.1:{agent_port}/callback"],
            "grant_types": ["authorization_code"],
        },
    ]
    resource_servers = {
        apps["api"].resource: {"scope": "mcp:tools mcp:read"},
        apps["opaque"].resource: {"scope": "mcp:tools mcp:read", "accessTokenFormat": "opaque"},
        apps["short"].resource: {"scope": "mcp:tools", "accessTokenTTL": SHORT_TTL, "jwtAlg": "ES256"},
        OTHER_API: {"scope": "mcp:tools"},
    }
    with LocalProvider(clients, extra={"resourceServers": resource_servers}) as provider:
        servers = [
            AppServer("uvicorn", APP, ports["api"], _env(provider, app_clients["api"], ports["api"])),
            AppServer("uvicorn", APP, ports["opaque"], _env(provider, app_clients["opaque"], ports["opaque"])),
            AppServer(
                "uvicorn",
                APP,
                ports["short"],
                _env(provider, app_clients["short"], ports["short"], PKCE_CLOCK_LEEWAY="0"),
            ),
        ]
        with serve_all(servers):
            yield Setup(provider, apps["api"], apps["opaque"], apps["short"], agent_port)


# -- helpers -------------------------------------------------------------------------------------


def machine_token(setup: Setup, resource: str | None, scope: str = "mcp:tools", **kwargs: Any) -> str:
    """A client-credentials access token for `resource` (`None`: an opaque one with no audience)."""
    answer = client_credentials(
        setup.provider.metadata, MACHINE_ID, MACHINE_SECRET, resource=resource, scope=scope, **kwargs
    )
    token: str = answer["access_token"]
    return token


def call(app: App, token: str | None, *, scheme: str = "Bearer", proof: str | None = None) -> httpx.Response:
    """POST /mcp as an API client: JSON, no browser headers, the token (and proof) as given."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    if proof is not None:
        headers["DPoP"] = proof
    return httpx.post(app.resource, json={}, headers=headers, timeout=10)


def params(challenge: str) -> dict[str, str]:
    """The auth-params of one challenge (all quoted, as the middleware writes them)."""
    return dict(re.findall(r'([a-z_]+)="([^"]*)"', challenge))


def challenge(response: httpx.Response, scheme: str) -> dict[str, str]:
    """The params of the `scheme` challenge among the response's `WWW-Authenticate` headers."""
    found = [value for value in response.headers.get_list("www-authenticate") if value.startswith(f"{scheme} ")]
    assert len(found) == 1, response.headers.get_list("www-authenticate")
    return params(found[0])


def assert_refused(
    response: httpx.Response, app: App, *, reason: str, error: str = "invalid_token", status: int = 401
) -> dict[str, str]:
    """A middleware refusal: status, JSON, the Bearer challenge naming the metadata; returns the
    challenge that carries the error (Bearer, or DPoP for proofs)."""
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert (body["error"], body["reason"]) == (error, reason), body
    assert "caller" not in body  # never the app's answer
    bearer = challenge(response, "Bearer")
    assert bearer["realm"] == app.resource
    assert bearer["resource_metadata"] == f"{app.url}{METADATA_PATH}/mcp"
    dpop = challenge(response, "DPoP")
    assert "ES256" in dpop["algs"].split()
    carrier = dpop if error == "invalid_dpop_proof" else bearer
    other = bearer if carrier is dpop else dpop
    assert carrier["error"] == error and carrier["error_description"] == body["message"]
    assert "error" not in other
    return carrier


def tampered_signature(token: str) -> str:
    """`token` with one character in the middle of its signature changed (not the last one, whose
    low bits may be padding that decodes to the same bytes)."""
    head, _, signature = token.rpartition(".")
    i = len(signature) // 2
    flipped = "A" if signature[i] != "A" else "B"
    return f"{head}.{signature[:i]}{flipped}{signature[i + 1 :]}"


def tampered_payload(token: str, **claims: Any) -> str:
    """`token` with claims changed in its payload and the original signature kept."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    encoded = base64.urlsafe_b64encode(json.dumps({**decoded, **claims}).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


# -- JWT access tokens ---------------------------------------------------------------------------


def test_client_credentials_jwt_reaches_the_app(setup: Setup) -> None:
    token = machine_token(setup, setup.api.resource)

    for _ in range(2):  # the second one from the cache of verified tokens
        response = call(setup.api, token)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "caller": MACHINE_ID,  # no user: oidc-provider's sub is the client
            "scopes": ["mcp:tools"],
            "client_id": MACHINE_ID,
            "dpop_bound": False,
        }


@pytest.fixture(scope="module")
def alice(setup: Setup) -> dict[str, Any]:
    """A user's token answer for the JWT resource: authorization code + PKCE through the provider's forms."""
    with httpx.Client(timeout=10) as browser:
        return authorization_code_with_forms(
            browser,
            setup.provider.metadata,
            WEB_ID,
            WEB_REDIRECT_URI,
            "alice",
            resource=setup.api.resource,
            scope="openid mcp:tools mcp:read",
            client_secret=WEB_SECRET,
        )


def test_a_users_token_names_the_user(setup: Setup, alice: dict[str, Any]) -> None:
    response = call(setup.api, alice["access_token"])

    assert response.status_code == 200, response.text
    assert response.json() == {
        "caller": "alice",
        "scopes": ["mcp:tools", "mcp:read"],
        "client_id": WEB_ID,
        "dpop_bound": False,
    }


def test_an_id_token_is_no_access_token(setup: Setup, alice: dict[str, Any]) -> None:
    # Signed by the same keys for the same user, but no `typ` at+jwt and `aud` the client: RFC 9068
    # section 4 and RFC 8725 section 3.11 say refuse it, as an invalid token (not a provider outage).
    assert_refused(call(setup.api, alice["id_token"]), setup.api, reason="bearer_invalid")


@pytest.mark.parametrize("kind", ["another JWT resource", "the opaque resource", "no resource"])
def test_a_token_for_another_resource_is_refused(setup: Setup, kind: str) -> None:
    resource = {"another JWT resource": OTHER_API, "the opaque resource": setup.opaque.resource}.get(kind)
    # The last two are opaque: the JWT app introspects them and finds another audience, or none.
    token = machine_token(setup, resource)

    assert_refused(call(setup.api, token), setup.api, reason="bearer_audience")


@pytest.mark.parametrize("tamper", ["signature", "payload", "alg none"])
def test_a_tampered_token_is_refused(setup: Setup, tamper: str) -> None:
    token = machine_token(setup, setup.api.resource, scope="mcp:read")
    if tamper == "signature":
        forged = tampered_signature(token)
    elif tamper == "payload":
        forged = tampered_payload(token, scope="mcp:tools")
    else:  # RFC 8725 section 2.1: an unsigned token with the claims wanted
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
        forged = f"{header}.{tampered_payload(token, scope='mcp:tools').split('.')[1]}."
    assert forged != token

    assert_refused(call(setup.api, forged), setup.api, reason="bearer_invalid")
    # The genuine token still works up to its scope: the forgery did not poison any cache.
    genuine = call(setup.api, token)
    assert_refused(genuine, setup.api, reason="insufficient_scope", error="insufficient_scope", status=403)


def test_an_expired_token_is_refused(setup: Setup) -> None:
    unused = machine_token(setup, setup.short.resource)
    used = machine_token(setup, setup.short.resource)  # the last one, so that it is fresh for its first call
    expires = max(jwt_claims(used)["exp"], jwt_claims(unused)["exp"])
    assert jwt_claims(used)["exp"] - jwt_claims(used)["iat"] == SHORT_TTL

    first = call(setup.short, used)
    assert first.status_code == 200, first.text
    assert first.json()["caller"] == MACHINE_ID
    wait = expires - time.time() + 0.2
    assert wait <= SHORT_TTL + 0.2
    time.sleep(max(0.0, wait))

    # One was verified and cached before, the other never seen: both are refused now (leeway 0).
    for token in (used, unused):
        refused = assert_refused(call(setup.short, token), setup.short, reason="bearer_expired")
        assert refused["error_description"] == "The access token expired."


def test_a_token_without_the_required_scope_gets_403(setup: Setup) -> None:
    token = machine_token(setup, setup.api.resource, scope="mcp:read")

    refused = assert_refused(
        call(setup.api, token), setup.api, reason="insufficient_scope", error="insufficient_scope", status=403
    )
    assert refused["scope"] == "mcp:tools"


def test_no_token_or_a_malformed_header(setup: Setup) -> None:
    missing = call(setup.api, None)
    assert missing.status_code == 401
    assert missing.json()["reason"] == "bearer_missing"
    # No token, no error code (RFC 6750 section 3.1): only where to find out more.
    assert set(challenge(missing, "Bearer")) == {"realm", "resource_metadata"}

    assert_refused(
        call(setup.api, "not a b64token"), setup.api, reason="bearer_malformed", error="invalid_request", status=400
    )


# -- opaque tokens: introspection ----------------------------------------------------------------


def test_an_opaque_token_is_introspected_once_for_two_calls(setup: Setup) -> None:
    token = machine_token(setup, setup.opaque.resource)
    assert token.count(".") == 0
    before = setup.provider.introspections(client_id=setup.opaque.client_id)

    for _ in range(2):
        response = call(setup.opaque, token)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "caller": MACHINE_ID,
            "scopes": ["mcp:tools"],
            "client_id": MACHINE_ID,
            "dpop_bound": False,
        }

    assert setup.provider.introspections(client_id=setup.opaque.client_id) == before + 1
    assert setup.provider.introspections(client_id=setup.opaque.client_id, outcome="true") >= 1


def test_a_revoked_opaque_token_is_refused(setup: Setup) -> None:
    token = machine_token(setup, setup.opaque.resource)
    revoke(setup.provider.metadata, MACHINE_ID, MACHINE_SECRET, token)
    inactive = setup.provider.introspections(client_id=setup.opaque.client_id, outcome="false")

    assert_refused(call(setup.opaque, token), setup.opaque, reason="bearer_inactive")
    assert setup.provider.introspections(client_id=setup.opaque.client_id, outcome="false") == inactive + 1


def test_an_unknown_opaque_token_is_refused(setup: Setup) -> None:
    before = setup.provider.introspections(client_id=setup.opaque.client_id, outcome="false")

    assert_refused(call(setup.opaque, secrets.token_urlsafe(32)), setup.opaque, reason="bearer_inactive")
    assert setup.provider.introspections(client_id=setup.opaque.client_id, outcome="false") == before + 1


def test_an_opaque_token_with_too_little_scope_gets_403(setup: Setup) -> None:
    token = machine_token(setup, setup.opaque.resource, scope="mcp:read")

    refused = assert_refused(
        call(setup.opaque, token), setup.opaque, reason="insufficient_scope", error="insufficient_scope", status=403
    )
    assert refused["scope"] == "mcp:tools"


# -- DPoP ----------------------------------------------------------------------------------------


def test_a_dpop_bound_token_with_its_proofs(setup: Setup) -> None:
    key = dpop_key()
    token = machine_token(setup, setup.api.resource, dpop=key)
    assert jwt_claims(token)["cnf"] == {"jkt": key.thumbprint()}

    for _ in range(2):  # a fresh proof each time; the second call finds the token in the cache
        proof = dpop_proof(key, "POST", setup.api.resource, access_token=token)
        response = call(setup.api, token, scheme="DPoP", proof=proof)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "caller": MACHINE_ID,
            "scopes": ["mcp:tools"],
            "client_id": MACHINE_ID,
            "dpop_bound": True,
        }


def test_an_opaque_dpop_bound_token_is_bound_by_introspection(setup: Setup) -> None:
    key = dpop_key()
    token = machine_token(setup, setup.opaque.resource, dpop=key)

    proof = dpop_proof(key, "POST", setup.opaque.resource, access_token=token)
    response = call(setup.opaque, token, scheme="DPoP", proof=proof)
    assert response.status_code == 200, response.text
    assert response.json()["dpop_bound"] is True
    # Introspection said DPoP (cnf.jkt): no downgrade to a bearer token here either.
    assert_refused(call(setup.opaque, token), setup.opaque, reason="dpop_required")


def test_a_dpop_bound_token_as_a_bearer_token_is_refused(setup: Setup) -> None:
    key = dpop_key()
    token = machine_token(setup, setup.api.resource, dpop=key)

    assert_refused(call(setup.api, token), setup.api, reason="dpop_required")
    # A valid proof does not make the Bearer scheme acceptable (RFC 9449 section 7.2).
    proof = dpop_proof(key, "POST", setup.api.resource, access_token=token)
    assert_refused(call(setup.api, token, proof=proof), setup.api, reason="dpop_required")


def test_an_unbound_token_under_the_dpop_scheme_is_refused(setup: Setup) -> None:
    key = dpop_key()
    token = machine_token(setup, setup.api.resource)  # no proof at the token endpoint: not bound
    proof = dpop_proof(key, "POST", setup.api.resource, access_token=token)

    assert_refused(call(setup.api, token, scheme="DPoP", proof=proof), setup.api, reason="bearer_invalid")


def test_a_dpop_bound_token_without_its_proof_is_refused(setup: Setup) -> None:
    token = machine_token(setup, setup.api.resource, dpop=dpop_key())

    assert_refused(call(setup.api, token, scheme="DPoP"), setup.api, reason="dpop_invalid", error="invalid_dpop_proof")


@pytest.mark.parametrize("flaw", ["htu", "htm", "key", "ath", "stale iat", "typ"])
def test_a_bad_dpop_proof_is_refused(setup: Setup, flaw: str) -> None:
    key = dpop_key()
    token = machine_token(setup, setup.api.resource, dpop=key)
    url = setup.api.resource
    if flaw == "htu":
        proof = dpop_proof(key, "POST", f"{setup.api.url}/elsewhere", access_token=token)
    elif flaw == "htm":
        proof = dpop_proof(key, "GET", url, access_token=token)
    elif flaw == "key":
        proof = dpop_proof(dpop_key(), "POST", url, access_token=token)
    elif flaw == "ath":
        proof = dpop_proof(key, "POST", url, access_token=machine_token(setup, setup.api.resource, dpop=key))
    elif flaw == "stale iat":
        proof = dpop_proof(key, "POST", url, access_token=token, iat=int(time.time()) - 600)
    else:
        proof = dpop_proof(key, "POST", url, access_token=token, typ="JWT")

    refused = call(setup.api, token, scheme="DPoP", proof=proof)

    assert_refused(refused, setup.api, reason="dpop_invalid", error="invalid_dpop_proof")
    # The token itself is fine: with a good proof it goes through.
    good = call(setup.api, token, scheme="DPoP", proof=dpop_proof(key, "POST", url, access_token=token))
    assert good.status_code == 200, good.text


def test_a_replayed_dpop_proof_is_refused(setup: Setup) -> None:
    key = dpop_key()
    token = machine_token(setup, setup.api.resource, dpop=key)
    proof = dpop_proof(key, "POST", setup.api.resource, access_token=token)

    first = call(setup.api, token, scheme="DPoP", proof=proof)
    assert first.status_code == 200, first.text
    again = call(setup.api, token, scheme="DPoP", proof=proof)

    assert_refused(again, setup.api, reason="dpop_replayed", error="invalid_dpop_proof")


# -- browsers beside tokens ----------------------------------------------------------------------


def test_browsers_still_log_in_and_a_session_alone_opens_no_bearer_path(setup: Setup) -> None:
    api = setup.api
    with httpx.Client(timeout=10, headers=NAVIGATION) as browser:
        first = browser.get(f"{api.url}/")
        assert first.status_code == 302
        assert first.headers["location"].startswith(setup.provider.metadata["authorization_endpoint"] + "?")

        page, _ = login_with_forms(browser, f"{api.url}/", "bea")
        assert page.status_code == 200, page.text
        assert page.json() == {"hello": "bea", "via": "session"}

        # The session cookie goes along, with browser headers even: no redirect, no app, a 401.
        for method in ("POST", "GET"):
            refused = browser.request(method, api.resource)
            assert refused.status_code == 401, refused.text
            assert "location" not in refused.headers
            assert refused.json()["reason"] == "bearer_missing"
            assert challenge(refused, "Bearer")["resource_metadata"] == f"{api.url}{METADATA_PATH}/mcp"
        assert browser.get(f"{api.url}/").json() == {"hello": "bea", "via": "session"}  # the session lives on


# -- RFC 9728 metadata ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["api", "opaque"])
def test_the_metadata_named_by_the_401(setup: Setup, which: str) -> None:
    app: App = getattr(setup, which)
    named = challenge(call(app, None), "Bearer")["resource_metadata"]
    assert named == f"{app.url}{METADATA_PATH}/mcp"

    for url in (named, f"{app.url}{METADATA_PATH}"):
        response = httpx.get(url, timeout=10)  # no session, no token
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["access-control-allow-origin"] == "*"
        document = response.json()
        algorithms = document.pop("dpop_signing_alg_values_supported")
        assert document == {
            "resource": app.resource,
            "authorization_servers": [setup.provider.issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["mcp:tools"],
        }
        assert "ES256" in algorithms and not any(alg.startswith("HS") for alg in algorithms)
    # Only GET and HEAD.
    assert httpx.post(named, timeout=10).status_code == 405


# -- the MCP-style flow of examples/agent.py -----------------------------------------------------


def test_the_agent_finds_its_way_to_a_token(setup: Setup) -> None:
    api = setup.api
    with httpx.Client(timeout=10) as client, CallbackListener(setup.agent_port) as listener:
        protected = discover(api.resource, client)  # the 401, then the metadata it names
        assert protected == Protected(api.resource, setup.provider.issuer, "mcp:tools")

        url, token_endpoint, state, verifier = authorization_url(
            protected.authorization_server,
            AGENT_ID,
            listener.redirect_uri,
            protected.resource,
            client,
            scope=protected.scope,
        )
        assert token_endpoint == setup.provider.metadata["token_endpoint"]
        # The user signs in at the provider; its redirect comes back to the agent's listener.
        with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=10, headers=NAVIGATION) as browser:
            walk = pool.submit(login_with_forms, browser, url, "dora")
            code = listener.wait_for_code(state, timeout=30)
            final, visited = walk.result(timeout=30)
        assert visited[-1].startswith(listener.redirect_uri + "?")
        assert final.status_code == 200 and "return to the agent" in final.text

        token = redeem(
            token_endpoint,
            code,
            client_id=AGENT_ID,
            redirect_uri=listener.redirect_uri,
            verifier=verifier,
            resource=protected.resource,
            client=client,
        )
        assert token["token_type"] == "Bearer"
        assert jwt_claims(token["access_token"])["aud"] == api.resource

        answer = client.post(api.resource, json={}, headers={"Authorization": f"Bearer {token['access_token']}"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"caller": "dora", "scopes": ["mcp:tools"], "client_id": AGENT_ID, "dpop_bound": False}


def test_the_agent_refuses_metadata_for_another_url(setup: Setup) -> None:
    # /mcp/tools is on the bearer path, but the metadata its 401 names is for /mcp (RFC 9728 3.3).
    with httpx.Client(timeout=10) as client, pytest.raises(SystemExit, match="the metadata is for"):
        discover(f"{setup.api.resource}/tools", client)
