"""`PKCE_USERINFO` against a real provider: panva's oidc-provider, with `conformIdTokenClaims` on.

With that setting oidc-provider puts a scope's claims (profile: `name`, `preferred_username`;
email: `email`, `email_verified`) into the ID token only when no access token is issued; a code
flow issues one, so they are released at the userinfo endpoint alone. That is what a new user of
such a provider saw: `request.user.claims["email"]` missing. The example Starlette app
(`examples.starlette_app:app`, its `/me` answering `{"sub", "claims"}` and its home page naming
`display_name`) is served twice under uvicorn, without and with `PKCE_USERINFO=true`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.oauth_clients import authorization_code_with_forms
from tests.support.oidc_provider import LocalProvider, login_with_forms
from tests.support.processes import free_port
from tests.support.real_apps import app_client, app_env
from tests.support.servers import app_server

pytestmark = [pytest.mark.node, pytest.mark.servers]

TARGET = "examples.starlette_app:app"
#: Below the middleware's 60 s refresh margin: the first request after the login refreshes.
ACCESS_TOKEN_TTL = 30
#: The claims oidc-provider releases for the scopes `profile` and `email` (the middleware's default scopes).
PROFILE_AND_EMAIL = ("name", "preferred_username", "email", "email_verified")


@dataclass
class App:
    client_id: str
    url: str


@dataclass
class Setup:
    provider: LocalProvider
    #: "plain" (no PKCE_USERINFO) and "userinfo" (PKCE_USERINFO=true), the same example app.
    apps: dict[str, App]
    #: A client with no server behind its redirect_uri, to ask the provider directly.
    probe: dict[str, Any]


def _client(client_id: str, port: int) -> dict[str, Any]:
    return app_client(
        client_id,
        port,
        secret=f"secret-{client_id}-{secrets.token_hex(8)}",
        grant_types=["authorization_code", "refresh_token"],
    )


def _env(provider: LocalProvider, client: dict[str, Any], port: int, *, userinfo: bool) -> dict[str, str]:
    return app_env(provider, client, port, **({"PKCE_USERINFO": "true"} if userinfo else {}))


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    ports = {"plain": free_port(), "userinfo": free_port()}
    clients = {name: _client(name, port) for name, port in ports.items()}
    probe = _client("probe", free_port())
    provider = LocalProvider(
        [*clients.values(), probe], ttl={"AccessToken": ACCESS_TOKEN_TTL}, extra={"conformIdTokenClaims": True}
    )
    with provider, contextlib.ExitStack() as stack:
        apps = {
            name: App(
                name,
                stack.enter_context(
                    app_server(TARGET, port, _env(provider, clients[name], port, userinfo=name == "userinfo"))
                ),
            )
            for name, port in ports.items()
        }
        yield Setup(provider, apps, probe)


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def _log_in(app: App, browser: httpx.Client, user: str) -> httpx.Response:
    """Through the provider's login and consent forms to the example app's home page."""
    page, _ = login_with_forms(browser, f"{app.url}/", user)
    assert page.status_code == 200, page.text
    assert f"hello {user}" in page.text
    return page


def _me(app: App, browser: httpx.Client) -> dict[str, Any]:
    me = browser.get(f"{app.url}/me", headers=BROWSER_HEADERS)
    assert me.status_code == 200, me.text
    data: dict[str, Any] = me.json()
    return data


def test_the_provider_releases_profile_and_email_only_at_userinfo(setup: Setup) -> None:
    """What the tests below rest on, seen at the provider itself: the ID token of a code flow
    lacks the profile and email claims; its access token reads them at the userinfo endpoint."""
    provider, probe = setup.provider, setup.probe
    user = f"probe-{secrets.token_hex(3)}"
    with httpx.Client() as browser:
        answer = authorization_code_with_forms(
            browser,
            provider.metadata,
            probe["client_id"],
            probe["redirect_uris"][0],
            user,
            resource=None,
            scope="openid profile email",
            client_secret=probe["client_secret"],
        )
    assert set(answer["scope"].split()) == {"openid", "profile", "email"}  # all granted
    id_token = _jwt_claims(answer["id_token"])
    assert id_token["sub"] == user
    assert not set(PROFILE_AND_EMAIL) & set(id_token), id_token

    userinfo = httpx.get(
        provider.metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {answer['access_token']}"}
    )
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.headers["content-type"].startswith("application/json")
    assert userinfo.json() == {
        "sub": user,
        "name": f"{user} (test user)",
        "preferred_username": user,
        "email": f"{user}@example.test",
        "email_verified": True,
    }


def test_without_userinfo_the_user_has_no_email(setup: Setup) -> None:
    app = setup.apps["plain"]
    user = f"plain-{secrets.token_hex(3)}"
    with httpx.Client() as browser:
        page = _log_in(app, browser, user)
        me = _me(app, browser)

    assert me["sub"] == user
    assert me["claims"].get("email") is None  # what a new user saw
    assert not set(PROFILE_AND_EMAIL) & set(me["claims"])
    assert f"Signed in as <b>{user}</b>" in page.text  # no name, no preferred_username: the sub


def test_with_userinfo_the_user_has_email_and_name(setup: Setup) -> None:
    provider, app = setup.provider, setup.apps["userinfo"]
    user = f"info-{secrets.token_hex(3)}"
    with httpx.Client() as browser:
        page = _log_in(app, browser, user)
        me = _me(app, browser)

    claims = me["claims"]
    assert me["sub"] == user
    assert claims["email"] == f"{user}@example.test"
    assert claims["email_verified"] is True
    assert claims["name"] == f"{user} (test user)"
    assert claims["preferred_username"] == user
    # The ID token's protocol claims are still there, and still the ID token's.
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == "userinfo"
    assert isinstance(claims["auth_time"], int)
    assert f"Signed in as <b>{user} (test user)</b>" in page.text  # display_name: the name


def _userinfo_reads(provider: LocalProvider) -> int:
    """How many userinfo requests the provider answered 200 so far (its request log)."""
    provider.sync_log()
    path = urlsplit(provider.metadata["userinfo_endpoint"]).path
    return sum(1 for line in provider.log_lines if line == f"OPLOG GET {path} 200")


def test_userinfo_is_read_again_at_each_refresh(setup: Setup) -> None:
    provider, app = setup.provider, setup.apps["userinfo"]
    user = f"refresh-{secrets.token_hex(3)}"
    refreshes_before = provider.grant_count("refresh_token", client_id="userinfo")
    reads_before = _userinfo_reads(provider)
    with httpx.Client() as browser:
        # The access token lives 30 s, inside the 60 s refresh margin: the home page after the
        # callback already refreshes it (later requests share that refresh for a while).
        _log_in(app, browser, user)
        me = _me(app, browser)
    refreshes = provider.grant_count("refresh_token", client_id="userinfo") - refreshes_before

    assert refreshes >= 1
    assert provider.grant_count("refresh_token", outcome="invalid_grant") == 0
    assert _userinfo_reads(provider) - reads_before == 1 + refreshes  # at login, and at every refresh
    assert me["sub"] == user
    assert me["claims"]["email"] == f"{user}@example.test"
    assert me["claims"]["name"] == f"{user} (test user)"
