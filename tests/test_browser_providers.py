"""A real browser (Debian's chromium, driven by Playwright) through an app with TWO providers at once.

One Starlette example (``PKCE_PROVIDERS=corp,partner``) in front of two independent OpenID
Providers: panva's oidc-provider (Node.js, ``corp``) and django-oauth-toolkit (Python, ``partner``).
The browser gets the middleware's choice page, picks the second provider, walks that provider's
own login and consent pages, lands on the app as that user, signs out on the middleware's sign-out
page and through that provider's (and only that provider's) logout confirmation, gets the choice
page again, picks the first provider and walks its pages to land on the app as another user.

Both providers and the app are started once for this module. The app runs on ``localhost`` and
the providers on ``127.0.0.1`` (each on its own port; their cookie names differ, as cookies know
no ports). Helpers, browser flags and the loopback-only network come from ``tests.test_browser``;
screenshots go to ``build/screenshots/providers/``. As there, a missing ``/usr/bin/chromium`` is
a failure, not a skip (and then no server is started at all).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Request, expect

from tests.support.django_providers import DjangoOAuthToolkitProvider
from tests.support.oidc_provider import LocalProvider
from tests.support.processes import free_port
from tests.support.servers import app_server
from tests.test_browser import (
    ACTION_TIMEOUT_MS,
    APP_HOST,
    CHROMIUM,
    NAVIGATION_TIMEOUT_MS,
    SCREENSHOT_DIR,
    Screenshots,
    _abort_off_loopback,
    _chromium,
    _note_off_loopback,
    _require_chromium,
)

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.servers]

SHOTS = SCREENSHOT_DIR / "providers"

CORP_NAME = "Corp account"  # panva's oidc-provider
PARTNER_NAME = "Partner portal"  # django-oauth-toolkit
#: oidc-provider signs in any name typed (its ``sub``, and ``name`` "<id> (test user)").
CORP_USER = f"carol-{secrets.token_hex(3)}"
#: django-oauth-toolkit checks the password; ``sub`` is the user's primary key.
PARTNER_USER = {"username": "bea", "password": f"pw-{secrets.token_hex(6)}", "name": "Bea Partner"}


@dataclasses.dataclass(frozen=True)
class TwoProviders:
    app_url: str
    corp: LocalProvider
    partner: DjangoOAuthToolkitProvider
    corp_client: str
    partner_client: str


def _redirects(port: int) -> dict[str, list[str]]:
    base = f"http://{APP_HOST}:{port}"
    return {"redirect_uris": [f"{base}/auth/callback"], "post_logout_redirect_uris": [f"{base}/auth/logout"]}


@pytest.fixture(scope="module")
def two_providers() -> Iterator[TwoProviders | None]:
    """Both providers and the app in front of them, once for the module (``None``, and nothing
    started, without chromium: the test then fails at once, as ``tests.test_browser``'s does)."""
    if not CHROMIUM.is_file():
        yield None
        return
    port = free_port()
    corp_client: dict[str, Any] = {
        "client_id": "browser-corp",
        "client_secret": f"secret-corp-{secrets.token_hex(8)}",
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code"],
        **_redirects(port),
    }
    partner_client: dict[str, Any] = {
        "client_id": "browser-partner",
        "client_secret": f"secret-partner-{secrets.token_hex(8)}",
        **_redirects(port),
    }
    with (
        LocalProvider([corp_client]) as corp,
        DjangoOAuthToolkitProvider([partner_client], users=[PARTNER_USER]) as partner,
    ):
        env = {
            "PKCE_PROVIDERS": "corp,partner",
            "PKCE_PROVIDER_CORP_ISSUER": corp.issuer,
            "PKCE_PROVIDER_CORP_CLIENT_ID": corp_client["client_id"],
            "PKCE_PROVIDER_CORP_CLIENT_SECRET": corp_client["client_secret"],
            "PKCE_PROVIDER_CORP_DISPLAY_NAME": CORP_NAME,
            "PKCE_PROVIDER_PARTNER_ISSUER": partner.issuer,
            "PKCE_PROVIDER_PARTNER_CLIENT_ID": partner_client["client_id"],
            "PKCE_PROVIDER_PARTNER_CLIENT_SECRET": partner_client["client_secret"],
            "PKCE_PROVIDER_PARTNER_DISPLAY_NAME": PARTNER_NAME,
            "PKCE_SECRET_KEY": secrets.token_urlsafe(32),
            "PKCE_REDIRECT_URI": f"http://{APP_HOST}:{port}/auth/callback",
            "PKCE_PUBLIC_PATHS": "/health",
            "PKCE_COOKIE_SECURE": "false",  # plain http on loopback
        }
        with app_server("examples.starlette_app:app", port, env):
            yield TwoProviders(
                f"http://{APP_HOST}:{port}", corp, partner, corp_client["client_id"], partner_client["client_id"]
            )


def _expect_choice_page(page: Page, app_url: str) -> None:
    """The middleware's choice page, at the login path, keeping the target (``/``) in the form."""
    expect(page).to_have_url(f"{app_url}/auth/login?next=%2F", timeout=ACTION_TIMEOUT_MS)
    expect(page).to_have_title("Sign in", timeout=ACTION_TIMEOUT_MS)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
    buttons = page.get_by_role("button")
    expect(buttons).to_have_text(
        [f"Sign in with {CORP_NAME}", f"Sign in with {PARTNER_NAME}"], timeout=ACTION_TIMEOUT_MS
    )
    expect(page.locator("form input[type=hidden][name=next]")).to_have_value("/", timeout=ACTION_TIMEOUT_MS)


def _expect_app_as(page: Page, app_url: str, sub: str, display_name: str, issuer: str) -> None:
    """The app's page shows the user; its ``/me`` shows who issued the ID token."""
    expect(page).to_have_url(f"{app_url}/", timeout=ACTION_TIMEOUT_MS)
    expect(page.get_by_text(f"hello {sub}", exact=True)).to_be_visible(timeout=ACTION_TIMEOUT_MS)
    expect(page.get_by_text(f"Signed in as {display_name} with scopes")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
    page.goto(f"{app_url}/me")
    me = json.loads(page.locator("body").inner_text(timeout=ACTION_TIMEOUT_MS))
    assert me["sub"] == sub
    assert me["claims"]["iss"] == issuer
    page.go_back()
    expect(page).to_have_url(f"{app_url}/", timeout=ACTION_TIMEOUT_MS)


def _note_navigation(request: Request, seen: list[tuple[str, str]]) -> None:
    if request.is_navigation_request():
        seen.append((request.method, request.url))


def _requests(lines: list[str], prefix: str, method: str, path: str) -> list[str]:
    """The ``<prefix> <METHOD> <path> <status>`` request lines of a provider's log."""
    return [line for line in lines if line.split()[:3] == [prefix, method, path]]


def test_two_providers_choose_sign_in_sign_out_and_choose_the_other_in_chromium(
    two_providers: TwoProviders | None,
) -> None:
    _require_chromium()
    assert two_providers is not None
    app_url, corp, partner = two_providers.app_url, two_providers.corp, two_providers.partner
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("browser-*.png"):
        old.unlink()
    corp_origin = urlsplit(corp.issuer)._replace(path="").geturl()
    partner_origin = urlsplit(partner.issuer)._replace(path="").geturl()
    partner_end_session: str = partner.metadata["end_session_endpoint"]
    partner_sub = partner.subject(PARTNER_USER["username"])

    with _chromium() as browser:
        context = browser.new_context(viewport={"width": 900, "height": 700})
        try:
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
            context.route("**/*", _abort_off_loopback)
            page = context.new_page()
            off_loopback: list[str] = []
            page.on("request", lambda request: _note_off_loopback(request, off_loopback))
            # Every navigation request, redirect hops included: which provider the browser went to.
            navigations: list[tuple[str, str]] = []
            page.on("request", lambda request: _note_navigation(request, navigations))
            shots = Screenshots(page, SHOTS)

            # No session: the app shows the choice, one button per provider.
            page.goto(f"{app_url}/")
            _expect_choice_page(page, app_url)
            shots.take("choice")
            assert corp.authorizations() == []

            # The second provider: django-oauth-toolkit's login page (Django's LoginView).
            page.get_by_role("button", name=f"Sign in with {PARTNER_NAME}").click()
            expect(page).to_have_url(
                re.compile(re.escape(f"{partner_origin}/accounts/login/?next=")), timeout=ACTION_TIMEOUT_MS
            )
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("partner-login")
            page.locator("input[name=username]").fill(PARTNER_USER["username"])
            page.locator("input[name=password]").fill(PARTNER_USER["password"])
            page.get_by_role("button", name="Sign in").click()

            # Its consent page, then back on the app as its user.
            expect(page).to_have_url(re.compile(re.escape(f"{partner.issuer}/authorize/?")), timeout=ACTION_TIMEOUT_MS)
            expect(page.get_by_role("heading", name=f"Authorize {two_providers.partner_client}?")).to_be_visible(
                timeout=ACTION_TIMEOUT_MS
            )
            shots.take("partner-consent")
            page.get_by_role("button", name="Authorize").click()
            _expect_app_as(page, app_url, partner_sub, str(PARTNER_USER["name"]), partner.issuer)
            shots.take("app-as-partner-user")
            assert partner.grant_count("authorization_code", client_id=two_providers.partner_client) == 1
            assert corp.grant_count("authorization_code") == 0
            assert not any(urlsplit(url).port == corp.port for _, url in navigations), navigations

            # Sign out on the middleware's page: the partner (only) is asked to end its session.
            page.goto(f"{app_url}/auth/logout")
            expect(page.get_by_role("heading", name="Sign out?")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("app-sign-out-page")
            navigations.clear()
            page.get_by_role("button", name="Sign out").click()
            expect(page).to_have_url(
                re.compile(re.escape(partner_end_session) + r"\?.*id_token_hint="), timeout=ACTION_TIMEOUT_MS
            )
            expect(
                page.get_by_role("heading", name=f"Confirm Logout requested by {two_providers.partner_client}")
            ).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("partner-logout-confirm")
            page.get_by_role("button", name="Logout").click()
            expect(page).to_have_url(
                re.compile(re.escape(f"{app_url}/auth/logout") + r"\?.+"), timeout=ACTION_TIMEOUT_MS
            )
            expect(page.get_by_role("heading", name="You are signed out")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("app-signed-out")
            assert not any(cookie.get("name") == "pkce_session" for cookie in context.cookies(app_url))
            # The partner ended its session (its confirmation was posted, and its session cookie is
            # gone); oidc-provider was never asked.
            assert [(method, url.split("?")[0]) for method, url in navigations] == [
                ("POST", f"{app_url}/auth/logout"),
                ("GET", partner_end_session),
                ("POST", partner_end_session),
                ("GET", f"{app_url}/auth/logout"),
            ], navigations
            partner.sync_log()
            end_session_path = urlsplit(partner_end_session).path
            assert [line.split()[3] for line in _requests(partner.log_lines, "DJOP", "POST", end_session_path)] == [
                "302"
            ]
            assert not any(cookie.get("name") == "djop_dot_session" for cookie in context.cookies(partner_origin))
            corp.sync_log()
            assert corp.events("end_session.success") == []
            assert [line for line in corp.log_lines if "/session/end" in line] == []

            # The app again: no session, so the choice again; now the first provider, oidc-provider.
            page.goto(f"{app_url}/")
            _expect_choice_page(page, app_url)
            shots.take("choice-again")
            page.get_by_role("button", name=f"Sign in with {CORP_NAME}").click()
            interaction = re.compile(re.escape(corp_origin) + r"/interaction/[^/?#]+$")
            expect(page).to_have_url(interaction, timeout=ACTION_TIMEOUT_MS)
            login = page.locator("input[name=login]")
            expect(login).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("corp-login")
            login.fill(CORP_USER)
            page.locator("input[name=password]").fill("any-password")
            page.get_by_role("button", name="Sign-in").click()
            expect(page.get_by_role("button", name="Continue")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            expect(page).to_have_url(interaction, timeout=ACTION_TIMEOUT_MS)
            shots.take("corp-consent")
            page.get_by_role("button", name="Continue").click()
            _expect_app_as(page, app_url, CORP_USER, f"{CORP_USER} (test user)", corp.issuer)
            shots.take("app-as-corp-user")
            assert [entry["client_id"] for entry in corp.authorizations()] == [two_providers.corp_client]
            assert corp.grant_count("authorization_code", client_id=two_providers.corp_client) == 1
            assert partner.grant_count("authorization_code") == 1
            assert off_loopback == []
        finally:
            context.close()

    assert len(shots.paths) == 11
    for path in shots.paths:
        assert path.stat().st_size > 1000, path
