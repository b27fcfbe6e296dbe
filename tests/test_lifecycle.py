"""Silent refresh and back-channel logout, with sessions in the browser (the default store)."""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import httpx
import pytest

from pkce_middleware._revocations import SKEW_MARGIN
from pkce_middleware._session import Session
from tests.support.site import (
    SESSION_COOKIE,
    Site,
    assert_logged,
    login,
    open_site,
    seal_session,
    session_codec,
)

BACKCHANNEL = "/auth/backchannel-logout"


@pytest.fixture
def carol_site(site: Site) -> Site:
    """The shared `site`, where the provider logs in carol."""
    site.hostile.sub = "carol"
    return site


def give_expiring_session(site: Site, *, expires_in: int = 5) -> str:
    """A session whose access token is inside the refresh margin, with a real refresh token."""
    refresh_token = site.hostile.issue_refresh_token(sub="carol")
    value = seal_session(site.middleware, refresh_token=refresh_token, access_expires_at=int(time.time()) + expires_in)
    site.client.cookies.set(SESSION_COOKIE, value, domain="app.test")
    return value


# -- refresh -----------------------------------------------------------------------------------------


async def test_a_due_access_token_is_refreshed_before_the_app_runs(carol_site: Site) -> None:
    give_expiring_session(carol_site)
    response = await carol_site.client.get("/")
    assert response.text == "hello carol"
    assert carol_site.hostile.calls["refresh"] == 1
    assert response.headers["cache-control"] == "no-store"
    session = session_codec(carol_site.config).open(carol_site.client.cookies[SESSION_COOKIE])
    assert session is not None
    assert session.access_token == carol_site.hostile.issued_access_tokens[-1]
    assert session.refresh_token == carol_site.hostile.issued_refresh_tokens[-1]  # rotated and kept
    assert session.access_expires_at is not None and session.access_expires_at > time.time() + 200
    # Fresh now: the next requests need nobody.
    for _ in range(3):
        assert (await carol_site.client.get("/")).text == "hello carol"
    assert carol_site.hostile.calls["refresh"] == 1


async def test_concurrent_requests_share_one_refresh(carol_site: Site) -> None:
    give_expiring_session(carol_site)
    carol_site.hostile.refresh_delay = 0.2
    responses = await asyncio.gather(*(carol_site.client.get("/") for _ in range(20)))
    assert [r.text for r in responses] == ["hello carol"] * 20
    assert carol_site.hostile.calls["refresh"] == 1
    assert carol_site.hostile.calls["refresh_invalid_grant"] == 0


async def test_a_request_still_carrying_the_old_cookie_does_not_redeem_again(carol_site: Site) -> None:
    old = give_expiring_session(carol_site)
    await carol_site.client.get("/")
    late = carol_site.browser()  # e.g. a request that left before the new cookie arrived
    late.cookies.set(SESSION_COOKIE, old, domain="app.test")
    assert (await late.get("/")).text == "hello carol"
    assert carol_site.hostile.calls["refresh"] == 1
    assert carol_site.hostile.calls["refresh_invalid_grant"] == 0


