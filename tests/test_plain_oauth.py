"""A plain OAuth 2.0 provider (GitHub-like): no discovery, no ID token, identity from its profile.

`PKCE_AUTHORIZATION_ENDPOINT`, `PKCE_TOKEN_ENDPOINT` and `PKCE_USERINFO_ENDPOINT` replace
`PKCE_ISSUER`; `PKCE_USER_ID_CLAIM` names the profile member that identifies the user (GitHub's
is the number `id`). PKCE S256 and a single-use state still hold.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pkce_middleware import ConfigError, PKCEMiddleware
from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.hostile_provider import HostileProvider
from tests.support.site import (
    CALLBACK_PATH,
    SESSION_COOKIE,
    RecordingApp,
    assert_logged,
    begin_login,
    make_client,
    make_config,
)

PROFILE = {"id": 583231, "login": "octocat", "name": "The Octocat", "email": None}


def plain_config(hostile: HostileProvider, **overrides: Any) -> dict[str, Any]:
    return {
        "issuer": "",
        "authorization_endpoint": hostile.authorization_endpoint,
        "token_endpoint": f"{hostile.issuer}/token",
        "userinfo_endpoint": f"{hostile.issuer}/userinfo",
        "user_id_claim": "id",
        "scopes": ("read:user", "user:email"),
        **overrides,
    }


Plain = tuple[HostileProvider, PKCEMiddleware, httpx.AsyncClient, RecordingApp]


@contextlib.asynccontextmanager
async def plain_site(
    **overrides: Any,
) -> AsyncIterator[tuple[HostileProvider, PKCEMiddleware, httpx.AsyncClient, RecordingApp]]:
    hostile = HostileProvider()
    hostile.userinfo_overrides = dict(PROFILE)
    app = RecordingApp()
    middleware = PKCEMiddleware(
        app, config=make_config(**plain_config(hostile, **overrides)), transport=httpx.ASGITransport(app=hostile)
    )
    async with middleware, make_client(middleware) as client:
        yield hostile, middleware, client, app


async def finish(client: httpx.AsyncClient, hostile: HostileProvider, params: dict[str, str]) -> httpx.Response:
    code = hostile.issue_code(nonce="", challenge=params["code_challenge"])
    return await client.get(CALLBACK_PATH, params={"code": code, "state": params["state"]})


async def test_a_login_at_a_plain_provider_takes_the_user_from_the_profile() -> None:
    async with plain_site() as (hostile, _, client, app):
        _, params = await begin_login(client, "/repos")
        assert params["scope"] == "read:user user:email"  # no `openid`: this is no OpenID provider
        assert "nonce" not in params
        assert params["code_challenge_method"] == "S256"
        landed = await finish(client, hostile, params)
        assert landed.status_code == 303 and landed.headers["location"] == "/repos"
        page = await client.get("/repos")
        assert page.text == "hello 583231"  # GitHub's numeric id, as a string
        assert hostile.userinfo_requests[-1] is not None and hostile.userinfo_requests[-1].startswith("Bearer ")
        assert app.calls == ["/repos"]


async def test_no_id_token_is_kept_even_if_the_provider_sends_one() -> None:
    async with plain_site() as (hostile, middleware, client, _):
        _, params = await begin_login(client)
        await finish(client, hostile, params)
        seen: dict[str, Any] = {}

        async def spy(scope: Any, receive: Any, send: Any) -> None:
            seen["auth"] = scope["auth"]
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        middleware.app = spy
        await client.get("/")
        assert seen["auth"].id_token == ""  # never validated, so never offered as an id_token_hint
        assert seen["auth"].access_token


@pytest.mark.parametrize(
    ("behaviour", "overrides", "reason"),
    [
        ("error_500", {}, "userinfo_failed"),
        ("ok", {"id": None}, "userinfo_invalid"),
        ("garbage", {}, "userinfo_invalid"),
    ],
    ids=["profile-down", "no-id", "garbage"],
)
async def test_a_profile_that_names_nobody_gives_no_session(
    behaviour: str, overrides: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with plain_site() as (hostile, _, client, app):
        hostile.userinfo_behaviour = behaviour  # type: ignore[assignment]
        hostile.userinfo_overrides.update(overrides)
        _, params = await begin_login(client)
        refused = await finish(client, hostile, params)
        assert refused.status_code == 502
        assert f"reason: {reason}" in refused.text
        assert not any(
            v.startswith(SESSION_COOKIE + "=") for v in refused.headers.get_list("set-cookie") if "Max-Age=0" not in v
        )
        assert_logged(caplog, reason)
        assert app.calls == []


async def test_signing_out_is_local_when_the_provider_has_no_end_session() -> None:
    async with plain_site() as (hostile, _, client, _):
        _, params = await begin_login(client)
        await finish(client, hostile, params)
        out = await client.post("/auth/logout", headers={"Origin": "https://app.test", **BROWSER_HEADERS})
        assert out.status_code == 303 and out.headers["location"] == "/"
        assert (await client.get("/", headers=BROWSER_HEADERS)).status_code == 302


async def test_a_callback_naming_an_issuer_is_refused() -> None:
    async with plain_site() as (hostile, _, client, _):
        _, params = await begin_login(client)
        code = hostile.issue_code(nonce="", challenge=params["code_challenge"])
        refused = await client.get(CALLBACK_PATH, params={"code": code, "state": params["state"], "iss": "https://x"})
        assert refused.status_code == 400 and "reason: iss_mismatch" in refused.text


async def test_a_configured_issuer_is_the_iss_its_answers_must_carry() -> None:
    """RFC 9207 at a plain provider that sends `iss` (django-oauth-toolkit does): `PKCE_ISSUER`
    beside the endpoints names it, without any discovery."""
    async with plain_site(issuer="https://op.test") as (hostile, _, client, _):
        _, params = await begin_login(client)
        code = hostile.issue_code(nonce="", challenge=params["code_challenge"])
        landed = await client.get(CALLBACK_PATH, params={"code": code, "state": params["state"], "iss": hostile.issuer})
        assert landed.status_code == 303
        assert (await client.get("/")).text == "hello 583231"
        assert hostile.calls.get("discovery", 0) == 0
    async with plain_site(issuer="https://op.test") as (hostile, _, client, _):
        _, params = await begin_login(client)
        code = hostile.issue_code(nonce="", challenge=params["code_challenge"])
        refused = await client.get(
            CALLBACK_PATH, params={"code": code, "state": params["state"], "iss": "https://other.test"}
        )
        assert refused.status_code == 400 and "reason: iss_mismatch" in refused.text


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"issuer": "http://op.example"}, "PKCE_ISSUER"),
        ({"token_endpoint": None}, "PKCE_TOKEN_ENDPOINT"),
        ({"userinfo_endpoint": None}, "PKCE_USERINFO_ENDPOINT"),
        ({"token_endpoint": "http://evil.example/token"}, "PKCE_TOKEN_ENDPOINT"),
        ({"resource": "https://app.test/api"}, "PKCE_RESOURCE"),
    ],
)
def test_a_plain_provider_is_configured_whole_or_not_at_all(overrides: dict[str, Any], variable: str) -> None:
    hostile = HostileProvider()
    with pytest.raises(ConfigError, match=variable):
        make_config(**plain_config(hostile, **overrides))


def test_neither_an_issuer_nor_endpoints_names_both_ways() -> None:
    with pytest.raises(ConfigError, match=r"PKCE_ISSUER is required.*PKCE_AUTHORIZATION_ENDPOINT"):
        make_config(issuer="")
