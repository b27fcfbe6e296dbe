"""The middleware as an OAuth 2.0 resource server, in process: what an API client sees.

A `HostileProvider` plays the authorization server: its signing key signs RFC 9068 access tokens,
and `AuthServer` adds an RFC 7662 introspection endpoint that answers from a table of opaque tokens
(or fails on request). The app behind the middleware records every request it gets and answers
with what it saw of the caller, so each test asserts both sides: the status, `WWW-Authenticate`
and JSON a client gets, and that a refused request never reached the app.

Real providers (oidc-provider's tokens, introspection, DPoP) are tested in `test_bearer_real.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc.jwk import ECKey, Key
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pkce_middleware import (
    ConfigError,
    PKCEConfig,
    PKCEMiddleware,
    Require,
    TokenCredentials,
    TokenUser,
    get_credentials,
    get_user,
)
from pkce_middleware._bearer import DPOP_ALGORITHMS, AccessTokenValidator, TokenInfo
from pkce_middleware._resource import Mode
from tests.support.hostile_provider import (
    REMOVE,
    HostileProvider,
    TokenRequest,
    access_token_claims,
    hs256_with_public_key,
    rsa_key,
    sign_compact,
    tamper_signature,
    unsigned,
)
from tests.support.oauth_clients import dpop_key, dpop_proof
from tests.support.site import APP_ORIGIN, CLIENT_ID, CLIENT_SECRET, SESSION_COOKIE, make_config, seal_session
from tests.support.websocket import handshake

RESOURCE = "https://app.test/api"
METADATA_PATH = "/.well-known/oauth-protected-resource"
METADATA_URL = f"{APP_ORIGIN}{METADATA_PATH}/api"
BEARER = f'Bearer realm="{RESOURCE}", resource_metadata="{METADATA_URL}"'
DPOP = f'DPoP algs="{" ".join(DPOP_ALGORITHMS)}"'
#: What a browser sends when it loads a page (the only requests ever redirected to a login).
NAVIGATION = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}

IntrospectionBehaviour = Literal[
    "ok", "error_500", "garbage", "hang", "no_active", "unreachable", "unsupported_token_type", "invalid_client"
]


def challenge(error: str, description: str, *, scope: str | None = None, base: str = BEARER) -> str:
    """A challenge with an RFC 6750 section 3 error (the description is the body's `message`)."""
    value = f'{base}, error="{error}", error_description="{description}"'
    return value if scope is None else f'{value}, scope="{scope}"'


class AuthServer(HostileProvider):
    """The hostile provider as an authorization server: it signs JWT access tokens for `RESOURCE`,
    and its introspection endpoint answers for the opaque tokens in `active` (else inactive)."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata_overrides["introspection_endpoint"] = f"{self.issuer}/introspect"
        #: Opaque token -> the members of its (active) introspection answer.
        self.active: dict[str, dict[str, Any]] = {}
        self.introspection_behaviour: IntrospectionBehaviour = "ok"
        self.introspection_requests: list[TokenRequest] = []
        #: Seconds each introspection takes, and the most that were in flight at once.
        self.introspection_delay = 0.0
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/introspect":
            response = await self._introspect(Request(scope, receive))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        return access_token_claims(self.issuer, RESOURCE, secrets.token_urlsafe(12), overrides)

    def access_token(self, *, header: Mapping[str, Any] | None = None, key: Key | None = None, **claims: Any) -> str:
        """A JWT access token (RFC 9068), signed with the provider's key unless `key` is given."""
        key = self.signing_key if key is None else key
        full = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid, **(header or {})}
        return sign_compact({k: v for k, v in full.items() if v is not REMOVE}, self.claims(**claims), key)

    def opaque_token(self, **claims: Any) -> str:
        """An opaque token that introspection says is active, with these claims."""
        token = secrets.token_urlsafe(32)
        self.active[token] = self.claims(**claims)
        return token

    async def _introspect(self, request: Request) -> Response:
        self.calls["introspect"] += 1
        form = parse_qs((await request.body()).decode(), keep_blank_values=True)
        self.introspection_requests.append(
            TokenRequest(form, request.headers.get("authorization"), request.headers.get("content-type"))
        )
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.introspection_delay)
        finally:
            self.in_flight -= 1
        behaviour = self.introspection_behaviour
        if behaviour == "unsupported_token_type":
            return JSONResponse({"error": "unsupported_token_type"}, status_code=400)
        if behaviour == "invalid_client":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if behaviour == "hang":
            await asyncio.sleep(self.hang_seconds)
        elif behaviour == "error_500":
            return PlainTextResponse("Internal Server Error", status_code=500)
        elif behaviour == "garbage":
            return Response(b"<html>\x00 not json", media_type="application/json")
        elif behaviour == "no_active":
            return JSONResponse({"sub": "alice"})
        answer = self.active.get(form.get("token", [""])[0])
        return JSONResponse({"active": False} if answer is None else {"active": True, **answer})


class Transport(httpx.AsyncBaseTransport):
    """The provider in process; its introspection endpoint unreachable when it is asked to be."""

    def __init__(self, server: AuthServer) -> None:
        self._server = server
        self._asgi = httpx.ASGITransport(app=server)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._server.introspection_behaviour == "unreachable" and request.url.path == "/introspect":
            raise httpx.ConnectError("connection refused", request=request)
        return await self._asgi.handle_async_request(request)


