"""Who may enter, through the middleware: email, group and step-up rules against a provider whose
ID token says what each test needs, seen as the person in the browser (or a script) sees it.

Each test builds the middleware with its `rules=` and options in front of `RecordingApp`, which records
every call: a refused request must never reach it. A refusal is a 403 (the page names the user,
the reason and a way to sign in as someone else; JSON for scripts), a login that is not strong or
recent enough is a step-up (a browser goes back to the provider, a script gets the RFC 9470 401),
and a refusal at login leaves no session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import logging
import time
from collections.abc import AsyncIterator, Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Scope
from starlette.websockets import WebSocket

from pkce_middleware import (
    AccessDenied,
    OIDCUser,
    PKCEMiddleware,
    PKCEMiddlewareError,
    Reason,
    Require,
    StepUpRequired,
    restrict,
    wants_html,
)
from pkce_middleware.fastapi import RuleRefused, require, rule_refused_handler
from tests.support.hostile_provider import REMOVE, HostileProvider
from tests.support.site import (
    APP_ORIGIN,
    ISSUER,
    SESSION_COOKIE,
    RecordingApp,
    assert_logged,
    assert_refusal_page,
    begin_login,
    complete_login,
    login,
    make_client,
    make_config,
)
from tests.support.websocket import handshake

JSON = {"Accept": "application/json"}
LOGIN = "/auth/login"
ANN: dict[str, Any] = {"email": "ann@example.com", "email_verified": True}
MALLORY: dict[str, Any] = {"email": "mallory@evil.test", "email_verified": True}
STRONGER = "A stronger login is required"
RECENT = "A more recent login is required"


@pytest.fixture(autouse=True)
def _capture_middleware_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pkce_middleware")


@dataclasses.dataclass
class Ruled:
    """The middleware with its rules in front of `app`, a hostile provider, and one browser."""

    hostile: HostileProvider
    middleware: PKCEMiddleware
    client: httpx.AsyncClient
    app: RecordingApp

    async def sign_in(self, path: str = "/", **claims: Any) -> httpx.Response:
        """A whole login from `path`, the ID token carrying `claims`; the callback's answer."""
        self.hostile.claim_overrides = claims
        return await login(self.client, self.hostile, path)

    async def session(self, **claims: Any) -> None:
        """A session for `claims` without a login (so without the login's checks) in the browser."""
        headers = await self.middleware.create_session(
            claims={"sub": "alice", "iss": ISSUER, "name": "Alice Example", **claims},
            token={"access_token": "at-" + "x" * 40, "id_token": ""},
        )
        cookie: SimpleCookie = SimpleCookie()
        for header in headers:
            cookie.load(header)
        self.client.cookies.set(SESSION_COOKIE, cookie[SESSION_COOKIE].value)


@contextlib.asynccontextmanager
async def ruled(
    rules: Mapping[str, Require] | None = None,
    *,
    app: ASGIApp | None = None,
    on_error: Any = None,
    **config: Any,
) -> AsyncIterator[Ruled]:
    hostile = HostileProvider()
    recorder = RecordingApp()
    middleware = PKCEMiddleware(
        app if app is not None else recorder,
        config=make_config(**config),
        transport=httpx.ASGITransport(app=hostile),
        rules=rules,
        on_error=on_error,
    )
    async with middleware, make_client(middleware) as client:
        yield Ruled(hostile, middleware, client, recorder)


def session_cookies_set(response: httpx.Response) -> list[str]:
    """The response's `Set-Cookie` values for the session cookie (a deletion included)."""
    return [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")]


def query_of(location: str) -> dict[str, str]:
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), location
    return {name: values[0] for name, values in query.items()}


def switch_link(target: str) -> str:
    """The "Sign in as someone else" link of a refusal page for `target`, as the page has it."""
    return html.escape(f"{LOGIN}?{urlencode([('next', target), ('prompt', 'login')])}")


def assert_denied_page(response: httpx.Response, reason: str, *, who: str, target: str) -> None:
    assert_refusal_page(response, status=403, reason=reason)
    text = response.text
    assert "<title>Access denied</title>" in text
    assert f"You are signed in as <strong>{html.escape(who)}</strong>." in text
    assert f'<a href="{switch_link(target)}">Sign in as someone else</a>' in text


# -- email rules --------------------------------------------------------------------------------


async def test_an_address_in_an_allowed_domain_gets_in() -> None:
    async with ruled(allowed_email_domains=("example.com",)) as site:
        response = await site.sign_in("/reports", email="Ann@EXAMPLE.com", email_verified=True)
        assert (response.status_code, response.headers["location"]) == (303, "/reports")
        assert session_cookies_set(response)
        assert (await site.client.get("/reports")).text == "hello alice"
        assert site.app.calls == ["/reports"]


