"""Sessions that outlive their access tokens, against the real oidc-provider with short token lifetimes.

The provider issues 3-second access tokens and rotates refresh tokens on every use, so a refresh
token redeemed twice shows up as `invalid_grant` in its log; the counts below come from that log.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from app_server import app_server
from oidc_provider import LocalProvider, free_port, login_with_forms

ACCESS_TOKEN_TTL = 3
MARGIN = 1


def _client(name: str, port: int) -> dict[str, object]:
    base = f"http://127.0.0.1:{port}"
    return {
        "client_id": name,
        "client_secret": secrets.token_urlsafe(16),
        "redirect_uris": [f"{base}/auth/callback"],
        "post_logout_redirect_uris": [f"{base}/auth/logout"],
        "grant_types": ["authorization_code", "refresh_token"],
        "backchannel_logout_uri": f"{base}/auth/backchannel-logout",
        "backchannel_logout_session_required": True,
    }


def _env(provider: LocalProvider, client: dict[str, object], port: int, **extra: str) -> dict[str, str]:
    return {
        "PKCE_ISSUER": provider.issuer,
        "PKCE_CLIENT_ID": str(client["client_id"]),
        "PKCE_CLIENT_SECRET": str(client["client_secret"]),
        "PKCE_SECRET_KEY": secrets.token_urlsafe(32),
        "PKCE_REDIRECT_URI": f"http://127.0.0.1:{port}/auth/callback",
        "PKCE_COOKIE_SECURE": "false",
        "PKCE_REFRESH_MARGIN": str(MARGIN),
        **extra,
    }


@pytest.fixture(scope="module")
def cookie_app() -> Iterator[tuple[LocalProvider, str]]:
    port = free_port()
    client = _client("cookie-sessions", port)
    with (
        LocalProvider([client], ttl={"AccessToken": ACCESS_TOKEN_TTL}, extra={"rotateRefreshToken": True}) as provider,
        app_server("examples.starlette_app:app", port, _env(provider, client, port)) as url,
    ):
        yield provider, url


def _wait_until_refresh_is_due() -> None:
    time.sleep(ACCESS_TOKEN_TTL - MARGIN + 0.3)


def test_a_session_outlives_several_access_tokens(cookie_app: tuple[LocalProvider, str]) -> None:
    provider, url = cookie_app
    before = provider.grant_count("refresh_token", client_id="cookie-sessions")
    with httpx.Client() as browser:
        page, _ = login_with_forms(browser, f"{url}/", "marathon")
        assert "hello marathon" in page.text
        deadline = time.monotonic() + 3 * ACCESS_TOKEN_TTL + 1
        while time.monotonic() < deadline:
            response = browser.get(f"{url}/")
            assert response.status_code == 200 and "hello marathon" in response.text
            time.sleep(0.5)
    refreshes = provider.grant_count("refresh_token", client_id="cookie-sessions") - before
    assert refreshes >= 3
    assert provider.grant_count("refresh_token", outcome="invalid_grant") == 0


def test_concurrent_requests_at_expiry_refresh_once(cookie_app: tuple[LocalProvider, str]) -> None:
    provider, url = cookie_app
    with httpx.Client() as browser:
        login_with_forms(browser, f"{url}/", "crowd")
        cookies = {c.name: c.value or "" for c in browser.cookies.jar if c.name.startswith("pkce_session")}
    _wait_until_refresh_is_due()
    before = provider.grant_count("refresh_token", client_id="cookie-sessions")

    def one_request(_: int) -> httpx.Response:
        return httpx.get(f"{url}/", cookies=cookies, timeout=10)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(one_request, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert all("hello crowd" in r.text for r in responses)
    assert provider.grant_count("refresh_token", client_id="cookie-sessions") - before == 1
    assert provider.grant_count("refresh_token", outcome="invalid_grant") == 0
    # Every response carries the refreshed session, so whichever the browser keeps is good.
    assert all("pkce_session=" in r.headers.get("set-cookie", "") for r in responses)
