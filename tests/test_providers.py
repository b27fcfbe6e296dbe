"""Several providers at once (`PKCE_PROVIDERS`): the choice page, and each login, session, refresh
and logout kept to the provider it belongs to.

Two `HostileProvider`s, `https://corp.test` and `https://partner.test` (each with its own client and
its own signing key), sit behind one transport that routes by host (`ByHost`). The app (`WhoApp`)
answers `hello <sub> of <iss>`, so a test sees whom the app believes it serves and at which provider.
Browsers send the navigation headers of a real page load (`BROWSER_HEADERS`); scripts ask for JSON.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send

from pkce_middleware import ChooseProvider, ConfigError, PKCEConfig, PKCEMiddleware, PKCEMiddlewareError, Reason
from pkce_middleware._components import bound_purpose
from pkce_middleware._config import ProviderConfig
from pkce_middleware._crypto import Sealer
from pkce_middleware._flow import FlowCodec
from pkce_middleware._session import Session
from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.hostile_provider import REMOVE, HostileProvider, access_token_claims, sign_compact
from tests.support.site import (
    APP_ORIGIN,
    CALLBACK_PATH,
    SESSION_COOKIE,
    assert_logged,
    assert_refusal_page,
    callback,
    flow_cookie_names,
    hello_app,
    make_client,
    seal_session,
    session_codec,
    strong_secret_key,
)

CORP = "https://corp.test"
PARTNER = "https://partner.test"
EVIL = "https://evil.test"
LOGIN = "/auth/login"
LOGOUT = "/auth/logout"
CALLBACK = CALLBACK_PATH
BACKCHANNEL = "/auth/backchannel-logout"
FRONTCHANNEL = "/auth/frontchannel-logout"
JSON = {"Accept": "application/json"}
SECRETS = {"corp": "corp-secret-" + "Qm4Tz8Lp2Vx7Rk3W", "partner": "partner-secret-" + "Hd6Ns1Bq9Yc5Jf0E"}
CLIENT_IDS = {"corp": "corp-client", "partner": "partner-client"}
DISPLAY = {"corp": "Corp account", "partner": "Partner Inc."}


@pytest.fixture(autouse=True)
def _capture_middleware_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pkce_middleware")


class ByHost:
    """One ASGI app for every provider: each request goes to the provider whose host it names."""

    def __init__(self, *providers: HostileProvider) -> None:
        self.providers = {urlsplit(provider.issuer).netloc: provider for provider in providers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = Headers(scope=scope).get("host", "")
        await self.providers[host](scope, receive, send)


class WhoApp:
    """The protected app: `hello <sub> of <iss>`, recording every request that reaches it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await hello_app(scope, receive, send)
            return
        user = scope["user"]
        who = f"{user.identity} of {user.claims['iss']}" if user.is_authenticated else "anonymous"
        self.seen.append((scope["path"], who))
        await Response(f"hello {who}", media_type="text/plain")(scope, receive, send)


def provider_config(name: str, hostile: HostileProvider, **options: Any) -> ProviderConfig:
    """`name` at `hostile`, a confidential client with its own id and secret."""
    own: dict[str, Any] = {"issuer": hostile.issuer, "client_id": hostile.client_id, "client_secret": SECRETS[name]}
    own.update(options)
    return ProviderConfig(name=name, display_name=DISPLAY[name], options=own)


def browser(middleware: PKCEMiddleware) -> httpx.AsyncClient:
    """A browser whose requests are page loads (`make_client` sends `Accept: text/html` already)."""
    client = make_client(middleware)
    client.headers.update(BROWSER_HEADERS)
    return client


@dataclasses.dataclass
class Two:
    """The middleware with two providers in front of `WhoApp`, and one browser."""

    corp: HostileProvider
    partner: HostileProvider
    app: WhoApp
    config: PKCEConfig
    middleware: PKCEMiddleware
    client: httpx.AsyncClient
    _browsers: list[httpx.AsyncClient] = dataclasses.field(default_factory=list)

    def of(self, name: str) -> HostileProvider:
        return {"corp": self.corp, "partner": self.partner}[name]

    def browser(self) -> httpx.AsyncClient:
        """Another browser (empty cookie jar); closed with the site."""
        client = browser(self.middleware)
        self._browsers.append(client)
        return client

    def script(self) -> httpx.AsyncClient:
        """A script or a page's fetch: asks for JSON, never navigates; closed with the site."""
        client = make_client(self.middleware)
        client.headers["Accept"] = "application/json"
        self._browsers.append(client)
        return client

    async def post_logout_token(self, token: str) -> httpx.Response:
        """The provider's server-to-server call (no cookies, no browser headers)."""
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.middleware), base_url=APP_ORIGIN) as op:
            return await op.post(BACKCHANNEL, data={"logout_token": token})


def hostile_pair() -> tuple[HostileProvider, HostileProvider]:
    corp = HostileProvider(issuer=CORP, client_id=CLIENT_IDS["corp"])
    corp.sub = "ann"
    partner = HostileProvider(issuer=PARTNER, client_id=CLIENT_IDS["partner"])
    partner.sub = "pat"
    partner.rotate_key("partner-key-1")  # its own keys: a token of one never checks out with the other's
    return corp, partner


@contextlib.asynccontextmanager
async def open_two(
    *,
    providers: Callable[[HostileProvider, HostileProvider], tuple[ProviderConfig, ...]] | None = None,
    on_error: Callable[[Request, PKCEMiddlewareError], Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Two]:
    corp, partner = hostile_pair()
    chosen = (
        providers(corp, partner)
        if providers is not None
        else (provider_config("corp", corp), provider_config("partner", partner))
    )
    config = PKCEConfig(providers=chosen, secret_key=overrides.pop("secret_key", strong_secret_key()), **overrides)
    app = WhoApp()
    middleware = PKCEMiddleware(
        app, config=config, transport=httpx.ASGITransport(app=ByHost(corp, partner)), on_error=on_error
    )
    two = Two(corp, partner, app, config, middleware, browser(middleware))
    try:
        yield two
    finally:
        for client in (two.client, *two._browsers):
            await client.aclose()
        await middleware.aclose()


@pytest.fixture
async def two() -> AsyncIterator[Two]:
    async with open_two() as opened:
        yield opened


# -- helpers: the browser's steps -------------------------------------------------------------------


def query_of(url: str) -> dict[str, str]:
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), url
    return {name: values[0] for name, values in query.items()}


