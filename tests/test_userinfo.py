"""`PKCE_USERINFO`: the userinfo endpoint read at login and at refresh, against the hostile provider.

Its claims join the ID token's, whose protocol claims (`iss`, `sub`, `aud`, `acr`, `auth_time`, ...)
win; an answer for another `sub`, a signed one that does not verify, an encrypted one, an error
status, a timeout or garbage refuses the login (the middleware's page, no session, the app never
called). At refresh userinfo is read again with the new access token.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pkce_middleware import ConfigError, OIDCUser, PKCEMiddleware
from tests.support.hostile_provider import (
    REMOVE,
    HostileProvider,
    deeply_nested,
    hs256_with_public_key,
    rsa_key,
    sign_compact,
    tamper_signature,
    unsigned,
)
from tests.support.site import (
    CLIENT_ID,
    SESSION_COOKIE,
    Site,
    assert_logged,
    assert_no_session,
    assert_refusal_page,
    hello_app,
    login,
    make_client,
    make_config,
    session_codec,
)


class ClaimsApp:
    """The protected app: every path answers the user (`sub`, `display_name`, `claims`) as JSON.

    `calls` records the path of every request it served: a refused login never gets here.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._app = Starlette(routes=[Route("/{path:path}", self._page)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _page(self, request: Request) -> JSONResponse:
        self.calls.append(request.url.path)
        user = request.user
        return JSONResponse({"sub": user.identity, "display_name": user.display_name, "claims": dict(user.claims)})


@contextlib.asynccontextmanager
async def open_claims_site(hostile: HostileProvider, app: ClaimsApp, **config_overrides: Any) -> AsyncIterator[Site]:
    """Like `open_site`, with `ClaimsApp` behind the middleware (0.5 s provider timeout)."""
    config = make_config(**{"http_timeout": 0.5, **config_overrides})
    middleware = PKCEMiddleware(app, config=config, transport=httpx.ASGITransport(app=hostile))
    site = Site(hostile, config, middleware, make_client(middleware))
    try:
        yield site
    finally:
        await site.client.aclose()
        await middleware.aclose()


@pytest.fixture
def hostile() -> HostileProvider:
    return HostileProvider()


@pytest.fixture
def app() -> ClaimsApp:
    return ClaimsApp()


@pytest.fixture
async def site(hostile: HostileProvider, app: ClaimsApp) -> AsyncIterator[Site]:
    """The claims app behind the middleware with `PKCE_USERINFO=true`."""
    async with open_claims_site(hostile, app, userinfo=True) as opened:
        yield opened


def jwt_payload(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


async def logged_in_user(site: Site) -> dict[str, Any]:
    """Log in, then what the app sees of the user."""
    response = await login(site.client, site.hostile, "/me")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/me"
    return await user_seen(site)


async def user_seen(site: Site) -> dict[str, Any]:
    page = await site.client.get("/me")
    assert page.status_code == 200, page.text
    data: dict[str, Any] = page.json()
    return data


async def assert_login_refused(site: Site, app: ClaimsApp, *, status: int, reason: str) -> None:
    """A whole login ends on the middleware's page for `reason`: no session, the app never called."""
    response = await login(site.client, site.hostile, "/me")
    assert_refusal_page(response, status=status, reason=reason, site=site)
    assert SESSION_COOKIE not in site.client.cookies
    await assert_no_session(site)
    assert app.calls == []


# -- claims ---------------------------------------------------------------------------------------


async def test_userinfo_claims_join_the_id_tokens(site: Site, app: ClaimsApp) -> None:
    site.hostile.userinfo_overrides = {"email": "alice@corp.test", "groups": ["staff"], "name": "Alice Userinfo"}

    user = await logged_in_user(site)

    claims = user["claims"]
    assert claims["email"] == "alice@corp.test"
    assert claims["groups"] == ["staff"]
    assert claims["name"] == "Alice Userinfo"  # userinfo's word on the user's own claims
    assert user["display_name"] == "Alice Userinfo"
    assert user["sub"] == "alice"
    # It was asked with the access token of this login, once: later requests read the session.
    assert site.hostile.userinfo_requests == [f"Bearer {site.hostile.issued_access_tokens[-1]}"]
    for _ in range(3):
        assert (await user_seen(site))["claims"]["email"] == "alice@corp.test"
    assert site.hostile.calls["userinfo"] == 1
    assert app.calls == ["/me"] * 4


async def test_userinfo_does_not_override_the_id_tokens_protocol_claims(site: Site) -> None:
    site.hostile.claim_overrides = {"acr": "urn:test:mfa", "amr": ["hwk"]}
    site.hostile.userinfo_overrides = {
        "email": "alice@corp.test",
        "acr": "urn:test:none",
        "amr": ["pwd"],
        "iss": "https://evil.test",
        "aud": "another-client",
        "auth_time": 1,
        "exp": 2_000_000_000,
        "sid": "session-of-someone-else",
        "azp": "another-client",
    }

    claims = (await logged_in_user(site))["claims"]

    id_token = jwt_payload(site.hostile.issued_id_tokens[-1])
    assert claims["email"] == "alice@corp.test"  # the merge did happen
    assert claims["acr"] == "urn:test:mfa" == id_token["acr"]
    assert claims["amr"] == ["hwk"]
    assert claims["iss"] == site.hostile.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["auth_time"] == id_token["auth_time"] != 1
    assert claims["exp"] == id_token["exp"]
    # Claims the ID token did not carry are not taken from userinfo either.
    assert "sid" not in claims
    assert "azp" not in claims


async def test_without_the_option_userinfo_is_never_asked(hostile: HostileProvider, app: ClaimsApp) -> None:
    hostile.userinfo_overrides = {"email": "alice@corp.test"}
    async with open_claims_site(hostile, app) as plain:
        user = await logged_in_user(plain)
    assert "email" not in user["claims"]  # the hostile provider's ID token has none
    assert user["display_name"] == "Alice Example"  # the ID token's name
    assert hostile.calls["userinfo"] == 0


async def test_the_users_display_name_is_userinfos_name(site: Site) -> None:
    site.hostile.claim_overrides = {"name": REMOVE, "preferred_username": "a.example"}
    site.hostile.userinfo_overrides = {"name": "Alice From Userinfo"}
    user = await logged_in_user(site)
    assert user["claims"]["preferred_username"] == "a.example"
    assert user["display_name"] == "Alice From Userinfo"


@pytest.mark.parametrize(
    ("claims", "shown"),
    [
        ({"sub": "u1", "name": "Ann Lee", "preferred_username": "alee", "email": "ann@example.test"}, "Ann Lee"),
        ({"sub": "u1", "preferred_username": "alee", "email": "ann@example.test"}, "alee"),
        ({"sub": "u1", "email": "ann@example.test"}, "ann@example.test"),
        ({"sub": "u1", "name": "", "preferred_username": "alee"}, "alee"),  # empty is no name
        ({"sub": "u1", "name": ["Ann"], "email": "ann@example.test"}, "ann@example.test"),  # nor a list
        ({"sub": "u1"}, "u1"),
    ],
)
def test_display_name_prefers_name_then_preferred_username_then_email_then_sub(
    claims: dict[str, Any], shown: str
) -> None:
    assert OIDCUser(claims).display_name == shown


# -- refused logins -------------------------------------------------------------------------------


async def test_userinfo_for_another_sub_refuses_the_login(
    site: Site, app: ClaimsApp, caplog: pytest.LogCaptureFixture
) -> None:
    site.hostile.userinfo_overrides = {"sub": "mallory", "email": "mallory@example.test"}
    await assert_login_refused(site, app, status=502, reason="userinfo_sub_mismatch")
    assert_logged(caplog, "userinfo_sub_mismatch")


@pytest.mark.parametrize(
    "sub",
    [
        pytest.param(REMOVE, id="missing"),
        pytest.param("ALICE", id="case"),
        pytest.param("alice ", id="trailing-space"),
        pytest.param(["alice"], id="list"),
        pytest.param(None, id="null"),
    ],
)
async def test_userinfo_sub_must_be_exactly_the_id_tokens(site: Site, app: ClaimsApp, sub: object) -> None:
    site.hostile.userinfo_overrides = {"sub": sub}
    await assert_login_refused(site, app, status=502, reason="userinfo_sub_mismatch")


async def test_a_signed_userinfo_answer_is_accepted(site: Site) -> None:
    site.hostile.userinfo_format = "jwt"
    site.hostile.userinfo_overrides = {"email": "alice@signed.test", "acr": "urn:test:none"}
    claims = (await logged_in_user(site))["claims"]
    assert claims["email"] == "alice@signed.test"
    assert "acr" not in claims  # the ID token has none; userinfo's is not taken
    assert claims["iss"] == site.hostile.issuer


async def test_a_signed_userinfo_answer_without_iss_and_aud_is_accepted(site: Site) -> None:
    # Core 5.3.2: they SHOULD be there; when they are not, the provider's signature is what counts.
    site.hostile.userinfo_format = "jwt"
    site.hostile.userinfo_overrides = {"iss": REMOVE, "aud": REMOVE, "email": "alice@signed.test"}
    assert (await logged_in_user(site))["claims"]["email"] == "alice@signed.test"


async def test_a_signed_userinfo_answer_for_another_sub_is_refused(site: Site, app: ClaimsApp) -> None:
    site.hostile.userinfo_format = "jwt"
    site.hostile.userinfo_overrides = {"sub": "mallory"}
    await assert_login_refused(site, app, status=502, reason="userinfo_sub_mismatch")


#: The hostile provider's signing key (the one in its JWKS), and one that is nowhere in it.
OP_KEY = rsa_key("op-key-1")
FOREIGN_KEY = rsa_key("foreign-key")


def _signed_by_foreign_key_with_our_kid(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return sign_compact({**header, "kid": OP_KEY.kid}, claims, FOREIGN_KEY)


def _tampered(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return tamper_signature(sign_compact(header, claims, OP_KEY))


#: HostileProvider attributes that make its signed userinfo answer one we must not believe.
BAD_SIGNED_ANSWERS: dict[str, dict[str, Any]] = {
    # A key the provider's JWKS does not hold: unknown kid (the JWKS is fetched again), then refused.
    "foreign_key": {"userinfo_signing_key": FOREIGN_KEY},
    # The same, claiming the provider's kid: the signature does not verify.
    "foreign_key_with_our_kid": {"userinfo_jwt_encoder": _signed_by_foreign_key_with_our_kid},
    "tampered_signature": {"userinfo_jwt_encoder": _tampered},
    "alg_none": {"userinfo_jwt_encoder": unsigned},
    "hs256_keyed_with_the_public_key": {"userinfo_jwt_encoder": hs256_with_public_key(OP_KEY)},
    "another_issuer": {"userinfo_overrides": {"iss": "https://evil.test"}},
    "another_audience": {"userinfo_overrides": {"aud": "another-client"}},
    "other_audiences_only": {"userinfo_overrides": {"aud": ["another-client", "third"]}},
    "audience_a_number": {"userinfo_overrides": {"aud": 5}},
    "audience_a_list_of_objects": {"userinfo_overrides": {"aud": [{"client": CLIENT_ID}]}},
}


@pytest.mark.parametrize("attributes", BAD_SIGNED_ANSWERS.values(), ids=BAD_SIGNED_ANSWERS.keys())
async def test_a_signed_userinfo_answer_that_does_not_verify_is_refused(
    site: Site, app: ClaimsApp, attributes: dict[str, Any]
) -> None:
    assert site.hostile.signing_key is OP_KEY
    site.hostile.userinfo_format = "jwt"
    for name, value in attributes.items():
        setattr(site.hostile, name, value)
    await assert_login_refused(site, app, status=502, reason="userinfo_invalid")


async def test_a_signed_userinfo_answer_may_name_us_among_other_audiences(site: Site) -> None:
    site.hostile.userinfo_format = "jwt"
    site.hostile.userinfo_overrides = {"aud": ["another-client", CLIENT_ID], "email": "alice@signed.test"}
    assert (await logged_in_user(site))["claims"]["email"] == "alice@signed.test"


async def test_an_encrypted_userinfo_answer_is_refused(
    site: Site, app: ClaimsApp, caplog: pytest.LogCaptureFixture
) -> None:
    site.hostile.userinfo_format = "jwe"
    await assert_login_refused(site, app, status=502, reason="userinfo_invalid")
    assert_logged(caplog, "userinfo_invalid", detail="JWE")
    assert site.hostile.calls["userinfo"] == 1


@pytest.mark.parametrize(
    ("behaviour", "status", "reason"),
    [
        ("error_500", 502, "userinfo_failed"),
        ("error_401", 502, "userinfo_failed"),
        ("hang", 504, "userinfo_timeout"),
        ("garbage", 502, "userinfo_invalid"),
    ],
)
async def test_a_failing_userinfo_endpoint_refuses_the_login(
    site: Site, app: ClaimsApp, behaviour: Any, status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    site.hostile.userinfo_behaviour = behaviour
    started = time.monotonic()
    await assert_login_refused(site, app, status=status, reason=reason)
    assert time.monotonic() - started < site.hostile.hang_seconds  # cut off, not waited for
    assert_logged(caplog, reason)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'["alice"]', id="a-list"),
        pytest.param(b'"alice"', id="a-string"),
        pytest.param(b"", id="empty"),
        pytest.param(deeply_nested(), id="nested-100000-deep"),
        pytest.param(b'{"sub": "alice", "name": "\\ud800"}', id="lone-surrogate"),
    ],
)
async def test_a_userinfo_answer_that_is_no_json_object_refuses_the_login(
    site: Site, app: ClaimsApp, body: bytes
) -> None:
    site.hostile.raw_bodies["userinfo"] = body
    await assert_login_refused(site, app, status=502, reason="userinfo_invalid")


# -- refresh --------------------------------------------------------------------------------------


def session_of(site: Site) -> Any:
    session = session_codec(site.config).open(site.client.cookies[SESSION_COOKIE])
    assert session is not None
    return session


async def login_due_for_refresh(site: Site) -> httpx.Response:
    """Log in with an access token inside the 60 s refresh margin: the next request refreshes."""
    site.hostile.token_overrides = {"expires_in": 30}
    response = await login(site.client, site.hostile, "/me")
    assert response.status_code == 303, response.text
    return response


async def test_a_refresh_reads_userinfo_again(site: Site, app: ClaimsApp) -> None:
    hostile = site.hostile
    hostile.claim_overrides = {"acr": "urn:test:mfa"}
    hostile.userinfo_overrides = {"email": "alice@old.test", "groups": ["staff"]}
    await login_due_for_refresh(site)
    assert session_of(site).claims["email"] == "alice@old.test"

    # The user changes at the provider; the next refresh brings the change.
    hostile.userinfo_overrides = {"email": "alice@new.test", "groups": REMOVE, "acr": "urn:test:none"}
    user = await user_seen(site)
    assert hostile.calls["refresh"] == 1
    assert hostile.calls["userinfo"] == 2
    assert user["claims"]["email"] == "alice@new.test"
    assert "groups" not in user["claims"]  # gone at the provider, gone here
    assert user["claims"]["acr"] == "urn:test:mfa"  # still the ID token's
    # Asked with the refreshed access token, which the session now holds.
    assert hostile.userinfo_requests[-1] == f"Bearer {hostile.issued_access_tokens[-1]}"
    assert session_of(site).access_token == hostile.issued_access_tokens[-1]
    assert session_of(site).claims["email"] == "alice@new.test"
    # Fresh now (the refreshed token lasts 300 s): neither the token endpoint nor userinfo is asked again.
    assert (await user_seen(site))["claims"]["email"] == "alice@new.test"
    assert (hostile.calls["refresh"], hostile.calls["userinfo"]) == (1, 2)
    assert app.calls == ["/me", "/me"]


async def test_a_refresh_without_a_new_id_token_reads_userinfo_again(site: Site) -> None:
    hostile = site.hostile
    hostile.refresh_issues_id_token = False  # Core 12.2: a refresh answer may carry none
    hostile.userinfo_overrides = {"email": "alice@old.test"}
    await login_due_for_refresh(site)
    first_id_token = session_of(site).id_token

    hostile.userinfo_overrides = {"email": "alice@new.test"}
    user = await user_seen(site)
    assert hostile.calls["refresh"] == 1
    assert user["claims"]["email"] == "alice@new.test"
    assert user["claims"]["iss"] == hostile.issuer  # the first ID token's protocol claims stay
    assert session_of(site).id_token == first_id_token  # no new one came


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        pytest.param({"userinfo_overrides": {"sub": "mallory"}}, "userinfo_sub_mismatch", id="another-sub"),
        pytest.param(
            {"userinfo_format": "jwt", "userinfo_signing_key": FOREIGN_KEY},
            "userinfo_invalid",
            id="signed-by-a-foreign-key",
        ),
    ],
)
async def test_userinfo_that_disowns_the_session_at_refresh_ends_it(
    site: Site, app: ClaimsApp, answer: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pkce_middleware")
    await login_due_for_refresh(site)
    for name, value in answer.items():
        setattr(site.hostile, name, value)

    response = await site.client.get("/me")

    assert site.hostile.calls["refresh"] == 1
    assert response.status_code == 302  # no session any more: a page load goes to the provider
    assert response.headers["location"].startswith(site.hostile.authorization_endpoint + "?")
    assert app.calls == []
    assert f"session ended: reason={reason} sub='alice'" in caplog.messages


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("error_500", "userinfo_failed"), ("hang", "userinfo_timeout"), ("garbage", "userinfo_invalid")],
)
async def test_a_userinfo_outage_at_refresh_keeps_the_session_and_its_new_tokens(
    site: Site, app: ClaimsApp, behaviour: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = site.hostile
    hostile.refresh_overrides = {"expires_in": 30}  # every refreshed token is due again at once
    hostile.userinfo_overrides = {"email": "alice@old.test"}
    await login_due_for_refresh(site)

    hostile.userinfo_behaviour = behaviour
    hostile.userinfo_overrides = {"email": "alice@new.test"}
    user = await user_seen(site)
    assert hostile.calls["refresh"] == 1
    assert user["claims"]["email"] == "alice@old.test"  # what userinfo said last
    # The refresh token was rotated: the session must hold the new one, or the next refresh is a replay.
    session = session_of(site)
    assert session.refresh_token == hostile.issued_refresh_tokens[-1]
    assert session.access_token == hostile.issued_access_tokens[-1]
    assert_logged(caplog, reason)

    hostile.userinfo_behaviour = "ok"
    user = await user_seen(site)
    assert hostile.calls["refresh"] == 2
    assert hostile.calls["refresh_invalid_grant"] == 0
    assert user["claims"]["email"] == "alice@new.test"
    assert app.calls == ["/me", "/me"]


# -- discovery ------------------------------------------------------------------------------------


async def test_metadata_without_a_userinfo_endpoint_fails_startup(hostile: HostileProvider) -> None:
    hostile.metadata_overrides = {"userinfo_endpoint": REMOVE}
    middleware = PKCEMiddleware(
        hello_app, config=make_config(userinfo=True), transport=httpx.ASGITransport(app=hostile)
    )
    with pytest.raises(ConfigError, match="PKCE_USERINFO") as raised:
        async with middleware:
            pass
    assert "userinfo_endpoint" in str(raised.value)


async def test_metadata_without_a_userinfo_endpoint_is_fine_without_the_option(
    hostile: HostileProvider, app: ClaimsApp
) -> None:
    hostile.metadata_overrides = {"userinfo_endpoint": REMOVE}
    async with open_claims_site(hostile, app) as plain, plain.middleware:
        assert (await logged_in_user(plain))["sub"] == "alice"


async def test_a_userinfo_endpoint_that_is_not_https_is_ignored_unless_used(
    hostile: HostileProvider, app: ClaimsApp
) -> None:
    hostile.metadata_overrides = {"userinfo_endpoint": "http://op.test/userinfo"}
    async with open_claims_site(hostile, app) as plain:
        assert (await logged_in_user(plain))["sub"] == "alice"
    async with open_claims_site(hostile, ClaimsApp(), userinfo=True) as using:
        response = await using.client.get("/me")  # discovery is read before the redirect to the provider
        assert_refusal_page(response, status=502, reason="discovery_invalid", site=using)
    assert hostile.calls["userinfo"] == 0
