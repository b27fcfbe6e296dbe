"""The gate itself: who is redirected, who gets a 401, what reaches the app, logout, lifespan, WebSocket.

(The callback and the ID token have their own module, `test_callback.py`.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from pkce_middleware import OIDCCredentials, OIDCUser, PKCEMiddleware
from pkce_middleware._flow import MAX_PARALLEL_FLOWS
from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.hostile_provider import HostileProvider
from tests.support.site import (
    APP_ORIGIN,
    FLOW_COOKIE_PREFIX,
    SESSION_COOKIE,
    Site,
    assert_logged,
    begin_login,
    complete_login,
    flow_cookie_names,
    hello_app,
    login,
    make_client,
    make_config,
    open_site,
    seal_session,
)


@pytest.fixture
async def public_paths_site() -> AsyncIterator[Site]:
    """A site where /static and /health are public."""
    async with open_site(public_paths=("/static", "/health")) as site:
        yield site


class RecordingApp:
    """An inner app that remembers every scope it was called with."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["user"].is_authenticated:
            await hello_app(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"public"})


# -- who is sent to the provider, who gets a 401 ---------------------------------------------------

NAVIGATION = [
    {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    BROWSER_HEADERS,
    {"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},
]
NOT_NAVIGATION = [
    {"Accept": "application/json"},
    {"Accept": "*/*"},
    {"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"},
    {"Accept": "*/*", "Sec-Fetch-Mode": "cors"},
    {"Accept": "text/html", "Sec-Fetch-Mode": "no-cors"},
]


@pytest.mark.parametrize("headers", NAVIGATION)
async def test_browser_navigation_is_redirected_to_the_provider(
    public_paths_site: Site, headers: dict[str, str]
) -> None:
    response = await public_paths_site.client.get("/reports?year=2024", headers=headers)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == public_paths_site.hostile.authorization_endpoint
    query = parse_qs(location.query)
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == [public_paths_site.config.client_id]
    assert query["redirect_uri"] == [f"{APP_ORIGIN}/auth/callback"]
    assert query["scope"] == ["openid profile email"]
    assert len(query["code_challenge"][0]) == 43
    assert response.headers["cache-control"] == "no-store"
    (flow_cookie,) = response.headers.get_list("set-cookie")
    assert flow_cookie.startswith(FLOW_COOKIE_PREFIX)
    for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/", "Max-Age=600"):
        assert attribute in flow_cookie
    # Nothing secret travels in the URL: the verifier stays in the sealed cookie.
    assert "code_verifier" not in response.headers["location"]


@pytest.mark.parametrize("headers", NOT_NAVIGATION)
async def test_api_and_xhr_requests_get_401_json(public_paths_site: Site, headers: dict[str, str]) -> None:
    response = await public_paths_site.client.get("/api/items?page=2", headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "error": "login_required",
        "message": "Sign in to use this resource.",
        "login_url": "/auth/login?next=%2Fapi%2Fitems%3Fpage%3D2",
    }
    assert response.headers["www-authenticate"].startswith("Cookie ")
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers


#: The rule, one header at a time: (method, headers, answer without a session). "provider" is the
#: 302 that starts a login; "json" and "page" are the 401 with its `login_url`, for a script or
#: for a person (a form POST is no page load, but its error is shown in the browser).
PAGE_LOAD_RULE = [
    pytest.param("GET", {"Accept": "*/*", "User-Agent": "curl/8.5.0"}, "json", id="curl"),
    pytest.param("GET", {}, "json", id="no-accept"),
    pytest.param("GET", {"Accept": "text/html"}, "provider", id="accept-html"),
    pytest.param("GET", BROWSER_HEADERS, "provider", id="browser"),
    pytest.param("GET", {"Accept": "*/*", "Sec-Fetch-Mode": "navigate"}, "provider", id="mode-navigate"),
    pytest.param("GET", {"Accept": "text/html", "Sec-Fetch-Mode": "cors"}, "json", id="mode-cors-asking-html"),
    pytest.param("GET", {"Accept": "*/*", "Sec-Fetch-Dest": "document"}, "provider", id="dest-document"),
    pytest.param("GET", {"Accept": "*/*", "Sec-Fetch-Dest": "iframe"}, "provider", id="dest-iframe"),
    pytest.param("GET", {"Accept": "text/html", "Sec-Fetch-Dest": "empty"}, "json", id="dest-empty-asking-html"),
    pytest.param("HEAD", {"Accept": "text/html"}, "provider", id="head-html"),
    pytest.param("POST", {"Accept": "text/html"}, "page", id="post-html"),
    pytest.param("GET", {"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"}, "json", id="xhr"),
]


@pytest.mark.parametrize(("method", "headers", "answer"), PAGE_LOAD_RULE)
async def test_only_a_request_that_says_it_is_a_page_load_is_sent_to_the_provider(
    public_paths_site: Site, method: str, headers: dict[str, str], answer: str
) -> None:
    # Sent as raw ASGI: exactly these headers, not an Accept that an HTTP client adds of its own.
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    scope = {**_http_scope(path="/reports", headers=raw), "method": method, "query_string": b"year=2024"}
    await public_paths_site.middleware(scope, _receive_nothing, send)
    response = httpx.Response(
        sent[0]["status"],
        headers=[(name.decode(), value.decode()) for name, value in sent[0]["headers"]],
        content=b"".join(message.get("body", b"") for message in sent[1:]),
    )
    if answer == "provider":
        assert response.status_code == 302
        assert response.headers["location"].startswith(public_paths_site.hostile.authorization_endpoint + "?")
        assert response.headers["set-cookie"].startswith(FLOW_COOKIE_PREFIX)
        return
    login_url = "/auth/login?next=%2Freports%3Fyear%3D2024"
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Cookie ")
    assert "set-cookie" not in response.headers  # no login flow was started
    if answer == "json":
        assert response.json() == {
            "error": "login_required",
            "message": "Sign in to use this resource.",
            "login_url": login_url,
        }
    else:
        assert response.headers["content-type"].startswith("text/html")
        assert f'href="{login_url}"' in response.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_unauthenticated_writes_get_401_and_never_reach_the_app(method: str) -> None:
    app = RecordingApp()
    hostile = HostileProvider()
    middleware = PKCEMiddleware(app, config=make_config(), transport=httpx.ASGITransport(app=hostile))
    async with make_client(middleware) as client:
        response = await client.request(method, "/admin/delete", content=b"x" * 1000)
    assert response.status_code == 401
    assert app.scopes == []


async def test_head_navigation_is_redirected_too(public_paths_site: Site) -> None:
    assert (await public_paths_site.client.head("/")).status_code == 302


async def test_client_sent_identity_headers_have_no_effect(public_paths_site: Site) -> None:
    spoofed = {"X-Forwarded-User": "admin", "Remote-User": "admin", "X-Auth-Request-User": "admin"}
    response = await public_paths_site.client.get("/", headers={**spoofed, "Accept": "application/json"})
    assert response.status_code == 401


# -- public paths ------------------------------------------------------------------------------------


async def test_public_paths_reach_the_app_without_login() -> None:
    app = RecordingApp()
    middleware = PKCEMiddleware(app, config=make_config(public_paths=("/static",)))
    async with make_client(middleware) as client:
        for path in ("/static", "/static/", "/static/app.css"):
            response = await client.get(path)
            assert response.status_code == 200 and response.text == "public", path
        for path in ("/staticfoo", "/static/../admin", "/static/./../admin", "/admin"):
            response = await client.get(path, headers={"Accept": "application/json"})
            assert response.status_code == 401, path
    assert [scope["path"] for scope in app.scopes] == ["/static", "/static/", "/static/app.css"]
    assert all(not scope["user"].is_authenticated for scope in app.scopes)


async def test_public_path_still_sees_a_logged_in_user(public_paths_site: Site) -> None:
    await login(public_paths_site.client, public_paths_site.hostile)
    app = RecordingApp()
    middleware = PKCEMiddleware(app, config=public_paths_site.config)
    async with make_client(middleware) as client:
        client.cookies.set(SESSION_COOKIE, public_paths_site.client.cookies[SESSION_COOKIE], domain="app.test")
        assert (await client.get("/static/x")).text == "hello alice"


# -- the session ---------------------------------------------------------------------------------------


async def test_scope_carries_user_and_credentials(public_paths_site: Site) -> None:
    app = RecordingApp()
    middleware = PKCEMiddleware(app, config=public_paths_site.config)
    async with make_client(middleware) as client:
        client.cookies.set(SESSION_COOKIE, seal_session(middleware), domain="app.test")
        assert (await client.get("/")).text == "hello carol"
    user, auth = app.scopes[0]["user"], app.scopes[0]["auth"]
    assert isinstance(user, OIDCUser) and isinstance(auth, OIDCCredentials)
    assert (user.identity, user.display_name, user.claims["name"]) == ("carol", "Carol", "Carol")
    assert auth.scopes == ["openid", "email"]
    assert auth.access_token == "at-" + "x" * 40 and auth.id_token == "it-" + "y" * 40
    assert "x" * 40 not in repr(auth) and "y" * 40 not in repr(auth)


@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        "",
        "A" * 5000,
        "__tampered__",
        "expired",
        "other_key",
    ],
)
async def test_a_bad_session_cookie_means_no_session(public_paths_site: Site, cookie: str) -> None:
    if cookie == "__tampered__":
        good = seal_session(public_paths_site.middleware)
        cookie = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    elif cookie == "expired":
        cookie = seal_session(public_paths_site.middleware, expires_at=int(time.time()) - 1)
    elif cookie == "other_key":
        other = PKCEMiddleware(hello_app, config=make_config())
        cookie = seal_session(other)
    public_paths_site.client.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
    response = await public_paths_site.client.get("/")
    assert response.status_code == 302  # off to the provider, as if there were no cookie
    # The dead cookie is removed, so a new login starts clean (no fixation on a pre-login value).
    assert any(c.startswith(f"{SESSION_COOKIE}=") and "Max-Age=0" in c for c in response.headers.get_list("set-cookie"))


