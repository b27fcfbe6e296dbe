"""The provider layer against the hostile provider.

Most tests build the `Provider` directly (no middleware) on `httpx.ASGITransport(app=hostile)`.
Refresh failures are sorted into the two kinds the middleware must tell apart: `refresh_rejected`
(401, the refresh token is dead, end the session) and everything else (the provider's trouble:
keep the session while its access token lasts).

The later sections (hostile JSON, metadata, key sets, lifespans, JWKS caching, login and logout
URLs) go through the middleware, and assert what a browser or the provider sees: a 502/504 page
or a refused token, never an exception escaping.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc.jwk import ECKey
from starlette.types import Message

from pkce_middleware import (
    DiscoveryMismatch,
    IDTokenError,
    PKCEMiddleware,
    ProviderError,
    ProviderTimeout,
    SessionEnded,
)
from pkce_middleware import _provider_keys as keys_module
from pkce_middleware._flow import LoginFlow
from pkce_middleware._provider import Provider
from pkce_middleware._tokens import LogoutClaims
from tests.support.hostile_provider import (
    REMOVE,
    HostileProvider,
    TokenBehaviour,
    deeply_nested,
    rsa_key,
    sign_compact,
    sign_raw,
    unsigned,
)
from tests.support.site import (
    APP_ORIGIN,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER,
    Site,
    assert_logged,
    assert_no_session,
    assert_refusal_page,
    begin_login,
    login,
    make_config,
    open_site,
)

HTTP_TIMEOUT = 0.5
AUTH_TIME = int(time.time()) - 3600


class Intercept(httpx.AsyncBaseTransport):
    """The hostile provider, except that requests to `path` get `answer(request)` (which may raise)."""

    def __init__(self, hostile: HostileProvider, path: str, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self._inner = httpx.ASGITransport(app=hostile)
        self._path = path
        self._answer = answer
        self.intercepted = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self._path:
            self.intercepted += 1
            return self._answer(request)
        return await self._inner.handle_async_request(request)


@pytest.fixture
def hostile() -> HostileProvider:
    return HostileProvider()


@pytest.fixture
async def provider(hostile: HostileProvider) -> AsyncIterator[Provider]:
    opened = Provider(make_config(http_timeout=HTTP_TIMEOUT), transport=httpx.ASGITransport(app=hostile))
    yield opened
    await opened.aclose()


def session_claims(**overrides: Any) -> dict[str, Any]:
    """What a session keeps from the login's ID token (no nonce: the session drops it)."""
    values: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": CLIENT_ID,
        "iat": int(time.time()) - 240,
        "auth_time": AUTH_TIME,
        "name": "Alice Example",
    }
    values.update(overrides)
    return values


