"""The users' test kit, `pkce_middleware.testing`, through the real middleware.

Logging in with the kit must give exactly what a finished login gives (the app sees the chosen
user, claims and scopes; a tampered cookie is refused; large sessions are chunked; Redis works),
with no call to any provider. `FakeProvider` must carry the middleware's real login and logout,
and refuse what a real provider refuses (wrong PKCE verifier, redirect URI or secret, a reused
code). The plugin must load from its entry point alone, stay light, and the README's example
must run as written.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import importlib.util
import json
import re
import secrets
import subprocess
import sys
import textwrap
import warnings
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import pkce_middleware
import pkce_middleware.testing
from pkce_middleware import OIDCCredentials, OIDCUser, PKCEMiddleware, SessionTooLarge
from pkce_middleware.testing import (
    BROWSER_HEADERS,
    FAKE_ISSUER,
    AuthorizationRefused,
    FakeProvider,
    PKCELogin,
    PKCELoginSync,
    login,
    session_cookies,
    session_cookies_sync,
)
from tests.support.redis_server import RedisServer

README = Path(__file__).resolve().parent.parent / "README.md"
JSON = {"Accept": "application/json"}
ORIGINS = ["https://testserver", "http://testserver"]


async def hello(request: Request) -> Response:
    return PlainTextResponse(f"hello {request.user.identity}")


async def me(request: Request) -> Response:
    user: OIDCUser = request.user
    auth: OIDCCredentials = request.auth
    return JSONResponse(
        {
            "claims": dict(user.claims),
            "scopes": auth.scopes,
            "access_token": auth.access_token,
            "id_token": auth.id_token,
            "expires_at": auth.expires_at,
        }
    )


@requires("admin")
async def admin(request: Request) -> Response:
    return PlainTextResponse("admin area")


INNER = Starlette(routes=[Route("/", hello), Route("/me", me), Route("/admin", admin)])


class NoProvider(httpx.AsyncBaseTransport):
    """The provider's transport for kit logins: counts calls, and answers none of them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(str(request.url))
        raise httpx.ConnectError("no provider in this test", request=request)