async def test_authenticated_requests_make_no_network_call(public_paths_site: Site) -> None:
    await login(public_paths_site.client, public_paths_site.hostile)
    calls = sum(public_paths_site.hostile.calls.values())
    public_paths_site.hostile.token_behaviour = "hang"
    for _ in range(50):
        assert (await public_paths_site.client.get("/")).text == "hello alice"
    assert sum(public_paths_site.hostile.calls.values()) == calls


async def test_streaming_responses_pass_through_unbuffered(public_paths_site: Site) -> None:
    sent: list[Message] = []

    async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(3):
            await send({"type": "http.response.body", "body": b"chunk%d" % index, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    middleware = PKCEMiddleware(streaming_app, config=public_paths_site.config)
    cookie = f"{SESSION_COOKIE}={seal_session(middleware)}".encode()
    scope = _http_scope(headers=[(b"cookie", cookie)])

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, _receive_nothing, send)
    assert [m.get("body") for m in sent[1:]] == [b"chunk0", b"chunk1", b"chunk2", b""]
    assert sent[0]["headers"] == []  # not a header added on the hot path


# -- login path, open redirects, parallel flows ---------------------------------------------------


async def test_login_path_returns_to_next_after_login(public_paths_site: Site) -> None:
    response = await public_paths_site.client.get("/auth/login?next=/reports%3Fyear%3D2024")
    assert response.status_code == 302
    params = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}
    done = await complete_login(public_paths_site.client, public_paths_site.hostile, params)
    assert (done.status_code, done.headers["location"]) == (303, "/reports?year=2024")
    # Already signed in: straight to `next`.
    again = await public_paths_site.client.get("/auth/login?next=/settings")
    assert (again.status_code, again.headers["location"]) == (303, "/settings")
    assert (await public_paths_site.client.post("/auth/login")).status_code == 405