async def refresh(
    provider: Provider, refresh_token: str, previous: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    return await provider.refresh(
        refresh_token, previous_claims=session_claims() if previous is None else previous, now=int(time.time())
    )


def issue(hostile: HostileProvider, *, sub: str | None = None) -> str:
    """A refresh token of the login that `session_claims()` describes."""
    return hostile.issue_refresh_token(sub=sub, auth_time=AUTH_TIME)


def parse_payload(token: str) -> dict[str, Any]:
    """The claims of a compact JWS, unverified (to re-sign them with another key)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def refused(provider: Provider, refresh_token: str, **kwargs: Any) -> ProviderError | SessionEnded:
    with pytest.raises((ProviderError, SessionEnded)) as caught:
        await refresh(provider, refresh_token, **kwargs)
    assert isinstance(caught.value, ProviderError | SessionEnded)
    return caught.value


# -- refresh: success -------------------------------------------------------------------------


async def test_refresh_gives_new_tokens_and_the_refreshed_id_tokens_claims(
    hostile: HostileProvider, provider: Provider
) -> None:
    old = issue(hostile)

    token, claims = await refresh(provider, old)

    assert token["access_token"] == hostile.issued_access_tokens[-1]
    assert token["refresh_token"] == hostile.issued_refresh_tokens[-1] != old
    assert token["id_token"] == hostile.issued_id_tokens[-1]
    assert claims is not None
    assert claims["sub"] == "alice"
    assert claims["auth_time"] == AUTH_TIME
    assert "nonce" not in claims
    assert hostile.calls["refresh"] == 1
    assert hostile.calls["token"] == 0  # refresh grants are counted on their own


async def test_refresh_request_is_a_refresh_token_grant_with_client_authentication(
    hostile: HostileProvider, provider: Provider
) -> None:
    old = issue(hostile)

    await refresh(provider, old)

    sent = hostile.last_token_request
    assert sent.content_type == "application/x-www-form-urlencoded"
    assert set(sent.form) == {"grant_type", "refresh_token"}
    assert sent.one("grant_type") == "refresh_token"
    assert sent.one("refresh_token") == old
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert sent.authorization == f"Basic {expected}"


async def test_public_client_names_itself_in_the_refresh_request(hostile: HostileProvider) -> None:
    """RFC 6749 section 6: a public client sends `client_id`, as in its code redemption."""
    provider = Provider(make_config(client_secret=None), transport=httpx.ASGITransport(app=hostile))
    try:
        await refresh(provider, issue(hostile))
    finally:
        await provider.aclose()

    sent = hostile.last_token_request
    assert sent.authorization is None
    assert sent.one("client_id") == CLIENT_ID
    assert sent.one("grant_type") == "refresh_token"


async def test_refresh_after_a_login_accepts_a_refreshed_id_token_without_nonce(
    hostile: HostileProvider, provider: Provider
) -> None:
    flow = LoginFlow.start(issuer=ISSUER, redirect_uri="https://app.test/auth/callback", return_to="/")
    code = hostile.issue_code(nonce=flow.nonce, challenge=flow.code_challenge)
    login_token, login_claims = await provider.redeem(flow, code, now=int(time.time()))

    token, claims = await refresh(provider, login_token["refresh_token"], previous=login_claims)

    assert claims is not None
    assert claims["sub"] == login_claims["sub"]
    assert claims["auth_time"] == login_claims["auth_time"]
    assert "nonce" in login_claims and "nonce" not in claims
    assert token["access_token"] != login_token["access_token"]


async def test_refresh_answer_without_id_token_gives_no_claims(hostile: HostileProvider, provider: Provider) -> None:
    hostile.refresh_issues_id_token = False

    token, claims = await refresh(provider, issue(hostile))

    assert claims is None
    assert "id_token" not in token
    assert hostile.calls["jwks"] == 0  # nothing to verify, nothing fetched


async def test_refresh_answer_without_a_new_refresh_token_keeps_none(
    hostile: HostileProvider, provider: Provider
) -> None:
    """No rotation: the caller keeps the refresh token it has, which stays valid."""
    hostile.rotate_refresh_tokens = False
    old = issue(hostile)

    token, _ = await refresh(provider, old)
    again, _ = await refresh(provider, old)

    assert "refresh_token" not in token
    assert "refresh_token" not in again


async def test_null_id_token_and_refresh_token_count_as_absent(hostile: HostileProvider, provider: Provider) -> None:
    hostile.refresh_overrides = {"id_token": None, "refresh_token": None}

    token, claims = await refresh(provider, issue(hostile))

    assert claims is None
    assert "id_token" not in token
    assert "refresh_token" not in token


async def test_token_type_is_case_insensitive(hostile: HostileProvider, provider: Provider) -> None:
    hostile.refresh_overrides = {"token_type": "bearer"}

    token, _ = await refresh(provider, issue(hostile))

    assert token["token_type"] == "bearer"


async def test_refreshed_id_token_signed_with_a_new_key_causes_one_jwks_refetch(
    hostile: HostileProvider, provider: Provider
) -> None:
    await refresh(provider, issue(hostile))
    assert hostile.calls["jwks"] == 1
    hostile.rotate_key()

    _, claims = await refresh(provider, issue(hostile))

    assert claims is not None
    assert hostile.calls["jwks"] == 2


# -- refresh: the refresh token is dead (end the session) -------------------------------------


async def test_invalid_grant_is_refresh_rejected(hostile: HostileProvider, provider: Provider) -> None:
    hostile.refresh_behaviour = "invalid_grant"
    old = issue(hostile)

    error = await refused(provider, old)

    assert (error.error, error.status_code) == ("refresh_rejected", 401)
    assert not isinstance(error, IDTokenError | ProviderTimeout)
    assert "invalid_grant" in error.detail
    assert old not in str(error)


async def test_a_rotated_refresh_token_is_refused_the_second_time(hostile: HostileProvider, provider: Provider) -> None:
    old = issue(hostile)
    await refresh(provider, old)

    error = await refused(provider, old)

    assert error.error == "refresh_rejected"
    assert hostile.calls["refresh"] == 2
    assert hostile.calls["refresh_invalid_grant"] == 1


async def test_revoked_refresh_token_is_refresh_rejected(hostile: HostileProvider, provider: Provider) -> None:
    old = issue(hostile)
    hostile.revoke_refresh_tokens()

    assert (await refused(provider, old)).error == "refresh_rejected"


async def test_empty_refresh_token_is_refused_without_asking(hostile: HostileProvider, provider: Provider) -> None:
    error = await refused(provider, "")

    assert (error.error, error.status_code) == ("refresh_rejected", 401)
    assert hostile.calls["refresh"] == 0


# -- refresh: the provider's trouble (keep the session) ---------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        pytest.param("error_500", "refresh_endpoint_error", id="http-500"),
        pytest.param("garbage", "refresh_invalid", id="not-json"),
    ],
)
async def test_broken_refresh_answer_is_a_provider_error(
    hostile: HostileProvider, provider: Provider, behaviour: TokenBehaviour, reason: str
) -> None:
    hostile.refresh_behaviour = behaviour

    error = await refused(provider, issue(hostile))

    assert (error.error, error.status_code) == (reason, 502)


async def test_hanging_refresh_is_cut_off_as_a_timeout(hostile: HostileProvider, provider: Provider) -> None:
    hostile.refresh_behaviour = "hang"
    await provider.metadata()
    started = time.monotonic()

    error = await refused(provider, issue(hostile))

    assert isinstance(error, ProviderTimeout)
    assert (error.error, error.status_code) == ("refresh_timeout", 504)
    assert time.monotonic() - started < hostile.hang_seconds


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"access_token": REMOVE}, id="no-access_token"),
        pytest.param({"access_token": ""}, id="empty-access_token"),
        pytest.param({"token_type": REMOVE}, id="no-token_type"),
        pytest.param({"token_type": "mac"}, id="not-bearer"),
        pytest.param({"token_type": "DPoP"}, id="dpop"),
        pytest.param({"refresh_token": 42}, id="refresh_token-not-a-string"),
        pytest.param({"refresh_token": ""}, id="refresh_token-empty"),
        pytest.param({"id_token": ""}, id="id_token-empty"),
        pytest.param({"id_token": {"sub": "alice"}}, id="id_token-not-a-string"),
    ],
)
async def test_incomplete_refresh_answer_is_refresh_response_invalid(
    hostile: HostileProvider, provider: Provider, overrides: dict[str, Any]
) -> None:
    hostile.refresh_overrides = overrides

    error = await refused(provider, issue(hostile))

    assert (error.error, error.status_code) == ("refresh_response_invalid", 502)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        pytest.param(400, {"error": "invalid_grant"}, "refresh_rejected", id="400-invalid_grant"),
        pytest.param(400, {"error": "invalid_request"}, "refresh_rejected", id="400-other-oauth-error"),
        # Our client's credentials, not the session's token: a setting to fix, ridden out like an outage.
        pytest.param(401, {"error": "invalid_client"}, "client_rejected", id="401-invalid_client"),
        pytest.param(400, None, "refresh_endpoint_error", id="400-html"),
        pytest.param(400, {"message": "bad"}, "refresh_endpoint_error", id="400-not-oauth"),
        pytest.param(403, {"error": "access_denied"}, "refresh_endpoint_error", id="403-gateway"),
        pytest.param(429, {"error": "rate_limited"}, "refresh_endpoint_error", id="429-rate-limit"),
        pytest.param(503, {"error": "temporarily_unavailable"}, "refresh_endpoint_error", id="503"),
        pytest.param(302, None, "refresh_endpoint_error", id="redirect"),
    ],
)
async def test_only_an_oauth_error_under_400_or_401_ends_the_session(
    hostile: HostileProvider, status: int, body: dict[str, Any] | None, reason: str
) -> None:
    """RFC 6749 section 5.2: a rate limit or a gateway's 403 is not a verdict on the refresh token."""

    def answer(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, content=b"<html>nope</html>", headers={"Location": "https://op.test/"})
        return httpx.Response(status, json=body)

    transport = Intercept(hostile, "/token", answer)
    provider = Provider(make_config(), transport=transport)
    try:
        error = await refused(provider, "some-refresh-token")
    finally:
        await provider.aclose()

    assert transport.intercepted == 1
    assert error.error == reason
    assert error.status_code == (401 if reason == "refresh_rejected" else 502)


async def test_unreachable_token_endpoint_is_provider_unreachable(hostile: HostileProvider) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    provider = Provider(make_config(), transport=Intercept(hostile, "/token", answer))
    try:
        error = await refused(provider, "some-refresh-token")
    finally:
        await provider.aclose()

    assert (error.error, error.status_code) == ("provider_unreachable", 502)


# -- refresh: the refreshed ID token (Core section 12.2) --------------------------------------


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        pytest.param({"sub": "mallory"}, "sub", id="other-sub"),
        pytest.param({"iss": "https://evil.test"}, "iss", id="other-iss"),
        pytest.param({"aud": "other-client"}, "aud", id="other-aud"),
        pytest.param({"aud": [CLIENT_ID, "https://untrusted.test"]}, "aud", id="extra-aud"),
        pytest.param({"azp": "other-client"}, "azp", id="other-azp"),
        pytest.param({"auth_time": AUTH_TIME - 60}, "auth_time", id="earlier-auth_time"),
        pytest.param({"exp": int(time.time()) - 3600}, "exp", id="expired"),
        pytest.param({"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}, "at_hash", id="at_hash-of-another-token"),
    ],
)
async def test_refreshed_id_token_breaking_a_rule_is_refused(
    hostile: HostileProvider, provider: Provider, overrides: dict[str, Any], rule: str
) -> None:
    hostile.refresh_claim_overrides = overrides

    error = await refused(provider, issue(hostile))

    assert isinstance(error, IDTokenError)
    assert (error.error, error.status_code) == ("refresh_id_token_invalid", 502)
    assert error.detail.startswith(f"{rule}:"), error.detail


async def test_refreshed_id_token_for_the_session_of_another_user_is_refused(
    hostile: HostileProvider, provider: Provider
) -> None:
    """The provider's answer is fine on its own; it just belongs to someone else's session."""
    error = await refused(provider, issue(hostile, sub="mallory"))

    assert error.error == "refresh_id_token_invalid"
    assert error.detail.startswith("sub:")


async def test_unsigned_refreshed_id_token_is_refused(hostile: HostileProvider, provider: Provider) -> None:
    hostile.id_token_encoder = unsigned

    error = await refused(provider, issue(hostile))

    assert error.error == "refresh_id_token_invalid"
    assert "unsupported_algorithm" in error.detail


async def test_refreshed_id_token_with_a_nonce_is_accepted(hostile: HostileProvider, provider: Provider) -> None:
    """Errata 2 says SHOULD NOT, not MUST NOT; the session kept no nonce to compare it with."""
    hostile.refresh_claim_overrides = {"nonce": "the-login-nonce"}

    _, claims = await refresh(provider, issue(hostile))

    assert claims is not None and claims["nonce"] == "the-login-nonce"


# -- logout tokens ----------------------------------------------------------------------------


async def test_valid_logout_token_is_accepted(hostile: HostileProvider, provider: Provider) -> None:
    hostile.sid = "op-session-1"
    token = hostile.logout_token()

    claims = await provider.validate_logout_token(token, now=int(time.time()))

    assert isinstance(claims, LogoutClaims)
    assert (claims.sid, claims.sub) == ("op-session-1", "alice")
    assert claims.jti
    assert hostile.calls["jwks"] == 1


async def test_logout_token_with_an_unknown_kid_causes_one_jwks_refetch(
    hostile: HostileProvider, provider: Provider
) -> None:
    await provider.startup()
    assert hostile.calls["jwks"] == 1
    hostile.rotate_key()

    claims = await provider.validate_logout_token(hostile.logout_token(), now=int(time.time()))

    assert claims.sub == "alice"
    assert hostile.calls["jwks"] == 2


async def test_forged_logout_tokens_cannot_make_us_fetch_the_jwks_again_and_again(
    hostile: HostileProvider, provider: Provider
) -> None:
    """An unauthenticated endpoint: one refetch per interval, however many unknown kids arrive."""
    await provider.startup()
    for n in range(5):
        forged = hostile.logout_token(key=rsa_key(f"attacker-{n % 2}"))
        with pytest.raises(IDTokenError) as caught:
            await provider.validate_logout_token(forged, now=int(time.time()))
        assert (caught.value.error, caught.value.status_code) == ("logout_token_invalid", 400)
        assert "kid" in caught.value.detail
    assert hostile.calls["jwks"] == 2


async def test_logout_token_signed_by_someone_else_with_the_providers_kid_is_refused(
    hostile: HostileProvider, provider: Provider
) -> None:
    claims = parse_payload(hostile.logout_token())
    forged = sign_compact({"alg": "RS256", "kid": hostile.signing_key.kid}, claims, rsa_key("attacker"))

    with pytest.raises(IDTokenError) as caught:
        await provider.validate_logout_token(forged, now=int(time.time()))

    assert (caught.value.error, caught.value.status_code) == ("logout_token_invalid", 400)
    assert "bad_signature" in caught.value.detail


async def test_logout_token_breaking_a_rule_is_refused_with_400(hostile: HostileProvider, provider: Provider) -> None:
    token = hostile.logout_token(claim_overrides={"events": REMOVE})

    with pytest.raises(IDTokenError) as caught:
        await provider.validate_logout_token(token, now=int(time.time()))

    assert (caught.value.error, caught.value.status_code) == ("logout_token_invalid", 400)
    assert caught.value.detail.startswith("events:")


async def test_jwks_outage_during_logout_is_a_provider_error_not_a_bad_token(hostile: HostileProvider) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, content=b"down")

    provider = Provider(make_config(), transport=Intercept(hostile, "/jwks", answer))
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.validate_logout_token(hostile.logout_token(), now=int(time.time()))
    finally:
        await provider.aclose()

    assert not isinstance(caught.value, IDTokenError)
    assert (caught.value.error, caught.value.status_code) == ("jwks_failed", 502)


