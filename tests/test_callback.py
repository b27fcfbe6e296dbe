"""The callback and the ID token, against a provider that lies: what the person in the browser sees.

Each test drives a login like a browser (see `helpers`): a protected page redirects to the
provider, the test reads `state`/`nonce`/`code_challenge` from that URL, has the hostile provider
issue a code, and comes back to `/auth/callback`. A refusal must show the short HTML page with
its reason code (400 for a bad callback, 502 for a bad provider answer or ID token, 504 for a
provider that does not answer), log the reason, leak nothing, and leave the browser without a
session.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import string
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx
import pytest
from joserfc.jwk import ECKey
from starlette.types import Message

from pkce_middleware._flow import FLOW_MAX_AGE
from tests.support.hostile_provider import (
    REMOVE,
    HostileProvider,
    hs256_with_public_key,
    rsa_key,
    sign_compact,
    tamper_signature,
    unsigned,
)
from tests.support.site import (
    APP_ORIGIN,
    CALLBACK_PATH,
    CLIENT_ID,
    ISSUER,
    SESSION_COOKIE,
    Site,
    assert_logged,
    assert_no_session,
    assert_refusal_page,
    begin_login,
    callback,
    complete_login,
    flow_cookie_names,
    login,
    open_site,
)


@pytest.fixture(autouse=True)
def _capture_middleware_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pkce_middleware")


def cookie_attributes(response: httpx.Response, name: str) -> dict[str, str] | None:
    """The attributes of the `Set-Cookie` for `name` (lower-cased names; `value` is the value)."""
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        cookie_name, _, value = first.partition("=")
        if cookie_name == name:
            parsed = {"value": value}
            for attribute in attributes:
                key, _, attribute_value = attribute.partition("=")
                parsed[key.lower()] = attribute_value
            return parsed
    return None


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


# -- the login that works ---------------------------------------------------------------------


async def test_successful_login_sets_a_locked_down_session_and_returns_to_the_page(site: Site) -> None:
    target = "/reports/q3?year=2024&sort=-date&x=%2F"
    location, params = await begin_login(site.client, target)
    assert location.startswith(site.hostile.authorization_endpoint + "?")
    [flow_name] = flow_cookie_names(site.client)

    response = await complete_login(site.client, site.hostile, params)

    assert response.status_code == 303
    assert response.headers["location"] == target
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    session = cookie_attributes(response, SESSION_COOKIE)
    assert session is not None and session["value"]
    assert "httponly" in session
    assert "secure" in session
    assert session["samesite"].lower() == "lax"
    assert session["path"] == "/"
    assert "domain" not in session
    flow = cookie_attributes(response, flow_name)
    assert flow is not None and flow["max-age"] == "0"
    assert flow_cookie_names(site.client) == []
    assert site.hostile.calls["token"] == 1

    page = await site.client.get(response.headers["location"])
    assert page.status_code == 200
    assert page.text == "hello alice"


async def test_token_request_proves_the_verifier_behind_the_challenge(site: Site) -> None:
    _, params = await begin_login(site.client, "/")
    assert params["code_challenge_method"] == "S256"
    assert params["response_type"] == "code"
    assert "openid" in params["scope"].split()
    assert params["redirect_uri"] == APP_ORIGIN + CALLBACK_PATH
    assert len({params["state"], params["nonce"], params["code_challenge"]}) == 3

    response = await complete_login(site.client, site.hostile, params)

    assert response.status_code == 303
    sent = site.hostile.last_token_request
    verifier = sent.one("code_verifier")
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set(string.ascii_letters + string.digits + "-._~")
    assert s256(verifier) == params["code_challenge"]
    assert sent.one("grant_type") == "authorization_code"
    assert sent.one("redirect_uri") == APP_ORIGIN + CALLBACK_PATH
    # Neither the verifier nor the nonce ever travelled in the front channel.
    assert verifier not in response.headers.get("location", "")
    assert params["nonce"] not in params["state"]


async def test_iss_may_be_absent_when_the_provider_does_not_promise_it() -> None:
    hostile = HostileProvider()
    hostile.iss_parameter_supported = False
    async with open_site(hostile) as site:
        _, params = await begin_login(site.client, "/")
        response = await complete_login(site.client, hostile, params, iss=None)
        assert response.status_code == 303
        assert (await site.client.get("/")).text == "hello alice"


async def test_token_type_is_compared_case_insensitively(site: Site) -> None:
    site.hostile.token_overrides = {"token_type": "bearer"}
    response = await login(site.client, site.hostile)
    assert response.status_code == 303
    assert (await site.client.get("/")).text == "hello alice"


async def test_no_kid_with_a_single_published_key_is_accepted(site: Site) -> None:
    """Conformance rp-id_token-kid-absent-single-jwks: ACCEPT."""
    site.hostile.header_overrides = {"kid": REMOVE}
    response = await login(site.client, site.hostile)
    assert response.status_code == 303
    assert (await site.client.get("/")).text == "hello alice"


# -- client authentication at the token endpoint ----------------------------------------------


async def test_confidential_client_uses_basic_auth_with_form_encoded_credentials() -> None:
    """RFC 6749 section 2.3.1: id and secret are form-urlencoded, then joined and base64-encoded."""
    client_id = "app client:1/é"
    client_secret = "p@ss:w/rd+ %é&x"
    hostile = HostileProvider(client_id=client_id)
    async with open_site(hostile, client_id=client_id, client_secret=client_secret) as site:
        response = await login(site.client, hostile)
        assert response.status_code == 303

    sent = hostile.last_token_request
    assert sent.content_type == "application/x-www-form-urlencoded"
    assert sent.authorization is not None
    scheme, _, encoded = sent.authorization.partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode("ascii") == f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    assert "client_secret" not in sent.form


async def test_public_client_sends_its_id_in_the_body_and_no_authorization() -> None:
    async with open_site(client_secret=None) as site:
        response = await login(site.client, site.hostile)
        assert response.status_code == 303

    sent = site.hostile.last_token_request
    assert sent.authorization is None
    assert sent.one("client_id") == CLIENT_ID
    assert "client_secret" not in sent.form


async def test_client_secret_post_when_the_provider_offers_only_that() -> None:
    hostile = HostileProvider()
    hostile.metadata_overrides = {"token_endpoint_auth_methods_supported": ["client_secret_post"]}
    async with open_site(hostile) as site:
        response = await login(site.client, hostile)
        assert response.status_code == 303
        secret = site.config.client_secret_value

    sent = hostile.last_token_request
    assert sent.authorization is None
    assert sent.one("client_id") == CLIENT_ID
    assert sent.one("client_secret") == secret


# -- ID token rejections (OpenID Connect Core 1.0 section 3.1.3.7) ----------------------------

Setup = Callable[[HostileProvider], None]


def claims(**overrides: Any) -> Setup:
    def setup(hostile: HostileProvider) -> None:
        hostile.claim_overrides = overrides

    return setup


def relative_claims(**offsets: int) -> Setup:
    """Time claims set to now + offset when the test runs."""

    def setup(hostile: HostileProvider) -> None:
        now = int(time.time())
        hostile.claim_overrides = {name: now + offset for name, offset in offsets.items()}

    return setup


def alg_none(hostile: HostileProvider) -> None:
    hostile.id_token_encoder = unsigned


def hs256_keyed_with_public_key(hostile: HostileProvider) -> None:
    hostile.id_token_encoder = hs256_with_public_key(rsa_key("op-key-1"))


def bad_signature(hostile: HostileProvider) -> None:
    hostile.id_token_encoder = lambda header, payload: tamper_signature(
        sign_compact(header, payload, hostile.signing_key)
    )


def unknown_kid(hostile: HostileProvider) -> None:
    attacker = rsa_key("attacker-key")
    hostile.header_overrides = {"kid": attacker.kid}
    hostile.id_token_encoder = lambda header, payload: sign_compact(header, payload, attacker)


def no_kid_several_keys(hostile: HostileProvider) -> None:
    hostile.jwks_keys = [rsa_key("op-key-1"), rsa_key("op-key-2")]
    hostile.header_overrides = {"kid": REMOVE}


def unknown_crit(hostile: HostileProvider) -> None:
    hostile.header_overrides = {"crit": ["urn:example:must-understand"], "urn:example:must-understand": True}


def embedded_jwk(hostile: HostileProvider) -> None:
    provider_ec = ECKey.generate_key("P-256", parameters={"kid": "op-ec-1", "use": "sig"})
    attacker = ECKey.generate_key("P-256", parameters={"use": "sig"})
    hostile.jwks_keys = [hostile.signing_key, provider_ec]
    hostile.id_token_encoder = lambda header, payload: sign_compact(
        {"alg": "ES256", "typ": "JWT", "jwk": attacker.as_dict(private=False)}, payload, attacker
    )


ID_TOKEN_CASES = [
    pytest.param(claims(nonce="nonce-of-another-login"), "nonce:", id="nonce-wrong"),
    pytest.param(claims(nonce=REMOVE), "nonce:", id="nonce-missing"),
    pytest.param(claims(aud="another-client"), "aud:", id="aud-wrong"),
    pytest.param(claims(aud=REMOVE), "aud:", id="aud-missing"),
    pytest.param(claims(aud=[CLIENT_ID, "https://untrusted.test"]), "aud:", id="aud-extra-untrusted"),
    pytest.param(claims(iss="https://evil.test"), "iss:", id="iss-wrong"),
    pytest.param(claims(azp="another-client"), "azp:", id="azp-wrong"),
    pytest.param(relative_claims(exp=-3600, iat=-3660), "exp:", id="expired"),
    pytest.param(relative_claims(iat=3600), "iat:", id="iat-future"),
    pytest.param(relative_claims(iat=-3600), "iat:", id="iat-too-old"),
    pytest.param(claims(iat=REMOVE), "iat:", id="iat-missing"),
    pytest.param(claims(sub=REMOVE), "sub:", id="sub-missing"),
    pytest.param(claims(at_hash="AAAAAAAAAAAAAAAAAAAAAA"), "at_hash:", id="at_hash-wrong"),
    pytest.param(alg_none, "unsupported_algorithm", id="alg-none"),
    pytest.param(hs256_keyed_with_public_key, "unsupported_algorithm", id="hs256-with-rsa-public-key"),
    pytest.param(bad_signature, "bad_signature", id="bad-signature"),
    pytest.param(unknown_kid, "not in the provider's JWKS", id="unknown-kid"),
    pytest.param(no_kid_several_keys, "no kid and 2 candidate keys", id="no-kid-several-keys"),
    pytest.param(unknown_crit, "unsupported_header", id="crit-unknown"),
    pytest.param(embedded_jwk, "bad_signature", id="embedded-jwk-attacker-key"),
]


@pytest.mark.parametrize(("setup", "detail"), ID_TOKEN_CASES)
async def test_bad_id_token_is_refused(site: Site, caplog: pytest.LogCaptureFixture, setup: Setup, detail: str) -> None:
    setup(site.hostile)

    response = await login(site.client, site.hostile)

    assert_refusal_page(response, status=502, reason="id_token_invalid", site=site)
    assert_logged(caplog, "id_token_invalid", detail=detail)
    assert site.hostile.calls["token"] == 1  # refused after the code redemption, for the ID token
    assert flow_cookie_names(site.client) == []
    await assert_no_session(site)


async def test_unknown_kid_refetches_the_jwks_once(site: Site) -> None:
    unknown_kid(site.hostile)
    response = await login(site.client, site.hostile)
    assert response.status_code == 502
    assert site.hostile.calls["jwks"] == 2


async def test_key_rotation_costs_one_jwks_fetch_and_a_garbage_kid_none(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Conformance rp-key-rotation-op-sign-key: refetch the JWKS, ACCEPT; then no refetch storm."""
    assert (await login(site.client, site.hostile)).status_code == 303
    assert site.hostile.calls["jwks"] == 1

    site.hostile.rotate_key("op-key-2")
    second = site.browser()
    response = await login(second, site.hostile)
    assert response.status_code == 303
    assert (await second.get("/")).text == "hello alice"
    assert site.hostile.calls["jwks"] == 2

    site.hostile.header_overrides = {"kid": "garbage-kid"}
    third = site.browser()
    response = await login(third, site.hostile)
    assert_refusal_page(response, status=502, reason="id_token_invalid", site=site)
    assert_logged(caplog, "id_token_invalid", detail="garbage-kid")
    assert site.hostile.calls["jwks"] == 2
    assert site.hostile.calls["discovery"] == 1
    await assert_no_session(site, third)


