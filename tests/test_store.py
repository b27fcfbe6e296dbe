"""Sessions in the browser: timeouts, key rotation and chunking, as the browser sees them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from pkce_middleware import PKCEMiddleware
from pkce_middleware._cookie_store import MAX_CHUNK_LENGTH
from pkce_middleware._store import MAX_CHUNKS
from tests.support.site import (
    SESSION_COOKIE,
    Site,
    assert_refusal_page,
    begin_login,
    complete_login,
    hello_app,
    login,
    make_client,
    make_config,
    open_site,
    seal_session,
    session_codec,
    strong_secret_key,
)

IDLE = 600


@pytest.fixture
async def timeouts_site() -> AsyncIterator[Site]:
    """A site with a 10-minute idle timeout and a 2-hour maximum session age."""
    async with open_site(session_idle_timeout=IDLE, session_max_age=7200) as site:
        yield site


def opened(site: Site, client: httpx.AsyncClient) -> dict[str, float]:
    """The timestamps inside the browser's (unchunked) session cookie."""
    session = session_codec(site.config).open(client.cookies[SESSION_COOKIE])
    assert session is not None
    return {"last_seen": session.last_seen, "expires_at": session.expires_at, "created_at": session.created_at}


def set_session(site: Site, **fields: int) -> None:
    site.client.cookies.set(SESSION_COOKIE, seal_session(site.middleware, **fields), domain="app.test")


# -- idle and absolute timeouts ----------------------------------------------------------------------


async def test_idle_session_ends(timeouts_site: Site) -> None:
    set_session(timeouts_site, last_seen=int(time.time()) - IDLE - 1)
    assert (await timeouts_site.client.get("/")).status_code == 302


async def test_recent_activity_is_not_rewritten_on_every_request(timeouts_site: Site) -> None:
    set_session(timeouts_site, last_seen=int(time.time()) - 30)
    response = await timeouts_site.client.get("/")
    assert response.text == "hello carol"
    assert "set-cookie" not in response.headers


async def test_activity_slides_the_idle_timeout_at_most_once_a_minute(timeouts_site: Site) -> None:
    now = int(time.time())
    set_session(timeouts_site, last_seen=now - IDLE + 5, expires_at=now + 3600)
    response = await timeouts_site.client.get("/")
    assert response.text == "hello carol"
    [cookie] = response.headers.get_list("set-cookie")
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "Secure" in cookie
    assert response.headers["cache-control"] == "no-store"
    stamps = opened(timeouts_site, timeouts_site.client)
    assert stamps["last_seen"] >= now
    assert stamps["expires_at"] == now + 3600  # sliding never moves the absolute end
    second = await timeouts_site.client.get("/")
    assert "set-cookie" not in second.headers


async def test_absolute_lifetime_ends_an_active_session(timeouts_site: Site) -> None:
    now = int(time.time())
    set_session(timeouts_site, last_seen=now, expires_at=now - 1)
    assert (await timeouts_site.client.get("/")).status_code == 302


async def test_cookie_max_age_is_not_what_keeps_a_session(timeouts_site: Site) -> None:
    """A browser (or attacker) keeping the cookie past its Max-Age gains nothing: expiry is inside."""
    await login(timeouts_site.client, timeouts_site.hostile)
    value = timeouts_site.client.cookies[SESSION_COOKIE]
    later = time.time() + 7200 + 1
    original = time.time
    try:
        time.time = lambda: later  # the middleware reads the clock here
        timeouts_site.client.cookies.set(SESSION_COOKIE, value, domain="app.test")
        assert (await timeouts_site.client.get("/")).status_code == 302
    finally:
        time.time = original


# -- key rotation ------------------------------------------------------------------------------------------


async def test_rotated_key_still_opens_and_the_cookie_is_resealed() -> None:
    old, new = strong_secret_key(), strong_secret_key()
    before = PKCEMiddleware(hello_app, config=make_config(secret_key=old))
    value = seal_session(before)
    rotated = PKCEMiddleware(hello_app, config=make_config(secret_key=f"{new},{old}"))
    async with make_client(rotated) as client:
        client.cookies.set(SESSION_COOKIE, value, domain="app.test")
        response = await client.get("/")
        assert response.text == "hello carol"
        resealed = client.cookies[SESSION_COOKIE]
        assert resealed != value and session_codec(rotated.config).is_current(resealed)
        assert "set-cookie" not in (await client.get("/")).headers  # once is enough
    # Once the old key is retired, cookies sealed only with it stop working; the resealed one does not.
    retired = PKCEMiddleware(hello_app, config=make_config(secret_key=new))
    async with make_client(retired) as client:
        client.cookies.set(SESSION_COOKIE, value, domain="app.test")
        assert (await client.get("/", headers={"Accept": "application/json"})).status_code == 401
        client.cookies.set(SESSION_COOKIE, resealed, domain="app.test")
        assert (await client.get("/")).text == "hello carol"