async def test_a_closed_client_is_replaced_on_the_next_call(hostile: HostileProvider, provider: Provider) -> None:
    await provider.metadata()
    closed = provider._client
    await provider.aclose()

    token, _ = await refresh(provider, issue(hostile))

    assert token["access_token"] == hostile.issued_access_tokens[-1]
    assert closed.is_closed
    assert provider._client is not closed and not provider._client.is_closed


# -- hostile JSON: arrays nested a thousand deep ----------------------------------------------
# `json.loads` gives up on them with RecursionError, which is no ValueError.


async def test_deeply_nested_discovery_is_a_502_page() -> None:
    hostile = HostileProvider()
    hostile.raw_bodies = {"discovery": deeply_nested()}
    async with open_site(hostile) as site:
        response = await site.client.get("/")

        assert_refusal_page(response, status=502, reason="discovery_invalid", site=site)


@pytest.mark.parametrize(("endpoint", "reason"), [("jwks", "jwks_invalid"), ("token", "token_invalid")])
async def test_deeply_nested_jwks_or_token_answer_is_a_502_page(endpoint: str, reason: str) -> None:
    hostile = HostileProvider()
    hostile.raw_bodies = {endpoint: deeply_nested()}
    async with open_site(hostile) as site:
        response = await login(site.client, hostile)

        assert_refusal_page(response, status=502, reason=reason, site=site)
        await assert_no_session(site)