@pytest.mark.parametrize("email", ["mallory@evil.test", "mallory@evil-example.com", "mallory@example.com.evil.test"])
async def test_an_address_outside_the_domains_is_refused_at_login(email: str) -> None:
    async with ruled(allowed_email_domains=("example.com",)) as site:
        response = await site.sign_in("/reports", email=email, email_verified=True)
        assert_denied_page(response, "email_not_allowed", who=f"Alice Example ({email})", target="/reports")
        assert "This site is open to certain email addresses only" in response.text
        assert not session_cookies_set(response)
        assert SESSION_COOKIE not in site.client.cookies
        assert site.app.calls == []


@pytest.mark.parametrize("flag", [False, "false", 1, REMOVE])
async def test_an_unverified_address_is_refused_at_login(flag: Any) -> None:
    async with ruled(allowed_email_domains=("example.com",)) as site:
        response = await site.sign_in(email="ann@example.com", email_verified=flag)
        assert_denied_page(response, "email_unverified", who="Alice Example (ann@example.com)", target="/")
        assert html.escape("does not say that your account's email address is verified") in response.text
        assert SESSION_COOKIE not in site.client.cookies


async def test_a_session_the_global_rule_refuses_gets_a_403_and_never_reaches_the_app() -> None:
    async with ruled(allowed_email_domains=("example.com",)) as site:
        await site.session(**MALLORY)
        page = await site.client.get("/reports?year=2024")
        assert_denied_page(
            page, "email_not_allowed", who="Alice Example (mallory@evil.test)", target="/reports?year=2024"
        )
        api = await site.client.get("/reports", headers=JSON)
        assert api.status_code == 403
        assert api.json() == {
            "error": "access_denied",
            "reason": "email_not_allowed",
            "message": "This site is open to certain email addresses only, and yours is not one of them.",
        }
        assert "www-authenticate" not in api.headers
        assert api.headers["cache-control"] == "no-store"
        assert site.app.calls == []


async def test_the_refusal_page_escapes_the_users_name() -> None:
    async with ruled(allowed_email_domains=("example.com",)) as site:
        response = await site.sign_in(name="<script>alert(1)</script>", **MALLORY)
        assert response.status_code == 403
        assert "<script>" not in response.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; (mallory@evil.test)" in response.text


async def test_a_refusal_is_logged_with_its_reason_and_the_sub(caplog: pytest.LogCaptureFixture) -> None:
    async with ruled({"/admin": Require(groups=["admins"])}) as site:
        assert (await site.sign_in(groups=["users"])).status_code == 303
        assert (await site.client.get("/admin")).status_code == 403
    assert_logged(caplog, "group_not_allowed", detail="sub='alice'")
    assert any("status=403 path='/admin'" in r.getMessage() for r in caplog.records)


async def test_a_refusal_at_login_is_logged_with_its_reason_and_the_sub(caplog: pytest.LogCaptureFixture) -> None:
    async with ruled(allowed_emails=("boss@partner.test",)) as site:
        assert (await site.sign_in(**MALLORY)).status_code == 403
    assert_logged(caplog, "email_not_allowed", detail="at login: sub='alice'")


# -- group rules --------------------------------------------------------------------------------


async def test_a_member_of_an_allowed_group_gets_in() -> None:
    async with ruled(allowed_groups=("admins", "ops")) as site:
        assert (await site.sign_in(groups=["users", "ops"])).status_code == 303
        assert (await site.client.get("/")).text == "hello alice"


@pytest.mark.parametrize("groups", [["users"], "users", {"admins": True}, 7, REMOVE])
async def test_a_user_in_no_allowed_group_is_refused_at_login(groups: Any) -> None:
    async with ruled(allowed_groups=("admins",)) as site:
        response = await site.sign_in(groups=groups)
        assert_denied_page(response, "group_not_allowed", who="Alice Example", target="/")
        assert SESSION_COOKIE not in site.client.cookies


async def test_groups_from_a_nested_claim() -> None:
    async with ruled(allowed_groups=("admins",), groups_claim="realm_access.roles") as site:
        response = await site.sign_in(realm_access={"roles": ["admins"]}, groups=["users"])
        assert response.status_code == 303
        assert (await site.client.get("/")).text == "hello alice"

        other = make_client(site.middleware)
        async with other:
            site.hostile.claim_overrides = {"realm_access": {"roles": ["users"]}, "groups": ["admins"]}
            refused = await login(other, site.hostile)
            assert_denied_page(refused, "group_not_allowed", who="Alice Example", target="/")


async def test_groups_from_a_namespaced_claim() -> None:
    claim = "https://app.example/roles"
    async with ruled({"/admin": Require(groups=["admins"], groups_claim=claim)}) as site:
        claims: dict[str, Any] = {claim: ["admins"]}
        assert (await site.sign_in(**claims)).status_code == 303
        assert (await site.client.get("/admin")).text == "hello alice"


# -- path rules ---------------------------------------------------------------------------------