@pytest.mark.parametrize(
    "next_",
    ["https://evil.example/", "//evil.example", "/\\evil.example", "/%2F%2Fevil.example", "/\t/evil.example"],
)
async def test_login_never_returns_to_another_origin(public_paths_site: Site, next_: str) -> None:
    response = await public_paths_site.client.get("/auth/login", params={"next": next_})
    params = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}
    done = await complete_login(public_paths_site.client, public_paths_site.hostile, params)
    assert (done.status_code, done.headers["location"]) == (303, "/")


@pytest.mark.parametrize("raw_path", [b"//evil.example/x", b"/\\evil.example", b"/%2F%2Fevil.example"])
async def test_protected_path_that_looks_like_another_origin_returns_to_root(
    public_paths_site: Site, raw_path: bytes
) -> None:
    # Sent as raw ASGI: an HTTP client would normalise these paths before they ever left it.
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    page_load = [(name.lower().encode(), value.encode()) for name, value in BROWSER_HEADERS.items()]
    scope = {**_http_scope(headers=page_load), "path": raw_path.decode(), "raw_path": raw_path}
    await public_paths_site.middleware(scope, _receive_nothing, send)
    assert sent[0]["status"] == 302
    [cookie] = [v.decode() for k, v in sent[0]["headers"] if k == b"set-cookie"]
    flow = public_paths_site.middleware._parts.flows.open(cookie.split(";")[0].split("=", 1)[1])
    assert flow is not None and flow.return_to == "/"