async def test_deeply_nested_refresh_answer_is_a_provider_error(hostile: HostileProvider, provider: Provider) -> None:
    hostile.raw_bodies = {"refresh": deeply_nested()}

    error = await refused(provider, issue(hostile))

    assert (error.error, error.status_code) == ("refresh_invalid", 502)


async def test_deeply_nested_error_answer_counts_by_its_status(hostile: HostileProvider) -> None:
    """As an HTML error page would: the status is the news, not the body."""
    transport = Intercept(hostile, "/token", lambda request: httpx.Response(400, content=deeply_nested()))
    provider = Provider(make_config(), transport=transport)
    try:
        error = await refused(provider, "some-refresh-token")
    finally:
        await provider.aclose()

    assert (error.error, error.status_code) == ("refresh_endpoint_error", 502)


def nested_payload(hostile: HostileProvider) -> None:
    """The provider signs a payload that is valid JSON text no parser will finish."""
    hostile.id_token_encoder = lambda header, claims: sign_raw(
        header, b'{"sub":' + deeply_nested(10_000), hostile.signing_key
    )


async def test_id_token_with_a_deeply_nested_payload_is_a_502_page(caplog: pytest.LogCaptureFixture) -> None:
    hostile = HostileProvider()
    nested_payload(hostile)
    async with open_site(hostile) as site:
        response = await login(site.client, hostile)

        assert_refusal_page(response, status=502, reason="id_token_invalid", site=site)
        assert_logged(caplog, "id_token_invalid", detail="RecursionError")