# -- chunking ------------------------------------------------------------------------------------------------


def chunk_names(client: httpx.AsyncClient) -> list[str]:
    return sorted(name for name in client.cookies if name.startswith(f"{SESSION_COOKIE}."))


async def test_a_large_session_is_split_and_reassembled(timeouts_site: Site) -> None:
    timeouts_site.hostile.claim_overrides = {"groups": [f"group-{index:04d}-" + "x" * 40 for index in range(90)]}
    done = await login(timeouts_site.client, timeouts_site.hostile)
    assert done.status_code == 303
    assert timeouts_site.client.cookies[SESSION_COOKIE] in {f"~{n}" for n in range(2, MAX_CHUNKS + 1)}
    names = chunk_names(timeouts_site.client)
    assert len(names) == int(timeouts_site.client.cookies[SESSION_COOKIE][1:])
    for cookie in done.headers.get_list("set-cookie"):
        name, value = cookie.split(";")[0].split("=", 1)
        assert len(name) + len(value) <= 4000  # every piece fits the browser's per-cookie limit
    assert (await timeouts_site.client.get("/")).text == "hello alice"


async def test_a_missing_chunk_means_no_session(timeouts_site: Site) -> None:
    timeouts_site.hostile.claim_overrides = {"groups": ["y" * 60] * 90}
    await login(timeouts_site.client, timeouts_site.hostile)
    timeouts_site.client.cookies.delete(chunk_names(timeouts_site.client)[-1], domain="app.test")
    assert (await timeouts_site.client.get("/")).status_code == 302


@pytest.mark.parametrize("marker", ["~99999999", "~9", "~1", "~0", "~x", "~", "~-1", "~2"])
async def test_hostile_chunk_markers_mean_no_session(timeouts_site: Site, marker: str) -> None:
    timeouts_site.client.cookies.set(SESSION_COOKIE, marker, domain="app.test")
    timeouts_site.client.cookies.set(f"{SESSION_COOKIE}.0", "A" * 100, domain="app.test")
    started = time.monotonic()
    assert (await timeouts_site.client.get("/", headers={"Accept": "application/json"})).status_code == 401
    assert time.monotonic() - started < 1.0


async def test_shrinking_session_deletes_stale_chunks(timeouts_site: Site) -> None:
    # Two attempts in one browser: the large one finishes first, then the small one replaces it.
    _, small = await begin_login(timeouts_site.client, "/small")
    _, large = await begin_login(timeouts_site.client, "/large")
    timeouts_site.hostile.claim_overrides = {"groups": ["z" * 60] * 90}
    await complete_login(timeouts_site.client, timeouts_site.hostile, large)
    assert chunk_names(timeouts_site.client)
    timeouts_site.hostile.claim_overrides = {}
    response = await complete_login(timeouts_site.client, timeouts_site.hostile, small)
    assert response.status_code == 303
    assert chunk_names(timeouts_site.client) == []
    assert not timeouts_site.client.cookies[SESSION_COOKIE].startswith("~")
    assert (await timeouts_site.client.get("/")).text == "hello alice"


async def test_a_session_too_large_for_cookies_is_a_clear_error(timeouts_site: Site) -> None:
    # Under the ID token size cap, over what MAX_CHUNKS cookies can carry (the claims are sealed
    # as JSON, not as base64, so it takes more of them than the cookie's own base64 suggests).
    timeouts_site.hostile.claim_overrides = {"groups": ["w" * 100] * (MAX_CHUNKS * MAX_CHUNK_LENGTH // 138)}
    response = await login(timeouts_site.client, timeouts_site.hostile)
    assert_refusal_page(response, status=502, reason="session_too_large", site=timeouts_site)
    assert SESSION_COOKIE not in timeouts_site.client.cookies


async def test_id_token_can_be_left_out_to_keep_the_cookie_small() -> None:
    async with open_site(session_id_token=False) as small, open_site() as full:
        await login(small.client, small.hostile)
        await login(full.client, full.hostile)
        assert len(small.client.cookies[SESSION_COOKIE]) < len(full.client.cookies[SESSION_COOKIE]) - 300
        assert (await small.client.get("/")).text == "hello alice"
