"""The test provider and its browser helpers work on their own, without pkce_middleware."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from tests.support import oidc_provider
from tests.support.oidc_provider import LocalProvider, login_with_forms, logout_with_forms
from tests.support.processes import free_port

pytestmark = pytest.mark.node

CLIENT_ID = "fixture-app"
CLIENT_SECRET = "fixture-secret"


class FakeApp:
    """A stand-in relying party on 127.0.0.1 that only records what reaches it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.callbacks: list[dict[str, str]] = []
        self.logout_tokens: list[str] = []
        self.logout_redirect: str = ""  # where POST /logout sends the browser; set per test
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def redirect_uri(self) -> str:
        return f"{self.origin}/auth/callback"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest's captured output to the provider's log

            def _reply(self, status: int, text: str, location: str | None = None) -> None:
                body = text.encode()
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/auth/callback":
                    app.callbacks.append(dict(parse_qsl(url.query)))
                    self._reply(200, "callback received")
                elif url.path == "/logged-out":
                    self._reply(200, "logged out")
                else:
                    self._reply(404, "not found")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                if self.path == "/logout":
                    self._reply(303, "", location=app.logout_redirect)
                elif self.path == "/backchannel-logout":
                    app.logout_tokens.append(form.get("logout_token", ""))
                    self._reply(200, "")
                else:
                    self._reply(404, "not found")

        return Handler

    def __enter__(self) -> FakeApp:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def app() -> Iterator[FakeApp]:
    with FakeApp() as fake_app:
        yield fake_app


@pytest.fixture(scope="module")
def provider(app: FakeApp) -> Iterator[LocalProvider]:
    client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": [app.redirect_uri],
        "post_logout_redirect_uris": [f"{app.origin}/logged-out"],
        "grant_types": ["authorization_code", "refresh_token"],
        "backchannel_logout_uri": f"{app.origin}/backchannel-logout",
        "backchannel_logout_session_required": True,
    }
    with LocalProvider([client]) as op:
        yield op


ACR_VALUES = ["urn:test:pwd", "urn:test:mfa"]
ACCOUNTS: dict[str, dict[str, Any]] = {
    "uma": {"email_verified": False},
    "dora": {"email": "dora@other.test"},
    "gina": {
        "groups": ["admins", "staff"],
        "realm_access": {"roles": ["admin"]},
        "resource_access": {"fixture-app": {"roles": ["editor"]}},
    },
    "nomail": {"email": None, "email_verified": None},
    "mia": {"acr": "urn:test:mfa"},
}


@pytest.fixture(scope="module")
def claims_provider(app: FakeApp) -> Iterator[LocalProvider]:
    """A second provider with account overrides and ACRs, so ``provider`` keeps the defaults."""
    client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": [app.redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
    }
    with LocalProvider([client], extra={"accounts": ACCOUNTS, "acrValues": ACR_VALUES}) as op:
        yield op


def authorization_url(provider: LocalProvider, app: FakeApp, **params: str) -> str:
    query = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": "openid profile email",
        "redirect_uri": app.redirect_uri,
        **params,
    }
    return f"{provider.metadata['authorization_endpoint']}?{urlencode(query)}"


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: these tests check the provider's output, not signatures."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def login_and_exchange(
    provider: LocalProvider,
    app: FakeApp,
    browser: httpx.Client,
    username: str,
    **params: str,
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """One PKCE login through the forms: (ID token claims, token response, visited URLs)."""
    verifier = secrets.token_urlsafe(48)
    start = authorization_url(
        provider,
        app,
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
        **params,
    )
    app.callbacks.clear()
    final, visited = login_with_forms(browser, start, username)
    assert final.text == "callback received", final.text
    exchange = {
        "grant_type": "authorization_code",
        "code": app.callbacks[-1]["code"],
        "redirect_uri": app.redirect_uri,
        "code_verifier": verifier,
    }
    tokens = httpx.post(provider.metadata["token_endpoint"], data=exchange, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10)
    assert tokens.status_code == 200, tokens.text
    body: dict[str, Any] = tokens.json()
    return jwt_claims(body["id_token"]), body, visited