async def post_logout_token(site: Site, token: str) -> httpx.Response:
    """The provider's back-channel POST."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=site.middleware), base_url=APP_ORIGIN) as op:
        return await op.post(site.config.backchannel_logout_path, data={"logout_token": token})


async def test_logout_token_with_a_deeply_nested_payload_is_refused_with_400(site: Site) -> None:
    header = {"alg": "RS256", "typ": "logout+jwt", "kid": site.hostile.signing_key.kid}
    token = sign_raw(header, b'{"events":' + deeply_nested(10_000), site.hostile.signing_key)

    response = await post_logout_token(site, token)

    assert (response.status_code, response.json()) == (400, {"error": "logout_token_invalid"})


# -- metadata the provider gets wrong ---------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"authorization_endpoint": "https://[::1"}, id="unclosed-ipv6-bracket"),
        pytest.param({"token_endpoint": "https://op.test:99999/token"}, id="port-out-of-range"),
        pytest.param({"token_endpoint": "https://op.test:abc/token"}, id="port-not-a-number"),
        pytest.param({"token_endpoint": "https://op.test/token\nx"}, id="newline-httpx-refuses"),
        pytest.param({"jwks_uri": "https://xn--/jwks"}, id="bad-idna-label"),
        pytest.param({"jwks_uri": "http://op.test/jwks"}, id="plain-http"),
        pytest.param({"end_session_endpoint": "https://[::1"}, id="end-session-unclosed-bracket"),
        pytest.param({"end_session_endpoint": 5}, id="end-session-not-a-string"),
        pytest.param({"id_token_signing_alg_values_supported": 5}, id="algs-a-number"),
        pytest.param({"id_token_signing_alg_values_supported": "RS256"}, id="algs-a-string"),
        pytest.param({"id_token_signing_alg_values_supported": "HS256 RS256x"}, id="algs-substring-match"),
        pytest.param({"id_token_signing_alg_values_supported": {"RS256": True}}, id="algs-an-object"),
        pytest.param({"id_token_signing_alg_values_supported": ["RS256", 5]}, id="algs-not-all-strings"),
        pytest.param({"token_endpoint_auth_methods_supported": 5}, id="auth-methods-a-number"),
        pytest.param({"token_endpoint_auth_methods_supported": "client_secret_post"}, id="auth-methods-a-string"),
        pytest.param({"token_endpoint_auth_methods_supported": [None]}, id="auth-methods-not-strings"),
    ],
)
async def test_unusable_metadata_is_a_502_page_and_is_not_asked_again_at_once(overrides: dict[str, Any]) -> None:
    hostile = HostileProvider()
    hostile.metadata_overrides = overrides
    async with open_site(hostile) as site:
        first = await site.client.get("/")
        second = await site.client.get("/")

        assert_refusal_page(first, status=502, reason="discovery_invalid", site=site)
        assert_refusal_page(second, status=502, reason="provider_unavailable", site=site)
        assert hostile.calls["discovery"] == 1
        assert hostile.calls["authorize"] == hostile.calls["jwks"] == 0


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"id_token_signing_alg_values_supported": REMOVE}, id="algs-absent-means-rs256"),
        pytest.param({"id_token_signing_alg_values_supported": []}, id="algs-empty-means-rs256"),
        pytest.param({"token_endpoint_auth_methods_supported": REMOVE}, id="auth-methods-absent"),
        pytest.param({"end_session_endpoint": REMOVE}, id="no-end-session"),
        pytest.param({"jwks_uri": "http://127.0.0.1:8080/jwks"}, id="plain-http-on-loopback"),
        pytest.param({"authorization_endpoint": "https://op.test/authorize?tenant=a%20b"}, id="endpoint-with-query"),
    ],
)
async def test_metadata_within_the_rules_still_works(overrides: dict[str, Any]) -> None:
    hostile = HostileProvider()
    hostile.metadata_overrides = overrides
    config = make_config()
    provider = Provider(config, transport=httpx.ASGITransport(app=hostile))
    try:
        metadata = await provider.metadata()
        flow = LoginFlow.start(issuer=ISSUER, redirect_uri="https://app.test/auth/callback", return_to="/")
        location = await provider.authorization_url(flow)
    finally:
        await provider.aclose()

    assert metadata.id_token_algorithms
    assert parse_qs(urlsplit(location).query)["state"] == [flow.state]


async def test_no_common_id_token_algorithm_is_a_502_page_naming_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    hostile = HostileProvider()
    hostile.metadata_overrides = {"id_token_signing_alg_values_supported": ["HS256", "none"]}
    async with open_site(hostile) as site:
        first = await site.client.get("/")
        second = await site.client.get("/")

        assert_refusal_page(first, status=502, reason="algorithm_mismatch", site=site)
        assert_logged(caplog, "algorithm_mismatch", detail="PKCE_ID_TOKEN_ALGORITHMS")
        assert_refusal_page(second, status=502, reason="provider_unavailable", site=site)
        assert hostile.calls["discovery"] == 1


def test_discovery_mismatch_is_a_provider_error_of_its_own() -> None:
    """Told apart by its class, not by a reason string another error might also carry."""
    assert issubclass(DiscoveryMismatch, ProviderError)
    assert DiscoveryMismatch("x").error == "discovery_mismatch"
    assert DiscoveryMismatch("x").status_code == 502


# -- lifespans --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def lifespan(middleware: PKCEMiddleware) -> AsyncIterator[list[Message]]:
    """One ASGI lifespan driven by hand: startup on entry, shutdown on exit; yields what was sent."""
    incoming: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []
    started = asyncio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"].startswith("lifespan.startup."):
            started.set()

    incoming.put_nowait({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(middleware(scope, incoming.get, send))
    task.add_done_callback(lambda _: started.set())  # a crash in startup must not leave us waiting
    await started.wait()
    if task.done():
        task.result()
    try:
        yield sent
    finally:
        incoming.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 5)


async def test_a_second_lifespan_logs_in_with_a_fresh_client(site: Site) -> None:
    """Two `with TestClient(app):` blocks on one app: the first shutdown must not break the second."""
    async with lifespan(site.middleware) as sent:
        assert [m["type"] for m in sent] == ["lifespan.startup.complete"]
    first = site.middleware._parts.provider._client
    assert first.is_closed

    async with lifespan(site.middleware) as sent:
        assert [m["type"] for m in sent] == ["lifespan.startup.complete"]
        response = await login(site.client, site.hostile)
        page = await site.client.get("/")
        second = site.middleware._parts.provider._client

    assert response.status_code == 303, response.text
    assert page.text == "hello alice"
    assert second is not first and second.is_closed
    assert [m["type"] for m in sent][-1] == "lifespan.shutdown.complete"


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        pytest.param({"issuer": "https://impostor.test"}, "PKCE_ISSUER", id="issuer"),
        pytest.param({"issuer": "https://impostor.test/" + "x" * 5000}, "PKCE_ISSUER", id="issuer-huge"),
        pytest.param({"issuer": [[["https://op.test"]]]}, "PKCE_ISSUER", id="issuer-not-a-string"),
        pytest.param({"id_token_signing_alg_values_supported": ["HS256"]}, "PKCE_ID_TOKEN_ALGORITHMS", id="algorithms"),
    ],
)
async def test_lifespan_startup_fails_naming_the_setting_that_contradicts_discovery(
    overrides: dict[str, Any], setting: str
) -> None:
    hostile = HostileProvider()
    hostile.metadata_overrides = overrides
    async with open_site(hostile) as site:
        async with lifespan(site.middleware) as sent:
            pass

        assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
        assert setting in sent[0]["message"]
        assert len(sent[0]["message"]) < 500
        assert site.middleware._parts.provider._client.is_closed  # no shutdown will come to close it
        assert hostile.calls["jwks"] == 0


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"jwks_uri": "https://[::1"}, id="bad-jwks-uri"),
        pytest.param({"id_token_signing_alg_values_supported": "RS256"}, id="algs-a-string"),
    ],
)
async def test_lifespan_startup_survives_unusable_metadata(overrides: dict[str, Any]) -> None:
    """Only a contradiction of the configuration fails startup; a broken answer may be fixed by a retry."""
    hostile = HostileProvider()
    hostile.metadata_overrides = overrides
    async with open_site(hostile) as site, lifespan(site.middleware) as sent:
        pass

    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- key sets the provider gets wrong ---------------------------------------------------------


def _ec_public(**overrides: Any) -> dict[str, Any]:
    key = ECKey.generate_key("P-256", parameters={"use": "sig"}).as_dict(private=False)
    return {**key, **overrides}


UNUSABLE_KEYS = [
    pytest.param(_ec_public(crv="P-999"), id="unknown-curve"),
    pytest.param({"kty": ["RSA"], "n": "AQAB", "e": "AQAB"}, id="kty-a-list"),
    pytest.param({"kty": {"RSA": 1}}, id="kty-an-object"),
    pytest.param(_ec_public(x=5), id="coordinate-a-number"),
    pytest.param(_ec_public(x="!!!"), id="coordinate-not-base64"),
    pytest.param({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, id="rsa-e-not-below-n"),
    pytest.param({"kty": "OKP", "crv": "Ed448", "x": "AA"}, id="ed448-too-short"),
    pytest.param(_ec_public(kid=["op-key-1"]), id="kid-a-list"),
    pytest.param("not a key", id="not-an-object"),
]


@pytest.mark.parametrize("bad_key", UNUSABLE_KEYS)
async def test_an_unusable_key_in_the_jwks_is_skipped(site: Site, bad_key: Any) -> None:
    site.hostile.jwks_extra = [bad_key]

    response = await login(site.client, site.hostile)

    assert response.status_code == 303, response.text
    assert (await site.client.get("/")).text == "hello alice"


async def test_a_jwks_of_only_unusable_keys_refuses_the_id_token(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    site.hostile.jwks_keys = []
    site.hostile.jwks_extra = [_ec_public(crv="P-999"), {"kty": "RSA", "n": "AQAB", "e": "AQAB"}]

    response = await login(site.client, site.hostile)

    assert_refusal_page(response, status=502, reason="id_token_invalid", site=site)
    assert any("ignored 2 key(s)" in r.getMessage() for r in caplog.records)


# -- JWKS caching: failures, and a maximum age ------------------------------------------------


async def test_failed_jwks_fetch_is_not_retried_at_once(
    site: Site, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    site.hostile.jwks_behaviour = "error_500"

    first = await login(site.client, site.hostile)
    second = await login(site.browser(), site.hostile)

    assert_refusal_page(first, status=502, reason="jwks_failed", site=site)
    assert_refusal_page(second, status=502, reason="provider_unavailable", site=site)
    assert site.hostile.calls["jwks"] == 1

    site.hostile.jwks_behaviour = "ok"
    monkeypatch.setattr(keys_module, "JWKS_RETRY_INTERVAL", 0.0)
    third = site.browser()
    assert (await login(third, site.hostile)).status_code == 303
    assert site.hostile.calls["jwks"] == 2


async def test_forged_logout_tokens_during_a_jwks_outage_cause_one_fetch(site: Site) -> None:
    """The unauthenticated endpoint: an outage is the provider's trouble (502), and asked about once."""
    site.hostile.jwks_behaviour = "error_500"
    statuses = [(await post_logout_token(site, site.hostile.logout_token())).status_code for _ in range(5)]

    assert statuses == [502] * 5
    assert site.hostile.calls["jwks"] == 1