def recording_app(seen: list[Scope]) -> ASGIApp:
    """Answers with what it saw of the caller, as JSON (HTTP) or one text message (WebSocket)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        user, credentials = get_user(scope), get_credentials(scope)
        seen_here: dict[str, Any] = {
            "user": type(scope["user"]).__name__,
            "auth": type(scope["auth"]).__name__,
            "identity": user.identity if user is not None else None,
            "claims": dict(user.claims) if user is not None else None,
            "scopes": list(scope["auth"].scopes),
        }
        if credentials is not None:
            seen_here["access_token"] = credentials.access_token
            seen_here["expires_at"] = credentials.expires_at
        if isinstance(credentials, TokenCredentials):
            seen_here["client_id"] = credentials.client_id
            seen_here["dpop_bound"] = credentials.dpop_bound
            seen_here["token_claims"] = dict(credentials.claims)
        if scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps(seen_here)})
            await send({"type": "websocket.close", "code": 1000})
            return
        await JSONResponse(seen_here)(scope, receive, send)

    return app


@dataclasses.dataclass
class Api:
    server: AuthServer
    middleware: PKCEMiddleware
    #: An API client (JSON), on the app's origin.
    client: httpx.AsyncClient
    #: The scope of every request that reached the app.
    seen: list[Scope]

    async def get(self, path: str = "/api/items", token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.client.get(path, headers=headers, **kwargs)

    def session_cookie(self, sub: str = "carol") -> dict[str, str]:
        claims = {"sub": sub, "name": sub.title(), "iss": self.server.issuer}
        return {"Cookie": f"{SESSION_COOKIE}={seal_session(self.middleware, claims=claims)}"}


@contextlib.asynccontextmanager
async def open_api(
    *,
    server: AuthServer | None = None,
    app: ASGIApp | None = None,
    modes: Mapping[str, Mode] | None = None,
    rules: Mapping[str, Require] | None = None,
    **overrides: Any,
) -> AsyncIterator[Api]:
    server = server if server is not None else AuthServer()
    seen: list[Scope] = []
    settings: dict[str, Any] = {"bearer_paths": ("/api",), "resource": RESOURCE}
    settings.update(overrides)
    middleware = PKCEMiddleware(
        app if app is not None else recording_app(seen),
        config=make_config(**settings),
        transport=Transport(server),
        modes=modes,
        rules=rules,
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=middleware),
        base_url=APP_ORIGIN,
        follow_redirects=False,
        headers={"Accept": "application/json"},
    )
    try:
        yield Api(server, middleware, client, seen)
    finally:
        await client.aclose()
        await middleware.aclose()


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with open_api() as opened:
        yield opened


def assert_refused(
    response: httpx.Response,
    api: Api,
    *,
    status: int,
    reason: str,
    error: str,
    challenges: list[str] | None = None,
    secrets_: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A refusal as a client sees it: JSON, never cached, never a redirect; the app not called."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert "location" not in response.headers
    body: dict[str, Any] = response.json()
    assert body == {"error": error, "reason": reason, "message": body["message"]}
    assert isinstance(body["message"], str) and body["message"]
    if challenges is not None:
        assert response.headers.get_list("www-authenticate") == challenges
    for secret in secrets_:
        assert secret not in response.text
        assert not any(secret in value for value in response.headers.values())
    assert api.seen == []
    return body


# -- no token, a session cookie, and the answers' shape ----------------------------------------


async def test_without_a_token_a_401_points_at_the_metadata(api: Api) -> None:
    response = await api.get()
    body = assert_refused(
        response, api, status=401, reason="bearer_missing", error="unauthorized", challenges=[BEARER, DPOP]
    )
    assert body["message"] == "This resource needs an access token."


@pytest.mark.parametrize(
    "headers",
    [NAVIGATION, {"Accept": "text/html"}, {"Accept": "*/*"}],
    ids=["navigation", "accept-html", "curl"],
)
async def test_a_bearer_path_never_redirects(api: Api, headers: dict[str, str]) -> None:
    response = await api.get("/api/page", headers=headers)
    assert_refused(response, api, status=401, reason="bearer_missing", error="unauthorized")
    assert api.server.calls["authorize"] == 0


async def test_a_session_cookie_alone_is_not_enough(api: Api) -> None:
    response = await api.get(headers={**api.session_cookie(), "Accept": "text/html"})
    assert_refused(response, api, status=401, reason="bearer_missing", error="unauthorized", challenges=[BEARER, DPOP])
    assert "set-cookie" not in response.headers


async def test_another_scheme_is_no_token(api: Api) -> None:
    response = await api.get(headers={"Authorization": "Basic YWdlbnQ6c2VjcmV0"})
    assert_refused(response, api, status=401, reason="bearer_missing", error="unauthorized", challenges=[BEARER, DPOP])


async def test_a_token_on_a_session_path_is_not_a_login(api: Api) -> None:
    """Outside the bearer paths a token opens nothing: the usual 401 (or redirect) for no session."""
    response = await api.get("/page", api.server.access_token())
    assert response.status_code == 401
    assert response.json()["error"] == "login_required"
    assert api.seen == []


# -- a valid JWT access token --------------------------------------------------------------------


async def test_a_valid_jwt_access_token_reaches_the_app_as_its_caller(api: Api) -> None:
    token = api.server.access_token(email="alice@example.com")
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    response = await api.get(token=token)
    assert response.status_code == 200, response.text
    assert "set-cookie" not in response.headers
    assert response.json() == {
        "user": "TokenUser",
        "auth": "TokenCredentials",
        "identity": "alice",
        "claims": claims,
        "scopes": ["api:read", "api:write"],
        "access_token": token,
        "expires_at": claims["exp"],
        "client_id": "agent",
        "dpop_bound": False,
        "token_claims": claims,
    }
    (scope,) = api.seen
    assert isinstance(scope["user"], TokenUser) and scope["user"].is_authenticated
    assert scope["user"].display_name == "alice@example.com"
    assert repr(scope["user"]) == "TokenUser(identity='alice')"
    assert token not in repr(scope["auth"])


@pytest.mark.parametrize(
    "value",
    ["bearer {}", "BEARER {}", "Bearer    {}   "],
    ids=["lowercase-scheme", "uppercase-scheme", "extra-spaces"],
)
async def test_the_scheme_is_case_insensitive_and_spaces_are_tolerated(api: Api, value: str) -> None:
    response = await api.get(headers={"Authorization": value.format(api.server.access_token())})
    assert response.status_code == 200, response.text
    assert response.json()["identity"] == "alice"


async def test_an_audience_list_that_names_the_resource_is_accepted(api: Api) -> None:
    response = await api.get(token=api.server.access_token(aud=["https://other.test", RESOURCE]))
    assert response.status_code == 200, response.text


async def test_starlettes_requires_checks_the_tokens_scopes() -> None:
    @requires("api:read")
    async def read(request: Request) -> Response:
        return PlainTextResponse(f"read by {request.user.identity}")

    @requires(["api:read", "api:admin"])
    async def admin(request: Request) -> Response:
        return PlainTextResponse("admin")

    app = Starlette(routes=[Route("/api/read", read), Route("/api/admin", admin)])
    async with open_api(app=app) as api:
        token = api.server.access_token(scope="api:read")
        read_response = await api.get("/api/read", token)
        assert (read_response.status_code, read_response.text) == (200, "read by alice")
        assert (await api.get("/api/admin", token)).status_code == 403


# -- header edge cases ----------------------------------------------------------------------------


async def test_two_authorization_headers_are_a_400(api: Api) -> None:
    token = api.server.access_token()
    response = await api.client.get("/api/items", headers=[("Authorization", f"Bearer {token}")] * 2)
    body = assert_refused(response, api, status=400, reason="bearer_malformed", error="invalid_request")
    assert response.headers.get_list("www-authenticate") == [challenge("invalid_request", body["message"]), DPOP]


@pytest.mark.parametrize(
    "value",
    ["Bearer a b", "Bearer a,b", 'Bearer "abc"', "Bearer abc=def", "Bearer ", "Bearer " + "a" * 20000],
    ids=["space", "comma", "quoted", "padding-inside", "empty", "huge"],
)
async def test_a_malformed_header_is_a_400(api: Api, value: str) -> None:
    response = await api.get(headers={"Authorization": value})
    body = assert_refused(response, api, status=400, reason="bearer_malformed", error="invalid_request")
    assert response.headers.get_list("www-authenticate") == [challenge("invalid_request", body["message"]), DPOP]
    assert "aaaa" not in response.text


# -- bad tokens ---------------------------------------------------------------------------------


def _bad_tokens(server: AuthServer) -> dict[str, tuple[str, str]]:
    """Each bad token, and the reason code it is refused with."""
    now = int(time.time())
    key = server.signing_key
    header = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid}
    return {
        "expired": (server.access_token(exp=now - 120), "bearer_expired"),
        "other-audience": (server.access_token(aud="https://other.test/api"), "bearer_audience"),
        "audience-list-without-us": (server.access_token(aud=["https://a.test", "https://b.test"]), "bearer_audience"),
        "resource-prefix": (server.access_token(aud="https://app.test/api-v2"), "bearer_audience"),
        "other-issuer": (server.access_token(iss="https://evil.test"), "bearer_invalid"),
        "alg-none": (unsigned(header, server.claims()), "bearer_invalid"),
        "hs256-public-key": (hs256_with_public_key(rsa_key("op-key-1"))(header, server.claims()), "bearer_invalid"),
        "tampered": (tamper_signature(server.access_token()), "bearer_invalid"),
        "foreign-key": (server.access_token(key=rsa_key("attacker"), header={"kid": key.kid}), "bearer_invalid"),
        "nbf-future": (server.access_token(nbf=now + 3600), "bearer_invalid"),
        "exp-string": (server.access_token(exp=str(now + 300)), "bearer_invalid"),
        "no-sub": (server.access_token(sub=REMOVE), "bearer_invalid"),
        "no-client-id": (server.access_token(client_id=REMOVE), "bearer_invalid"),
        "scope-list": (server.access_token(scope=["api:read"]), "bearer_invalid"),
    }


BAD_TOKENS = list(_bad_tokens(AuthServer()))


@pytest.mark.parametrize("case", BAD_TOKENS)
async def test_a_bad_jwt_is_a_401_invalid_token(api: Api, case: str, caplog: pytest.LogCaptureFixture) -> None:
    token, reason = _bad_tokens(api.server)[case]
    response = await api.get(token=token)
    body = assert_refused(response, api, status=401, reason=reason, error="invalid_token", secrets_=(token,))
    assert response.headers.get_list("www-authenticate") == [challenge("invalid_token", body["message"]), DPOP]
    logged = [record.getMessage() for record in caplog.records if record.name == "pkce_middleware"]
    assert any(f"reason={reason}" in message for message in logged), logged
    signature = token.split(".")[2]
    assert not any(token in message or (signature and signature in message) for message in logged)


async def test_an_id_token_is_not_an_access_token(api: Api) -> None:
    """Typed `JWT`, it is not verified locally: introspection is asked and does not know it."""
    id_token = api.server.id_token_for("nonce", "alice", "at")
    response = await api.get(token=id_token)
    assert_refused(response, api, status=401, reason="bearer_inactive", error="invalid_token", secrets_=(id_token,))
    assert api.server.calls["introspect"] == 1


async def test_an_id_token_retyped_as_an_access_token_names_no_resource(api: Api) -> None:
    api.server.header_overrides = {"typ": "at+jwt"}
    id_token = api.server.id_token_for("nonce", "alice", "at")
    response = await api.get(token=id_token)
    assert_refused(response, api, status=401, reason="bearer_audience", error="invalid_token")


async def test_a_logout_token_is_not_an_access_token(api: Api) -> None:
    logout_token = api.server.logout_token(claim_overrides={"aud": RESOURCE})
    response = await api.get(token=logout_token)
    assert_refused(response, api, status=401, reason="bearer_inactive", error="invalid_token")


async def test_without_introspection_a_non_jwt_token_is_invalid() -> None:
    server = AuthServer()
    server.metadata_overrides = {}
    async with open_api(server=server) as api:
        for token in ("opaque-token", server.id_token_for("nonce", "alice", "at"), server.logout_token()):
            response = await api.get(token=token)
            assert_refused(response, api, status=401, reason="bearer_invalid", error="invalid_token")


# -- verification cost: the cache and the provider's keys ----------------------------------------


async def test_a_verified_token_is_cached(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    validations: list[str] = []
    validate = AccessTokenValidator.validate

    def counting(self: AccessTokenValidator, raw: str, keys: Any, *, now: float) -> TokenInfo:
        validations.append(raw)
        return validate(self, raw, keys, now=now)

    monkeypatch.setattr(AccessTokenValidator, "validate", counting)
    token, other = api.server.access_token(), api.server.access_token(sub="bob")
    for _ in range(3):
        assert (await api.get(token=token)).json()["identity"] == "alice"
    assert (await api.get(token=other)).json()["identity"] == "bob"
    assert validations == [token, other]
    assert (api.server.calls["discovery"], api.server.calls["jwks"]) == (1, 1)


async def test_a_cached_token_still_expires() -> None:
    async with open_api(clock_leeway=0) as api:
        assert (await api.get(token=api.server.access_token())).status_code == 200  # discovery and keys loaded
        exp = time.time() + 0.3
        token = api.server.access_token(exp=exp)
        assert (await api.get(token=token)).status_code == 200
        await asyncio.sleep(exp - time.time() + 0.02)
        api.seen.clear()
        assert_refused(await api.get(token=token), api, status=401, reason="bearer_expired", error="invalid_token")


async def test_an_unknown_kid_refetches_the_keys_at_most_once_a_minute(api: Api) -> None:
    assert (await api.get(token=api.server.access_token())).status_code == 200
    assert api.server.calls["jwks"] == 1
    stranger = rsa_key("stranger")
    for _ in range(3):
        response = await api.get(token=api.server.access_token(key=stranger))
        assert response.status_code == 401
        assert response.json()["reason"] == "bearer_invalid"
    assert api.server.calls["jwks"] == 2
    # The known key still works without another fetch.
    assert (await api.get(token=api.server.access_token())).status_code == 200
    assert api.server.calls["jwks"] == 2


async def test_a_rotated_key_is_fetched_once(api: Api) -> None:
    assert (await api.get(token=api.server.access_token())).status_code == 200
    api.server.rotate_key("op-key-2")
    for _ in range(2):
        response = await api.get(token=api.server.access_token())
        assert response.status_code == 200, response.text
    assert api.server.calls["jwks"] == 2


@pytest.mark.parametrize("failing", ["jwks", "discovery"])
async def test_keys_that_cannot_be_fetched_are_a_503(failing: str) -> None:
    server = AuthServer()
    if failing == "jwks":
        server.jwks_behaviour = "error_500"
    else:
        server.raw_bodies["discovery"] = b"[]"
    async with open_api(server=server) as api:
        token = api.server.access_token()
        response = await api.get(token=token)
        assert_refused(response, api, status=503, reason=response.json()["reason"], error="temporarily_unavailable")
        assert response.json()["reason"] == ("jwks_failed" if failing == "jwks" else "discovery_invalid")
        assert response.headers["retry-after"] == "5"
        assert response.headers.get_list("www-authenticate") == [BEARER, DPOP]  # no error: the token may be fine


# -- opaque tokens: introspection ---------------------------------------------------------------


async def test_an_opaque_token_is_introspected_with_the_clients_credentials(api: Api) -> None:
    token = api.server.opaque_token(sub=REMOVE, client_id="machine", scope="api:read")
    response = await api.get(token=token)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert (seen["identity"], seen["client_id"], seen["scopes"]) == ("machine", "machine", ["api:read"])
    assert "active" not in seen["claims"]
    (request,) = api.server.introspection_requests
    assert request.form == {"token": [token], "token_type_hint": ["access_token"]}
    assert request.content_type == "application/x-www-form-urlencoded"
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert request.authorization == f"Basic {basic}"


@pytest.mark.parametrize("method", ["client_secret_post", "none"])
async def test_introspection_authenticates_as_the_client_is_configured(method: str) -> None:
    overrides: dict[str, Any] = {"token_endpoint_auth_method": method}
    if method == "none":
        overrides["client_secret"] = None
    async with open_api(**overrides) as api:
        token = api.server.opaque_token()
        assert (await api.get(token=token)).status_code == 200
        (request,) = api.server.introspection_requests
        assert request.authorization is None
        expected = {"token": [token], "token_type_hint": ["access_token"], "client_id": [CLIENT_ID]}
        if method == "client_secret_post":
            expected["client_secret"] = [CLIENT_SECRET]
        assert request.form == expected


async def test_an_introspection_answer_is_cached(api: Api) -> None:
    token = api.server.opaque_token()
    for _ in range(3):
        assert (await api.get(token=token)).status_code == 200
    assert api.server.calls["introspect"] == 1


async def test_a_revoked_token_is_refused_once_the_ttl_is_over() -> None:
    async with open_api(introspection_cache_ttl=1) as api:
        token = api.server.opaque_token()
        assert (await api.get(token=token)).status_code == 200
        del api.server.active[token]  # revoked at the provider
        assert (await api.get(token=token)).status_code == 200  # within the TTL: the cached answer
        assert api.server.calls["introspect"] == 1
        await asyncio.sleep(1.05)
        api.seen.clear()
        assert_refused(await api.get(token=token), api, status=401, reason="bearer_inactive", error="invalid_token")
        assert api.server.calls["introspect"] == 2


async def test_a_ttl_of_zero_asks_every_time() -> None:
    async with open_api(introspection_cache_ttl=0) as api:
        token = api.server.opaque_token()
        for _ in range(3):
            assert (await api.get(token=token)).status_code == 200
        assert api.server.calls["introspect"] == 3


async def test_an_introspection_answer_is_never_cached_past_the_tokens_exp() -> None:
    async with open_api(clock_leeway=0) as api:
        assert (await api.get(token=api.server.opaque_token())).status_code == 200  # discovery loaded
        exp = time.time() + 0.3
        token = api.server.opaque_token(exp=exp)
        assert (await api.get(token=token)).status_code == 200
        await asyncio.sleep(exp - time.time() + 0.02)
        api.seen.clear()
        assert_refused(await api.get(token=token), api, status=401, reason="bearer_expired", error="invalid_token")
        assert api.server.calls["introspect"] == 3


async def test_an_answer_already_past_exp_within_the_leeway_is_not_cached(api: Api) -> None:
    token = api.server.opaque_token(exp=int(time.time()) - 10)
    for _ in range(2):
        assert (await api.get(token=token)).status_code == 200
    assert api.server.calls["introspect"] == 2


async def test_an_inactive_token_is_a_401(api: Api) -> None:
    response = await api.get(token="unknown-opaque-token")
    body = assert_refused(response, api, status=401, reason="bearer_inactive", error="invalid_token")
    assert response.headers.get_list("www-authenticate") == [challenge("invalid_token", body["message"]), DPOP]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://other.test"}, "bearer_audience"),
        ({"aud": REMOVE}, "bearer_audience"),
        ({"iss": "https://evil.test"}, "bearer_invalid"),
        ({"exp": int(time.time()) - 3600}, "bearer_expired"),
        ({"client_id": REMOVE}, "bearer_invalid"),
    ],
    ids=["other-audience", "no-audience", "other-issuer", "expired", "no-client"],
)
async def test_an_active_answer_is_still_checked(api: Api, claims: dict[str, Any], reason: str) -> None:
    response = await api.get(token=api.server.opaque_token(**claims))
    assert_refused(response, api, status=401, reason=reason, error="invalid_token")


@pytest.mark.parametrize("behaviour", ["error_500", "garbage", "no_active", "unreachable", "hang", "invalid_client"])
async def test_introspection_down_is_a_503_not_a_401(behaviour: IntrospectionBehaviour) -> None:
    async with open_api(http_timeout=0.3) as api:
        token = api.server.opaque_token()
        api.server.introspection_behaviour = behaviour
        response = await api.get(token=token)
        body = assert_refused(
            response,
            api,
            status=503,
            reason="introspection_unavailable",
            error="temporarily_unavailable",
            challenges=[BEARER, DPOP],
        )
        assert body["message"] == "The token could not be checked right now. Please try again shortly."
        assert response.headers["retry-after"] == "5"
        # Nothing was cached: once the provider is back, the same token works.
        api.server.introspection_behaviour = "ok"
        assert (await api.get(token=token)).status_code == 200


async def test_a_token_the_provider_refuses_to_introspect_is_invalid_not_an_outage(api: Api) -> None:
    """RFC 7662 section 2.3: a 400 with an OAuth error is the provider's verdict on this token."""
    api.server.introspection_behaviour = "unsupported_token_type"
    token = api.server.opaque_token()
    assert_refused(await api.get(token=token), api, status=401, reason="bearer_invalid", error="invalid_token")