@contextlib.asynccontextmanager
async def app_client(
    middleware: PKCEMiddleware, base_url: str = "https://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url=base_url) as client:
        yield client
    await middleware.aclose()


def kit_middleware(**overrides: Any) -> tuple[PKCEMiddleware, NoProvider]:
    transport = NoProvider()
    return PKCEMiddleware(INNER, config=FakeProvider().config(**overrides), transport=transport), transport


def starlette_test_client() -> Any:
    """Starlette's `TestClient` class: built on httpx2, and warning when only httpx is installed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient
    return TestClient


def id_token_payload(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return result


# -- logging in without a provider -----------------------------------------------------------------


@pytest.mark.parametrize("cookie_secure", [True, False])
@pytest.mark.parametrize("base_url", ORIGINS)
async def test_a_logged_in_client_is_the_chosen_user_with_the_chosen_claims_and_scopes(
    pkce_login: PKCELogin, base_url: str, cookie_secure: bool
) -> None:
    middleware, provider = kit_middleware(cookie_secure=cookie_secure)
    async with app_client(middleware, base_url) as client:
        cookies = await pkce_login(
            client, middleware, sub="alice", claims={"email": "alice@example.com"}, scopes=["openid", "admin"]
        )
        page = await client.get("/")
        data = (await client.get("/me")).json()
        admin_page = await client.get("/admin")

    assert list(cookies) == ["__Host-pkce_session" if cookie_secure else "pkce_session"]
    assert page.status_code == 200 and page.text == "hello alice"
    claims = data["claims"]
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com"
    assert claims["iss"] == middleware.config.issuer and claims["aud"] == middleware.config.client_id
    assert data["scopes"] == ["openid", "admin"]
    assert data["expires_at"] > claims["iat"] + 3000  # an hour ahead: no refresh, no expiry mid-test
    assert id_token_payload(data["id_token"]) == claims  # as after a real login, the claims are the ID token's
    assert admin_page.status_code == 200
    assert provider.calls == []


async def test_requires_passes_with_the_scope_and_is_403_without(pkce_login: PKCELogin) -> None:
    middleware, _ = kit_middleware()
    async with app_client(middleware) as client:
        await pkce_login(client, middleware, sub="bob")  # the default scopes: openid profile email
        without = await client.get("/admin")
        await pkce_login(client, middleware, sub="bob", scopes="openid admin")
        with_scope = await client.get("/admin")
    assert without.status_code == 403
    assert with_scope.status_code == 200 and with_scope.text == "admin area"


async def test_defaults_and_chosen_access_token() -> None:
    middleware, provider = kit_middleware()
    async with app_client(middleware) as client:
        await login(client, middleware, access_token="at-for-the-api", expires_in=120)
        data = (await client.get("/me")).json()
    assert data["claims"]["sub"] == "test-user"
    assert data["scopes"] == ["openid", "profile", "email"]
    assert data["access_token"] == "at-for-the-api"
    assert data["claims"]["iat"] + 110 <= data["expires_at"] <= data["claims"]["iat"] + 130
    assert provider.calls == []


async def test_an_expiring_access_token_calls_no_provider_as_there_is_no_refresh_token() -> None:
    middleware, provider = kit_middleware(refresh_margin=600)
    async with app_client(middleware) as client:
        await login(client, middleware, expires_in=30)  # within the refresh margin from the start
        response = await client.get("/")
    assert response.status_code == 200
    assert provider.calls == []


async def test_a_tampered_kit_cookie_is_refused() -> None:
    middleware, _ = kit_middleware()
    name, value = next(iter((await session_cookies(middleware, sub="mallory")).items()))
    tampered = value[:40] + ("A" if value[40] != "A" else "B") + value[41:]
    async with app_client(middleware) as client:
        client.cookies.set(name, value, domain="testserver.local")
        genuine = await client.get("/", headers=JSON)
        client.cookies.set(name, tampered, domain="testserver.local")
        response = await client.get("/", headers=JSON)
    assert genuine.status_code == 200
    assert response.status_code == 401
    assert any(c.startswith(f"{name}=") and "Max-Age=0" in c for c in response.headers.get_list("set-cookie"))


async def test_cookies_of_another_config_do_not_open() -> None:
    ours, _ = kit_middleware()
    theirs, _ = kit_middleware()  # another random secret key
    async with app_client(ours) as client:
        await login(client, theirs, sub="eve")
        assert (await client.get("/", headers=JSON)).status_code == 401


async def test_big_claims_are_split_over_chunk_cookies_and_reassembled(pkce_login: PKCELogin) -> None:
    middleware, _ = kit_middleware()
    groups = [f"group-{index}-{secrets.token_hex(8)}" for index in range(250)]
    async with app_client(middleware) as client:
        cookies = await pkce_login(client, middleware, sub="carol", claims={"groups": groups})
        data = (await client.get("/me")).json()
        # A later, small login replaces the chunks instead of leaving them in the jar.
        await pkce_login(client, middleware, sub="carol")
        names = sorted(cookie.name for cookie in client.cookies.jar)

    assert re.fullmatch(r"~[2-4]", cookies["__Host-pkce_session"])
    assert len(cookies) == 1 + int(cookies["__Host-pkce_session"][1])
    assert data["claims"]["groups"] == groups
    assert names == ["__Host-pkce_session"]


def test_a_session_too_large_for_cookies_is_refused_as_a_login_would_be() -> None:
    middleware, _ = kit_middleware()
    with pytest.raises(SessionTooLarge):
        session_cookies_sync(middleware, claims={"blob": secrets.token_hex(10_000)})


async def test_the_id_token_is_left_out_when_the_config_says_so() -> None:
    middleware, _ = kit_middleware(session_id_token=False)
    async with app_client(middleware) as client:
        await login(client, middleware, sub="dave", claims={"name": "Dave"})
        data = (await client.get("/me")).json()
    assert data["id_token"] == ""
    assert data["claims"]["name"] == "Dave"


def test_wrong_arguments_are_refused() -> None:
    middleware, _ = kit_middleware()
    with pytest.raises(ValueError, match="sub"):
        session_cookies_sync(middleware, sub="alice", claims={"sub": "bob"})
    with pytest.raises(ValueError, match="expires_in"):
        session_cookies_sync(middleware, expires_in=0)
    with pytest.raises(ValueError, match="scopes"):
        session_cookies_sync(middleware, scopes=["openid", ""])
    with pytest.raises(TypeError, match="PKCEMiddleware"):
        session_cookies_sync(INNER, sub="alice")  # type: ignore[arg-type]


async def test_a_client_without_base_url_is_refused() -> None:
    middleware, _ = kit_middleware()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware)) as client:
        with pytest.raises(ValueError, match="base_url"):
            await login(client, middleware)


@pytest.mark.parametrize("cookie_secure", [True, False])
@pytest.mark.parametrize("base_url", ORIGINS)
def test_a_plain_def_test_logs_a_test_client_in(
    pkce_login_sync: PKCELoginSync, base_url: str, cookie_secure: bool
) -> None:
    middleware, provider = kit_middleware(cookie_secure=cookie_secure)
    client = starlette_test_client()(middleware, base_url=base_url)
    pkce_login_sync(client, middleware, sub="erin", scopes=["openid", "admin"])
    assert client.get("/").text == "hello erin"
    assert client.get("/admin").status_code == 200
    assert provider.calls == []


async def test_the_sync_helpers_also_run_inside_an_event_loop() -> None:
    middleware, _ = kit_middleware()
    async with app_client(middleware) as client:
        for name, value in session_cookies_sync(middleware, sub="frank").items():
            client.cookies.set(name, value, domain="testserver.local")
        assert (await client.get("/")).text == "hello frank"


def test_a_fastapi_app_sees_request_user(pkce_login_sync: PKCELoginSync) -> None:
    api = FastAPI()

    @api.get("/me")
    def whoami(request: FastAPIRequest) -> dict[str, Any]:
        return {"sub": request.user.identity, "name": request.user.display_name, "scopes": request.auth.scopes}

    middleware = PKCEMiddleware(api, config=FakeProvider().config(), transport=NoProvider())
    client = starlette_test_client()(middleware)
    pkce_login_sync(client, middleware, sub="grace", claims={"name": "Grace Hopper"}, scopes=["openid", "navy"])
    assert client.get("/me").json() == {"sub": "grace", "name": "Grace Hopper", "scopes": ["openid", "navy"]}


@pytest.mark.redis
async def test_the_kit_works_with_the_redis_store(pkce_login: PKCELogin, redis_server: RedisServer) -> None:
    middleware, provider = kit_middleware(session_store=redis_server.url)
    groups = [f"group-{index}-{secrets.token_hex(8)}" for index in range(250)]
    async with app_client(middleware) as client:
        cookies = await pkce_login(client, middleware, sub="heidi", claims={"groups": groups})
        data = (await client.get("/me")).json()
        with pytest.raises(TypeError, match="Redis"):
            session_cookies_sync(middleware)
    # The cookie holds only the sealed session id; the session itself is in Redis.
    assert len(cookies["__Host-pkce_session"]) < 100
    assert data["claims"]["sub"] == "heidi" and data["claims"]["groups"] == groups
    assert provider.calls == []


# -- the fake provider ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def e2e(fake: FakeProvider, **overrides: Any) -> AsyncIterator[tuple[PKCEMiddleware, httpx.AsyncClient]]:
    """The middleware on the fake provider, and a browser on the app that does not follow redirects."""
    middleware = PKCEMiddleware(INNER, config=fake.config(**overrides), transport=fake.transport)
    async with app_client(middleware) as browser:
        yield middleware, browser


async def test_the_fake_provider_carries_a_whole_login_and_logout(pkce_fake_provider: FakeProvider) -> None:
    fake = pkce_fake_provider
    fake.login_as("ivan", claims={"email": "ivan@example.com"}, scopes=["openid", "email", "admin"])
    async with e2e(fake) as (_, browser), httpx.AsyncClient(transport=fake.transport) as at_provider:
        to_provider = await browser.get("/admin?tab=2", headers=BROWSER_HEADERS)
        assert to_provider.status_code == 302
        authorize_url = to_provider.headers["location"]
        assert authorize_url.startswith(fake.authorization_endpoint + "?")

        back = await at_provider.get(authorize_url)
        assert back.status_code == 302
        callback = urlsplit(back.headers["location"])
        assert f"{callback.scheme}://{callback.netloc}{callback.path}" == "https://testserver/auth/callback"
        assert parse_qs(callback.query)["iss"] == [FAKE_ISSUER]

        landed = await browser.get(f"{callback.path}?{callback.query}", headers=BROWSER_HEADERS)
        assert landed.status_code == 303 and landed.headers["location"] == "/admin?tab=2"
        page = await browser.get("/admin?tab=2")
        claims = (await browser.get("/me")).json()["claims"]
        assert page.status_code == 200 and page.text == "admin area"
        assert claims["sub"] == "ivan" and claims["email"] == "ivan@example.com" and claims["iss"] == FAKE_ISSUER

        logout = await browser.post("/auth/logout", headers={"Origin": "https://testserver"})
        assert logout.status_code == 303
        assert logout.headers["location"].startswith(fake.end_session_endpoint + "?")
        signed_out = await at_provider.get(logout.headers["location"])
        assert signed_out.status_code == 302
        assert signed_out.headers["location"].startswith("https://testserver/auth/logout?state=")
        assert not [cookie for cookie in browser.cookies.jar if "pkce_session" in cookie.name]
        assert (await browser.get("/", headers=JSON)).status_code == 401

    assert fake.logins == ["ivan"]
    assert len(fake.logouts) == 1 and "id_token_hint" in fake.logouts[0]


async def test_the_browser_follows_the_whole_login_in_one_request(pkce_fake_provider: FakeProvider) -> None:
    fake = pkce_fake_provider
    fake.login_as("judy")
    middleware = PKCEMiddleware(INNER, config=fake.config(), transport=fake.transport)
    async with fake.browser(middleware) as browser:
        page = await browser.get("/")
        signed_out = await browser.post("/auth/logout", headers={"Origin": "https://testserver"})
    await middleware.aclose()
    assert page.text == "hello judy"
    assert [r.url.host for r in page.history] == ["testserver", "idp.test", "testserver"]
    assert signed_out.status_code == 200 and "signed out" in signed_out.text.lower()


async def test_the_browser_loads_pages_and_plays_a_script_when_told(pkce_fake_provider: FakeProvider) -> None:
    middleware = PKCEMiddleware(INNER, config=pkce_fake_provider.config(), transport=pkce_fake_provider.transport)
    async with pkce_fake_provider.browser(middleware) as browser:
        script = await browser.get("/me", headers={"Sec-Fetch-Mode": "cors", "Accept": "application/json"})
        page = await browser.get("/")
        after_login = await browser.get("/me", headers={"Sec-Fetch-Mode": "cors", "Accept": "application/json"})
    await middleware.aclose()
    assert {name: page.request.headers[name] for name in BROWSER_HEADERS} == BROWSER_HEADERS
    assert script.status_code == 401 and script.json()["login_url"] == "/auth/login?next=%2Fme"
    assert page.text == "hello test-user" and pkce_fake_provider.logins == ["test-user"]
    assert after_login.json()["claims"]["sub"] == "test-user"


def test_a_test_client_without_browser_headers_gets_the_401_a_script_gets(pkce_fake_provider: FakeProvider) -> None:
    middleware = PKCEMiddleware(INNER, config=pkce_fake_provider.config(), transport=pkce_fake_provider.transport)
    client = starlette_test_client()(middleware, base_url="https://testserver", follow_redirects=False)
    response = client.get("/")  # httpx's own `Accept: */*`, as curl's
    assert response.status_code == 401 and response.json()["error"] == "login_required"
    assert pkce_fake_provider.logins == []


def test_a_sync_test_plays_the_browser_with_authorize(pkce_fake_provider: FakeProvider) -> None:
    fake = pkce_fake_provider
    fake.login_as("ken")
    middleware = PKCEMiddleware(INNER, config=fake.config(), transport=fake.transport)
    client = starlette_test_client()(
        middleware, base_url="https://testserver", follow_redirects=False, headers=BROWSER_HEADERS
    )
    to_provider = client.get("/")
    assert to_provider.status_code == 302
    back = client.get(fake.authorize(to_provider.headers["location"]))
    assert back.status_code == 303
    assert client.get(back.headers["location"]).text == "hello ken"


async def test_offline_access_gets_a_refresh_token_that_the_middleware_uses() -> None:
    fake = FakeProvider(expires_in=30)  # inside the default 60 s refresh margin: every request refreshes
    middleware = PKCEMiddleware(
        INNER, config=fake.config(scopes=("openid", "offline_access")), transport=fake.transport
    )
    async with fake.browser(middleware) as browser:
        first = (await browser.get("/me")).json()
        second = (await browser.get("/me")).json()
    await middleware.aclose()
    assert first["claims"]["sub"] == second["claims"]["sub"] == "test-user"
    assert first["access_token"] != second["access_token"]
    assert "nonce" not in id_token_payload(second["id_token"])  # a refreshed ID token (OIDC Core 12.2)


async def test_an_issuer_with_a_path_and_a_confidential_client() -> None:
    fake = FakeProvider(issuer="https://idp.test/realms/demo", client_id="shop", client_secret="s3cret-" + "x" * 20)
    middleware = PKCEMiddleware(INNER, config=fake.config(), transport=fake.transport)
    async with fake.browser(middleware) as browser:
        page = await browser.get("/")
    await middleware.aclose()
    assert page.text == "hello test-user"
    assert page.history[1].url.path == "/realms/demo/authorize"


async def test_a_wrong_client_secret_fails_the_login() -> None:
    fake = FakeProvider(client_id="shop", client_secret="s3cret-" + "x" * 20)
    middleware = PKCEMiddleware(INNER, config=fake.config(client_secret="wrong-" + "y" * 20), transport=fake.transport)
    async with fake.browser(middleware) as browser:
        page = await browser.get("/")
    await middleware.aclose()
    assert page.status_code != 200
    assert "client_rejected" in page.text  # a setting to fix, not a bad link


async def test_an_unregistered_redirect_uri_is_not_redirected_to() -> None:
    fake = FakeProvider(redirect_uris=["https://app.example.com/auth/callback"])
    middleware = PKCEMiddleware(INNER, config=fake.config(), transport=fake.transport)
    async with fake.browser(middleware) as browser:
        page = await browser.get("/")
    await middleware.aclose()
    assert page.status_code == 400
    assert page.url.host == "idp.test"
    assert fake.logins == []
    with pytest.raises(AuthorizationRefused):
        fake.authorize(str(page.url))


def authorization_url(fake: FakeProvider, **overrides: str) -> tuple[str, str]:
    """An authorization request as a client would send it, and its PKCE verifier."""
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": "https://app.test/cb",
        "scope": "openid",
        "state": "st",
        "nonce": "n",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }
    return str(httpx.URL(fake.authorization_endpoint, params=params)), verifier


def code_of(location: str) -> str:
    query = parse_qs(urlsplit(location).query)
    assert "code" in query, query
    assert query["state"] == ["st"] and query["iss"] == [FAKE_ISSUER]
    return query["code"][0]


async def test_the_token_endpoint_enforces_pkce_redirect_uri_and_single_use_codes() -> None:
    fake = FakeProvider()
    async with httpx.AsyncClient(transport=fake.transport) as client:

        async def redeem(code: str, verifier: str, redirect_uri: str = "https://app.test/cb") -> httpx.Response:
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": "app",
            }
            return await client.post(fake.token_endpoint, data=form)

        url, verifier = authorization_url(fake)
        wrong_verifier = await redeem(code_of(fake.authorize(url)), secrets.token_urlsafe(32))
        url, verifier = authorization_url(fake)
        wrong_redirect = await redeem(code_of(fake.authorize(url)), verifier, "https://evil.test/cb")
        url, verifier = authorization_url(fake)
        code = code_of(fake.authorize(url))
        good = await redeem(code, verifier)
        reused = await redeem(code, verifier)

    assert good.status_code == 200, good.text
    assert good.json()["token_type"] == "Bearer" and good.json()["scope"] == "openid"
    for refused in (wrong_verifier, wrong_redirect, reused):
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_the_authorization_endpoint_redirects_back_with_an_error(overrides: dict[str, str], error: str) -> None:
    fake = FakeProvider()
    url, _ = authorization_url(fake, **overrides)
    query = parse_qs(urlsplit(fake.authorize(url)).query)
    assert query["error"] == [error] and query["state"] == ["st"] and query["iss"] == [FAKE_ISSUER]
    assert "code" not in query
    assert fake.logins == []


def test_an_unknown_client_is_refused_without_a_redirect() -> None:
    fake = FakeProvider(client_id="shop")
    url, _ = authorization_url(fake)
    with pytest.raises(AuthorizationRefused, match="client_id"):
        fake.authorize(url)


# -- the plugin ------------------------------------------------------------------------------------


def test_the_plugin_is_registered_as_a_pytest_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins["pkce_middleware"] == "pkce_middleware.testing.plugin"


def modules_loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())


def test_importing_the_plugin_loads_no_framework_and_no_redis() -> None:
    heavy = {"fastapi", "quart", "redis", "starlette.testclient", "pytest_asyncio", "anyio.pytest_plugin"}
    assert not heavy & modules_loaded_by("pkce_middleware.testing.plugin")
    # The kit itself works without pytest: only the plugin module imports it.
    assert not (heavy | {"pytest", "_pytest"}) & modules_loaded_by("pkce_middleware.testing")


def readme_example() -> str:
    section = README.read_text().split("## Testing your app", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README's Testing section has no python example"
    return match.group(1)


def test_the_readme_example_runs_as_written_with_only_the_installed_plugin(tmp_path: Path) -> None:
    """In a project of its own (no conftest, no config): the fixtures come from the entry point."""
    (tmp_path / "test_app.py").write_text(readme_example())
    # Only to keep pytest-asyncio (installed here) from warning; the example needs no configuration.
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            # Starlette's TestClient asks for httpx2 when only httpx is installed; not the example's concern.
            "-W",
            "ignore:Using `httpx` with `starlette.testclient`",
            "test_app.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, textwrap.indent(result.stdout + result.stderr, "    ")
    assert re.search(r"\b2 passed\b", result.stdout), result.stdout


# -- the kit uses only the public API ----------------------------------------------------------------

KIT = Path(pkce_middleware.testing.__file__).parent


def private_reaches(source: str, package: str) -> list[str]:
    """What a module of the kit (in `package`) uses of the package that is not its public API.

    An import of a private module or name of `pkce_middleware` (the kit's own modules,
    `pkce_middleware.testing.*`, are its business), a name from `pkce_middleware` not in its
    `__all__`, or an underscore attribute of anything but `self` or `cls` (say
    `middleware._store`), also through `getattr`.
    """
    found: list[tuple[int, str]] = []

    def check_module(name: str, line: int) -> bool:
        if name != "pkce_middleware" and not name.startswith("pkce_middleware."):
            return False  # another distribution's business
        if name == "pkce_middleware.testing" or name.startswith("pkce_middleware.testing."):
            return False
        if any(part.startswith("_") for part in name.split(".")):
            found.append((line, f"import of {name}"))
            return False
        return True

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check_module(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            if check_module(module, node.lineno):
                for alias in node.names:
                    private = alias.name.startswith("_")
                    if private or (module == "pkce_middleware" and alias.name not in pkce_middleware.__all__):
                        found.append((node.lineno, f"{alias.name} from {module}"))
        elif isinstance(node, ast.Attribute):
            dunder = node.attr.startswith("__") and node.attr.endswith("__")
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if node.attr.startswith("_") and not dunder and not own:
                found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and name.value.startswith("_"):
                found.append((node.lineno, f"getattr {name.value}"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_the_kit_uses_only_the_public_api_of_the_package() -> None:
    modules = sorted(path.name for path in KIT.glob("*.py"))
    assert {"__init__.py", "_kit.py", "_fake_provider.py", "plugin.py"} <= set(modules)
    reaches = {name: private_reaches((KIT / name).read_text(), "pkce_middleware.testing") for name in modules}
    assert reaches == {name: [] for name in modules}


def test_the_public_api_check_catches_what_the_single_module_kit_did() -> None:
    """Lines of the former `pkce_middleware/testing.py` (package `pkce_middleware`), each a reach."""
    former = textwrap.dedent(
        """
        from ._cookies import CookieWriter
        from ._middleware import PKCEMiddleware
        from ._store import CookieStore
        from pkce_middleware._session import Session
        import pkce_middleware._store
        from pkce_middleware import PKCEConfig, Components

        async def sealed(middleware, session, writer):
            session = middleware._lifecycle.keep(session)
            await middleware._store.save(session, {"type": "http", "headers": []}, writer)
            store = getattr(middleware, "_store")
            return isinstance(store, CookieStore), middleware._cookies.session_name
        """
    )
    assert private_reaches(former, "pkce_middleware") == [
        "line 2: import of pkce_middleware._cookies",
        "line 3: import of pkce_middleware._middleware",
        "line 4: import of pkce_middleware._store",
        "line 5: import of pkce_middleware._session",
        "line 6: import of pkce_middleware._store",
        "line 7: Components from pkce_middleware",
        "line 10: ._lifecycle",
        "line 11: ._store",
        "line 12: getattr _store",
        "line 13: ._cookies",
    ]
    # The same code as a module of the kit package: `.` is now the kit, `..` the package.
    assert private_reaches(
        "from .._store import CookieStore\nfrom ._kit import login\n", "pkce_middleware.testing"
    ) == ["line 1: import of pkce_middleware._store"]