async def test_parallel_flows_are_capped(public_paths_site: Site) -> None:
    for index in range(MAX_PARALLEL_FLOWS + 3):
        await begin_login(public_paths_site.client, f"/tab/{index}")
        assert len(flow_cookie_names(public_paths_site.client)) <= MAX_PARALLEL_FLOWS


async def test_concurrent_logins_in_two_tabs_both_finish(public_paths_site: Site) -> None:
    _, first = await begin_login(public_paths_site.client, "/one")
    _, second = await begin_login(public_paths_site.client, "/two")
    done_second, done_first = await asyncio.gather(
        complete_login(public_paths_site.client, public_paths_site.hostile, second),
        complete_login(public_paths_site.client, public_paths_site.hostile, first),
    )
    assert (done_first.headers["location"], done_second.headers["location"]) == ("/one", "/two")
    assert (await public_paths_site.client.get("/")).text == "hello alice"


async def test_provider_unreachable_at_login_shows_a_502_page(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    middleware = PKCEMiddleware(hello_app, config=make_config(), transport=httpx.MockTransport(refuse))
    async with make_client(middleware) as client:
        first = await client.get("/")
        second = await client.get("/")  # within the retry interval: no second discovery call
    assert first.status_code == 502 and "reason: provider_unreachable" in first.text
    assert second.status_code == 502 and "reason: provider_unavailable" in second.text
    assert "set-cookie" not in first.headers
    assert_logged(caplog, "provider_unreachable")


# -- logout ----------------------------------------------------------------------------------------------


async def test_logout_ends_the_session_here_and_at_the_provider(public_paths_site: Site) -> None:
    await login(public_paths_site.client, public_paths_site.hostile)
    id_token = public_paths_site.hostile.issued_id_tokens[-1]
    response = await public_paths_site.client.post("/auth/logout", headers={"Origin": APP_ORIGIN})
    assert response.status_code == 303
    assert response.headers["cache-control"] == "no-store"
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{public_paths_site.hostile.issuer}/logout"
    query = parse_qs(target.query)
    assert len(query.pop("state", [""])[0]) >= 16  # RP-Initiated Logout 1.0 section 2; our landing ignores it
    assert query == {
        "id_token_hint": [id_token],
        "client_id": [public_paths_site.config.client_id],
        "post_logout_redirect_uri": [f"{APP_ORIGIN}/auth/logout"],
    }
    assert SESSION_COOKIE not in public_paths_site.client.cookies
    landing = await public_paths_site.client.get("/auth/logout")
    assert landing.status_code == 200 and "You are signed out" in landing.text


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {}, {"Sec-Fetch-Site": "cross-site"}])
async def test_cross_origin_logout_is_refused(public_paths_site: Site, headers: dict[str, str]) -> None:
    await login(public_paths_site.client, public_paths_site.hostile)
    response = await public_paths_site.client.post("/auth/logout", headers=headers)
    assert response.status_code == 403
    assert (await public_paths_site.client.get("/")).text == "hello alice"