async def test_introspections_in_flight_are_bounded(api: Api) -> None:
    """A flood of unknown opaque strings costs the provider a bounded number of calls at a time."""
    api.server.introspection_delay = 0.05
    responses = await asyncio.gather(*(api.get(token=f"unknown-{n}") for n in range(40)))
    assert {response.status_code for response in responses} == {401}
    assert api.server.calls["introspect"] == 40
    assert 1 < api.server.most_in_flight <= 16


# -- required scopes -------------------------------------------------------------------------------


async def test_a_missing_required_scope_is_a_403_naming_the_scopes_required() -> None:
    async with open_api(bearer_required_scopes=("api:read", "api:write")) as api:
        response = await api.get(token=api.server.access_token(scope="api:read openid"))
        body = assert_refused(response, api, status=403, reason="insufficient_scope", error="insufficient_scope")
        assert response.headers.get_list("www-authenticate") == [
            challenge("insufficient_scope", body["message"], scope="api:read api:write"),
            DPOP,
        ]
        assert (await api.get(token=api.server.access_token(scope="openid api:write api:read"))).status_code == 200


# -- DPoP (RFC 9449) ----------------------------------------------------------------------------


ITEMS = f"{APP_ORIGIN}/api/items"


def dpop_headers(token: str, proof: str) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