def test_login_code_exchange_and_logout(provider: LocalProvider, app: FakeApp) -> None:
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    start = authorization_url(
        provider,
        app,
        state=state,
        nonce="n-1",
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
    )
    app.callbacks.clear()

    with httpx.Client(timeout=10) as browser:
        final, visited = login_with_forms(browser, start, "alice")

        assert final.status_code == 200, final.text
        assert final.text == "callback received"
        assert visited[0] == start
        assert str(final.url).startswith(app.redirect_uri)
        # A fresh jar means one login and one consent interaction, each GET and POSTed.
        interactions = [url for url in visited if urlsplit(url).path.startswith("/interaction/")]
        assert len(interactions) == 4
        assert len(app.callbacks) == 1
        callback = app.callbacks[0]
        assert callback["state"] == state
        assert callback["iss"] == provider.issuer
        assert callback["code"]

        token_endpoint = provider.metadata["token_endpoint"]
        exchange = {
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": app.redirect_uri,
            "code_verifier": verifier,
        }
        with httpx.Client(auth=(CLIENT_ID, CLIENT_SECRET), timeout=10) as backend:
            tokens = backend.post(token_endpoint, data=exchange)
            assert tokens.status_code == 200, tokens.text
            body = tokens.json()
            assert body["access_token"]
            assert body["refresh_token"]  # issued for the refresh_token grant, no offline_access
            id_claims = jwt_claims(body["id_token"])
            assert id_claims["sub"] == "alice"
            assert id_claims["nonce"] == "n-1"
            assert id_claims["email"] == "alice@example.test"  # conformIdTokenClaims off
            assert id_claims["iss"] == provider.issuer
            assert isinstance(id_claims["auth_time"], int)  # without max_age: require_auth_time default
            assert "acr" not in id_claims  # no acrValues, no acr override
            assert "groups" not in id_claims
            assert provider.grant_count("authorization_code") == 1
            assert provider.grant_count("authorization_code", client_id=CLIENT_ID) == 1

            replay = backend.post(token_endpoint, data=exchange)
            assert replay.status_code == 400
            assert replay.json()["error"] == "invalid_grant"
            assert provider.grant_count("authorization_code", "invalid_grant") == 1
            assert provider.grant_count("authorization_code") == 1

        end_session = provider.metadata["end_session_endpoint"]
        app.logout_redirect = f"{end_session}?" + urlencode(
            {
                "id_token_hint": body["id_token"],
                "post_logout_redirect_uri": f"{app.origin}/logged-out",
                "state": "bye",
            }
        )
        final, visited = logout_with_forms(browser, f"{app.origin}/logout", app.origin)

    assert final.status_code == 200, final.text
    assert final.text == "logged out"
    assert urlsplit(str(final.url)).path == "/logged-out"
    assert dict(parse_qsl(urlsplit(str(final.url)).query)) == {"state": "bye"}
    assert any(urlsplit(url).path == "/session/end/confirm" for url in visited)
    provider.wait_for_log(lambda line: "OPLOG event end_session.success" in line)
    # Reaching the loopback app at all proves the SSRF dispatcher was dropped.
    provider.wait_for_log(lambda line: "OPLOG event backchannel." in line)
    assert provider.events("backchannel.error") == []
    assert len(app.logout_tokens) == 1
    assert jwt_claims(app.logout_tokens[0])["sub"] == "alice"


def test_authorization_without_pkce_is_refused(provider: LocalProvider, app: FakeApp) -> None:
    start = authorization_url(provider, app, state="no-pkce")

    response = httpx.get(start, follow_redirects=False, timeout=10)

    # Errors go back to the registered redirect_uri, never to a login page.
    assert response.status_code in (302, 303)
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == app.redirect_uri
    error = dict(parse_qsl(location.query))
    assert error["error"] == "invalid_request"
    assert "PKCE" in error["error_description"]
    assert error["state"] == "no-pkce"
    assert error["iss"] == provider.issuer
    assert provider.events("authorization.error")


def test_missing_node_modules_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(oidc_provider, "PROVIDER_DIR", tmp_path)
    with pytest.raises(RuntimeError, match="npm ci --prefix provider"):
        LocalProvider([]).start()


def test_startup_failure_shows_output() -> None:
    bad_client = {
        "client_id": "broken",
        "token_endpoint_auth_method": "none",
        "redirect_uris": ["not a url"],
    }

    with pytest.raises(RuntimeError, match="before it was ready") as excinfo:
        LocalProvider([bad_client]).start()
    assert "OP CONFIG ERROR" in str(excinfo.value)
    assert "redirect_uris" in str(excinfo.value)


def test_account_overrides_reach_the_id_token_with_groups_scope(claims_provider: LocalProvider, app: FakeApp) -> None:
    scope = "openid profile email groups"
    found: dict[str, dict[str, Any]] = {}
    for username in ("uma", "dora", "gina", "ivan"):
        with httpx.Client(timeout=10) as browser:
            found[username], _, _ = login_and_exchange(claims_provider, app, browser, username, scope=scope)

    assert found["uma"]["email_verified"] is False
    assert found["uma"]["email"] == "uma@example.test"
    assert found["dora"]["email"] == "dora@other.test"
    assert found["dora"]["email_verified"] is True
    gina = found["gina"]
    assert gina["groups"] == ["admins", "staff"]
    assert gina["realm_access"] == {"roles": ["admin"]}
    assert gina["resource_access"] == {"fixture-app": {"roles": ["editor"]}}
    assert gina["name"] == "gina (test user)"  # overrides add to the defaults, not replace them
    # An unlisted user keeps the defaults, which have no group claims.
    assert found["ivan"]["email"] == "ivan@example.test"
    assert {"groups", "realm_access", "resource_access"}.isdisjoint(found["ivan"])