async def test_a_path_rule_refuses_where_the_global_rule_allows() -> None:
    rules = {"/admin": Require(groups=["admins"])}
    async with ruled(rules, allowed_email_domains=("example.com",)) as site:
        assert (await site.sign_in(groups=["users"], **ANN)).status_code == 303
        assert (await site.client.get("/")).text == "hello alice"
        assert (await site.client.get("/administrator")).text == "hello alice"

        page = await site.client.get("/admin/users")
        assert_denied_page(page, "group_not_allowed", who="Alice Example (ann@example.com)", target="/admin/users")
        api = await site.client.get("/admin", headers=JSON)
        assert (api.status_code, api.json()["reason"]) == (403, "group_not_allowed")
        assert site.app.calls == ["/", "/administrator"]


async def test_a_path_rule_keeps_the_global_kinds_it_does_not_set() -> None:
    rules = {"/admin": Require(groups=["admins"])}
    async with ruled(rules, allowed_email_domains=("example.com",)) as site:
        await site.session(groups=["admins"], **MALLORY)  # in the group, outside the domains
        response = await site.client.get("/admin")
        assert_denied_page(response, "email_not_allowed", who="Alice Example (mallory@evil.test)", target="/admin")


async def test_a_path_rule_lifting_the_email_rule_lets_partners_sign_in_there() -> None:
    rules = {"/partners": Require(email_domains=[])}
    async with ruled(rules, allowed_email_domains=("example.com",)) as site:
        partner: dict[str, Any] = {"email": "bob@partner.test", "email_verified": True}
        response = await site.sign_in("/partners/orders", **partner)
        assert (response.status_code, response.headers["location"]) == (303, "/partners/orders")
        assert (await site.client.get("/partners/orders")).text == "hello alice"
        home = await site.client.get("/")
        assert_denied_page(home, "email_not_allowed", who="Alice Example (bob@partner.test)", target="/")
        assert site.app.calls == ["/partners/orders"]

        # The same partner signing in from the home page is refused there, at the callback.
        other = make_client(site.middleware)
        async with other:
            refused = await login(other, site.hostile, "/")
            assert_denied_page(refused, "email_not_allowed", who="Alice Example (bob@partner.test)", target="/")
            assert SESSION_COOKIE not in other.cookies


async def test_a_path_rule_naming_addresses_replaces_the_global_domains_there() -> None:
    rules = {"/board": Require(emails=["boss@partner.test"])}
    async with ruled(rules, allowed_email_domains=("example.com",)) as site:
        await site.session(**ANN)
        assert (await site.client.get("/")).text == "hello alice"
        refused = await site.client.get("/board")
        assert_denied_page(refused, "email_not_allowed", who="Alice Example (ann@example.com)", target="/board")


@pytest.mark.parametrize(
    "sent", ["/admin/%2e%2e/public", "/admin/%2E%2E/public", "/admin/.%2e/public", "/public/%2e%2e/admin", "/%2Fadmin"]
)
async def test_dot_segments_and_double_slashes_do_not_escape_a_path_rule(sent: str) -> None:
    served: list[str] = []

    async def admin_area(request: Request) -> Response:
        served.append(request.url.path)
        return PlainTextResponse("admin area")

    async def public(request: Request) -> Response:
        return PlainTextResponse("public")

    # A router that takes /admin/../public as /admin's, and a rule lifting the group rule on /public.
    app = Starlette(routes=[Mount("/admin", routes=[Route("/{rest:path}", admin_area)]), Route("/public", public)])
    rules = {"/admin": Require(groups=["admins"]), "/public": Require(groups=[])}
    async with ruled(rules, app=app) as site:
        assert (await site.sign_in(groups=["users"])).status_code == 303
        assert (await site.client.get("/public")).text == "public"
        response = await site.client.get(sent, headers=JSON)
        assert (response.status_code, response.json()["reason"]) == (403, "group_not_allowed")
        assert served == []


async def test_on_a_public_path_a_refused_user_is_anonymous() -> None:
    async with ruled(allowed_email_domains=("example.com",), public_paths=("/pub",)) as site:
        await site.session(**MALLORY)
        assert (await site.client.get("/pub/page")).text == "hello anonymous"
        assert (await site.client.get("/", headers=JSON)).status_code == 403
        assert site.app.calls == ["/pub/page"]

        await site.session(**ANN)
        assert (await site.client.get("/pub/page")).text == "hello alice"


async def test_the_apps_on_error_hook_renders_the_refusal() -> None:
    seen: list[PKCEMiddlewareError] = []

    def on_error(request: Request, exc: PKCEMiddlewareError) -> Response | None:
        seen.append(exc)
        if isinstance(exc, AccessDenied) and wants_html(request):
            return HTMLResponse(f"<p>{exc.error} for {exc.who}, try {exc.switch_url}</p>", status_code=exc.status_code)
        return None

    async with ruled({"/admin": Require(groups=["admins"])}, on_error=on_error) as site:
        assert (await site.sign_in(groups=["users"])).status_code == 303
        page = await site.client.get("/admin")
        assert page.status_code == 403
        assert page.text == "<p>group_not_allowed for Alice Example, try /auth/login?next=%2Fadmin&prompt=login</p>"
        api = await site.client.get("/admin", headers=JSON)  # the hook answers None: the default JSON
        assert (api.status_code, api.json()["error"]) == (403, "access_denied")
        assert [type(exc) for exc in seen] == [AccessDenied, AccessDenied]

        other = make_client(site.middleware)
        async with other:
            refused = await login(other, site.hostile, "/admin")  # the refusal at login takes the hook too
            assert (
                refused.text == "<p>group_not_allowed for Alice Example, try /auth/login?next=%2Fadmin&prompt=login</p>"
            )
        assert site.app.calls == []