@pytest.fixture
def key() -> ECKey:
    return dpop_key()


async def test_a_bound_token_with_its_proof_is_accepted(api: Api, key: ECKey) -> None:
    token = api.server.access_token(cnf={"jkt": key.thumbprint()})
    response = await api.get(headers=dpop_headers(token, dpop_proof(key, "GET", ITEMS, access_token=token)))
    assert response.status_code == 200, response.text
    assert response.json()["dpop_bound"] is True
    # A fresh proof each time; the verified token itself is cached.
    again = await api.get(headers=dpop_headers(token, dpop_proof(key, "GET", ITEMS, access_token=token)))
    assert again.status_code == 200


async def test_the_proof_may_carry_the_query_and_matches_post(api: Api, key: ECKey) -> None:
    token = api.server.access_token(cnf={"jkt": key.thumbprint()})
    proof = dpop_proof(key, "GET", ITEMS + "?page=2", access_token=token)
    assert (await api.get("/api/items?page=2", headers=dpop_headers(token, proof))).status_code == 200
    proof = dpop_proof(key, "POST", ITEMS, access_token=token)
    response = await api.client.post("/api/items", headers=dpop_headers(token, proof), content=b"{}")
    assert response.status_code == 200, response.text


async def test_a_bound_token_sent_as_a_bearer_token_is_refused(api: Api, key: ECKey) -> None:
    token = api.server.access_token(cnf={"jkt": key.thumbprint()})
    for headers in (
        {"Authorization": f"Bearer {token}"},
        {"Authorization": f"Bearer {token}", "DPoP": dpop_proof(key, "GET", ITEMS, access_token=token)},
    ):
        response = await api.get(headers=headers)
        body = assert_refused(response, api, status=401, reason="dpop_required", error="invalid_token")
        assert response.headers.get_list("www-authenticate") == [challenge("invalid_token", body["message"]), DPOP]


