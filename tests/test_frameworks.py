"""Every framework's example under every server: a real login through a real provider, over real HTTP.

Five frameworks (Starlette, FastAPI, Quart, Litestar, a bare ASGI callable) times three servers
(uvicorn, hypercorn, granian), each combination its own server process on 127.0.0.1 with its own
confidential client at one shared oidc-provider. All processes start at once in a module fixture,
so the frameworks' imports overlap; each test then walks the provider's login and consent forms and
reads the user back through the framework's own idiom.

Then the proxy case: uvicorn honours `X-Forwarded-Proto` only from the peers in
`--forwarded-allow-ips`, and the middleware builds its redirect URI from what the server says.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.authentication import AuthCredentials, SimpleUser, UnauthenticatedUser

from pkce_middleware import OIDCCredentials, OIDCUser
from pkce_middleware._scope import get_credentials, get_user
from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.oidc_provider import LocalProvider, login_with_forms
from tests.support.processes import free_port
from tests.support.servers import SERVERS, AppServer, Server, serve_all

#: The example module serving each framework.
FRAMEWORKS = {
    "starlette": "examples.starlette_app:app",
    "fastapi": "examples.fastapi_app:app",
    "quart": "examples.quart_app:app",
    "litestar": "examples.litestar_app:app",
    "asgi": "examples.asgi_app:app",
}
COMBINATIONS = list(itertools.product(FRAMEWORKS, SERVERS))

#: `/me` is public at the gate, so an anonymous request reaches the app and shows how its idiom refuses.
PUBLIC_PATHS = "/me"
DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/jwks")


@dataclass
class Deployment:
    provider: LocalProvider
    apps: dict[tuple[str, Server], AppServer]
    #: uvicorn trusting the forwarded headers of 127.0.0.1 (where the test's requests come from), and not.
    trusting_proxy: AppServer
    ignoring_proxy: AppServer

    def app(self, framework: str, server: Server) -> AppServer:
        app = self.apps[framework, server]
        if app.startup_error is not None:
            pytest.fail(f"{server} did not serve the {framework} example:\n{app.startup_error}")
        return app

    def provider_fetches(self) -> int:
        """How often any app fetched the provider's discovery document or keys so far."""
        self.provider.sync_log()
        return sum(
            1
            for line in list(self.provider.log_lines)
            if line.startswith("OPLOG GET ") and line.split()[2] in DISCOVERY_PATHS
        )


def _client(client_id: str, origins: list[str]) -> dict[str, object]:
    return {
        "client_id": client_id,
        "client_secret": f"secret-{client_id}-{secrets.token_hex(8)}",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": [f"{origin}/auth/callback" for origin in origins],
        "post_logout_redirect_uris": [f"{origin}/auth/logout" for origin in origins],
        "grant_types": ["authorization_code"],
    }


def _env(provider: LocalProvider, client: dict[str, object], redirect_uri: str | None) -> dict[str, str]:
    env = {
        "PKCE_ISSUER": provider.issuer,
        "PKCE_CLIENT_ID": str(client["client_id"]),
        "PKCE_CLIENT_SECRET": str(client["client_secret"]),
        "PKCE_SECRET_KEY": secrets.token_urlsafe(32),
        "PKCE_PUBLIC_PATHS": PUBLIC_PATHS,
        "PKCE_COOKIE_SECURE": "false",  # plain http on loopback
    }
    if redirect_uri is not None:
        env["PKCE_REDIRECT_URI"] = redirect_uri
    return env


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    ports = {combination: free_port() for combination in COMBINATIONS}
    clients = {
        combination: _client("-".join(combination), [f"http://127.0.0.1:{port}"]) for combination, port in ports.items()
    }
    proxy_ports = free_port(), free_port()
    # Registered for every origin the proxy test can produce, though that test stops at the redirect.
    proxy_client = _client(
        "behind-proxy", ["https://app.example", "http://app.example", *(f"http://127.0.0.1:{p}" for p in proxy_ports)]
    )
    with LocalProvider([*clients.values(), proxy_client]) as provider:
        apps = {
            (framework, server): AppServer(
                server,
                FRAMEWORKS[framework],
                port,
                _env(provider, clients[framework, server], f"http://127.0.0.1:{port}/auth/callback"),
            )
            for (framework, server), port in ports.items()
        }
        # No PKCE_REDIRECT_URI: the redirect URI comes from the request's origin, as the server reports it.
        proxy_env = _env(provider, proxy_client, None)
        trusting = AppServer(
            "uvicorn",
            FRAMEWORKS["asgi"],
            proxy_ports[0],
            proxy_env,
            extra_args=["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"],
        )
        # An empty list trusts nobody; uvicorn's default (127.0.0.1) would trust the test's own requests.
        ignoring = AppServer(
            "uvicorn",
            FRAMEWORKS["asgi"],
            proxy_ports[1],
            proxy_env,
            extra_args=["--proxy-headers", "--forwarded-allow-ips", ""],
        )
        with serve_all([*apps.values(), trusting, ignoring], keep_going=True):
            yield Deployment(provider, apps, trusting, ignoring)