@pytest.mark.parametrize("failure", ["invalid_grant", "wrong_sub"])
async def test_a_refused_refresh_ends_the_session(
    carol_site: Site, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    give_expiring_session(carol_site)
    if failure == "invalid_grant":
        carol_site.hostile.revoke_refresh_tokens()
    else:
        carol_site.hostile.refresh_claim_overrides = {"sub": "mallory"}
    api = await carol_site.client.get("/", headers={"Accept": "application/json"})
    assert api.status_code == 401
    # The dead cookie is removed, so the next requests do not try the refresh token again.
    assert SESSION_COOKIE not in carol_site.client.cookies
    assert (await carol_site.client.get("/")).status_code == 302


@pytest.mark.parametrize("outage", ["error_500", "garbage", "hang"])
async def test_provider_outage_during_refresh_keeps_the_session(carol_site: Site, outage: str) -> None:
    async with open_site(http_timeout=0.5) as quick:
        quick.hostile.sub = "carol"
        give_expiring_session(quick, expires_in=30)
        quick.hostile.refresh_behaviour = outage  # type: ignore[assignment]
        response = await quick.client.get("/")
        assert response.text == "hello carol"  # the access token is still good: serve, refresh later
        quick.hostile.refresh_behaviour = "ok"
        assert (await quick.client.get("/")).text == "hello carol"
        assert quick.hostile.calls["refresh"] >= 1


async def test_expired_access_token_and_provider_down_is_a_clear_503(
    carol_site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    give_expiring_session(carol_site, expires_in=-5)
    carol_site.hostile.refresh_behaviour = "error_500"
    page = await carol_site.client.get("/")
    assert page.status_code == 503 and "reason: session_unavailable" in page.text
    api = await carol_site.client.get("/", headers={"Accept": "application/json"})
    assert api.status_code == 503 and api.json()["error"] == "session_unavailable"
    assert SESSION_COOKIE in carol_site.client.cookies  # not logged out by an outage
    assert_logged(caplog, "session_unavailable")
    carol_site.hostile.refresh_behaviour = "ok"
    assert (await carol_site.client.get("/")).text == "hello carol"


# -- back-channel logout -------------------------------------------------------------------------------


async def post_logout_token(site: Site, token: str, **kwargs: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=site.middleware), base_url="https://app.test") as op:
        return await op.post(BACKCHANNEL, data={"logout_token": token, **kwargs})


async def test_backchannel_logout_by_sid_ends_that_session(carol_site: Site) -> None:
    carol_site.hostile.sid = "op-session-1"
    await login(carol_site.client, carol_site.hostile)
    other = carol_site.browser()
    carol_site.hostile.sid = "op-session-2"
    await login(other, carol_site.hostile)

    response = await post_logout_token(carol_site, carol_site.hostile.logout_token(sid="op-session-1"))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert (await carol_site.client.get("/", headers={"Accept": "application/json"})).status_code == 401
    assert (await other.get("/")).text == "hello carol"  # another session of the same user stays


async def test_backchannel_logout_by_sub_ends_all_of_that_users_sessions(carol_site: Site) -> None:
    await login(carol_site.client, carol_site.hostile)
    other = carol_site.browser()
    await login(other, carol_site.hostile)
    response = await post_logout_token(carol_site, carol_site.hostile.logout_token(sub="carol"))
    assert response.status_code == 200
    for browser in (carol_site.client, other):
        assert (await browser.get("/", headers={"Accept": "application/json"})).status_code == 401
    # A login within the clock-skew margin after a `sub`-wide logout is ended too (a session the
    # provider meant to end may have been stamped that much later by a host whose clock is ahead)...
    fresh = carol_site.browser()
    await login(fresh, carol_site.hostile)
    assert (await fresh.get("/", headers={"Accept": "application/json"})).status_code == 401
    # ...and one after it is a new session and works.
    real_time = time.time
    with mock.patch.object(time, "time", lambda: real_time() + SKEW_MARGIN + 1):
        later = carol_site.browser()
        await login(later, carol_site.hostile)
        assert (await later.get("/")).text == "hello carol"


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda s: s.hostile.logout_token(claim_overrides={"nonce": "n"}), "logout_token_invalid"),
        (lambda s: s.hostile.logout_token(claim_overrides={"events": {}}), "logout_token_invalid"),
        (lambda s: s.hostile.logout_token(claim_overrides={"aud": "someone-else"}), "logout_token_invalid"),
        (lambda s: s.hostile.logout_token(claim_overrides={"iat": int(time.time()) - 7200}), "logout_token_invalid"),
        (lambda s: s.hostile.logout_token(header_overrides={"alg": "none"}), "logout_token_invalid"),
        (lambda s: s.hostile.logout_token()[:-10] + "AAAAAAAAAA", "logout_token_invalid"),
        (lambda s: "not-a-jwt", "logout_token_invalid"),
    ],
)
async def test_bad_logout_tokens_are_refused_and_end_nothing(
    carol_site: Site, make_token: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    await login(carol_site.client, carol_site.hostile)
    token = make_token(carol_site)  # type: ignore[operator]
    response = await post_logout_token(carol_site, token)
    assert response.status_code == 400
    assert response.json() == {"error": reason}
    assert response.headers["cache-control"] == "no-store"
    assert_logged(caplog, reason)
    assert (await carol_site.client.get("/")).text == "hello carol"


async def test_a_replayed_logout_token_is_refused(carol_site: Site) -> None:
    token = carol_site.hostile.logout_token(sub="carol")
    assert (await post_logout_token(carol_site, token)).status_code == 200
    replay = await post_logout_token(carol_site, token)
    assert replay.status_code == 400 and replay.json() == {"error": "logout_token_replayed"}


async def test_backchannel_endpoint_refuses_what_is_not_a_logout_form(carol_site: Site) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=carol_site.middleware), base_url="https://app.test"
    ) as op:
        assert (await op.get(BACKCHANNEL)).status_code == 405
        assert (await op.post(BACKCHANNEL, json={"logout_token": "x"})).status_code == 400
        assert (await op.post(BACKCHANNEL, data={"other": "x"})).status_code == 400
        token = carol_site.hostile.logout_token()
        doubled = await op.post(
            BACKCHANNEL,
            content=f"logout_token={token}&logout_token={token}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert doubled.status_code == 400
        huge = await op.post(
            BACKCHANNEL,
            content=b"logout_token=" + b"a" * 200_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 400


def test_a_refresh_keeps_the_original_login_time() -> None:
    """Whatever `auth_time` a refreshed ID token says (some providers send the latest login), the
    session's stays the first login's: `max_age` rules then date the login that made the session."""
    session = Session.new(
        claims={"sub": "alice", "auth_time": 1000, "sid": "s1"},
        token={"access_token": "a", "id_token": "i"},
        scopes=("openid",),
        now=1000.0,
        max_age=3600,
    )
    refreshed = session.refreshed({"access_token": "b", "id_token": "j"}, {"sub": "alice", "auth_time": 1500}, 1600)
    assert refreshed.claims["auth_time"] == 1000 and refreshed.claims["sid"] == "s1"