async def test_an_unbound_token_sent_as_dpop_is_refused(api: Api, key: ECKey) -> None:
    token = api.server.access_token()
    response = await api.get(headers=dpop_headers(token, dpop_proof(key, "GET", ITEMS, access_token=token)))
    assert_refused(response, api, status=401, reason="bearer_invalid", error="invalid_token")


def _bad_proofs(key: ECKey, token: str) -> dict[str, str]:
    now = int(time.time())
    public = key.as_dict(private=False)
    claims = {"jti": secrets.token_urlsafe(12), "htm": "GET", "htu": ITEMS, "iat": now}
    good = dpop_proof(key, "GET", ITEMS, access_token=token)
    return {
        "another-host": dpop_proof(key, "GET", "https://evil.test/api/items", access_token=token),
        "another-path": dpop_proof(key, "GET", f"{APP_ORIGIN}/api/other", access_token=token),
        "another-method": dpop_proof(key, "DELETE", ITEMS, access_token=token),
        "another-token": dpop_proof(key, "GET", ITEMS, access_token="some-other-token"),
        "no-ath": dpop_proof(key, "GET", ITEMS),
        "too-old": dpop_proof(key, "GET", ITEMS, access_token=token, iat=now - 300),
        "from-the-future": dpop_proof(key, "GET", ITEMS, access_token=token, iat=now + 300),
        "another-key": dpop_proof(dpop_key(), "GET", ITEMS, access_token=token),
        "typ-jwt": dpop_proof(key, "GET", ITEMS, access_token=token, typ="JWT"),
        "alg-none": unsigned({"typ": "dpop+jwt", "jwk": public}, claims),
        "private-jwk": sign_compact({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=True)}, claims, key),
        "tampered": tamper_signature(good),
        "garbage": "not-a-proof",
    }


@pytest.mark.parametrize("case", list(_bad_proofs(dpop_key(), "t")))
async def test_a_bad_proof_is_refused(api: Api, key: ECKey, case: str) -> None:
    token = api.server.access_token(cnf={"jkt": key.thumbprint()})
    response = await api.get(headers=dpop_headers(token, _bad_proofs(key, token)[case]))
    body = assert_refused(response, api, status=401, reason="dpop_invalid", error="invalid_dpop_proof")
    assert response.headers.get_list("www-authenticate") == [
        BEARER,
        challenge("invalid_dpop_proof", body["message"], base=DPOP),
    ]