async def test_logout_page_offers_a_button_and_same_site_fetch_works(public_paths_site: Site) -> None:
    await login(public_paths_site.client, public_paths_site.hostile)
    page = await public_paths_site.client.get("/auth/logout")
    assert page.status_code == 200 and 'method="post"' in page.text and "Sign out" in page.text
    response = await public_paths_site.client.post("/auth/logout", headers={"Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 303


async def test_logout_without_a_session_goes_home(public_paths_site: Site) -> None:
    response = await public_paths_site.client.post("/auth/logout", headers={"Origin": APP_ORIGIN})
    assert (response.status_code, response.headers["location"]) == (303, "/")


# -- lifespan and WebSocket ------------------------------------------------------------------------------


async def test_lifespan_loads_the_provider_at_startup_and_reaches_the_app() -> None:
    hostile = HostileProvider()
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    middleware = PKCEMiddleware(app, config=make_config(), transport=httpx.ASGITransport(app=hostile))
    sent, events = await _run_lifespan(middleware)
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert hostile.calls["discovery"] == 1 and hostile.calls["jwks"] == 1
    assert middleware._parts.provider._client.is_closed
    del events


async def test_lifespan_startup_survives_a_provider_outage() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down", request=request)

    middleware = PKCEMiddleware(hello_app, config=make_config(), transport=httpx.MockTransport(refuse))
    sent, _ = await _run_lifespan(middleware)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_websocket_without_session_is_closed_1008_before_the_app(public_paths_site: Site) -> None:
    app = RecordingApp()
    middleware = PKCEMiddleware(app, config=public_paths_site.config)
    sent = await _websocket(middleware, cookie=None)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "login required"}]
    assert app.scopes == []


async def test_websocket_with_session_reaches_the_app_with_the_user(public_paths_site: Site) -> None:
    app = RecordingApp()
    middleware = PKCEMiddleware(app, config=public_paths_site.config)
    sent = await _websocket(middleware, cookie=seal_session(middleware))
    assert sent[0] == {"type": "websocket.accept"}
    assert app.scopes[0]["user"].identity == "carol"


# -- plumbing --------------------------------------------------------------------------------------------


def _http_scope(*, path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"app.test"), *(headers or [])],
        "client": ("127.0.0.1", 1234),
        "server": ("app.test", 443),
    }


async def _receive_nothing() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _websocket(middleware: PKCEMiddleware, *, cookie: str | None) -> list[Message]:
    headers = [(b"host", b"app.test")]
    if cookie is not None:
        headers.append((b"cookie", f"{SESSION_COOKIE}={cookie}".encode()))
    scope = {**_http_scope(), "type": "websocket", "scheme": "wss", "headers": headers, "subprotocols": []}
    del scope["method"]
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


async def _run_lifespan(middleware: PKCEMiddleware) -> tuple[list[str], list[Message]]:
    queue: asyncio.Queue[Message] = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        queue.put_nowait({"type": kind})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, queue.get, send)
    return [m["type"] for m in sent], sent