async def test_the_switch_link_starts_a_login_that_asks_who_signs_in() -> None:
    async with ruled({"/admin": Require(groups=["admins"])}) as site:
        assert (await site.sign_in(groups=["users"])).status_code == 303
        kept = site.client.cookies[SESSION_COOKIE]
        switch = await site.client.get(f"{LOGIN}?next=%2Fadmin&prompt=login")
        assert switch.status_code == 302
        params = query_of(switch.headers["location"])
        assert params["prompt"] == "login"
        assert not session_cookies_set(switch)

        site.hostile.sub = "bob"
        site.hostile.claim_overrides = {"groups": ["admins"]}
        done = await complete_login(site.client, site.hostile, params)
        assert (done.status_code, done.headers["location"]) == (303, "/admin")
        assert site.client.cookies[SESSION_COOKIE] != kept
        assert (await site.client.get("/admin")).text == "hello bob"


# -- step-up ------------------------------------------------------------------------------------

STEP_UP = {"/admin": Require(acr_values=["mfa"], max_age=300)}


async def test_a_browser_is_sent_to_the_provider_again_for_a_stronger_login() -> None:
    async with ruled(STEP_UP) as site:
        assert (await site.sign_in(acr="pwd")).status_code == 303
        kept = site.client.cookies[SESSION_COOKIE]

        page = await site.client.get("/admin?tab=keys")
        assert page.status_code == 303
        assert page.headers["location"] == f"{LOGIN}?next=%2Fadmin%3Ftab%3Dkeys&acr_values=mfa&max_age=300"
        assert page.headers["cache-control"] == "no-store"
        assert not session_cookies_set(page)

        provider = await site.client.get(page.headers["location"])
        assert provider.status_code == 302
        location = provider.headers["location"]
        assert location.startswith(site.hostile.authorization_endpoint + "?")
        params = query_of(location)
        assert (params["acr_values"], params["max_age"]) == ("mfa", "300")
        assert not session_cookies_set(provider)  # the session lives on until the new login replaces it
        assert site.client.cookies[SESSION_COOKIE] == kept
        assert (await site.client.get("/")).text == "hello alice"

        site.hostile.claim_overrides = {"acr": "mfa", "auth_time": int(time.time()) - 1}
        done = await complete_login(site.client, site.hostile, params)
        assert (done.status_code, done.headers["location"]) == (303, "/admin?tab=keys")
        assert site.client.cookies[SESSION_COOKIE] != kept
        assert (await site.client.get("/admin?tab=keys")).text == "hello alice"
        assert site.app.calls == ["/", "/admin"]


async def test_a_first_login_to_a_step_up_page_asks_for_it_at_once() -> None:
    async with ruled(STEP_UP) as site:
        _, params = await begin_login(site.client, "/admin")
        assert (params["acr_values"], params["max_age"]) == ("mfa", "300")
        site.hostile.claim_overrides = {"acr": "mfa"}
        done = await complete_login(site.client, site.hostile, params)
        assert (done.status_code, done.headers["location"]) == (303, "/admin")
        assert (await site.client.get("/admin")).text == "hello alice"


@pytest.mark.parametrize("acr", [REMOVE, "pwd", ["mfa"], {"mfa": True}])
async def test_a_step_up_the_provider_does_not_give_is_refused_at_the_callback(acr: Any) -> None:
    async with ruled(STEP_UP) as site:
        assert (await site.sign_in(acr="pwd")).status_code == 303
        kept = site.client.cookies[SESSION_COOKIE]
        step_up = await site.client.get((await site.client.get("/admin")).headers["location"])
        params = query_of(step_up.headers["location"])

        site.hostile.claim_overrides = {"acr": acr}
        response = await complete_login(site.client, site.hostile, params)
        assert_denied_page(response, "acr_not_allowed", who="Alice Example", target="/admin")
        assert "This page needs a stronger kind of sign-in" in response.text
        assert not session_cookies_set(response)  # no new session, and the old one is not deleted
        assert site.client.cookies[SESSION_COOKIE] == kept
        assert (await site.client.get("/")).text == "hello alice"
        assert site.app.calls == ["/"]