async def test_a_missing_proof_is_refused(api: Api, key: ECKey) -> None:
    token = api.server.access_token(cnf={"jkt": key.thumbprint()})
    response = await api.get(headers={"Authorization": f"DPoP {token}"})
    assert_refused(response, api, status=401, reason="dpop_invalid", error="invalid_dpop_proof")


async def test_a_proof_is_used_once(api: Api, key: ECKey) -> None:
    token = api.server.access_token(cnf={"jkt": key.thumbprint()})
    proof = dpop_proof(key, "GET", ITEMS, access_token=token)
    assert (await api.get(headers=dpop_headers(token, proof))).status_code == 200
    api.seen.clear()
    response = await api.get(headers=dpop_headers(token, proof))
    body = assert_refused(response, api, status=401, reason="dpop_replayed", error="invalid_dpop_proof")
    assert response.headers.get_list("www-authenticate")[1] == challenge(
        "invalid_dpop_proof", body["message"], base=DPOP
    )


async def test_a_bound_opaque_token_needs_its_proof_too(api: Api, key: ECKey) -> None:
    token = api.server.opaque_token(cnf={"jkt": key.thumbprint()})
    api.server.active[token]["token_type"] = "DPoP"
    assert_refused(await api.get(token=token), api, status=401, reason="dpop_required", error="invalid_token")
    response = await api.get(headers=dpop_headers(token, dpop_proof(key, "GET", ITEMS, access_token=token)))
    assert response.status_code == 200, response.text
    assert response.json()["dpop_bound"] is True


async def test_with_dpop_off_nothing_is_advertised_and_bound_tokens_are_refused(key: ECKey) -> None:
    async with open_api(dpop=False) as api:
        response = await api.get()
        assert_refused(response, api, status=401, reason="bearer_missing", error="unauthorized", challenges=[BEARER])
        token = api.server.access_token(cnf={"jkt": key.thumbprint()})
        for headers in (
            dpop_headers(token, dpop_proof(key, "GET", ITEMS, access_token=token)),
            {"Authorization": f"Bearer {token}"},
        ):
            response = await api.get(headers=headers)
            body = assert_refused(response, api, status=401, reason="bearer_invalid", error="invalid_token")
            assert response.headers.get_list("www-authenticate") == [challenge("invalid_token", body["message"])]
        metadata = (await api.client.get(f"{METADATA_PATH}/api")).json()
        assert "dpop_signing_alg_values_supported" not in metadata
        # Two DPoP headers: a DPoP error, told on the Bearer challenge since there is no other.
        plain = api.server.access_token()
        response = await api.client.get(
            "/api/items", headers=[("Authorization", f"Bearer {plain}"), ("DPoP", "a.b.c"), ("DPoP", "a.b.c")]
        )
        body = assert_refused(response, api, status=401, reason="dpop_invalid", error="invalid_dpop_proof")
        assert response.headers.get_list("www-authenticate") == [challenge("invalid_dpop_proof", body["message"])]


# -- the metadata document (RFC 9728) -------------------------------------------------------------


