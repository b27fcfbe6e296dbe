"""A real browser (Debian's chromium, driven by Playwright) through the whole login and logout.

The Starlette example runs on ``localhost`` and the provider on ``127.0.0.1``, so the browser
keeps two cookie jars, as it would for two real sites. The browser walks the provider's own
login and consent pages, lands on the app, signs out on the middleware's own sign-out page and
through the provider's logout confirmation, and is sent back to the provider's login page when it opens the app again.
A screenshot of every page is saved under ``build/screenshots/``.

The browser is the system's ``/usr/bin/chromium`` (``make test`` installs Debian's package);
Playwright's own browser downloads are never used. The network is closed, so every request
that would leave loopback is aborted in the browser rather than left to hang (provider/server.mjs
already strips the Google web font that oidc-provider's pages @import).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from tests.support.oidc_provider import LocalProvider
from tests.support.processes import free_port
from tests.support.real_apps import app_client, app_env
from tests.support.servers import app_server

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.servers]

REPO_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT_DIR = REPO_ROOT / "build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")

#: Known to work headless, as root, on a machine with no network (see the machine notes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})

#: Milliseconds; every wait in this test is bounded by these (`expect` does not use the
#: context's default timeout, so each assertion passes its own). Generous for a loaded 2-core machine:
#: each step takes well under a second when the machine is idle.
ACTION_TIMEOUT_MS = 10_000
NAVIGATION_TIMEOUT_MS = 15_000
LAUNCH_TIMEOUT_MS = 30_000

APP_HOST = "localhost"  # not the provider's 127.0.0.1: a cookie jar of its own


def _client(port: int) -> dict[str, object]:
    return app_client("browser", port, secret=f"secret-browser-{secrets.token_hex(8)}", host=APP_HOST)


def _env(provider: LocalProvider, client: dict[str, object], port: int) -> dict[str, str]:
    return app_env(provider, client, port, host=APP_HOST, PKCE_PUBLIC_PATHS="/health")


def _abort_off_loopback(route: Route) -> None:
    host = urlsplit(route.request.url).hostname or ""
    if host in LOOPBACK_HOSTS:
        route.continue_()
    else:
        route.abort("blockedbyclient")


def _note_off_loopback(request: Request, seen: list[str]) -> None:
    if request.is_navigation_request() and urlsplit(request.url).hostname not in LOOPBACK_HOSTS:
        seen.append(request.url)


def _require_chromium() -> None:
    # Called in the test, not in a fixture, so a missing browser is a failure, not an error.
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: this test drives Debian's chromium package. "
            "`make test` installs it; by hand: apt-get install -y chromium",
            pytrace=False,
        )


@contextmanager
def _chromium() -> Iterator[Browser]:
    _require_chromium()
    # launch() gives chromium a new empty --user-data-dir of Playwright's own (it refuses one in
    # args) and deletes it on close.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            browser.close()


class Screenshots:
    def __init__(self, page: Page, directory: Path) -> None:
        self._page = page
        self._directory = directory
        self.paths: list[Path] = []

    def take(self, name: str) -> Path:
        path = self._directory / f"browser-{len(self.paths) + 1:02d}-{name}.png"
        self._page.screenshot(path=str(path), full_page=True, timeout=ACTION_TIMEOUT_MS)
        self.paths.append(path)
        print(f"screenshot: {path.relative_to(REPO_ROOT)}")
        return path


def test_login_consent_app_and_logout_in_chromium() -> None:
    _require_chromium()  # before the servers start, so a missing browser fails at once
    port = free_port()
    client = _client(port)
    user = f"alice-{secrets.token_hex(3)}"
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOT_DIR.glob("browser-*.png"):
        old.unlink()

    with (
        LocalProvider([client]) as provider,
        app_server("examples.starlette_app:app", port, _env(provider, client, port)),
        _chromium() as browser,
    ):
        app_url = f"http://{APP_HOST}:{port}"
        provider_interaction = re.compile(re.escape(provider.issuer) + r"/interaction/[^/?#]+$")
        provider_logout = re.compile(re.escape(provider.issuer) + r"/session/end")
        app_signed_out = re.compile(re.escape(f"{app_url}/auth/logout") + r"(\?.*)?$")
        context = browser.new_context(viewport={"width": 900, "height": 700})
        try:
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
            context.route("**/*", _abort_off_loopback)
            page = context.new_page()
            # Routes see no redirect hops, so watch navigations too: none may leave loopback.
            off_loopback: list[str] = []
            page.on("request", lambda request: _note_off_loopback(request, off_loopback))
            shots = Screenshots(page, SCREENSHOT_DIR)

            # The app sends the browser to the provider, which shows its login page.
            page.goto(f"{app_url}/")
            expect(page).to_have_url(provider_interaction, timeout=ACTION_TIMEOUT_MS)
            login = page.locator("input[name=login]")
            expect(login).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("provider-login")

            login.fill(user)
            page.locator("input[name=password]").fill("any-password")
            page.get_by_role("button", name="Sign-in").click()

            # A separate consent interaction, on every first login in a fresh provider session.
            expect(page.get_by_role("button", name="Continue")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            expect(page).to_have_url(provider_interaction, timeout=ACTION_TIMEOUT_MS)
            shots.take("provider-consent")
            page.get_by_role("button", name="Continue").click()

            # Back on the app, signed in.
            expect(page).to_have_url(f"{app_url}/", timeout=ACTION_TIMEOUT_MS)
            expect(page.get_by_text(f"hello {user}", exact=True)).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("app-signed-in")

            sessions = [cookie for cookie in context.cookies(app_url) if cookie.get("name") == "pkce_session"]
            assert len(sessions) == 1, context.cookies()
            session = sessions[0]
            assert session.get("httpOnly") is True
            assert session.get("sameSite") == "Lax"
            assert session.get("domain") == APP_HOST  # host-only, not shared with the provider
            assert not any(cookie.get("name") == "pkce_session" for cookie in context.cookies(provider.issuer))

            # Sign out through the middleware's own page. It is served with `Referrer-Policy:
            # same-origin`; under `no-referrer` Chromium would send `Origin: null` with the form's
            # POST, which once made this step a 403 (issue #10, finding 10).
            page.goto(f"{app_url}/auth/logout")
            expect(page.get_by_role("heading", name="Sign out?")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("app-sign-out-page")
            page.get_by_role("button", name="Sign out").click()
            # The app sends the browser to the provider's logout confirmation.
            expect(page).to_have_url(provider_logout, timeout=ACTION_TIMEOUT_MS)
            confirm = page.get_by_role("button", name="Yes, sign me out")
            expect(confirm).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("provider-logout-confirm")
            confirm.click()

            # The provider sends the browser back to the app's post-logout page.
            expect(page).to_have_url(app_signed_out, timeout=ACTION_TIMEOUT_MS)
            expect(page.get_by_text("You are signed out")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("app-signed-out")
            assert not any(cookie.get("name") == "pkce_session" for cookie in context.cookies(app_url))

            # Both sessions are gone: the app sends the browser to the provider's login page again.
            page.goto(f"{app_url}/")
            expect(page).to_have_url(provider_interaction, timeout=ACTION_TIMEOUT_MS)
            expect(page.locator("input[name=login]")).to_be_visible(timeout=ACTION_TIMEOUT_MS)
            shots.take("provider-login-again")
            assert off_loopback == []
        finally:
            context.close()

    assert len(shots.paths) == 7
    for path in shots.paths:
        assert path.stat().st_size > 1000, path