async def choose(client: httpx.AsyncClient, hostile: HostileProvider, name: str, target: str = "/") -> dict[str, str]:
    """Press the `name` button of the choice page for `target`: the redirect to that provider, and its query."""
    response = await client.get(LOGIN, params={"next": target, "provider": name})
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(hostile.authorization_endpoint + "?"), location
    return query_of(location)


async def come_back(
    client: httpx.AsyncClient,
    params: Mapping[str, str],
    *,
    code: str,
    iss: str | None,
) -> httpx.Response:
    """The provider's redirect back for the attempt in `params` (`iss`: RFC 9207, `None` leaves it out)."""
    query = [("code", code), ("state", params["state"])]
    if iss is not None:
        query.append(("iss", iss))
    return await callback(client, query)


async def login_at(two: Two, name: str, client: httpx.AsyncClient | None = None, target: str = "/") -> httpx.Response:
    """A whole login at provider `name`: the callback's answer (a 303 to `target` when it works)."""
    client = client if client is not None else two.client
    hostile = two.of(name)
    params = await choose(client, hostile, name, target)
    code = hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    response = await come_back(client, params, code=code, iss=hostile.issuer)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == target
    return response


def session_in(two: Two, client: httpx.AsyncClient) -> Session:
    session = session_codec(two.config).open(client.cookies[SESSION_COOKIE])
    assert session is not None
    return session


async def is_signed_out(two: Two, client: httpx.AsyncClient) -> bool:
    """A page load goes to the choice page, and the app never sees the request."""
    seen = len(two.app.seen)
    response = await client.get("/")
    if response.status_code == 200:
        return False
    assert response.status_code == 302, response.text
    assert response.headers["location"] == f"{LOGIN}?next=%2F"
    assert len(two.app.seen) == seen
    return True


@dataclasses.dataclass
class Form:
    action: str | None = None
    method: str | None = None
    hidden: dict[str, str] = dataclasses.field(default_factory=dict)
    #: (name, value, text) of each submit button.
    buttons: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


class FormReader(HTMLParser):
    """The forms of a page, attribute values and texts unescaped as a browser reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._button: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.forms.append(Form(action=attributes.get("action"), method=attributes.get("method")))
        elif tag == "input" and attributes.get("type") == "hidden":
            self.forms[-1].hidden[attributes.get("name") or ""] = attributes.get("value") or ""
        elif tag == "button":
            self._button, self._text = attributes, ""

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None:
            assert self._button.get("type") == "submit"
            self.forms[-1].buttons.append((self._button.get("name") or "", self._button.get("value") or "", self._text))
            self._button = None


def the_form(page: httpx.Response) -> Form:
    reader = FormReader()
    reader.feed(page.text)
    [form] = reader.forms
    return form


def csp_sources(response: httpx.Response, directive: str) -> list[str]:
    for part in response.headers["content-security-policy"].split(";"):
        name, *sources = part.split()
        if name == directive:
            return sources
    raise AssertionError(f"no {directive} in {response.headers['content-security-policy']}")


# -- the choice page --------------------------------------------------------------------------------


async def test_a_page_load_without_a_session_is_asked_which_provider(two: Two) -> None:
    response = await two.client.get("/reports?year=2024")
    assert response.status_code == 302
    assert response.headers["location"] == "/auth/login?next=%2Freports%3Fyear%3D2024"
    assert response.headers["cache-control"] == "no-store"
    assert not flow_cookie_names(two.client)  # no login has started yet

    page = await two.client.get(response.headers["location"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "<title>Sign in</title>" in page.text
    form = the_form(page)
    assert (form.method, form.action) == ("get", LOGIN)
    assert form.hidden == {"next": "/reports?year=2024"}
    assert form.buttons == [
        ("provider", "corp", "Sign in with Corp account"),
        ("provider", "partner", "Sign in with Partner Inc."),
    ]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert not flow_cookie_names(two.client) and SESSION_COOKIE not in two.client.cookies
    assert two.app.seen == []
    assert two.corp.calls["token"] == two.partner.calls["token"] == 0


async def test_the_choice_page_lets_its_buttons_lead_to_each_provider(two: Two) -> None:
    """A button's GET is answered with a redirect to the provider, and browsers hold that redirect
    to the page's `form-action` (in Chromium, a `form-action 'self'` alone leaves every button dead)."""
    page = await two.client.get(LOGIN, params={"next": "/"})
    assert csp_sources(page, "form-action") == ["'self'", CORP, PARTNER]


async def test_the_choice_page_allows_the_authorization_endpoint_discovery_names() -> None:
    """The authorization endpoint on a host of its own (as at AWS Cognito): discovery says where."""
    async with open_two() as two:
        two.partner.metadata_overrides = {"authorization_endpoint": "https://login.partner.test/oauth2/authorize"}
        page = await two.client.get(LOGIN, params={"next": "/"})
        assert csp_sources(page, "form-action") == ["'self'", CORP, "https://login.partner.test"]
        response = await two.client.get(LOGIN, params={"next": "/", "provider": "partner"})
        assert response.headers["location"].startswith("https://login.partner.test/oauth2/authorize?")


async def test_the_choice_page_is_shown_while_a_provider_is_down() -> None:
    async with open_two() as two:
        two.partner.raw_bodies["discovery"] = b"not json"
        page = await two.client.get(LOGIN, params={"next": "/"})
        assert page.status_code == 200
        assert [value for _, value, _ in the_form(page).buttons] == ["corp", "partner"]
        assert csp_sources(page, "form-action") == ["'self'", CORP, PARTNER]  # its issuer's origin meanwhile
        await login_at(two, "corp")  # the other provider still works
        assert (await two.client.get("/")).text == f"hello ann of {CORP}"