@pytest.mark.parametrize("path", [f"{METADATA_PATH}/api", METADATA_PATH])
async def test_the_metadata_document(path: str) -> None:
    async with open_api(bearer_required_scopes=("api:read",)) as api:
        response = await api.client.get(path, headers={"Accept": "*/*"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "public, max-age=3600"
        assert response.json() == {
            "resource": RESOURCE,
            "authorization_servers": [api.server.issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["api:read"],
            "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
        }
        assert (await api.client.head(path)).status_code == 200
        refused = await api.client.post(path)
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
        assert api.seen == []
        assert api.server.calls["discovery"] == 0  # nothing asked of the provider


async def test_a_resource_without_a_path_has_one_metadata_url() -> None:
    async with open_api(resource=APP_ORIGIN) as api:
        response = await api.get()
        assert response.headers.get_list("www-authenticate")[0] == (
            f'Bearer realm="{APP_ORIGIN}", resource_metadata="{APP_ORIGIN}{METADATA_PATH}"'
        )
        metadata = await api.client.get(METADATA_PATH)
        assert metadata.json()["resource"] == APP_ORIGIN
        assert "scopes_supported" not in metadata.json()


async def test_a_resource_with_a_trailing_slash_is_found_both_ways() -> None:
    """RFC 9728 section 3.1 keeps a path's terminating slash: a client asks for `.../api/`."""
    async with open_api(resource=RESOURCE + "/") as api:
        for path in (f"{METADATA_PATH}/api/", f"{METADATA_PATH}/api", METADATA_PATH):
            response = await api.client.get(path)
            assert response.status_code == 200, path
            assert response.json()["resource"] == RESOURCE + "/"


async def test_the_metadata_needs_no_token_even_when_every_path_is_a_bearer_path() -> None:
    async with open_api(bearer_paths=("/",), resource=APP_ORIGIN) as api:
        assert (await api.client.get(METADATA_PATH)).status_code == 200
        assert (await api.get("/")).status_code == 401


# -- per-path modes --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def either_api() -> AsyncIterator[Api]:
    async with open_api(bearer_paths=(), modes={"/api": "bearer", "/both": "either"}) as api:
        yield api


async def test_modes_in_code_make_bearer_paths() -> None:
    async with either_api() as api:
        assert_refused(await api.get(), api, status=401, reason="bearer_missing", error="unauthorized")
        assert (await api.get(token=api.server.access_token())).status_code == 200


async def test_either_takes_a_browser_session() -> None:
    async with either_api() as api:
        response = await api.get("/both/report", headers={**api.session_cookie("carol"), "Accept": "text/html"})
        assert response.status_code == 200, response.text
        seen = response.json()
        assert (seen["user"], seen["auth"], seen["identity"]) == ("OIDCUser", "OIDCCredentials", "carol")


async def test_either_takes_a_token() -> None:
    async with either_api() as api:
        response = await api.get("/both/report", api.server.access_token())
        assert (response.status_code, response.json()["user"], response.json()["identity"]) == (
            200,
            "TokenUser",
            "alice",
        )


async def test_on_either_a_token_wins_over_a_session_and_nothing_mixes() -> None:
    async with either_api() as api:
        token = api.server.access_token(scope="api:read")
        response = await api.get("/both/report", token, headers=api.session_cookie("carol"))
        assert response.status_code == 200, response.text
        seen = response.json()
        assert (seen["user"], seen["identity"], seen["scopes"]) == ("TokenUser", "alice", ["api:read"])
        assert seen["access_token"] == token
        assert "carol" not in response.text
        assert "set-cookie" not in response.headers


async def test_on_either_a_bad_token_is_refused_even_beside_a_session() -> None:
    async with either_api() as api:
        bad = api.server.access_token(aud="https://other.test")
        response = await api.get("/both/report", bad, headers={**api.session_cookie("carol"), "Accept": "text/html"})
        assert_refused(response, api, status=401, reason="bearer_audience", error="invalid_token")


async def test_on_either_without_anything_a_browser_is_sent_to_log_in() -> None:
    async with either_api() as api:
        page = await api.get("/both/report", headers=NAVIGATION)
        assert page.status_code == 302
        assert page.headers["location"].startswith(api.server.authorization_endpoint + "?")
        script = await api.get("/both/report")
        assert (script.status_code, script.json()["error"]) == (401, "login_required")
        assert api.seen == []


@pytest.mark.parametrize(
    "path", ["/api/%2e%2e/page", "/page/%2E%2E/api/items", "//api/items"], ids=["out-of", "into", "double-slash"]
)
async def test_a_path_that_resolves_across_modes_is_a_400(api: Api, path: str) -> None:
    # An absolute URL: httpx would drop the double slash of a path joined to its base URL.
    response = await api.get(APP_ORIGIN + path, api.server.access_token(), headers=api.session_cookie())
    assert_refused(response, api, status=400, reason="bearer_malformed", error="invalid_request")


# -- authorization rules for token callers ---------------------------------------------------------


async def test_a_path_rule_refuses_a_token_caller_with_a_403() -> None:
    async with open_api(rules={"/api/admin": Require(groups=["admins"])}) as api:
        response = await api.get("/api/admin", api.server.access_token(groups=["staff"]))
        assert response.status_code == 403
        assert "location" not in response.headers
        body = response.json()
        assert (body["error"], body["reason"]) == ("access_denied", "group_not_allowed")
        assert response.headers.get_list("www-authenticate") == [challenge("insufficient_scope", body["message"]), DPOP]
        assert api.seen == []
        ok = await api.get("/api/admin", api.server.access_token(groups=["admins"]))
        assert ok.status_code == 200, ok.text


async def test_the_global_email_rule_applies_to_token_callers() -> None:
    async with open_api(allowed_email_domains=("example.com",)) as api:
        unverified = await api.get(token=api.server.access_token(email="alice@example.com"))
        assert (unverified.status_code, unverified.json()["reason"]) == (403, "email_unverified")
        elsewhere = await api.get(token=api.server.access_token(email="mallory@evil.test", email_verified=True))
        assert (elsewhere.status_code, elsewhere.json()["reason"]) == (403, "email_not_allowed")
        assert api.seen == []
        ok = await api.get(token=api.server.access_token(email="alice@example.com", email_verified=True))
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("headers", [{}, NAVIGATION], ids=["api-client", "navigation"])
async def test_a_step_up_rule_is_an_rfc9470_401_never_a_redirect(headers: dict[str, str]) -> None:
    rules = {"/api/mfa": Require(acr_values=["mfa"]), "/api/fresh": Require(max_age=60)}
    async with open_api(rules=rules) as api:
        response = await api.get("/api/mfa", api.server.access_token(acr="pwd"), headers=headers)
        assert response.status_code == 401
        assert "location" not in response.headers
        assert response.headers["www-authenticate"] == (
            'Bearer error="insufficient_user_authentication", '
            'error_description="A stronger login is required", acr_values="mfa"'
        )
        old = api.server.access_token(auth_time=int(time.time()) - 3600)
        response = await api.get("/api/fresh", old, headers=headers)
        assert response.status_code == 401
        assert "location" not in response.headers
        assert response.headers["www-authenticate"].endswith("max_age=60")
        assert api.seen == []
        ok = await api.get("/api/mfa", api.server.access_token(acr="mfa"), headers=headers)
        assert ok.status_code == 200, ok.text


# -- WebSockets ---------------------------------------------------------------------------------------


async def test_a_websocket_without_a_token_is_refused_before_it_opens(api: Api) -> None:
    sent = await handshake(api.middleware, "/api/stream", denial_extension=True)
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 403
    assert json.loads(sent[1]["body"])["error"] == "bearer_missing"
    assert not [m for m in sent if m["type"] == "websocket.accept"]
    assert api.seen == []

    closed = await handshake(api.middleware, "/api/stream")
    assert closed == [{"type": "websocket.close", "code": 1008, "reason": "bearer missing"}]


async def test_a_websocket_with_a_session_cookie_only_is_refused(api: Api) -> None:
    cookie = api.session_cookie()["Cookie"].encode()
    sent = await handshake(api.middleware, "/api/stream", [(b"cookie", cookie)], denial_extension=True)
    assert sent[0]["status"] == 403
    assert api.seen == []


async def test_a_websocket_with_a_token_opens_for_its_caller(api: Api) -> None:
    token = api.server.access_token()
    authorization = (b"authorization", f"Bearer {token}".encode())
    sent = await handshake(api.middleware, "/api/stream", [authorization], denial_extension=True)
    assert sent[0] == {"type": "websocket.accept"}
    seen = json.loads(sent[1]["text"])
    assert (seen["user"], seen["identity"], seen["client_id"]) == ("TokenUser", "alice", "agent")


async def test_a_websocket_refused_by_a_rule_never_opens() -> None:
    async with open_api(rules={"/api": Require(groups=["admins"])}) as api:
        token = api.server.access_token()
        authorization = (b"authorization", f"Bearer {token}".encode())
        sent = await handshake(api.middleware, "/api/stream", [authorization], denial_extension=True)
        assert sent[0]["status"] == 403
        assert json.loads(sent[1]["body"])["error"] == "group_not_allowed"
        assert api.seen == []


# -- configuration -------------------------------------------------------------------------------------


def test_bearer_paths_need_a_resource() -> None:
    with pytest.raises(ConfigError, match="PKCE_RESOURCE is required when PKCE_BEARER_PATHS is set"):
        make_config(bearer_paths=("/api",))
    environ = {
        "PKCE_ISSUER": "https://op.test",
        "PKCE_CLIENT_ID": CLIENT_ID,
        "PKCE_SECRET_KEY": secrets.token_urlsafe(48),
        "PKCE_BEARER_PATHS": "/api",
    }
    with pytest.raises(ConfigError, match="PKCE_RESOURCE"):
        PKCEConfig.from_environ(environ)


def test_modes_in_code_need_a_resource_too() -> None:
    with pytest.raises(ConfigError, match="PKCE_RESOURCE is required"):
        PKCEMiddleware(recording_app([]), config=make_config(), modes={"/api": "bearer"})
    with pytest.raises(ConfigError, match="PKCE_RESOURCE is required"):
        PKCEMiddleware(recording_app([]), config=make_config(), modes={"/both": "either"})
    # Sessions only: nothing to check tokens against, and nothing needed.
    PKCEMiddleware(recording_app([]), config=make_config(), modes={"/page": "session"})


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ("ftp://app.test/api", "PKCE_RESOURCE must be an absolute http(s) URL"),
        ("/api", "PKCE_RESOURCE must be an absolute http(s) URL"),
        ("https://app.test/api#frag", "PKCE_RESOURCE must be an absolute http(s) URL without a fragment"),
        ("http://app.example/api", "PKCE_RESOURCE must use https"),
        ("https://app.test/api?v=1", "PKCE_RESOURCE must not have a query"),
        ("https://例え.test/api", "PKCE_RESOURCE must be an ASCII URI"),
        ("https://app.test/ä", "PKCE_RESOURCE must be an ASCII URI"),
        ('https://app.test/a"b', "PKCE_RESOURCE must be an ASCII URI"),
        ("https://app.test/a b", "PKCE_RESOURCE must be an ASCII URI"),
        ("https://app.test/a\\b", "PKCE_RESOURCE must be an ASCII URI"),
    ],
    ids=["ftp", "relative", "fragment", "plain-http", "query", "idn", "non-ascii-path", "quote", "space", "backslash"],
)
def test_a_bad_resource_is_named(resource: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(bearer_paths=("/api",), resource=resource)
    assert str(caught.value).startswith(message)


def test_a_loopback_resource_may_use_http() -> None:
    assert make_config(resource="http://127.0.0.1:8000/mcp").resource == "http://127.0.0.1:8000/mcp"


@pytest.mark.parametrize("ttl", [-1, 3601])
def test_the_introspection_ttl_range(ttl: int) -> None:
    with pytest.raises(ConfigError, match="PKCE_INTROSPECTION_CACHE_TTL must be between 0 and 3600 seconds"):
        make_config(introspection_cache_ttl=ttl)


@pytest.mark.parametrize(
    "scope", ["api read", 'api:"read"', "api\\read", ""], ids=["space", "quote", "backslash", "empty"]
)
def test_required_scopes_must_fit_in_a_challenge(scope: str) -> None:
    with pytest.raises(ConfigError, match="PKCE_BEARER_REQUIRED_SCOPES must hold scope names"):
        make_config(bearer_required_scopes=(scope,))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PKCE_INTROSPECTION_CACHE_TTL", "soon", "PKCE_INTROSPECTION_CACHE_TTL is not a valid int"),
        ("PKCE_INTROSPECTION_CACHE_TTL", "7200", "PKCE_INTROSPECTION_CACHE_TTL must be between"),
        ("PKCE_DPOP", "maybe", "PKCE_DPOP is not a valid bool"),
        ("PKCE_BEARER_PATHS", "api", "PKCE_BEARER_PATHS must hold absolute paths"),
        ("PKCE_BEARER_REQUIRED_SCOPES", "api read", "PKCE_BEARER_REQUIRED_SCOPES must hold scope names"),
        ("PKCE_RESOURCE", "app.test/api", "PKCE_RESOURCE must be an absolute http(s) URL"),
    ],
)
def test_bad_environment_values_name_their_variable(variable: str, value: str, message: str) -> None:
    environ = {
        "PKCE_ISSUER": "https://op.test",
        "PKCE_CLIENT_ID": CLIENT_ID,
        "PKCE_SECRET_KEY": secrets.token_urlsafe(48),
        "PKCE_RESOURCE": RESOURCE,
        variable: value,
    }
    with pytest.raises(ConfigError) as caught:
        PKCEConfig.from_environ(environ)
    assert str(caught.value).startswith(message)