async def test_an_old_login_is_refused_at_the_callback_when_max_age_was_asked() -> None:
    async with ruled({"/recent": Require(max_age=60)}) as site:
        _, params = await begin_login(site.client, "/recent")
        assert params["max_age"] == "60" and "acr_values" not in params
        site.hostile.claim_overrides = {"auth_time": int(time.time()) - 1000}
        response = await complete_login(site.client, site.hostile, params)
        assert_denied_page(response, "login_too_old", who="Alice Example", target="/recent")
        assert "This page needs a recent sign-in" in response.text
        assert SESSION_COOKIE not in site.client.cookies


@pytest.mark.parametrize("auth_time", [REMOVE, "now", True, 10**30])
async def test_an_auth_time_that_dates_no_login_is_refused_at_the_callback(auth_time: Any) -> None:
    async with ruled({"/recent": Require(max_age=60)}) as site:
        _, params = await begin_login(site.client, "/recent")
        site.hostile.claim_overrides = {"auth_time": auth_time}
        response = await complete_login(site.client, site.hostile, params)
        assert_denied_page(response, "login_too_old", who="Alice Example", target="/recent")


async def test_a_script_gets_the_rfc_9470_challenge() -> None:
    async with ruled(STEP_UP) as site:
        assert (await site.sign_in(acr="pwd")).status_code == 303
        response = await site.client.get("/admin", headers=JSON)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            f'Bearer error="insufficient_user_authentication", error_description="{STRONGER}", '
            'acr_values="mfa", max_age=300'
        )
        assert response.json() == {
            "error": "insufficient_user_authentication",
            "reason": "acr_not_allowed",
            "message": "This page needs you to sign in again.",
            "login_url": f"{LOGIN}?next=%2Fadmin&acr_values=mfa&max_age=300",
        }
        assert response.headers["cache-control"] == "no-store"
        assert not session_cookies_set(response)

        fetch = await site.client.get("/admin", headers={"Sec-Fetch-Mode": "cors", "Accept": "*/*"})
        assert fetch.status_code == 401  # a fetch() is no navigation, even accepting anything
        post = await site.client.post("/admin")
        assert post.status_code == 401
        assert site.app.calls == []


async def test_a_script_gets_a_challenge_for_a_more_recent_login() -> None:
    async with ruled({"/recent": Require(max_age=60)}) as site:
        assert (await site.sign_in(auth_time=int(time.time()) - 1000)).status_code == 303
        response = await site.client.get("/recent", headers=JSON)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            f'Bearer error="insufficient_user_authentication", error_description="{RECENT}", max_age=60'
        )
        assert response.json()["reason"] == "login_too_old"


async def test_a_global_acr_rule_is_asked_for_and_held_at_every_login() -> None:
    async with ruled(acr_values=("mfa", "hwk")) as site:
        _, params = await begin_login(site.client, "/")
        assert params["acr_values"] == "mfa hwk"
        site.hostile.claim_overrides = {"acr": "pwd"}
        refused = await complete_login(site.client, site.hostile, params)
        assert_denied_page(refused, "acr_not_allowed", who="Alice Example", target="/")

        assert (await site.sign_in(acr="hwk")).status_code == 303
        assert (await site.client.get("/")).text == "hello alice"


async def test_a_websocket_is_refused_before_it_opens() -> None:
    async with ruled({"/ws": Require(groups=["admins"])}) as site:
        assert (await site.sign_in(groups=["users"])).status_code == 303
        cookie = site.client.cookies[SESSION_COOKIE]

        sent = await handshake(site.middleware, cookie=cookie, denial_extension=True)
        assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
        assert sent[0]["status"] == 403
        assert sent[1]["body"] == (
            b'{"error":"group_not_allowed","message":"Your account is not in a group that may use this page."}'
        )
        assert await handshake(site.middleware, cookie=cookie) == [
            {"type": "websocket.close", "code": 1008, "reason": "group not allowed"}
        ]
        assert site.app.calls == []

        assert (await handshake(site.middleware, "/other", cookie=cookie))[:2] == [
            {"type": "websocket.accept"},
            {"type": "websocket.send", "text": "hello alice"},
        ]


async def test_a_websocket_needing_a_step_up_is_refused_too() -> None:
    async with ruled(STEP_UP) as site:
        assert (await site.sign_in(acr="pwd")).status_code == 303
        sent = await handshake(site.middleware, "/admin/ws", cookie=site.client.cookies[SESSION_COOKIE])
        assert sent == [{"type": "websocket.close", "code": 1008, "reason": "acr not allowed"}]
        assert site.app.calls == []


# -- the login path -----------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["login", "select_account"])
async def test_prompt_on_the_login_path_starts_a_new_login_over_a_live_session(prompt: str) -> None:
    async with ruled() as site:
        assert (await site.sign_in()).status_code == 303
        kept = site.client.cookies[SESSION_COOKIE]
        response = await site.client.get(LOGIN, params={"next": "/x", "prompt": prompt})
        assert response.status_code == 302
        params = query_of(response.headers["location"])
        assert params["prompt"] == prompt
        assert "acr_values" not in params and "max_age" not in params
        assert not session_cookies_set(response)
        assert site.client.cookies[SESSION_COOKIE] == kept


