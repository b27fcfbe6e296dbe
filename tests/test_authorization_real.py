"""Authorization against the real provider (panva's oidc-provider), through its own login forms.

The provider releases the claims the rules read (email and `email_verified`, `groups`,
`realm_access.roles`, `acr`, `auth_time`) for a few accounts; `examples/authorization_app.py`
serves under uvicorn with an app-wide email-domain rule, a group rule on `/admin`, a FastAPI
dependency on `/reports`, step-up by `max_age` on `/billing` and by `acr` on `/vault`. What a
person sees is asserted: the app's own JSON (it names the page and the user) only where the rules
let them in, the middleware's pages and answers everywhere else.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.oidc_provider import LocalProvider, login_with_forms
from tests.support.processes import free_port
from tests.support.real_apps import app_client, app_env
from tests.support.servers import app_server

pytestmark = [pytest.mark.node, pytest.mark.servers]

APP = "examples.authorization_app:app"
#: The `/billing` rule's max_age: short, so that one test can outwait it.
BILLING_MAX_AGE = 2
MFA, PASSWORD = "urn:test:mfa", "urn:test:pwd"
ACCOUNTS = {
    "dora": {"email": "dora@other.test"},
    "uma": {"email_verified": False},
    "gina": {"groups": ["admins", "staff"], "realm_access": {"roles": ["admin"]}},
    "mia": {"acr": MFA},
}


@dataclass
class Sites:
    provider: LocalProvider
    #: App-wide rule: email domain example.test; path and route rules as in the example.
    domain: str
    #: App-wide rule: the `admin` role at `realm_access.roles` (a nested claim).
    nested: str


def _client(name: str, port: int) -> dict[str, object]:
    return app_client(name, port, secret=secrets.token_urlsafe(24))


def _env(provider: LocalProvider, client: dict[str, object], port: int, **rules: str) -> dict[str, str]:
    return app_env(
        provider,
        client,
        port,
        PKCE_SCOPES="openid profile email groups",
        # No tolerance, so that a short max_age is outwaited in seconds.
        PKCE_CLOCK_LEEWAY="0",
        EXAMPLE_BILLING_MAX_AGE=str(BILLING_MAX_AGE),
        EXAMPLE_VAULT_ACR=MFA,
        **rules,
    )


@pytest.fixture(scope="module")
def sites() -> Iterator[Sites]:
    ports = {"domain": free_port(), "nested": free_port()}
    clients = {name: _client(name, port) for name, port in ports.items()}
    extra = {"accounts": ACCOUNTS, "acrValues": [PASSWORD, MFA]}
    with LocalProvider(list(clients.values()), extra=extra) as provider, contextlib.ExitStack() as stack:
        domain_env = _env(provider, clients["domain"], ports["domain"], PKCE_ALLOWED_EMAIL_DOMAINS="example.test")
        nested_env = _env(
            provider,
            clients["nested"],
            ports["nested"],
            PKCE_ALLOWED_GROUPS="admin",
            PKCE_GROUPS_CLAIM="realm_access.roles",
        )
        yield Sites(
            provider,
            domain=stack.enter_context(app_server(APP, ports["domain"], domain_env)),
            nested=stack.enter_context(app_server(APP, ports["nested"], nested_env)),
        )


def _served(response: httpx.Response, page: str, sub: str) -> None:
    """The app itself answered `page` to `sub` (its JSON), not the middleware."""
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert (body["page"], body["sub"]) == (page, sub)


def _refused_page(response: httpx.Response, reason: str, who: str) -> None:
    assert response.status_code == 403, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert "Access denied" in response.text and who in response.text
    assert f"reason: {reason}" in response.text
    assert "Sign in as someone else" in response.text
    assert '"page"' not in response.text  # never the app's answer


def _session_cookies(browser: httpx.Client) -> list[str]:
    return [name for name in browser.cookies if name.startswith("pkce_session")]


def test_a_user_of_an_allowed_domain_gets_in(sites: Sites) -> None:
    with httpx.Client() as browser:
        page, _ = login_with_forms(browser, f"{sites.domain}/", "ann")
        _served(page, "home", "ann")


@pytest.mark.parametrize(
    ("user", "reason", "who"),
    [("dora", "email_not_allowed", "dora@other.test"), ("uma", "email_unverified", "uma@example.test")],
)
def test_a_refused_login_gets_a_403_page_and_no_session(sites: Sites, user: str, reason: str, who: str) -> None:
    with httpx.Client() as browser:
        page, visited = login_with_forms(browser, f"{sites.domain}/", user)
        assert urlsplit(visited[-1]).path == "/auth/callback"  # refused at login, not on a later request
        _refused_page(page, reason, who)
        assert _session_cookies(browser) == []
        # Nothing was kept: the next request starts a new login instead of repeating the refusal.
        again = browser.get(f"{sites.domain}/", headers=BROWSER_HEADERS, follow_redirects=False)
        assert again.status_code == 302 and again.headers["location"].startswith(sites.provider.issuer)


def test_sign_in_as_someone_else_asks_the_provider_for_a_new_login(sites: Sites) -> None:
    with httpx.Client() as browser:
        refused, _ = login_with_forms(browser, f"{sites.domain}/", "dora")
        _refused_page(refused, "email_not_allowed", "dora")
        switch = refused.text.split('<a href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        page, visited = login_with_forms(browser, f"{sites.domain}{switch}", "ann")
        # The provider showed its login form though dora's provider session was still open.
        assert any(urlsplit(url).path.startswith("/interaction/") for url in visited)
        assert sites.provider.authorizations()[-1]["prompt"] == "login"
        _served(page, "home", "ann")


def test_a_path_rule_and_a_route_dependency_admit_only_the_group(sites: Sites) -> None:
    with httpx.Client() as ann, httpx.Client() as gina:
        login_with_forms(ann, f"{sites.domain}/", "ann")
        login_with_forms(gina, f"{sites.domain}/", "gina")
        _served(gina.get(f"{sites.domain}/admin/users"), "admin", "gina")
        _served(gina.get(f"{sites.domain}/reports"), "reports", "gina")
        # The path rule (middleware) and the FastAPI dependency answer alike.
        _refused_page(ann.get(f"{sites.domain}/admin/users", headers=BROWSER_HEADERS), "group_not_allowed", "ann")
        _refused_page(ann.get(f"{sites.domain}/reports", headers=BROWSER_HEADERS), "group_not_allowed", "ann")
        api = ann.get(f"{sites.domain}/admin/users", headers={"Accept": "application/json"})
        assert api.status_code == 403
        assert api.json() == {"error": "access_denied", "reason": "group_not_allowed", "message": api.json()["message"]}
        # Refused on one path, still signed in everywhere else.
        _served(ann.get(f"{sites.domain}/"), "home", "ann")


def test_a_nested_groups_claim_decides_at_login(sites: Sites) -> None:
    with httpx.Client() as gina, httpx.Client() as ann:
        page, _ = login_with_forms(gina, f"{sites.nested}/", "gina")
        _served(page, "home", "gina")
        refused, _ = login_with_forms(ann, f"{sites.nested}/", "ann")
        _refused_page(refused, "group_not_allowed", "ann")
        assert _session_cookies(ann) == []


def test_step_up_by_max_age_sends_an_old_session_to_the_provider_again(sites: Sites) -> None:
    with httpx.Client() as browser:
        login_with_forms(browser, f"{sites.domain}/", "ann")
        time.sleep(BILLING_MAX_AGE + 1.5)  # the login is now older than /billing allows
        api = browser.get(f"{sites.domain}/billing", headers={"Accept": "application/json"})
        assert api.status_code == 401
        assert api.headers["www-authenticate"] == (
            'Bearer error="insufficient_user_authentication", '
            f'error_description="A more recent login is required", max_age={BILLING_MAX_AGE}'
        )
        assert api.json()["reason"] == "login_too_old"

        first = browser.get(f"{sites.domain}/billing", headers=BROWSER_HEADERS, follow_redirects=False)
        assert first.status_code == 303
        assert "max_age=" in first.headers["location"]
        assert "set-cookie" not in first.headers  # the session is kept meanwhile
        page, visited = login_with_forms(browser, f"{sites.domain}/billing", "ann")
        # The provider saw max_age, found its own session too old, and asked for the password again.
        assert sites.provider.authorizations()[-1]["max_age"] == str(BILLING_MAX_AGE)
        assert any(urlsplit(url).path.startswith("/interaction/") for url in visited)
        _served(page, "billing", "ann")


def test_step_up_by_acr_that_the_provider_gives(sites: Sites) -> None:
    with httpx.Client() as browser:
        page, _ = login_with_forms(browser, f"{sites.domain}/vault", "mia")
        # The first login already asked for what /vault needs, so one login was enough.
        assert sites.provider.authorizations()[-1]["acr_values"] == MFA
        _served(page, "vault", "mia")
        assert browser.get(f"{sites.domain}/vault").json()["acr"] == MFA


def test_step_up_by_acr_that_the_provider_cannot_give_ends_in_a_403_not_a_loop(sites: Sites) -> None:
    with httpx.Client() as browser:
        login_with_forms(browser, f"{sites.domain}/", "ann")
        assert browser.get(f"{sites.domain}/").json()["acr"] == PASSWORD
        first = browser.get(f"{sites.domain}/vault", headers=BROWSER_HEADERS, follow_redirects=False)
        assert first.status_code == 303
        query = parse_qs(urlsplit(first.headers["location"]).query)
        assert query["acr_values"] == [MFA] and query["next"] == ["/vault"]
        page, visited = login_with_forms(browser, f"{sites.domain}/vault", "ann")
        assert sites.provider.authorizations()[-1]["acr_values"] == MFA
        _refused_page(page, "acr_not_allowed", "ann")
        assert urlsplit(visited[-1]).path == "/auth/callback"
        # The session from before the step-up is still there.
        _served(browser.get(f"{sites.domain}/"), "home", "ann")
