"""Regression tests for issue #10: ways around the gate, each reproduced as the attacker would try it.

Findings 3 (sessions not bound to issuer and client), 5 (logout acting on dead sessions and leaking
their ID token), 8 (provider strings that crashed the middleware), and the smaller ones: long deep
links, junk flow cookies, a huge `next`, the back-channel endpoint's media type and `exp`.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import httpx
import pytest
from starlette.types import Message

from pkce_middleware import PKCEMiddleware
from pkce_middleware import _flow as flow_module
from pkce_middleware import _routes as routes_module
from tests.support.hostile_provider import REMOVE, HostileProvider
from tests.support.site import (
    APP_ORIGIN,
    FLOW_COOKIE_PREFIX,
    SESSION_COOKIE,
    Site,
    assert_logged,
    begin_login,
    hello_app,
    login,
    make_client,
    make_config,
    open_site,
    seal_session,
    strong_secret_key,
)

JSON = {"Accept": "application/json"}
SAME_ORIGIN = {"Origin": APP_ORIGIN}


# -- finding 3: two apps sharing a key --------------------------------------------------------


@pytest.mark.parametrize("other", [{"client_id": "another-client"}, {"issuer": "https://other-idp.test"}])
async def test_a_session_of_another_app_sharing_the_key_is_no_session(other: dict[str, str]) -> None:
    key = strong_secret_key()
    async with open_site(secret_key=key) as first:
        assert (await login(first.client, first.hostile)).status_code == 303
        cookie = first.client.cookies[SESSION_COOKIE]
        assert (await first.client.get("/")).text == "hello alice"

    hostile = HostileProvider(**other)
    second = PKCEMiddleware(
        hello_app, config=make_config(secret_key=key, **other), transport=httpx.ASGITransport(app=hostile)
    )
    async with second, make_client(second) as client:
        client.cookies.set(SESSION_COOKIE, cookie)
        response = await client.get("/", headers=JSON)
        assert response.status_code == 401  # the app was never called


# -- finding 5: logout and login with a dead session -------------------------------------------


async def test_logout_with_a_revoked_copy_leaks_no_id_token_and_revokes_nothing(site: Site) -> None:
    site.hostile.sid = "op-1"
    assert (await login(site.client, site.hostile)).status_code == 303
    copy = site.client.cookies[SESSION_COOKIE]
    first = await site.client.post("/auth/logout", headers=SAME_ORIGIN)
    assert first.status_code == 303 and "id_token_hint=" in first.headers["location"]

    thief = site.browser()
    thief.cookies.set(SESSION_COOKIE, copy)
    again = await thief.post("/auth/logout", headers=SAME_ORIGIN)
    assert again.status_code == 303
    assert again.headers["location"] == "/"  # home, no end-session redirect and no hint
    assert "id_token_hint" not in again.text


async def test_logout_with_an_expired_session_is_local_only(site: Site) -> None:
    site.client.cookies.set(SESSION_COOKIE, seal_session(site.middleware, expires_at=int(time.time()) - 1))
    response = await site.client.post("/auth/logout", headers=SAME_ORIGIN)
    assert (response.status_code, response.headers["location"]) == (303, "/")
    [deleted] = [c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")]
    assert "max-age=0" in deleted.lower()


async def test_the_login_path_does_not_treat_a_dead_session_as_live(site: Site) -> None:
    site.client.cookies.set(SESSION_COOKIE, seal_session(site.middleware, last_seen=int(time.time()) - 7200))
    response = await site.client.get("/auth/login?next=/reports")
    assert response.status_code == 302
    assert response.headers["location"].startswith(site.hostile.authorization_endpoint)


# -- finding 8: provider strings that are no text ---------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        {"nonce": "nonce-é"},
        {"at_hash": "hash-é"},
        {"sub": "alice\ud800"},
        {"sid": "\udfff"},
        {"groups": ["admins\ud800"]},
    ],
    ids=["non-ascii-nonce", "non-ascii-at_hash", "surrogate-sub", "surrogate-sid", "surrogate-nested"],
)
async def test_id_token_strings_no_text_can_hold_are_a_clear_502(
    site: Site, claims: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    site.hostile.claim_overrides = claims
    response = await login(site.client, site.hostile)
    assert response.status_code == 502
    assert "reason: id_token_invalid" in response.text
    assert SESSION_COOKIE not in site.client.cookies
    assert_logged(caplog, "id_token_invalid")


@pytest.mark.parametrize("member", ["access_token", "refresh_token", "token_type", "id_token"])
async def test_a_token_answer_with_a_lone_surrogate_is_a_clear_502(site: Site, member: str) -> None:
    _, params = await begin_login(site.client, "/")
    answer = {"access_token": "at", "token_type": "Bearer", "id_token": "a.b.c", "expires_in": 60, member: "x\ud800"}
    site.hostile.raw_bodies["token"] = json.dumps(answer).encode()  # "\ud800" escaped: legal JSON
    code = site.hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    query = {"code": code, "state": params["state"], "iss": site.hostile.issuer}
    response = await site.client.get("/auth/callback", params=query)
    assert response.status_code == 502
    assert "reason: token_response_invalid" in response.text


async def test_a_refresh_token_with_a_lone_surrogate_does_not_break_later_requests(site: Site) -> None:
    site.hostile.token_overrides = {"expires_in": 1}
    assert (await login(site.client, site.hostile)).status_code == 303
    site.hostile.raw_bodies["refresh"] = json.dumps(
        {"access_token": "at-2", "token_type": "Bearer", "refresh_token": "rt-\ud800", "expires_in": 300}
    ).encode()
    for _ in range(3):
        response = await site.client.get("/", headers=JSON)
        assert response.status_code in (200, 503), response.text  # served, or "try again": never a 500


async def test_a_logout_token_with_a_lone_surrogate_is_a_400(site: Site) -> None:
    token = site.hostile.logout_token(sid="op-\ud800")
    response = await site.client.post(
        "/auth/backchannel-logout",
        content=f"logout_token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (response.status_code, response.json()) == (400, {"error": "logout_token_invalid"})


# -- the smaller ones -------------------------------------------------------------------------


async def test_a_long_deep_link_still_gives_a_flow_cookie_browsers_keep(site: Site) -> None:
    target = "/reports?" + "q=" + "x" * 4000
    response = await site.client.get(target)
    assert response.status_code == 302
    [flow] = [c for c in response.headers.get_list("set-cookie") if c.startswith(FLOW_COOKIE_PREFIX)]
    assert len(flow) < 4096
    assert (await login(site.client, site.hostile, path="/other")).status_code == 303


async def test_a_long_deep_link_lands_on_its_path(site: Site) -> None:
    _, params = await begin_login(site.client, "/reports?" + "q=" + "x" * 4000)
    code = site.hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    query = {"code": code, "state": params["state"], "iss": site.hostile.issuer}
    response = await site.client.get("/auth/callback", params=query)
    assert (response.status_code, response.headers["location"]) == (303, "/reports")


async def test_thousands_of_junk_flow_cookies_get_a_bounded_answer(site: Site) -> None:
    junk = "; ".join(f"{FLOW_COOKIE_PREFIX}{index:016x}=junk" for index in range(3000))
    response = await site.client.get("/", headers={"Cookie": junk})
    assert response.status_code == 302
    deletions = [c for c in response.headers.get_list("set-cookie") if "max-age=0" in c.lower()]
    assert 0 < len(deletions) <= 16


async def test_a_megabyte_of_percent_signs_in_next_is_refused_before_any_decoding(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real_unquote, real_parse_qsl = urllib.parse.unquote, urllib.parse.parse_qsl

    def unquote(value: str) -> str:
        decoded.append(len(value))
        return real_unquote(value)

    def parse_qsl(value: str, **kwargs: Any) -> list[tuple[str, str]]:
        decoded.append(len(value))
        return real_parse_qsl(value, **kwargs)

    # The old code unquoted and regex-scanned all of it: ~0.9 s of CPU per request.
    monkeypatch.setattr(flow_module, "unquote", unquote)
    monkeypatch.setattr(routes_module, "parse_qsl", parse_qsl)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": "/auth/login",
        "raw_path": b"/auth/login",
        "query_string": b"next=/" + b"%" * 1_000_000,  # more than an HTTP client would send us
        "headers": [(b"host", b"app.test")],
    }
    await site.middleware(scope, receive, send)
    assert sent[0]["status"] == 302
    assert max(decoded) < 10_000
    flow = [v.decode() for k, v in sent[0]["headers"] if k == b"set-cookie"]
    assert flow and all(len(cookie) < 4096 for cookie in flow)


async def test_the_backchannel_endpoint_takes_the_media_type_in_any_case(site: Site) -> None:
    await login(site.client, site.hostile)
    token = site.hostile.logout_token(sub="alice")
    response = await site.client.post(
        "/auth/backchannel-logout",
        content=f"logout_token={token}",
        headers={"Content-Type": "Application/X-WWW-Form-Urlencoded; charset=UTF-8"},
    )
    assert response.status_code == 200
    assert (await site.client.get("/", headers=JSON)).status_code == 401


async def test_a_logout_token_without_exp_is_refused(site: Site) -> None:
    await login(site.client, site.hostile)
    token = site.hostile.logout_token(sub="alice", claim_overrides={"exp": REMOVE})
    response = await site.client.post(
        "/auth/backchannel-logout",
        content=f"logout_token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (response.status_code, response.json()) == (400, {"error": "logout_token_invalid"})
    assert (await site.client.get("/")).text == "hello alice"
