"""The whole login against a real, independent OpenID Provider (panva's oidc-provider), over real HTTP.

Both client kinds log in through the provider's own login and consent forms and land on the
example app's page; then they log out through the provider's end-session confirmation.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.oidc_provider import LocalProvider, login_with_forms, logout_with_forms
from tests.support.processes import free_port
from tests.support.servers import app_server

pytestmark = [pytest.mark.node, pytest.mark.servers]


@dataclass
class App:
    name: str
    url: str


def _client(name: str, port: int, *, public: bool) -> dict[str, object]:
    base = f"http://127.0.0.1:{port}"
    client: dict[str, object] = {
        "client_id": name,
        "redirect_uris": [f"{base}/auth/callback"],
        "post_logout_redirect_uris": [f"{base}/auth/logout"],
        "grant_types": ["authorization_code"],
    }
    if public:
        client["token_endpoint_auth_method"] = "none"
    else:
        client["client_secret"] = f"secret-{name}-{secrets.token_hex(8)}"
        client["token_endpoint_auth_method"] = "client_secret_basic"
    return client


def _env(provider: LocalProvider, client: dict[str, object], port: int) -> dict[str, str]:
    env = {
        "PKCE_ISSUER": provider.issuer,
        "PKCE_CLIENT_ID": str(client["client_id"]),
        "PKCE_SECRET_KEY": secrets.token_urlsafe(32),
        "PKCE_REDIRECT_URI": f"http://127.0.0.1:{port}/auth/callback",
        "PKCE_PUBLIC_PATHS": "/health",
        "PKCE_COOKIE_SECURE": "false",  # plain http on loopback
    }
    if "client_secret" in client:
        env["PKCE_CLIENT_SECRET"] = str(client["client_secret"])
    return env


#: Which example serves each client: both client kinds on Starlette, and the other frameworks' examples.
APPS = {
    "confidential": "examples.starlette_app:app",
    "public": "examples.starlette_app:app",
    "fastapi": "examples.fastapi_app:app",
    "quart": "examples.quart_app:app",
}


@pytest.fixture(scope="module")
def provider_and_apps() -> Iterator[tuple[LocalProvider, dict[str, App]]]:
    ports = {name: free_port() for name in APPS}
    clients = {name: _client(name, port, public=name == "public") for name, port in ports.items()}
    with LocalProvider(list(clients.values())) as provider, contextlib.ExitStack() as stack:
        apps = {
            name: App(
                name, stack.enter_context(app_server(target, ports[name], _env(provider, clients[name], ports[name])))
            )
            for name, target in APPS.items()
        }
        yield provider, apps


@pytest.mark.parametrize("client_name", ["confidential", "public"])
def test_login_through_the_providers_forms_then_logout(
    provider_and_apps: tuple[LocalProvider, dict[str, App]], client_name: str
) -> None:
    provider, apps = provider_and_apps
    app = apps[client_name]
    user = f"user-{client_name}-{secrets.token_hex(3)}"
    grants_before = provider.grant_count("authorization_code", client_id=client_name)

    with httpx.Client(headers=BROWSER_HEADERS) as browser:
        first = browser.get(f"{app.url}/me?from=test")
        assert first.status_code == 302
        authorize = urlsplit(first.headers["location"])
        assert f"{authorize.scheme}://{authorize.netloc}" == provider.issuer
        query = parse_qs(authorize.query)
        assert query["code_challenge_method"] == ["S256"] and query["response_type"] == ["code"]

        page, visited = login_with_forms(browser, f"{app.url}/", user)
        paths = [urlsplit(url).path for url in visited]
        assert any(path.startswith("/interaction/") for path in paths)  # the provider's real forms were used
        assert f"{app.url}/auth/callback" in [url.split("?")[0] for url in visited]
        assert page.status_code == 200
        assert f"hello {user}" in page.text
        assert provider.grant_count("authorization_code", client_id=client_name) == grants_before + 1

        me = browser.get(f"{app.url}/me")
        assert me.status_code == 200 and me.json()["sub"] == user

        landing, visited = logout_with_forms(browser, f"{app.url}/auth/logout", app.url)
        assert any(urlsplit(url).path.startswith("/session/end") for url in visited)
        assert landing.status_code == 200 and "You are signed out" in landing.text
        assert browser.get(f"{app.url}/").status_code == 302  # logged out here too


def test_api_request_without_session_gets_401_not_a_redirect(
    provider_and_apps: tuple[LocalProvider, dict[str, App]],
) -> None:
    _, apps = provider_and_apps
    response = httpx.get(f"{apps['confidential'].url}/me", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.json()["error"] == "login_required"
    # curl's (and httpx's) `Accept: */*` says nothing of a page load: a 401 too, not the provider's form.
    curl = httpx.get(f"{apps['confidential'].url}/me", headers={"Accept": "*/*", "User-Agent": "curl/8.5.0"})
    assert curl.status_code == 401
    assert curl.json()["login_url"].startswith("/auth/login?next=")
    assert httpx.get(f"{apps['confidential'].url}/health").text == "ok"


def test_existing_sessions_keep_working_while_the_provider_is_down() -> None:
    port = free_port()
    client = _client("outage", port, public=False)
    with (
        LocalProvider([client]) as provider,
        app_server("examples.starlette_app:app", port, _env(provider, client, port)) as url,
        httpx.Client(headers=BROWSER_HEADERS) as browser,
    ):
        page, _ = login_with_forms(browser, f"{url}/", "survivor")
        assert "hello survivor" in page.text
        provider.stop()
        for _ in range(3):
            assert "hello survivor" in browser.get(f"{url}/").text
        # Discovery was cached at startup, so a new visitor is still sent to the (dead) provider
        # rather than shown an error; nothing on this path waited for the network.
        with httpx.Client(headers=BROWSER_HEADERS) as stranger:
            assert stranger.get(f"{url}/").status_code == 302


@pytest.mark.parametrize("client_name", ["fastapi", "quart"])
def test_other_framework_examples_log_in_too(
    provider_and_apps: tuple[LocalProvider, dict[str, App]], client_name: str
) -> None:
    provider, apps = provider_and_apps
    with httpx.Client(headers=BROWSER_HEADERS) as browser:
        page, _ = login_with_forms(browser, f"{apps[client_name].url}/", f"{client_name}-user")
        assert page.status_code == 200
        assert page.text == f"hello {client_name}-user"
        assert browser.get(f"{apps[client_name].url}/").text == f"hello {client_name}-user"
    assert provider.grant_count("authorization_code", client_id=client_name) == 1


class TrustworthyLoopback(httpx.HTTPTransport):
    """Cookies as a browser keeps them for http://127.0.0.1, a potentially trustworthy origin:
    `Secure` ones included. Python's cookie jar (and so httpx's) sends those over https only, so
    this transport keeps the jar itself and writes each request's Cookie header from it."""

    def __init__(self) -> None:
        super().__init__()
        self.jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(secure_protocols=("https", "http")))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        shim = urllib.request.Request(str(request.url), method=request.method)
        self.jar.add_cookie_header(shim)
        if shim.has_header("Cookie"):
            request.headers["cookie"] = shim.get_header("Cookie") or ""
        response = super().handle_request(request)
        self.jar.extract_cookies(_Headers(response.headers.multi_items()), shim)  # type: ignore[arg-type]
        return response


class _Headers:
    """What `CookieJar.extract_cookies` reads of a response: `info().get_all("set-cookie")`."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def info(self) -> _Headers:
        return self

    def get_all(self, name: str, default: list[str] | None = None) -> list[str]:
        found = [value for key, value in self._items if key.lower() == name.lower()]
        return found or (default or [])


def test_form_post_response_mode_against_the_real_provider() -> None:
    """oidc-provider answers with its self-submitting form; the callback takes the POST.

    The flow cookie is `SameSite=None; Secure` in this mode; a browser sends it to
    http://127.0.0.1 (see `TrustworthyLoopback`).
    """
    port = free_port()
    client = _client("formpost", port, public=False)
    with LocalProvider([client]) as provider:
        env = {**_env(provider, client, port), "PKCE_RESPONSE_MODE": "form_post"}
        with (
            app_server("examples.starlette_app:app", port, env) as url,
            httpx.Client(transport=TrustworthyLoopback()) as browser,
        ):
            page, visited = login_with_forms(browser, f"{url}/", "poster")
            assert "hello poster" in page.text
            authorize = next(u for u in visited if urlsplit(u).path == "/auth")
            assert parse_qs(urlsplit(authorize).query)["response_mode"] == ["form_post"]