async def test_acr_values_and_max_age_on_the_login_path_are_asked_for_and_held() -> None:
    async with ruled() as site:
        assert (await site.sign_in()).status_code == 303
        response = await site.client.get(LOGIN, params={"next": "/x", "acr_values": "mfa hwk", "max_age": "0"})
        assert response.status_code == 302
        params = query_of(response.headers["location"])
        assert (params["acr_values"], params["max_age"]) == ("mfa hwk", "0")

        site.hostile.claim_overrides = {"acr": "pwd"}
        refused = await complete_login(site.client, site.hostile, params)
        assert_denied_page(refused, "acr_not_allowed", who="Alice Example", target="/x")


@pytest.mark.parametrize(
    "query",
    [
        {"acr_values": 'mfa"'},
        {"acr_values": "a\\b"},
        {"acr_values": "   "},
        {"max_age": "-5"},
        {"max_age": "abc"},
        {"max_age": "1e3"},
        {"max_age": "1.5"},
        {"max_age": "9999999999"},
        {"max_age": "\u0663"},  # an Arabic-Indic three: a digit to str.isdigit, not to us
        {"prompt": "none"},
        {"prompt": "consent"},
        {"prompt": "login none"},
        {"acr_values": 'mfa"', "max_age": "-1", "prompt": "create"},
    ],
)
async def test_invalid_step_up_values_on_the_login_path_are_ignored(query: dict[str, str]) -> None:
    async with ruled() as site:
        fresh = await site.client.get(LOGIN, params={"next": "/x", **query})
        assert fresh.status_code == 302
        params = query_of(fresh.headers["location"])
        assert "acr_values" not in params and "max_age" not in params and "prompt" not in params

        assert (await site.sign_in()).status_code == 303
        live = await site.client.get(LOGIN, params={"next": "/x", **query})
        assert (live.status_code, live.headers["location"]) == (303, "/x")  # nothing to ask: no new login


async def test_an_account_switch_to_a_step_up_page_still_asks_for_the_step_up() -> None:
    async with ruled(STEP_UP) as site:
        assert (await site.sign_in(acr="mfa")).status_code == 303
        response = await site.client.get(LOGIN, params={"next": "/admin", "prompt": "login"})
        params = query_of(response.headers["location"])
        assert (params["prompt"], params["acr_values"], params["max_age"]) == ("login", "mfa", "300")


async def test_the_login_path_says_why_instead_of_sending_a_refused_user_back_and_forth() -> None:
    # A public page sees a refused user as anonymous, so its "Sign in" link leads here: sending the
    # browser back to the page would have it come here again, for good.
    async with ruled(allowed_email_domains=("example.com",), public_paths=("/pub",)) as site:
        await site.session(**MALLORY)
        assert (await site.client.get("/pub")).text == "hello anonymous"
        response = await site.client.get(LOGIN, params={"next": "/pub"})
        assert_denied_page(response, "email_not_allowed", who="Alice Example (mallory@evil.test)", target="/pub")

        await site.session(**ANN)
        allowed = await site.client.get(LOGIN, params={"next": "/pub"})
        assert (allowed.status_code, allowed.headers["location"]) == (303, "/pub")


async def test_the_login_path_starts_the_step_up_a_live_session_lacks() -> None:
    async with ruled(acr_values=("mfa",), public_paths=("/pub",)) as site:
        await site.session(acr="pwd")
        assert (await site.client.get("/pub")).text == "hello anonymous"
        kept = site.client.cookies[SESSION_COOKIE]
        response = await site.client.get(LOGIN, params={"next": "/pub"})
        assert response.status_code == 302
        assert query_of(response.headers["location"])["acr_values"] == "mfa"
        assert not session_cookies_set(response)
        assert site.client.cookies[SESSION_COOKIE] == kept


# -- route helpers: Starlette's restrict ---------------------------------------------------------


class RestrictedApp:
    """A Starlette app whose routes carry their own rules with `@restrict`."""

    def __init__(self) -> None:
        self.served: list[str] = []
        served = self.served

        @restrict(groups=["finance"])
        async def reports(request: Request) -> Response:
            served.append("reports")
            return PlainTextResponse(f"reports for {request.user.identity}")

        @restrict(acr_values=["mfa"], max_age=120)
        async def keys(request: Request) -> Response:
            served.append("keys")
            return PlainTextResponse("keys")

        @restrict(groups=["finance"])
        def ledger(request: Request) -> Response:  # a sync endpoint, run in the thread pool
            served.append("ledger")
            return PlainTextResponse("ledger")

        class Budget(HTTPEndpoint):
            @restrict(groups=["finance"])
            async def get(self, request: Request) -> Response:
                served.append("budget")
                return PlainTextResponse("budget")

        @restrict(groups=["finance"])
        async def feed(websocket: WebSocket) -> None:
            served.append("feed")
            await websocket.accept()
            await websocket.send_text("numbers")
            await websocket.close()

        self.app = Starlette(
            routes=[
                Route("/reports", reports),
                Route("/keys", keys),
                Route("/ledger", ledger),
                Route("/budget", Budget),
                Route("/pub/reports", reports),
                WebSocketRoute("/feed", feed),
            ]
        )


