"""The test provider and its browser helpers work on their own, without pkce_middleware."""

from __future__ import annotations

import base64
import json
import secrets
import threading
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
