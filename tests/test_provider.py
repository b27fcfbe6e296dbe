"""`Provider.refresh` and `Provider.validate_logout_token` against the hostile provider.

The `Provider` is built directly (no middleware) on `httpx.ASGITransport(app=hostile)`. Refresh
failures are sorted into the two kinds the middleware must tell apart: `refresh_rejected` (401,
the refresh token is dead, end the session) and everything else (the provider's trouble: keep
the session while its access token lasts).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from helpers import CLIENT_ID, CLIENT_SECRET, ISSUER, make_config
from hostile_provider import REMOVE, HostileProvider, TokenBehaviour, rsa_key, sign_compact, unsigned

from pkce_middleware import IDTokenError, ProviderError, ProviderTimeout
from pkce_middleware._flow import LoginAttempt
from pkce_middleware._provider import Provider
from pkce_middleware._tokens import LogoutClaims

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


async def refused(provider: Provider, refresh_token: str, **kwargs: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await refresh(provider, refresh_token, **kwargs)
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
    attempt = LoginAttempt.start(issuer=ISSUER, redirect_uri="https://app.test/auth/callback", return_to="/")
    code = hostile.issue_code(nonce=attempt.nonce, challenge=attempt.code_challenge)
    login_token, login_claims = await provider.redeem(attempt, code, now=int(time.time()))

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
        pytest.param(401, {"error": "invalid_client"}, "refresh_rejected", id="401-invalid_client"),
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
        pytest.param({"auth_time": int(time.time())}, "auth_time", id="new-auth_time"),
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