async def test_pressing_a_button_starts_that_providers_login_for_the_same_target(two: Two) -> None:
    page = await two.client.get("/auth/login?next=%2Freports%3Fyear%3D2024")
    form = the_form(page)
    assert form.action is not None
    # What the browser sends for the "partner" button: the form's fields, then the button's.
    response = await two.client.get(form.action, params={**form.hidden, "provider": "partner"})
    assert response.status_code == 302
    params = query_of(response.headers["location"])
    assert response.headers["location"].startswith(f"{PARTNER}/authorize?")
    assert params["client_id"] == "partner-client"
    assert params["redirect_uri"] == f"{APP_ORIGIN}{CALLBACK}"
    [flow_cookie] = flow_cookie_names(two.client)
    flow = FlowCodec(Sealer([str(k) for k in two.config.secret_keys], bound_purpose("flow", two.config))).open(
        two.client.cookies[flow_cookie]
    )
    assert flow is not None
    assert (flow.provider, flow.issuer, flow.return_to) == ("partner", PARTNER, "/reports?year=2024")


async def test_display_names_and_targets_are_escaped_on_the_choice_page() -> None:
    hostile_name = '<img src=x onerror="alert(1)">&amp; "Co"'

    def providers(corp: HostileProvider, partner: HostileProvider) -> tuple[ProviderConfig, ...]:
        return (
            dataclasses.replace(provider_config("corp", corp), display_name=hostile_name),
            provider_config("partner", partner),
        )

    async with open_two(providers=providers) as two:
        target = '/search?q="><script>alert(2)</script>&x=1'
        page = await two.client.get(LOGIN, params={"next": target})
        assert page.status_code == 200
        assert "<img" not in page.text and "<script>" not in page.text
        form = the_form(page)
        assert form.hidden == {"next": target}  # the browser reads back exactly the target
        assert form.buttons[0] == ("provider", "corp", f"Sign in with {hostile_name}")


async def test_a_display_name_defaults_to_the_providers_name() -> None:
    def providers(corp: HostileProvider, partner: HostileProvider) -> tuple[ProviderConfig, ...]:
        return (
            ProviderConfig(name="corp", options={"issuer": CORP, "client_id": "corp-client"}),
            provider_config("partner", partner),
        )

    async with open_two(providers=providers) as two:
        form = the_form(await two.client.get(LOGIN))
        assert form.buttons == [
            ("provider", "corp", "Sign in with corp"),
            ("provider", "partner", "Sign in with Partner Inc."),
        ]
        assert form.hidden == {"next": "/"}


async def test_an_unsafe_target_is_not_carried_through_the_choice(two: Two) -> None:
    form = the_form(await two.client.get(LOGIN, params={"next": "//evil.test/steal"}))
    assert form.hidden == {"next": "/"}


async def test_a_script_gets_json_not_the_choice_page(two: Two) -> None:
    script = two.script()
    api = await script.get("/reports")
    assert api.status_code == 401
    assert api.json()["error"] == "login_required"
    assert api.json()["login_url"] == "/auth/login?next=%2Freports"

    asked = await script.get(api.json()["login_url"])
    assert asked.status_code == 401
    assert asked.headers["content-type"] == "application/json"
    assert asked.headers["cache-control"] == "no-store"
    assert asked.json() == {
        "error": "choose_provider",
        "message": "Choose how to sign in.",
        "providers": ["corp", "partner"],
    }
    assert two.app.seen == []