async def test_a_key_the_provider_withdrew_is_refused_once_the_jwks_is_too_old(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await login(site.client, site.hostile)).status_code == 303
    withdrawn = site.hostile.signing_key
    site.hostile.rotate_key("op-key-2")  # op-key-1 leaked, say; whoever has it signs what they like
    forged = site.hostile.logout_token(key=withdrawn)

    monkeypatch.setattr(keys_module, "JWKS_MAX_AGE", 0.0)
    response = await post_logout_token(site, forged)

    assert (response.status_code, response.json()) == (400, {"error": "logout_token_invalid"})
    assert site.hostile.calls["jwks"] == 3  # too old, refetched; then once more for the unknown kid
    assert (await site.client.get("/")).text == "hello alice"  # the session the forgery aimed at lives on


async def test_a_young_jwks_is_not_refetched(site: Site) -> None:
    for _ in range(3):
        assert (await login(site.browser(), site.hostile)).status_code == 303
    assert site.hostile.calls["jwks"] == 1


async def test_when_renewing_an_old_jwks_fails_its_keys_stay_in_use(
    site: Site, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pkce_middleware")
    assert (await login(site.client, site.hostile)).status_code == 303
    monkeypatch.setattr(keys_module, "JWKS_MAX_AGE", 0.0)
    site.hostile.jwks_behaviour = "error_500"

    second = await login(site.browser(), site.hostile)
    third = await login(site.browser(), site.hostile)

    assert second.status_code == third.status_code == 303
    assert site.hostile.calls["jwks"] == 2  # the failure is not retried at once
    assert any("JWKS refetch failed" in r.getMessage() for r in caplog.records)


# -- the login and logout URLs ----------------------------------------------------------------


async def test_offline_access_asks_for_consent() -> None:
    """Core section 11: without prompt=consent the provider ignores offline_access."""
    async with open_site(scopes=("openid", "offline_access")) as site:
        _, params = await begin_login(site.client, "/")

    assert "offline_access" in params["scope"].split()
    assert params["prompt"] == "consent"


async def test_no_prompt_without_offline_access(site: Site) -> None:
    _, params = await begin_login(site.client, "/")
    assert "prompt" not in params


def end_session_query(url: str | None) -> dict[str, list[str]]:
    assert url is not None
    target = urlsplit(url)
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{ISSUER}/logout"
    return parse_qs(target.query)


async def test_end_session_url_carries_a_fresh_state_and_the_client_id(provider: Provider) -> None:
    """RP-Initiated Logout 1.0 section 2; `id_token_hint` only when there is an ID token to send."""
    back = f"{APP_ORIGIN}/auth/logout"
    await provider.metadata()

    with_hint = end_session_query(provider.end_session_url(id_token="the-id-token", post_logout_redirect_uri=back))
    without = end_session_query(provider.end_session_url(id_token=None, post_logout_redirect_uri=back))
    empty = end_session_query(provider.end_session_url(id_token="", post_logout_redirect_uri=back))

    assert with_hint.pop("id_token_hint") == ["the-id-token"]
    for query in (with_hint, without, empty):
        assert set(query) == {"client_id", "post_logout_redirect_uri", "state"}
        assert query["client_id"] == [CLIENT_ID]
        assert query["post_logout_redirect_uri"] == [back]
        assert len(query["state"][0]) >= 16
    assert len({with_hint["state"][0], without["state"][0], empty["state"][0]}) == 3


async def test_logout_without_a_kept_id_token_sends_no_hint() -> None:
    async with open_site(session_id_token=False) as site:
        assert (await login(site.client, site.hostile)).status_code == 303
        response = await site.client.post("/auth/logout", headers={"Origin": APP_ORIGIN})

    query = end_session_query(response.headers["location"])
    assert set(query) == {"client_id", "post_logout_redirect_uri", "state"}


async def test_no_end_session_url_before_discovery(provider: Provider) -> None:
    assert provider.end_session_url(id_token="x", post_logout_redirect_uri=f"{APP_ORIGIN}/") is None