def test_group_claims_need_the_groups_scope(claims_provider: LocalProvider, app: FakeApp) -> None:
    with httpx.Client(timeout=10) as browser:
        id_claims, _, _ = login_and_exchange(claims_provider, app, browser, "gina")

    assert {"groups", "realm_access", "resource_access"}.isdisjoint(id_claims)
    assert "groups" in claims_provider.metadata["scopes_supported"]


def test_null_override_removes_a_claim(claims_provider: LocalProvider, app: FakeApp) -> None:
    with httpx.Client(timeout=10) as browser:
        id_claims, _, _ = login_and_exchange(claims_provider, app, browser, "nomail")

    assert "email" not in id_claims
    assert "email_verified" not in id_claims
    assert id_claims["preferred_username"] == "nomail"


def test_acr_from_account_override_or_first_acr_value(claims_provider: LocalProvider, app: FakeApp) -> None:
    assert claims_provider.metadata["acr_values_supported"] == ACR_VALUES

    with httpx.Client(timeout=10) as browser:
        mia, tokens, _ = login_and_exchange(claims_provider, app, browser, "mia")
    with httpx.Client(timeout=10) as browser:
        alice, _, _ = login_and_exchange(claims_provider, app, browser, "alice")
    with httpx.Client(timeout=10) as browser:
        # acr_values are voluntary: the login's own acr is what the ID token reports.
        asked, _, _ = login_and_exchange(claims_provider, app, browser, "alice", acr_values="urn:test:mfa")

    assert mia["acr"] == "urn:test:mfa"
    assert alice["acr"] == "urn:test:pwd"
    assert asked["acr"] == "urn:test:pwd"
    # The acr override belongs to the login, never to the user's claims.
    userinfo = httpx.get(
        claims_provider.metadata["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=10,
    )
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["sub"] == "mia"
    assert "acr" not in userinfo.json()


def test_max_age_forces_a_new_login(claims_provider: LocalProvider, app: FakeApp) -> None:
    posted_prompts: list[str] = []

    def record_form_posts(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.startswith("/interaction/"):
            posted_prompts.append(dict(parse_qsl(request.read().decode()))["prompt"])

    with httpx.Client(timeout=10, event_hooks={"request": [record_form_posts]}) as browser:
        first, _, _ = login_and_exchange(claims_provider, app, browser, "max")
        assert posted_prompts == ["login", "consent"]

        # Control: the session alone logs in again without any form.
        sso, _, visited = login_and_exchange(claims_provider, app, browser, "max")
        assert not [url for url in visited if "/interaction/" in url]
        assert sso["auth_time"] == first["auth_time"]

        # auth_time has one-second resolution; max_age=1 needs it more than a second old.
        time.sleep(2.1)
        posted_prompts.clear()
        again, _, _ = login_and_exchange(claims_provider, app, browser, "max", max_age="1")

    assert posted_prompts == ["login"]  # the grant survives, only the login is asked again
    assert again["sub"] == "max"
    assert again["auth_time"] > first["auth_time"]


def test_authorization_requests_are_logged(claims_provider: LocalProvider, app: FakeApp) -> None:
    challenge = create_s256_code_challenge(secrets.token_urlsafe(48))
    asked = authorization_url(
        claims_provider,
        app,
        code_challenge=challenge,
        code_challenge_method="S256",
        prompt="login consent",
        max_age="30",
        acr_values="urn:test:mfa urn:test:pwd",
    )
    plain = authorization_url(claims_provider, app, code_challenge=challenge, code_challenge_method="S256")

    for url in (asked, plain):
        response = httpx.get(url, follow_redirects=False, timeout=10)
        assert response.status_code == 303, response.text

    assert claims_provider.authorizations()[-2:] == [
        {
            "client_id": CLIENT_ID,
            "prompt": "login_consent",
            "max_age": "30",
            "acr_values": "urn:test:mfa_urn:test:pwd",
        },
        {"client_id": CLIENT_ID, "prompt": "-", "max_age": "-", "acr_values": "-"},
    ]
    assert (
        f"OPLOG authorize {CLIENT_ID} prompt=login_consent max_age=30 acr_values=urn:test:mfa_urn:test:pwd"
        in claims_provider.log_lines
    )