def test_the_environment_configures_the_resource_server() -> None:
    config = PKCEConfig.from_environ(
        {
            "PKCE_ISSUER": "https://op.test",
            "PKCE_CLIENT_ID": CLIENT_ID,
            "PKCE_SECRET_KEY": secrets.token_urlsafe(48),
            "PKCE_BEARER_PATHS": "/api,/mcp",
            "PKCE_RESOURCE": RESOURCE,
            "PKCE_BEARER_REQUIRED_SCOPES": "api:read,api:write",
            "PKCE_INTROSPECTION_CACHE_TTL": "0",
            "PKCE_DPOP": "false",
        }
    )
    assert config.bearer_paths == ("/api", "/mcp")
    assert config.resource == RESOURCE
    assert config.bearer_required_scopes == ("api:read", "api:write")
    assert (config.introspection_cache_ttl, config.dpop) == (0, False)


@pytest.mark.parametrize("modes", [{"/api": "token"}, {"api": "bearer"}], ids=["unknown-mode", "relative-path"])
def test_bad_modes_are_a_config_error(modes: Any) -> None:
    with pytest.raises(ConfigError, match="modes"):
        PKCEMiddleware(recording_app([]), config=make_config(resource=RESOURCE), modes=modes)


async def test_on_either_a_script_with_nothing_learns_both_ways_in() -> None:
    async with either_api() as api:
        response = await api.get("/both/items")
        assert response.status_code == 401
        assert response.json()["error"] == "login_required"
        challenges = response.headers.get_list("www-authenticate")
        assert challenges[0].startswith('Cookie realm="pkce_middleware"')
        assert challenges[1:] == [BEARER, DPOP]  # an agent finds the metadata here too
        assert api.seen == []


async def test_a_public_path_under_a_bearer_path_stays_public_and_never_takes_a_session() -> None:
    async with open_api(public_paths=("/api/health",)) as api:
        anonymous = await api.get("/api/health", headers=api.session_cookie("carol"))
        assert anonymous.status_code == 200
        assert api.seen[-1]["user"].is_authenticated is False  # the cookie is not a login here
        token = api.server.access_token()
        served = await api.get("/api/health", token=token)
        assert served.status_code == 200 and api.seen[-1]["user"].is_authenticated is True
        assert (await api.get("/api/items")).status_code == 401  # the rest of /api still needs a token