async def test_restrict_lets_a_member_in_and_refuses_others_with_the_middlewares_page() -> None:
    routes = RestrictedApp()
    async with ruled(app=routes.app) as site:
        assert (await site.sign_in(groups=["finance"])).status_code == 303
        for path in ("/reports", "/ledger", "/budget"):
            assert (await site.client.get(path)).status_code == 200
        assert routes.served == ["reports", "ledger", "budget"]

        other = make_client(site.middleware)
        async with other:
            site.hostile.claim_overrides = {"groups": ["sales"], **ANN}
            assert (await login(other, site.hostile)).status_code == 303
            for path in ("/reports", "/ledger", "/budget"):
                page = await other.get(path)
                assert_denied_page(page, "group_not_allowed", who="Alice Example (ann@example.com)", target=path)
            api = await other.get("/reports", headers=JSON)
            assert (api.status_code, api.json()["error"], api.json()["reason"]) == (
                403,
                "access_denied",
                "group_not_allowed",
            )
            assert await handshake(site.middleware, "/feed", cookie=other.cookies[SESSION_COOKIE]) == [
                {"type": "websocket.close", "code": 1008, "reason": "group not allowed"}
            ]
        assert routes.served == ["reports", "ledger", "budget"]


async def test_restrict_sends_a_browser_to_step_up_and_gives_a_script_the_challenge() -> None:
    routes = RestrictedApp()
    async with ruled(app=routes.app) as site:
        assert (await site.sign_in(acr="pwd")).status_code == 303
        page = await site.client.get("/keys")
        assert (page.status_code, page.headers["location"]) == (303, f"{LOGIN}?next=%2Fkeys&acr_values=mfa&max_age=120")
        api = await site.client.get("/keys", headers=JSON)
        assert api.status_code == 401
        assert api.headers["www-authenticate"] == (
            f'Bearer error="insufficient_user_authentication", error_description="{STRONGER}", '
            'acr_values="mfa", max_age=120'
        )

        provider = await site.client.get(page.headers["location"])
        params = query_of(provider.headers["location"])
        assert (params["acr_values"], params["max_age"]) == ("mfa", "120")
        site.hostile.claim_overrides = {"acr": "mfa"}
        done = await complete_login(site.client, site.hostile, params)
        assert (done.status_code, done.headers["location"]) == (303, "/keys")
        assert (await site.client.get("/keys")).text == "keys"
        assert routes.served == ["keys"]


async def test_restrict_on_a_public_path_asks_an_anonymous_visitor_to_sign_in() -> None:
    routes = RestrictedApp()
    async with ruled(app=routes.app, public_paths=("/pub",)) as site:
        page = await site.client.get("/pub/reports")
        assert (page.status_code, page.headers["location"]) == (303, f"{LOGIN}?next=%2Fpub%2Freports")
        api = await site.client.get("/pub/reports", headers=JSON)
        assert (api.status_code, api.json()["error"]) == (401, "login_required")
        assert routes.served == []


async def test_restrict_on_a_public_path_does_not_bounce_a_refused_user_forever() -> None:
    routes = RestrictedApp()
    async with ruled(app=routes.app, public_paths=("/pub",), allowed_email_domains=("example.com",)) as site:
        await site.session(groups=["finance"], **MALLORY)
        page = await site.client.get("/pub/reports")
        assert (page.status_code, page.headers["location"]) == (303, f"{LOGIN}?next=%2Fpub%2Freports")
        login_path = await site.client.get(page.headers["location"])
        who = "Alice Example (mallory@evil.test)"
        assert_denied_page(login_path, "email_not_allowed", who=who, target="/pub/reports")
        assert routes.served == []


async def test_restrict_needs_a_request_parameter_and_the_middleware() -> None:
    with pytest.raises(TypeError, match="request"):

        @restrict(groups=["x"])
        async def no_request(scope: Scope) -> None: ...

    routes = RestrictedApp()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=routes.app), base_url=APP_ORIGIN) as client:
        with pytest.raises(RuntimeError, match="need PKCEMiddleware"):
            await client.get("/reports")


# -- route helpers: FastAPI's require ------------------------------------------------------------


def fastapi_app(*, handler: bool) -> FastAPI:
    api = FastAPI()
    if handler:
        api.add_exception_handler(RuleRefused, rule_refused_handler)

    @api.get("/ruled")  # the middleware's path rule guards this one
    async def ruled_route() -> dict[str, str]:
        return {"served": "ruled"}

    @api.get("/dep")
    async def dep(user: OIDCUser = Depends(require(groups=["admins"]))) -> dict[str, str]:  # noqa: B008
        return {"sub": user.identity}

    @api.get("/mfa")
    async def mfa(user: OIDCUser = Depends(require(acr_values=["mfa"]))) -> dict[str, str]:  # noqa: B008
        return {"sub": user.identity}

    return api