# -- the provider's other failures ------------------------------------------------------------


async def test_discovery_issuer_mismatch_never_sends_the_browser_to_the_provider(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Conformance rp-discovery-issuer-not-matching-config: the authorization endpoint is never used."""
    hostile = HostileProvider()
    hostile.discovery_issuer = ISSUER + "INVALID"
    async with open_site(hostile) as site:
        response = await site.client.get("/")

        assert_refusal_page(response, status=502, reason="discovery_mismatch", site=site)
        assert "location" not in response.headers
        assert_logged(caplog, "discovery_mismatch", detail="PKCE_ISSUER")
        assert flow_cookie_names(site.client) == []
        assert SESSION_COOKIE not in site.client.cookies
        assert hostile.calls["jwks"] == hostile.calls["token"] == 0


async def run_lifespan(site: Site) -> list[Message]:
    """Drive the ASGI lifespan protocol by hand: startup, then shutdown if startup worked."""
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await site.middleware({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


async def test_lifespan_startup_fails_naming_pkce_issuer_on_discovery_mismatch() -> None:
    hostile = HostileProvider()
    hostile.discovery_issuer = "https://impostor.test"
    async with open_site(hostile) as site:
        sent = await run_lifespan(site)

    assert [message["type"] for message in sent] == ["lifespan.startup.failed"]
    assert "PKCE_ISSUER" in sent[0]["message"]
    assert "https://impostor.test" in sent[0]["message"]
    assert hostile.calls["jwks"] == 0


async def test_lifespan_startup_loads_discovery_and_keys_once(site: Site) -> None:
    sent = await run_lifespan(site)

    assert [message["type"] for message in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert site.hostile.calls["discovery"] == 1
    assert site.hostile.calls["jwks"] == 1


@pytest.mark.parametrize(
    ("setup", "status", "reason"),
    [
        pytest.param({"token_behaviour": "error_500"}, 502, "token_endpoint_error", id="http-500"),
        pytest.param({"token_behaviour": "garbage"}, 502, "token_invalid", id="not-json"),
        pytest.param({"token_behaviour": "invalid_grant"}, 400, "code_rejected", id="invalid_grant"),
        pytest.param({"token_overrides": {"id_token": REMOVE}}, 502, "token_response_invalid", id="no-id_token"),
        pytest.param({"token_overrides": {"token_type": "mac"}}, 502, "token_response_invalid", id="not-bearer"),
        pytest.param({"token_behaviour": "hang"}, 504, "token_timeout", id="hangs"),
    ],
)
async def test_token_endpoint_failure_is_refused(
    caplog: pytest.LogCaptureFixture, setup: dict[str, Any], status: int, reason: str
) -> None:
    hostile = HostileProvider()
    for name, value in setup.items():
        setattr(hostile, name, value)
    async with open_site(hostile, http_timeout=0.5) as site:
        started = time.monotonic()
        response = await login(site.client, hostile)
        elapsed = time.monotonic() - started

        assert_refusal_page(response, status=status, reason=reason, site=site)
        assert_logged(caplog, reason)
        assert hostile.calls["token"] == 1
        assert elapsed < hostile.hang_seconds  # the hanging provider was cut off, not waited for
        await assert_no_session(site)


# -- callback rejections before any token request ---------------------------------------------


async def test_iss_mismatch_is_refused_without_a_token_request(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 9207 mix-up defence: the code came back from somebody else's issuer."""
    _, params = await begin_login(site.client, "/")
    response = await complete_login(site.client, site.hostile, params, iss="https://evil.test")

    assert_refusal_page(response, status=400, reason="iss_mismatch", site=site)
    assert_logged(caplog, "iss_mismatch")
    assert site.hostile.calls["token"] == 0
    assert flow_cookie_names(site.client) == []
    await assert_no_session(site)


async def test_iss_missing_is_refused_when_the_provider_promises_it(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    _, params = await begin_login(site.client, "/")
    response = await complete_login(site.client, site.hostile, params, iss=None)

    assert_refusal_page(response, status=400, reason="iss_missing", site=site)
    assert_logged(caplog, "iss_missing")
    assert site.hostile.calls["token"] == 0
    await assert_no_session(site)


async def test_provider_error_is_shown_escaped_and_ends_the_flow(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    _, params = await begin_login(site.client, "/")
    description = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    response = await callback(
        site.client,
        [("error", "access_denied"), ("error_description", description), ("state", params["state"])],
    )

    assert_refusal_page(response, status=400, reason="provider_error", site=site)
    assert "<script>" not in response.text
    assert "<img" not in response.text
    assert "&lt;script&gt;" in response.text
    assert_logged(caplog, "provider_error")
    assert flow_cookie_names(site.client) == []
    # The flow is over: the code that arrives later for the same state is refused, unredeemed.
    late = await complete_login(site.client, site.hostile, params)
    assert late.status_code == 400
    assert site.hostile.calls["token"] == 0
    await assert_no_session(site)


async def test_an_error_answer_from_another_issuer_is_not_shown(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 9207 section 2.4: an error answer is checked against our issuer too; another's words
    (a phishing text, say) are never shown as the provider's."""
    _, params = await begin_login(site.client, "/")
    response = await callback(
        site.client,
        [
            ("error", "access_denied"),
            ("error_description", "Your account is locked: call +1 555 0100"),
            ("state", params["state"]),
            ("iss", "https://evil.example"),
        ],
    )
    assert_refusal_page(response, status=400, reason="iss_mismatch", site=site)
    assert "555 0100" not in response.text
    assert_logged(caplog, "iss_mismatch")
    await assert_no_session(site)


async def test_callback_without_the_flow_cookie_is_refused(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    """The callback URL opened in another browser (or planted by an attacker: login CSRF)."""
    _, params = await begin_login(site.client, "/")
    other = site.browser()
    response = await complete_login(other, site.hostile, params)

    assert_refusal_page(response, status=400, reason="flow_missing", site=site)
    assert_logged(caplog, "flow_missing")
    assert site.hostile.calls["token"] == 0
    await assert_no_session(site, other)


async def test_tampered_flow_cookie_is_refused(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    _, params = await begin_login(site.client, "/")
    [name] = flow_cookie_names(site.client)
    value = site.client.cookies[name]
    middle = len(value) // 2
    tampered = value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1 :]
    site.client.cookies.set(name, tampered, domain="app.test", path="/")

    response = await complete_login(site.client, site.hostile, params)

    assert_refusal_page(response, status=400, reason="flow_invalid", site=site)
    assert_logged(caplog, "flow_invalid")
    assert site.hostile.calls["token"] == 0
    assert flow_cookie_names(site.client) == []
    await assert_no_session(site)


async def test_expired_flow_cookie_is_refused(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    """The expiry inside the sealed payload counts, whatever the cookie's Max-Age said."""
    _, params = await begin_login(site.client, "/")
    [name] = flow_cookie_names(site.client)
    flows = site.middleware._parts.flows
    flow = flows.open(site.client.cookies[name])
    assert flow is not None
    old = dataclasses.replace(flow, created_at=int(time.time()) - FLOW_MAX_AGE - 1)
    site.client.cookies.set(name, flows.seal(old), domain="app.test", path="/")

    response = await complete_login(site.client, site.hostile, params)

    assert_refusal_page(response, status=400, reason="flow_expired", site=site)
    assert_logged(caplog, "flow_expired")
    assert site.hostile.calls["token"] == 0
    await assert_no_session(site)


async def test_state_not_matching_the_flow_cookie_is_refused(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    """Flow A's sealed cookie replayed under flow B's name."""
    await begin_login(site.client, "/a")
    first_name = flow_cookie_names(site.client)[0]
    _, second = await begin_login(site.client, "/b")
    [second_name] = [name for name in flow_cookie_names(site.client) if name != first_name]
    site.client.cookies.set(second_name, site.client.cookies[first_name], domain="app.test", path="/")

    response = await complete_login(site.client, site.hostile, second)

    assert_refusal_page(response, status=400, reason="state_mismatch", site=site)
    assert_logged(caplog, "state_mismatch")
    assert site.hostile.calls["token"] == 0
    await assert_no_session(site)


@pytest.mark.parametrize(
    ("drop", "reason"),
    [pytest.param("state", "state_missing", id="state"), pytest.param("code", "code_missing", id="code")],
)
async def test_callback_missing_a_parameter_is_refused(
    site: Site, caplog: pytest.LogCaptureFixture, drop: str, reason: str
) -> None:
    _, params = await begin_login(site.client, "/")
    query = [("code", "some-code"), ("state", params["state"]), ("iss", ISSUER)]
    response = await callback(site.client, [(name, value) for name, value in query if name != drop])

    assert_refusal_page(response, status=400, reason=reason, site=site)
    assert_logged(caplog, reason)
    assert site.hostile.calls["token"] == 0
    await assert_no_session(site)


@pytest.mark.parametrize("repeated", ["state", "code", "iss"])
async def test_repeated_parameter_is_refused(site: Site, caplog: pytest.LogCaptureFixture, repeated: str) -> None:
    """A repeated state, code or iss is refused, not resolved as "last one wins"."""
    _, params = await begin_login(site.client, "/")
    code = site.hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    query = {"code": code, "state": params["state"], "iss": ISSUER}
    decoys = {"code": "attacker-code", "state": params["state"], "iss": "https://evil.test"}
    items = [*query.items(), (repeated, decoys[repeated])]

    response = await callback(site.client, items)

    assert_refusal_page(response, status=400, reason="duplicate_parameter", site=site)
    assert_logged(caplog, "duplicate_parameter")
    assert site.hostile.calls["token"] == 0
    await assert_no_session(site)


async def test_replayed_callback_with_the_flow_cookie_is_refused_before_the_token_request(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Somebody who copied the callback URL and the flow cookie tries them a second time."""
    _, params = await begin_login(site.client, "/")
    [name] = flow_cookie_names(site.client)
    stolen_cookie = site.client.cookies[name]
    code = site.hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    query = [("code", code), ("state", params["state"]), ("iss", ISSUER)]
    assert (await callback(site.client, query)).status_code == 303

    attacker = site.browser()
    attacker.cookies.set(name, stolen_cookie, domain="app.test", path="/")
    response = await callback(attacker, query)

    assert_refusal_page(response, status=400, reason="state_replayed", site=site)
    assert_logged(caplog, "state_replayed")
    assert site.hostile.calls["token"] == 1
    await assert_no_session(site, attacker)


async def test_replayed_callback_after_success_in_the_same_browser_changes_nothing(site: Site) -> None:
    """Back button or a reload on the callback URL: no new session, no token request."""
    _, params = await begin_login(site.client, "/")
    code = site.hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    query = [("code", code), ("state", params["state"]), ("iss", ISSUER)]
    first = await callback(site.client, query)
    assert first.status_code == 303
    session = site.client.cookies[SESSION_COOKIE]

    again = await callback(site.client, query)

    assert again.status_code == 303
    assert urlsplit(again.headers["location"]).netloc == ""
    assert cookie_attributes(again, SESSION_COOKIE) is None
    assert site.client.cookies[SESSION_COOKIE] == session
    assert site.hostile.calls["token"] == 1
    assert (await site.client.get("/")).text == "hello alice"


# -- several flows at once -----------------------------------------------------------------


async def test_two_tabs_finishing_in_reverse_order_both_log_in(site: Site) -> None:
    _, first = await begin_login(site.client, "/first?tab=1")
    _, second = await begin_login(site.client, "/second?tab=2")
    assert len(flow_cookie_names(site.client)) == 2

    site.hostile.sub = "bob"
    second_done = await complete_login(site.client, site.hostile, second)
    assert second_done.status_code == 303
    assert second_done.headers["location"] == "/second?tab=2"
    assert (await site.client.get("/")).text == "hello bob"

    site.hostile.sub = "alice"
    first_done = await complete_login(site.client, site.hostile, first)
    assert first_done.status_code == 303
    assert first_done.headers["location"] == "/first?tab=1"
    assert (await site.client.get("/")).text == "hello alice"
    assert flow_cookie_names(site.client) == []
    assert site.hostile.calls["token"] == 2
