"""The app's hooks (`on_error`, `on_login`, `on_logout`) and the public seams for code without a lifespan."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from pkce_middleware import (
    ConfigError,
    LoginError,
    LoginRequired,
    OIDCUser,
    PKCEMiddleware,
    PKCEMiddlewareError,
    ProviderError,
    Reason,
    wants_html,
)
from tests.support.hostile_provider import HostileProvider
from tests.support.site import (
    SESSION_COOKIE,
    Site,
    begin_login,
    callback,
    hello_app,
    login,
    make_client,
    make_config,
)

JSON = {"Accept": "application/json"}


class Recorder:
    """Hooks that record what they were given."""

    def __init__(self) -> None:
        self.errors: list[PKCEMiddlewareError] = []
        self.logins: list[str] = []
        self.logouts: list[str] = []

    def on_error(self, request: Request, exc: PKCEMiddlewareError) -> Response:
        self.errors.append(exc)
        if wants_html(request):
            return HTMLResponse(f"<h1>Our own page: {exc.title}</h1><p>{exc.error}</p>", status_code=exc.status_code)
        return JSONResponse({"problem": str(exc.error)}, status_code=exc.status_code)

    def on_login(self, request: Request, user: OIDCUser) -> None:
        assert request.url.path == "/auth/callback"
        self.logins.append(user.identity)

    async def on_logout(self, request: Request, user: OIDCUser) -> None:
        self.logouts.append(user.identity)


@pytest.fixture
def hostile() -> HostileProvider:
    return HostileProvider()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(hostile: HostileProvider, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    middleware = PKCEMiddleware(
        hello_app,
        config=make_config(http_timeout=0.5),
        transport=httpx.ASGITransport(app=hostile),
        on_error=recorder.on_error,
        on_login=recorder.on_login,
        on_logout=recorder.on_logout,
    )
    async with middleware, make_client(middleware) as browser:
        yield browser


async def test_on_error_renders_the_apps_page_for_a_refused_callback(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    await begin_login(client, "/")
    response = await callback(client, [("code", "c"), ("state", "s" * 43)])

    assert response.status_code == 400
    assert response.text == "<h1>Our own page: Sign-in problem</h1><p>flow_missing</p>"
    assert [exc.error for exc in recorder.errors] == [Reason.FLOW_MISSING]


async def test_on_error_renders_json_for_a_script_without_a_session(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    response = await client.get("/reports", headers=JSON)

    assert (response.status_code, response.json()) == (401, {"problem": "login_required"})
    [exc] = recorder.errors
    assert isinstance(exc, LoginRequired) and exc.login_url == "/auth/login?next=%2Freports"


async def test_on_error_renders_the_apps_page_for_a_provider_outage(
    client: httpx.AsyncClient, hostile: HostileProvider, recorder: Recorder
) -> None:
    hostile.token_behaviour = "hang"
    response = await login(client, hostile)

    assert response.status_code == 504
    assert response.text == "<h1>Our own page: Sign-in service problem</h1><p>token_timeout</p>"
    [exc] = recorder.errors
    assert isinstance(exc, ProviderError) and exc.error == Reason.TOKEN_TIMEOUT
    assert SESSION_COOKIE not in client.cookies


async def test_an_on_error_answering_none_keeps_the_default_answer(hostile: HostileProvider) -> None:
    seen: list[Reason] = []

    async def on_error(request: Request, exc: PKCEMiddlewareError) -> None:
        seen.append(exc.error)

    middleware = PKCEMiddleware(
        hello_app, config=make_config(), transport=httpx.ASGITransport(app=hostile), on_error=on_error
    )
    async with middleware, make_client(middleware) as client:
        response = await client.get("/", headers=JSON)
    assert response.status_code == 401 and response.json()["error"] == "login_required"
    assert seen == [Reason.LOGIN_REQUIRED]


async def test_on_login_sees_the_user_once_per_login(
    client: httpx.AsyncClient, hostile: HostileProvider, recorder: Recorder
) -> None:
    assert (await login(client, hostile)).status_code == 303
    assert recorder.logins == ["alice"]
    assert (await client.get("/")).text == "hello alice"
    assert recorder.logins == ["alice"]  # requests with the session are no logins

    hostile.sub = "bob"
    client.cookies.clear()
    assert (await login(client, hostile)).status_code == 303
    assert recorder.logins == ["alice", "bob"]


async def test_on_logout_sees_the_user_once_per_logout(
    client: httpx.AsyncClient, hostile: HostileProvider, recorder: Recorder
) -> None:
    await login(client, hostile)
    origin = {"Origin": "https://app.test"}

    assert (await client.post("/auth/logout", headers=origin)).status_code == 303
    assert recorder.logouts == ["alice"]
    assert (await client.post("/auth/logout", headers=origin)).status_code == 303  # no session left
    assert recorder.logouts == ["alice"]


async def test_on_login_can_refuse_a_login(hostile: HostileProvider) -> None:
    def on_login(request: Request, user: OIDCUser) -> None:
        raise LoginError(f"{user.identity} is not provisioned here", status_code=403)

    middleware = PKCEMiddleware(
        hello_app, config=make_config(), transport=httpx.ASGITransport(app=hostile), on_login=on_login
    )
    async with middleware, make_client(middleware) as client:
        response = await login(client, hostile)
        assert response.status_code == 403
        assert "Sign-in problem" in response.text
        assert SESSION_COOKIE not in client.cookies
        assert (await client.get("/", headers=JSON)).status_code == 401


# -- public seams ---------------------------------------------------------------------------------


async def test_create_session_gives_cookies_the_middleware_accepts(hostile: HostileProvider) -> None:
    middleware = PKCEMiddleware(hello_app, config=make_config(), transport=httpx.ASGITransport(app=hostile))
    async with middleware, make_client(middleware) as client:
        headers = await middleware.create_session(
            claims={"sub": "carol", "iss": hostile.issuer}, token={"access_token": "at", "id_token": ""}
        )
        cookie: SimpleCookie = SimpleCookie()
        for header in headers:
            cookie.load(header)
        assert list(cookie) == [middleware.session_cookie_name] == [SESSION_COOKIE]
        client.cookies.set(SESSION_COOKIE, cookie[SESSION_COOKIE].value)
        assert (await client.get("/")).text == "hello carol"


async def test_create_session_needs_a_subject(hostile: HostileProvider) -> None:
    async with PKCEMiddleware(hello_app, config=make_config(), transport=httpx.ASGITransport(app=hostile)) as app:
        with pytest.raises(ValueError, match="sub"):
            await app.create_session(claims={"email": "x@example.com"}, token={"access_token": "at"})


async def test_aclose_closes_what_the_lifespan_would_close(hostile: HostileProvider) -> None:
    closed: list[str] = []

    class Transport(httpx.ASGITransport):
        async def aclose(self) -> None:
            closed.append("transport")

    middleware = PKCEMiddleware(hello_app, config=make_config(), transport=Transport(app=hostile))
    async with make_client(middleware) as client:
        await client.get("/", headers=JSON)
    await middleware.aclose()
    assert closed == ["transport"]


def test_a_redis_url_without_the_redis_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        name for name in sys.modules if name == "redis" or name.startswith(("redis.", "pkce_middleware._redis"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    for option, value in (("session_store", "redis://127.0.0.1:1/0"), ("revocation_store", "redis://127.0.0.1:1/0")):
        config: dict[str, Any] = {option: value}
        with pytest.raises(ConfigError, match=r"pip install 'pkce_middleware\[redis\]'") as raised:
            PKCEMiddleware(hello_app, config=make_config(**config))
        assert str(raised.value).startswith(f"PKCE_{option.upper()} is a Redis URL")


async def test_a_wrong_issuer_path_is_logged_with_the_url_and_the_cause(caplog: pytest.LogCaptureFixture) -> None:
    """Tried as a new user would: a typo in PKCE_ISSUER's path must say what was asked, and what came back."""
    hostile = HostileProvider()
    config = make_config(issuer="https://idp.test/wrong")
    middleware = PKCEMiddleware(hello_app, config=config, transport=httpx.ASGITransport(app=hostile))
    url = "https://idp.test/wrong/.well-known/openid-configuration"
    async with middleware, make_client(middleware) as client:
        startup = [record.getMessage() for record in caplog.records]
        assert any(url in line and "HTTP 404" in line for line in startup), startup
        caplog.clear()
        first = await client.get("/")
        second = await client.get("/")
    assert first.status_code == second.status_code == 502
    lines = [record.getMessage() for record in caplog.records]
    # Both logins come within the retry interval of the startup's failure: they repeat its cause.
    assert len(lines) == 2 and all("moments ago" in line and url in line and "HTTP 404" in line for line in lines)


async def test_a_request_without_a_session_is_logged_at_info_and_a_bad_callback_as_a_warning(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pkce_middleware")
    assert (await site.client.get("/", headers={"Accept": "application/json"})).status_code == 401
    assert (await site.client.get("/auth/callback?code=x&state=y")).status_code == 400
    refusals = [(r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith("login refused")]
    assert [level for level, message in refusals if "reason=login_required" in message] == [logging.INFO]
    assert [level for level, message in refusals if "reason=login_required" not in message] == [logging.WARNING]