@pytest.mark.node
@pytest.mark.servers
@pytest.mark.parametrize(("framework", "server"), COMBINATIONS, ids=[f"{f}-{s}" for f, s in COMBINATIONS])
def test_login_then_the_app_reads_the_user(deployment: Deployment, framework: str, server: Server) -> None:
    app = deployment.app(framework, server)
    user = f"{framework}-{server}-user"
    fetches_before = deployment.provider_fetches()
    # Not vacuous: each server's startup fetched the discovery document and the keys once.
    assert fetches_before >= 2 * len(deployment.apps)

    with httpx.Client(timeout=10.0) as browser:
        # Anonymous on a public path: the app itself refuses, with its framework's own answer.
        anonymous = browser.get(f"{app.url}/me", headers={"Accept": "application/json"})
        if framework == "starlette":
            assert anonymous.status_code == 403  # Starlette's @requires answers 403 without the scope
        else:
            assert anonymous.status_code == 401, anonymous.text
            assert anonymous.headers["www-authenticate"].startswith("Cookie ")

        page, visited = login_with_forms(browser, f"{app.url}/", user)
        assert any(urlsplit(url).path.startswith("/interaction/") for url in visited)
        assert f"{app.url}/auth/callback" in [url.split("?")[0] for url in visited]
        assert page.status_code == 200, page.text
        if framework == "starlette":
            assert f"<p>hello {user}</p>" in page.text  # its example renders a page, the others plain text
        else:
            assert page.text == f"hello {user}"
            assert page.headers["content-type"].startswith("text/plain")

        me = browser.get(f"{app.url}/me")
        assert me.status_code == 200, me.text
        assert me.json()["sub"] == user

        if framework == "fastapi":
            assert set(me.json()["scopes"]) >= {"openid", "profile", "email"}
            admin = browser.get(f"{app.url}/admin")
            assert admin.status_code == 403
            assert admin.json() == {"detail": "missing scope: admin"}

    assert deployment.provider.grant_count("authorization_code", client_id=f"{framework}-{server}") == 1
    # The metadata and keys were loaded at startup, by the lifespan that this server ran through the
    # middleware: the whole login (ID token validation included) fetched neither again.
    assert deployment.provider_fetches() == fetches_before


def _redirect_uri(app: AppServer, headers: dict[str, str]) -> str:
    """The redirect URI of the login that a page load through a proxy sending `headers` starts."""
    response = httpx.get(f"{app.url}/", headers={**BROWSER_HEADERS, **headers})
    assert response.status_code == 302, response.text
    (redirect_uri,) = parse_qs(urlsplit(response.headers["location"]).query)["redirect_uri"]
    return redirect_uri


@pytest.mark.node
@pytest.mark.servers
def test_forwarded_proto_counts_only_from_a_trusted_proxy(deployment: Deployment) -> None:
    trusting, ignoring = deployment.trusting_proxy, deployment.ignoring_proxy
    for app in (trusting, ignoring):
        if app.startup_error is not None:
            pytest.fail(app.startup_error)

    # A reverse proxy passes the public Host on (nginx: `proxy_set_header Host $host`) and says the
    # client spoke https. Only the trusting server believes the latter.
    proxied = {"Host": "app.example", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    assert _redirect_uri(trusting, proxied) == "https://app.example/auth/callback"
    assert _redirect_uri(ignoring, proxied) == "http://app.example/auth/callback"

    # X-Forwarded-Host is not among the headers uvicorn applies (only -Proto and -For), trusted or
    # not, and the middleware never reads it: the host stays the one the request was sent to.
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example"}
    assert _redirect_uri(trusting, forged) == f"https://127.0.0.1:{trusting.port}/auth/callback"
    assert _redirect_uri(ignoring, forged) == f"http://127.0.0.1:{ignoring.port}/auth/callback"


def test_scope_helpers_give_the_session_or_none() -> None:
    user = OIDCUser({"sub": "alice"})
    credentials = OIDCCredentials(["openid"], access_token="at", id_token="it", expires_at=None)
    assert get_user({"type": "http", "user": user, "auth": credentials}) is user
    assert get_credentials({"type": "http", "user": user, "auth": credentials}) is credentials
    # A public path without a session, a scope the middleware never saw, someone else's user object.
    for scope in (
        {"type": "http", "user": UnauthenticatedUser(), "auth": AuthCredentials()},
        {"type": "http"},
        {"type": "http", "user": SimpleUser("mallory"), "auth": AuthCredentials(["admin"])},
    ):
        assert get_user(scope) is None
        assert get_credentials(scope) is None