async def test_the_apps_on_error_renders_its_own_choice_page(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[ChooseProvider] = []

    def on_error(request: Request, exc: PKCEMiddlewareError) -> Response | None:
        if not isinstance(exc, ChooseProvider):
            return None
        asked.append(exc)
        links = "".join(
            f'<a href="{exc.login_path}?{urlencode({"provider": name, "next": exc.next_path})}">{display}</a>'
            for name, display in exc.providers
        )
        return HTMLResponse(f"<h1>Who are you?</h1>{links}", status_code=exc.status_code)

    async with open_two(on_error=on_error) as two:
        response = await two.client.get("/reports")
        page = await two.client.get(response.headers["location"])
        assert page.status_code == 200
        assert page.text == (
            "<h1>Who are you?</h1>"
            '<a href="/auth/login?provider=corp&next=%2Freports">Corp account</a>'
            '<a href="/auth/login?provider=partner&next=%2Freports">Partner Inc.</a>'
        )
        [choice] = asked
        assert choice.error == Reason.CHOOSE_PROVIDER
        assert (choice.login_path, choice.next_path) == (LOGIN, "/reports")
        assert choice.providers == (("corp", "Corp account"), ("partner", "Partner Inc."))
        # A question, not a refusal: nothing is logged as refused.
        assert not [r for r in caplog.records if "choose_provider" in r.getMessage()]

        # Following one of its links works as the default page's button does.
        await login_at(two, "partner", target="/reports")
        assert (await two.client.get("/reports")).text == f"hello pat of {PARTNER}"
        # Other refusals still get the middleware's page.
        unknown = await two.client.get(LOGIN, params={"provider": "nope"})
        assert_refusal_page(unknown, status=400, reason="unknown_provider")


# -- logins -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "other"), [("corp", "partner"), ("partner", "corp")])
async def test_each_providers_login_works_end_to_end(two: Two, name: str, other: str) -> None:
    hostile, elsewhere = two.of(name), two.of(other)
    # The whole walk a person makes: a page, the choice, the provider, back to the page.
    first = await two.client.get("/reports")
    page = await two.client.get(first.headers["location"])
    form = the_form(page)
    assert form.action is not None
    to_provider = await two.client.get(form.action, params={**form.hidden, "provider": name})
    params = query_of(to_provider.headers["location"])
    assert to_provider.headers["location"].startswith(f"{hostile.issuer}/authorize?")
    assert params["client_id"] == CLIENT_IDS[name]
    code = hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    back = await come_back(two.client, params, code=code, iss=hostile.issuer)
    assert back.status_code == 303 and back.headers["location"] == "/reports"

    assert (await two.client.get("/reports")).text == f"hello {hostile.sub} of {hostile.issuer}"
    assert two.app.seen == [("/reports", f"{hostile.sub} of {hostile.issuer}")]
    # Its token endpoint, with its own client credentials; the other provider never heard of it.
    assert hostile.calls["token"] == 1 and elsewhere.calls["token"] == 0
    basic = base64.b64decode(hostile.last_token_request.authorization.split()[1]).decode()  # type: ignore[union-attr]
    assert basic == f"{CLIENT_IDS[name]}:{SECRETS[name]}"
    assert not elsewhere.token_requests
    assert session_in(two, two.client).provider == name
    assert not flow_cookie_names(two.client)


async def test_two_browsers_signed_in_at_different_providers_are_told_apart(two: Two) -> None:
    ann, pat = two.client, two.browser()
    await login_at(two, "corp", ann)
    await login_at(two, "partner", pat)
    assert (await ann.get("/")).text == f"hello ann of {CORP}"
    assert (await pat.get("/")).text == f"hello pat of {PARTNER}"


async def test_an_unknown_provider_is_refused(two: Two, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("nope", "CORP", "corp ", "corp,partner"):
        response = await two.client.get(LOGIN, params={"provider": name, "next": "/reports"})
        assert_refusal_page(response, status=400, reason="unknown_provider")
        assert '<a href="/reports">' in response.text  # the way back: the target, which leads to the choice
        assert not flow_cookie_names(two.client)
    assert_logged(caplog, "unknown_provider")
    # An empty choice is no choice: the page that asks.
    empty = await two.client.get(LOGIN, params={"provider": "", "next": "/reports"})
    assert empty.status_code == 200 and the_form(empty).hidden == {"next": "/reports"}
    api = await two.script().get(LOGIN, params={"provider": "nope"})
    assert api.status_code == 400
    assert api.json()["error"] == "unknown_provider"
    assert two.corp.calls["token"] == two.partner.calls["token"] == 0
    assert two.app.seen == []


async def test_signed_in_the_login_path_goes_back_to_the_target(two: Two) -> None:
    await login_at(two, "corp")
    response = await two.client.get(LOGIN, params={"next": "/reports"})
    assert response.status_code == 303 and response.headers["location"] == "/reports"


async def test_a_step_up_stays_with_the_sessions_provider(two: Two) -> None:
    await login_at(two, "partner")
    response = await two.client.get(LOGIN, params={"prompt": "login", "next": "/"})
    assert response.status_code == 302
    assert response.headers["location"].startswith(f"{PARTNER}/authorize?")
    assert query_of(response.headers["location"])["prompt"] == "login"


async def test_choosing_another_provider_switches_the_account(two: Two) -> None:
    await login_at(two, "corp")
    assert (await two.client.get("/")).text == f"hello ann of {CORP}"

    params = await choose(two.client, two.partner, "partner", "/reports")
    # Until the new login finishes, the old session still holds.
    assert (await two.client.get("/")).text == f"hello ann of {CORP}"
    code = two.partner.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    back = await come_back(two.client, params, code=code, iss=PARTNER)
    assert back.status_code == 303 and back.headers["location"] == "/reports"

    assert (await two.client.get("/reports")).text == f"hello pat of {PARTNER}"
    assert session_in(two, two.client).provider == "partner"
    assert len([c for c in two.client.cookies.jar if c.name == SESSION_COOKIE]) == 1  # replaced, not added


async def test_an_abandoned_switch_keeps_the_old_session(two: Two) -> None:
    await login_at(two, "corp")
    params = await choose(two.client, two.partner, "partner")
    failed = await come_back(two.client, params, code="not-a-code", iss=PARTNER)
    assert failed.status_code == 400 and "reason: code_rejected" in failed.text
    assert (await two.client.get("/")).text == f"hello ann of {CORP}"


# -- mix-up: a flow belongs to the provider it went to ------------------------------------------------


async def test_a_flow_of_one_provider_answered_with_anothers_issuer_gives_no_session(
    two: Two, caplog: pytest.LogCaptureFixture
) -> None:
    params = await choose(two.client, two.corp, "corp")
    code = two.corp.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    response = await come_back(two.client, params, code=code, iss=PARTNER)
    assert_refusal_page(response, status=400, reason="iss_mismatch")
    assert_logged(caplog, "iss_mismatch")
    assert two.corp.calls["token"] == two.partner.calls["token"] == 0  # the code was never redeemed
    assert await is_signed_out(two, two.client)


async def test_a_code_of_another_provider_is_redeemed_at_the_flows_provider_only(two: Two) -> None:
    """An attacker who got a code out of partner injects it into a corp flow (with corp's `iss`):
    it goes to corp's token endpoint, which does not know it; partner never sees it (so the
    code is not spent there, and partner's client secret never leaves for it)."""
    params = await choose(two.client, two.corp, "corp")
    code = two.partner.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    response = await come_back(two.client, params, code=code, iss=CORP)
    assert response.status_code >= 400
    assert_refusal_page(response, status=400, reason="code_rejected")
    assert two.corp.calls["token"] == 1
    assert two.partner.calls["token"] == 0
    assert await is_signed_out(two, two.client)


async def test_two_flows_at_once_each_finish_only_with_their_own_provider(two: Two) -> None:
    corp_flow = await choose(two.client, two.corp, "corp")
    partner_flow = await choose(two.client, two.partner, "partner")
    assert len(flow_cookie_names(two.client)) == 2
    # partner's state with corp's iss: partner's flow, another issuer.
    code = two.partner.issue_code(nonce=partner_flow["nonce"], challenge=partner_flow["code_challenge"])
    assert_refusal_page(
        await come_back(two.client, partner_flow, code=code, iss=CORP), status=400, reason="iss_mismatch"
    )
    # corp's own flow still finishes.
    code = two.corp.issue_code(nonce=corp_flow["nonce"], challenge=corp_flow["code_challenge"])
    assert (await come_back(two.client, corp_flow, code=code, iss=CORP)).status_code == 303
    assert (await two.client.get("/")).text == f"hello ann of {CORP}"


async def test_an_id_token_from_another_provider_is_refused(two: Two) -> None:
    """corp's token endpoint hands back an ID token that partner signed for partner's client (a
    provider replaying another's tokens): it is checked against corp's issuer, client and keys."""
    partner_key = two.partner.signing_key

    def partners_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
        claims = {**claims, "iss": PARTNER, "aud": "partner-client", "sub": "pat"}
        return sign_compact({**header, "kid": partner_key.kid}, claims, partner_key)

    two.corp.id_token_encoder = partners_token
    params = await choose(two.client, two.corp, "corp")
    code = two.corp.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    response = await come_back(two.client, params, code=code, iss=CORP)
    assert_refusal_page(response, status=502, reason="id_token_invalid")
    assert two.partner.calls["token"] == 0
    assert await is_signed_out(two, two.client)


# -- sessions: refresh and logout go to the session's provider ----------------------------------------


async def test_refresh_goes_to_the_sessions_provider_only(two: Two) -> None:
    # Access tokens of five seconds: inside the refresh margin as soon as the login is done.
    two.corp.token_overrides = {"expires_in": 5}
    two.partner.token_overrides = {"expires_in": 5}
    ann, pat = two.client, two.browser()
    await login_at(two, "corp", ann)
    await login_at(two, "partner", pat)

    assert (await ann.get("/")).text == f"hello ann of {CORP}"
    assert (two.corp.calls["refresh"], two.partner.calls["refresh"]) == (1, 0)
    refresh = two.corp.last_token_request
    assert refresh.one("grant_type") == "refresh_token"
    assert base64.b64decode(refresh.authorization.split()[1]).decode() == f"corp-client:{SECRETS['corp']}"  # type: ignore[union-attr]

    assert (await pat.get("/")).text == f"hello pat of {PARTNER}"
    assert (two.corp.calls["refresh"], two.partner.calls["refresh"]) == (1, 1)
    assert two.partner.last_token_request.one("refresh_token") == two.partner.issued_refresh_tokens[0]
    assert two.corp.calls["refresh_invalid_grant"] == two.partner.calls["refresh_invalid_grant"] == 0
    # Both fresh now: nobody is asked again.
    assert (await ann.get("/")).text == f"hello ann of {CORP}"
    assert (await pat.get("/")).text == f"hello pat of {PARTNER}"
    assert (two.corp.calls["refresh"], two.partner.calls["refresh"]) == (1, 1)


async def test_a_refresh_refused_by_the_sessions_provider_ends_only_that_session(two: Two) -> None:
    two.corp.token_overrides = {"expires_in": 5}
    two.partner.token_overrides = {"expires_in": 5}
    ann, pat = two.client, two.browser()
    await login_at(two, "corp", ann)
    await login_at(two, "partner", pat)
    two.partner.revoke_refresh_tokens()
    assert await is_signed_out(two, pat)
    assert (await ann.get("/")).text == f"hello ann of {CORP}"


@pytest.mark.parametrize("name", ["corp", "partner"])
async def test_logout_goes_to_the_sessions_providers_end_session_endpoint(two: Two, name: str) -> None:
    hostile = two.of(name)
    await login_at(two, name)
    page = await two.client.get(LOGOUT)
    assert "Sign out?" in page.text
    assert csp_sources(page, "form-action") == ["'self'", hostile.issuer]

    response = await two.client.post(LOGOUT, headers={"Origin": APP_ORIGIN})
    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{hostile.issuer}/logout"
    query = query_of(response.headers["location"])
    assert query["id_token_hint"] == hostile.issued_id_tokens[-1]
    assert query["post_logout_redirect_uri"] == f"{APP_ORIGIN}{LOGOUT}"
    assert SESSION_COOKIE not in two.client.cookies
    assert await is_signed_out(two, two.client)


# -- back-channel and front-channel logout ------------------------------------------------------------


@pytest.fixture
async def same_user_at_both(two: Two) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    """`x` signed in at corp in one browser and at partner in another, with the same `sid` at both."""
    for hostile in (two.corp, two.partner):
        hostile.sub = "x"
        hostile.sid = "op-session-1"
    at_corp, at_partner = two.client, two.browser()
    await login_at(two, "corp", at_corp)
    await login_at(two, "partner", at_partner)
    assert (await at_corp.get("/")).text == f"hello x of {CORP}"
    assert (await at_partner.get("/")).text == f"hello x of {PARTNER}"
    return at_corp, at_partner


@pytest.mark.parametrize("by", ["sub", "sid"])
async def test_backchannel_logout_ends_only_the_issuing_providers_sessions(
    two: Two, same_user_at_both: tuple[httpx.AsyncClient, httpx.AsyncClient], by: str
) -> None:
    at_corp, at_partner = same_user_at_both
    if by == "sub":  # every session of partner's x
        token = two.partner.logout_token(sub="x", claim_overrides={"sid": REMOVE})
    else:  # partner's session op-session-1 (whoever's it is)
        token = two.partner.logout_token(sid="op-session-1", claim_overrides={"sub": REMOVE})
    response = await two.post_logout_token(token)
    assert response.status_code == 200, response.text
    assert await is_signed_out(two, at_partner)
    assert (await at_corp.get("/")).text == f"hello x of {CORP}"  # corp's x is someone else


async def test_backchannel_logout_of_the_other_provider_ends_its_sessions_too(
    two: Two, same_user_at_both: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    at_corp, at_partner = same_user_at_both
    token = two.corp.logout_token(sub="x", claim_overrides={"sid": REMOVE})
    assert (await two.post_logout_token(token)).status_code == 200
    assert await is_signed_out(two, at_corp)
    assert (await at_partner.get("/")).text == f"hello x of {PARTNER}"


async def test_a_logout_token_of_no_configured_provider_is_refused(
    two: Two, same_user_at_both: tuple[httpx.AsyncClient, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    evil = HostileProvider(issuer=EVIL, client_id="corp-client")
    evil.rotate_key("evil-key-1")
    for token in (
        evil.logout_token(sub="x"),
        evil.logout_token(sub="x", claim_overrides={"iss": REMOVE}),
        "not.a.jwt",
        "garbage",
    ):
        response = await two.post_logout_token(token)
        assert response.status_code == 400
        assert response.json() == {"error": "logout_token_invalid"}
    assert_logged(caplog, "logout_token_invalid")
    for client, issuer in zip(same_user_at_both, (CORP, PARTNER), strict=True):
        assert (await client.get("/")).text == f"hello x of {issuer}"


async def test_a_logout_token_naming_one_provider_but_signed_by_another_is_refused(
    two: Two, same_user_at_both: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """partner signs a token that claims to be corp's: corp's keys check it, and refuse it."""
    forged = two.partner.logout_token(sub="x", claim_overrides={"iss": CORP, "aud": "corp-client"})
    response = await two.post_logout_token(forged)
    assert response.status_code == 400
    for client, issuer in zip(same_user_at_both, (CORP, PARTNER), strict=True):
        assert (await client.get("/")).text == f"hello x of {issuer}"


async def test_frontchannel_logout_by_iss_ends_only_that_providers_sessions() -> None:
    async with open_two(frontchannel_logout_path=FRONTCHANNEL) as two:
        for hostile in (two.corp, two.partner):
            hostile.sid = "op-session-1"
        at_corp, at_partner = two.client, two.browser()
        await login_at(two, "corp", at_corp)
        await login_at(two, "partner", at_partner)

        # The provider's iframe: cross-site, so no cookie of ours comes along.
        frame = two.browser()
        answer = await frame.get(FRONTCHANNEL, params={"iss": PARTNER, "sid": "op-session-1"})
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        assert sorted(csp_sources(answer, "frame-ancestors")) == [CORP, PARTNER]
        assert await is_signed_out(two, at_partner)
        assert (await at_corp.get("/")).text == f"hello ann of {CORP}"

        refused = await frame.get(FRONTCHANNEL, params={"iss": EVIL, "sid": "op-session-1"})
        assert refused.status_code == 400
        assert refused.json() == {"error": "logout_token_invalid"}
        assert (await at_corp.get("/")).text == f"hello ann of {CORP}"


# -- configuration --------------------------------------------------------------------------------------


def environ(**extra: str) -> dict[str, str]:
    """Two providers, configured as a deployment would."""
    values = {
        "PKCE_SECRET_KEY": strong_secret_key(),
        "PKCE_PROVIDERS": "corp, partner",
        "PKCE_PROVIDER_CORP_ISSUER": CORP,
        "PKCE_PROVIDER_CORP_CLIENT_ID": "corp-client",
        "PKCE_PROVIDER_CORP_CLIENT_SECRET": SECRETS["corp"],
        "PKCE_PROVIDER_CORP_DISPLAY_NAME": "  Corp account ",
        "PKCE_PROVIDER_CORP_SCOPES": "openid email groups",
        "PKCE_PROVIDER_PARTNER_ISSUER": PARTNER,
        "PKCE_PROVIDER_PARTNER_CLIENT_ID": "partner-client",
        "PKCE_PROVIDER_PARTNER_USERINFO": "true",
        "PKCE_PROVIDER_PARTNER_ID_TOKEN_ALGORITHMS": "ES256",
    }
    values.update(extra)
    return {name: value for name, value in values.items() if value != "<unset>"}


def test_providers_are_read_from_the_environment() -> None:
    config = PKCEConfig.from_environ(environ(PKCE_SCOPES="openid profile", PKCE_SESSION_MAX_AGE="7200"))
    [(corp_name, corp_display, corp), (partner_name, partner_display, partner)] = config.each_provider
    assert (corp_name, corp_display) == ("corp", "Corp account")
    assert (partner_name, partner_display) == ("partner", "partner")  # no display name: the name
    assert (corp.issuer, corp.client_id, corp.client_secret_value) == (CORP, "corp-client", SECRETS["corp"])
    assert (partner.issuer, partner.client_id, partner.client_secret_value) == (PARTNER, "partner-client", None)
    assert corp.scopes == ("openid", "email", "groups")
    assert partner.scopes == ("openid", "profile")  # the global option, where a provider sets none
    assert (corp.userinfo, partner.userinfo) == (False, True)
    assert partner.id_token_algorithms == ("ES256",)
    # Global options stay global.
    assert corp.session_max_age == partner.session_max_age == config.session_max_age == 7200
    assert config.issuer == "" and config.client_id == ""
    # Each session is bound to its own provider and client, inside the sealed payload.
    assert config.provider_bindings == {"corp": f"{CORP} corp-client", "partner": f"{PARTNER} partner-client"}


def test_a_plain_oauth_provider_beside_an_openid_one() -> None:
    config = PKCEConfig.from_environ(
        environ(
            PKCE_PROVIDERS="corp,gh",
            PKCE_PROVIDER_GH_AUTHORIZATION_ENDPOINT="https://github.com/login/oauth/authorize",
            PKCE_PROVIDER_GH_TOKEN_ENDPOINT="https://github.com/login/oauth/access_token",
            PKCE_PROVIDER_GH_USERINFO_ENDPOINT="https://api.github.com/user",
            PKCE_PROVIDER_GH_USER_ID_CLAIM="id",
            PKCE_PROVIDER_GH_CLIENT_ID="gh-client",
            PKCE_PROVIDER_GH_SCOPES="read:user",
            PKCE_PROVIDER_GH_DISPLAY_NAME="GitHub",
        )
    )
    [_, (name, display, gh)] = config.each_provider
    assert (name, display) == ("gh", "GitHub")
    assert gh.plain_oauth and gh.user_id_claim == "id" and gh.scopes == ("read:user",)
    assert gh.provider_id == "https://github.com/login/oauth/authorize"


def test_providers_in_code() -> None:
    config = PKCEConfig(
        providers=[  # type: ignore[arg-type]  # any sequence will do; it is kept as a tuple
            ProviderConfig(name="corp", display_name="Corp", options={"issuer": CORP, "client_id": "c"}),
            ProviderConfig(name="partner", options={"issuer": PARTNER, "client_id": "p", "client_secret": "s"}),
        ],
        secret_key=strong_secret_key(),
    )
    assert isinstance(config.providers, tuple)
    assert [(name, display, own.issuer) for name, display, own in config.each_provider] == [
        ("corp", "Corp", CORP),
        ("partner", "partner", PARTNER),
    ]
    assert config.each_provider[1][2].client_secret_value == "s"


def test_one_provider_is_as_before() -> None:
    config = PKCEConfig(issuer=CORP, client_id="corp-client", secret_key=strong_secret_key())
    assert config.each_provider == (("", "", config),)
    assert config.binding == f"{CORP} corp-client"


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"PKCE_PROVIDER_PARTNER_ISSUER": "<unset>"}, ["PKCE_PROVIDER_PARTNER_ISSUER"]),
        ({"PKCE_PROVIDER_CORP_CLIENT_ID": "<unset>"}, ["PKCE_PROVIDER_CORP_CLIENT_ID"]),
        ({"PKCE_PROVIDER_CORP_ISSUER": "corp.test"}, ["PKCE_PROVIDER_CORP_ISSUER"]),
        ({"PKCE_PROVIDER_CORP_USERINFO": "maybe"}, ["PKCE_PROVIDER_CORP_USERINFO"]),
        ({"PKCE_PROVIDER_PARTNER_ID_TOKEN_ALGORITHMS": "HS256"}, ["PKCE_PROVIDER_PARTNER_ID_TOKEN_ALGORITHMS"]),
        (
            {"PKCE_PROVIDER_PARTNER_TOKEN_ENDPOINT_AUTH_METHOD": "client_secret_post"},
            ["PKCE_PROVIDER_PARTNER_TOKEN_ENDPOINT_AUTH_METHOD", "PKCE_PROVIDER_PARTNER_CLIENT_SECRET"],
        ),
        (
            # An issuer beside the endpoints is the RFC 9207 one of a plain provider, which needs them all.
            {"PKCE_PROVIDER_CORP_AUTHORIZATION_ENDPOINT": "https://corp.test/authorize"},
            ["PKCE_PROVIDER_CORP_TOKEN_ENDPOINT"],
        ),
    ],
    ids=["no-issuer", "no-client-id", "bad-issuer", "bad-bool", "bad-algorithm", "auth-method", "endpoint-alone"],
)
def test_a_providers_mistake_names_its_variable(change: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        PKCEConfig.from_environ(environ(**change))
    message = str(caught.value)
    for name in names:
        assert name in message, message
    assert SECRETS["corp"] not in message


def test_a_bad_value_is_not_repeated_in_the_error() -> None:
    with pytest.raises(ConfigError, match="PKCE_PROVIDER_CORP_USERINFO is not a valid bool") as caught:
        PKCEConfig.from_environ(environ(PKCE_PROVIDER_CORP_USERINFO="s3cr3t-looking"))
    assert "s3cr3t-looking" not in str(caught.value)


@pytest.mark.parametrize(
    "single",
    [
        {"PKCE_ISSUER": CORP},
        {"PKCE_CLIENT_ID": "corp-client"},
        {"PKCE_AUTHORIZATION_ENDPOINT": f"{CORP}/authorize"},
        # One secret for every provider would hand corp's secret to partner.
        {"PKCE_CLIENT_SECRET": SECRETS["corp"]},
    ],
    ids=["issuer", "client-id", "endpoint", "client-secret"],
)
def test_single_provider_options_beside_providers_are_refused(single: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="PKCE_PROVIDERS is set") as caught:
        PKCEConfig.from_environ(environ(**single))
    assert "PKCE_PROVIDER_<NAME>_ISSUER" in str(caught.value)
    assert SECRETS["corp"] not in str(caught.value)


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        ("corp,corp", "names a provider twice"),
        ("corp,Partner", "'Partner' is not a short lower-case name"),
        ("corp,my-partner", "'my-partner' is not a short lower-case name"),
        ("corp,my_partner", "'my_partner' is not a short lower-case name"),
        ("corp,1partner", "'1partner' is not a short lower-case name"),
        ("corp," + "p" * 33, "is not a short lower-case name"),
    ],
)
def test_duplicate_or_bad_names_are_refused(providers: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PKCEConfig.from_environ(environ(PKCE_PROVIDERS=providers))


def test_an_option_that_is_not_per_provider_is_refused_in_code() -> None:
    with pytest.raises(ConfigError, match=r"provider 'corp': no such per-provider option \['redirect_uri'\]"):
        PKCEConfig(
            providers=(
                ProviderConfig(
                    name="corp", options={"issuer": CORP, "client_id": "c", "redirect_uri": f"{APP_ORIGIN}/cb"}
                ),
            ),
            secret_key=strong_secret_key(),
        )


def test_without_any_provider_the_single_provider_options_are_required() -> None:
    with pytest.raises(ConfigError, match="PKCE_ISSUER is required"):
        PKCEConfig.from_environ({"PKCE_SECRET_KEY": strong_secret_key(), "PKCE_PROVIDERS": " , "})


# -- sealed cookies ---------------------------------------------------------------------------------


def sealed_payload(config: PKCEConfig, value: str) -> dict[str, Any]:
    """What a session cookie holds, opened with the middleware's own keys."""
    sealer = Sealer([str(key) for key in config.secret_keys], bound_purpose("session", config))
    opened = sealer.open(value)
    assert opened is not None
    payload: dict[str, Any] = json.loads(opened)
    return payload


async def test_the_session_cookie_records_its_provider(two: Two) -> None:
    await login_at(two, "partner")
    assert sealed_payload(two.config, two.client.cookies[SESSION_COOKIE])["pv"] == "partner"


async def test_with_one_provider_the_session_cookie_is_as_before() -> None:
    corp, _ = hostile_pair()
    config = PKCEConfig(
        issuer=CORP, client_id="corp-client", client_secret=SECRETS["corp"], secret_key=strong_secret_key()
    )
    middleware = PKCEMiddleware(WhoApp(), config=config, transport=httpx.ASGITransport(app=corp))
    async with browser(middleware) as client:
        first = await client.get("/")
        assert first.status_code == 302 and first.headers["location"].startswith(f"{CORP}/authorize?")  # no choice
        params = query_of(first.headers["location"])
        code = corp.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
        assert (await come_back(client, params, code=code, iss=CORP)).status_code == 303
        assert "pv" not in sealed_payload(config, client.cookies[SESSION_COOKIE])
        assert (await client.get("/")).text == f"hello ann of {CORP}"
        # `?provider=` names no provider here.
        refused = await client.get(LOGIN, params={"provider": "corp"})
        assert_refusal_page(refused, status=400, reason="unknown_provider")
    await middleware.aclose()


# -- a provider taken out of the configuration ----------------------------------------------------------


async def test_a_removed_providers_sessions_end() -> None:
    key = strong_secret_key()
    corp, partner = hostile_pair()
    transport = httpx.ASGITransport(app=ByHost(corp, partner))
    only_corp = PKCEConfig(providers=(provider_config("corp", corp),), secret_key=key)
    app = WhoApp()
    middleware = PKCEMiddleware(app, config=only_corp, transport=transport)
    async with browser(middleware) as client:
        # A session made at partner, sealed with this deployment's own keys (as before the restart).
        now = int(time.time())
        value = seal_session(
            middleware,
            claims={"sub": "pat", "iss": PARTNER, "aud": "partner-client"},
            provider="partner",
            created_at=now,
        )
        client.cookies.set(SESSION_COOKIE, value, domain="app.test")
        response = await client.get("/")
        # No session: with one provider left, straight to it (no choice page), and the app saw nothing.
        assert response.status_code == 302
        assert response.headers["location"].startswith(f"{CORP}/authorize?")
        assert app.seen == []
        async with make_client(middleware) as script:
            script.cookies.set(SESSION_COOKIE, value, domain="app.test")
            api = await script.get("/", headers=JSON)
            assert api.status_code == 401 and api.json()["error"] == "login_required"
        logout_page = await client.get(LOGOUT)
        assert "You are signed out" in logout_page.text

        # A session of the provider still configured opens.
        corp_session = seal_session(
            middleware, claims={"sub": "ann", "iss": CORP, "aud": "corp-client"}, provider="corp"
        )
        client.cookies.set(SESSION_COOKIE, corp_session, domain="app.test")
        assert (await client.get("/")).text == f"hello ann of {CORP}"
    await middleware.aclose()


async def test_the_remaining_providers_sessions_outlive_the_removal_of_another() -> None:
    key = strong_secret_key()
    async with open_two(secret_key=key) as two:
        await login_at(two, "corp")
        value = two.client.cookies[SESSION_COOKIE]

    async with open_two(secret_key=key, providers=lambda corp, _: (provider_config("corp", corp),)) as after:
        after.client.cookies.set(SESSION_COOKIE, value, domain="app.test")
        assert (await after.client.get("/")).text == f"hello ann of {CORP}"


async def test_a_session_of_a_renamed_provider_ends() -> None:
    """The same provider and client under a new name: a session of the old name is not taken for one of the new."""
    key = strong_secret_key()
    async with open_two(secret_key=key) as two:
        await login_at(two, "partner")
        value = two.client.cookies[SESSION_COOKIE]

    def renamed(corp: HostileProvider, partner: HostileProvider) -> tuple[ProviderConfig, ...]:
        return (
            provider_config("corp", corp),
            dataclasses.replace(provider_config("partner", partner), name="partner2"),
        )

    async with open_two(providers=renamed, secret_key=key) as after:
        assert after.config.provider_bindings == {  # the same providers and clients, under another name
            "corp": two.config.provider_bindings["corp"],  # type: ignore[index]
            "partner2": two.config.provider_bindings["partner"],  # type: ignore[index]
        }
        after.client.cookies.set(SESSION_COOKIE, value, domain="app.test")
        assert await is_signed_out(after, after.client)


# -- bearer tokens: the first provider's ---------------------------------------------------------------


async def test_bearer_tokens_are_checked_against_the_first_provider() -> None:
    resource = f"{APP_ORIGIN}/api"
    async with open_two(resource=resource, bearer_paths=("/api",)) as two:
        script = two.script()

        def bearer(hostile: HostileProvider) -> dict[str, str]:
            header = {"alg": "RS256", "typ": "at+jwt", "kid": hostile.signing_key.kid}
            token = sign_compact(header, access_token_claims(hostile.issuer, resource, "t-1"), hostile.signing_key)
            return {"Authorization": f"Bearer {token}"}

        accepted = await script.get("/api/reports", headers=bearer(two.corp))
        assert (accepted.status_code, accepted.text) == (200, f"hello alice of {CORP}")
        refused = await script.get("/api/reports", headers=bearer(two.partner))
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        metadata = await script.get("/.well-known/oauth-protected-resource/api")
        assert metadata.json()["authorization_servers"] == [CORP]


# -- code without a login: create_session ------------------------------------------------------------


async def test_create_session_with_several_providers_makes_a_session_of_the_first(two: Two) -> None:
    cookies = await two.middleware.create_session(
        claims={"sub": "ann", "iss": CORP, "aud": "corp-client"}, token={"access_token": "a" * 40, "expires_in": 300}
    )
    [cookie] = cookies
    name, _, rest = cookie.partition("=")
    two.client.cookies.set(name, rest.split(";", 1)[0], domain="app.test")
    assert (await two.client.get("/")).text == f"hello ann of {CORP}"
    assert session_in(two, two.client).provider == "corp"