FASTAPI_RULES = {"/ruled": Require(groups=["admins"]), "/ruled-mfa": Require(acr_values=["mfa"])}


async def test_require_with_the_handler_answers_exactly_as_the_middleware() -> None:
    async with ruled(FASTAPI_RULES, app=fastapi_app(handler=True)) as site:
        assert (await site.sign_in(groups=["users"], acr="pwd")).status_code == 303

        by_middleware = await site.client.get("/ruled", headers=JSON)
        by_dependency = await site.client.get("/dep", headers=JSON)
        assert by_dependency.status_code == by_middleware.status_code == 403
        assert by_dependency.json() == by_middleware.json()

        page = await site.client.get("/dep")
        assert_denied_page(page, "group_not_allowed", who="Alice Example", target="/dep")
        assert page.text == (await site.client.get("/ruled")).text.replace("%2Fruled", "%2Fdep")

        step_up = await site.client.get("/mfa")
        assert (step_up.status_code, step_up.headers["location"]) == (303, f"{LOGIN}?next=%2Fmfa&acr_values=mfa")
        api = await site.client.get("/mfa", headers=JSON)
        assert api.status_code == 401
        assert api.headers["www-authenticate"] == (
            f'Bearer error="insufficient_user_authentication", error_description="{STRONGER}", acr_values="mfa"'
        )
        assert api.json()["login_url"] == f"{LOGIN}?next=%2Fmfa&acr_values=mfa"


async def test_require_without_the_handler_answers_fastapis_json_with_the_same_status_and_headers() -> None:
    async with ruled(app=fastapi_app(handler=False)) as site:
        assert (await site.sign_in(groups=["users"], acr="pwd")).status_code == 303

        refused = await site.client.get("/dep")
        assert refused.status_code == 403
        assert refused.json() == {"detail": {"error": "access_denied", "reason": "group_not_allowed"}}
        assert refused.headers["cache-control"] == "no-store"

        step_up = await site.client.get("/mfa")
        assert (step_up.status_code, step_up.headers["location"]) == (303, f"{LOGIN}?next=%2Fmfa&acr_values=mfa")
        api = await site.client.get("/mfa", headers=JSON)
        assert api.status_code == 401
        assert api.json() == {"detail": {"error": "insufficient_user_authentication", "reason": "acr_not_allowed"}}
        assert api.headers["www-authenticate"].startswith('Bearer error="insufficient_user_authentication"')


async def test_require_lets_the_right_user_in() -> None:
    async with ruled(app=fastapi_app(handler=True)) as site:
        assert (await site.sign_in(groups=["admins"], acr="mfa")).status_code == 303
        assert (await site.client.get("/dep")).json() == {"sub": "alice"}
        assert (await site.client.get("/mfa")).json() == {"sub": "alice"}


async def test_step_up_required_and_access_denied_carry_their_links() -> None:
    # What an on_error hook gets to build its own page from.
    seen: list[PKCEMiddlewareError] = []

    def on_error(request: Request, exc: PKCEMiddlewareError) -> None:
        seen.append(exc)

    async with ruled({**STEP_UP, "/ops": Require(groups=["ops"])}, on_error=on_error) as site:
        assert (await site.sign_in(acr="pwd")).status_code == 303
        assert (await site.client.get("/admin", headers=JSON)).status_code == 401
        assert (await site.client.get("/ops", headers=JSON)).status_code == 403
    step_up, denied = seen
    assert isinstance(step_up, StepUpRequired)
    assert (step_up.acr_values, step_up.max_age) == (("mfa",), 300)
    assert step_up.login_url == f"{LOGIN}?next=%2Fadmin&acr_values=mfa&max_age=300"
    assert isinstance(denied, AccessDenied)
    assert (denied.error, denied.who) == (Reason.GROUP_NOT_ALLOWED, "Alice Example")
    assert denied.switch_url == f"{LOGIN}?next=%2Fops&prompt=login"


async def test_a_login_link_cannot_ask_for_a_weaker_acr_than_the_global_rule() -> None:
    async with ruled(acr_values=("mfa",)) as site:
        response = await site.client.get(LOGIN, params={"next": "/", "acr_values": "weak"})
        params = query_of(response.headers["location"])
        assert params["acr_values"] == "weak"  # asked for, as the link says...
        site.hostile.claim_overrides = {"acr": "weak"}
        refused = await complete_login(site.client, site.hostile, params)
        # ...but the target's rule still decides: no session for a login it would refuse.
        assert_denied_page(refused, "acr_not_allowed", who="Alice Example", target="/")
        assert session_cookies_set(refused) == []


async def test_a_max_age_link_keeps_the_targets_acr() -> None:
    async with ruled({"/vault": Require(acr_values=["mfa"])}) as site:
        response = await site.client.get(LOGIN, params={"next": "/vault", "max_age": "60"})
        params = query_of(response.headers["location"])
        assert (params["acr_values"], params["max_age"]) == ("mfa", "60")
