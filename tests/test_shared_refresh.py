"""Cookie sessions on several replicas: a refresh is single-flight across processes (issue #14, 5a).

Two middlewares with one configuration, each with its own store and Redis client, share one
redis-server and one `HostileProvider` that rotates refresh tokens and refuses a reused one: two
replicas behind a load balancer. `PKCE_REVOCATION_STORE` is what turns the coordination on. The
last test runs two real app processes against panva's oidc-provider, which rotates refresh tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import httpx
import pytest
import redis.asyncio

from pkce_middleware import RefreshBusy
from pkce_middleware._cookie_store import CookieStore
from pkce_middleware._crypto import Sealer
from pkce_middleware._redis import redis_key
from pkce_middleware._redis_revocations import SharedRevocations
from pkce_middleware._session import Session, SessionCodec
from pkce_middleware._shared_refresh import SharedRefresh
from pkce_middleware._store import refresh_key
from tests.support.hostile_provider import HostileProvider
from tests.support.oidc_provider import LocalProvider, login_with_forms
from tests.support.processes import free_port
from tests.support.real_apps import app_client, app_env
from tests.support.redis_server import RedisServer
from tests.support.servers import app_server
from tests.support.site import (
    SESSION_COOKIE,
    Site,
    assert_logged,
    make_config,
    open_site,
    seal_session,
    session_codec,
    strong_secret_key,
)

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}


@pytest.fixture
async def inspector(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A separate client to look into (and plant keys in) the replicas' Redis."""
    client = redis.asyncio.from_url(redis_server.url)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def open_replicas(url: str, **overrides: Any) -> AsyncIterator[tuple[Site, Site]]:
    """Two replicas of one app (same configuration and keys) in front of one provider, where carol logs in."""
    hostile = HostileProvider()
    hostile.sub = "carol"
    key = strong_secret_key()
    async with (
        open_site(hostile, revocation_store=url, secret_key=key, **overrides) as one,
        open_site(hostile, revocation_store=url, secret_key=key, **overrides) as two,
    ):
        yield one, two


def expired_cookie(site: Site) -> str:
    """Carol's session with an access token that expired 5 s ago and a live, single-use refresh token."""
    return seal_session(
        site.middleware,
        id=secrets.token_urlsafe(24),
        refresh_token=site.hostile.issue_refresh_token(sub="carol"),
        access_expires_at=int(time.time()) - 5,
    )


def browser_with(site: Site, cookie: str) -> httpx.AsyncClient:
    """A browser (a tab, or a request still in flight) on `site` carrying `cookie`."""
    browser = site.browser()
    browser.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
    return browser


def redis_keys(site: Site, cookie: str) -> tuple[str, str]:
    """The refresh lock's and the refresh result's keys for the session in `cookie`."""
    session = session_codec(site.config).open(cookie)
    assert session is not None
    key = refresh_key(session)
    return redis_key("refresh-lock", key), redis_key("refresh-result", key)


def shared_refresh(site: Site) -> SharedRefresh:
    store = cast(CookieStore, site.middleware._parts.store)
    assert store._shared_refresh is not None
    return store._shared_refresh


async def until(condition: Callable[[], Awaitable[object]], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


# -- through two replicas ----------------------------------------------------------------------------


async def test_concurrent_requests_on_two_replicas_redeem_the_refresh_token_once(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with open_replicas(redis_server.url) as (one, two):
        hostile = one.hostile
        hostile.refresh_delay = 0.3  # a slow token endpoint: every request arrives during the refresh
        cookie = expired_cookie(one)
        browsers = [browser_with(one if index % 2 else two, cookie) for index in range(20)]
        responses = await asyncio.gather(*(browser.get("/") for browser in browsers))
        assert [response.text for response in responses] == ["hello carol"] * 20
        assert hostile.calls["refresh"] == 1
        assert hostile.calls["refresh_invalid_grant"] == 0  # the rotated-out token was never replayed

        # Every request got a cookie with the new tokens, and each works on both replicas, as is.
        codec = session_codec(one.config)
        new_cookies = {browser.cookies[SESSION_COOKIE] for browser in browsers}
        assert cookie not in new_cookies
        for value in new_cookies:
            session = codec.open(value)
            assert session is not None
            assert session.refresh_token == hostile.issued_refresh_tokens[-1]
            assert session.access_token == hostile.issued_access_tokens[-1]
            for site in (one, two):
                assert (await browser_with(site, value).get("/")).text == "hello carol"
        assert hostile.calls["refresh"] == 1

        # Redis: the lock is gone; the result is kept a minute, sealed, and opens as no cookie.
        lock, result = redis_keys(one, cookie)
        assert not await inspector.exists(lock)
        sealed = cast("bytes | None", await inspector.get(result))
        assert sealed is not None and 0 < await inspector.pttl(result) <= 60_000
        assert codec.open(sealed.decode()) is None
        for token in (*hostile.issued_refresh_tokens, *hostile.issued_access_tokens):
            assert token.encode() not in sealed


async def test_a_request_arriving_after_the_other_replica_refreshed_takes_its_result(
    redis_server: RedisServer,
) -> None:
    async with open_replicas(redis_server.url) as (one, two):
        cookie = expired_cookie(one)
        assert (await browser_with(one, cookie).get("/")).text == "hello carol"
        # A request that left the browser before the new cookie came back, routed to the other replica.
        late = browser_with(two, cookie)
        assert (await late.get("/")).text == "hello carol"
        assert one.hostile.calls["refresh"] == 1
        assert one.hostile.calls["refresh_invalid_grant"] == 0
        session = session_codec(two.config).open(late.cookies[SESSION_COOKIE])
        assert session is not None and session.refresh_token == one.hostile.issued_refresh_tokens[-1]


async def test_when_the_refreshing_replica_fails_the_other_answers_the_same_within_its_bound(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with open_replicas(redis_server.url, http_timeout=0.5) as (one, two):
        hostile = one.hostile
        hostile.refresh_behaviour = "hang"  # each token call times out after 0.5 s (a provider outage)
        cookie = expired_cookie(one)
        lock, _ = redis_keys(one, cookie)
        first = asyncio.create_task(browser_with(one, cookie).get("/", headers=JSON))
        await until(lambda: inspector.exists(lock))  # replica one holds the lock and is refreshing
        started = time.monotonic()
        second = await browser_with(two, cookie).get("/", headers=JSON)
        waited = time.monotonic() - started
        # The documented answer to an outage once the access token has expired: a 503, not a logout.
        for response in (await first, second):
            assert response.status_code == 503
            assert response.json()["error"] == "session_unavailable"
            assert not [c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)]
        # Two waited for one to let go (a failed refresh stores no result), then tried itself.
        assert waited < 3.0
        assert hostile.calls["refresh"] == 2
        assert not await inspector.exists(lock)

        hostile.refresh_behaviour = "ok"  # the provider is back: the same cookie still works
        assert (await browser_with(two, cookie).get("/")).text == "hello carol"
        assert hostile.calls["refresh_invalid_grant"] == 0


async def test_a_lock_left_by_a_replica_that_died_is_taken_over_when_it_expires(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with open_replicas(redis_server.url) as (one, _):
        cookie = expired_cookie(one)
        lock, _ = redis_keys(one, cookie)
        await inspector.set(lock, "a replica that died mid-refresh", px=400)
        started = time.monotonic()
        assert (await browser_with(one, cookie).get("/")).text == "hello carol"
        assert 0.3 < time.monotonic() - started < 3.0
        assert one.hostile.calls["refresh"] == 1


async def test_a_disconnecting_client_does_not_abort_the_refresh(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with open_replicas(redis_server.url) as (one, two):
        hostile = one.hostile
        hostile.refresh_delay = 0.3
        cookie = expired_cookie(one)
        lock, result = redis_keys(one, cookie)
        leaving = asyncio.create_task(browser_with(one, cookie).get("/"))
        await until(lambda: inspector.exists(lock))
        leaving.cancel()  # the client goes away while its request holds the lock and refreshes
        with pytest.raises(asyncio.CancelledError):
            await leaving
        # The refresh went on: the token was redeemed once and its result is there for the other replica.
        assert (await browser_with(two, cookie).get("/")).text == "hello carol"
        assert hostile.calls["refresh"] == 1
        assert hostile.calls["refresh_invalid_grant"] == 0
        await until(lambda: inspector.get(result))
        await until(lambda: _missing(inspector, lock))


async def _missing(client: redis.asyncio.Redis, key: str) -> bool:
    return not await client.exists(key)


async def test_a_result_of_another_session_is_not_used(
    redis_server: RedisServer, inspector: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_replicas(redis_server.url) as (one, _):
        cookie = expired_cookie(one)
        _, result = redis_keys(one, cookie)
        carol = session_codec(one.config).open(cookie)
        assert carol is not None
        # What only write access to Redis allows: mallory's session, sealed as a real result, under carol's key.
        mallory = dataclasses.replace(carol, id=secrets.token_urlsafe(24), claims={**carol.claims, "sub": "mallory"})
        await inspector.set(result, shared_refresh(one)._codec.seal(mallory), px=60_000)
        assert (await browser_with(one, cookie).get("/")).text == "hello carol"
        assert one.hostile.calls["refresh"] == 1
        assert any("not this session's" in record.getMessage() for record in caplog.records)
        # Carol's own result has replaced it, for carol's other requests.
        sealed = cast("bytes | None", await inspector.get(result))
        assert sealed is not None
        stored = shared_refresh(one)._codec.open(sealed.decode())
        assert stored is not None and stored.id == carol.id


async def test_redis_down_the_refresh_still_works_in_each_process_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # Its own server, so stopping it leaves the session's shared one alone.
    with RedisServer() as server:
        async with open_replicas(server.url) as (one, _):
            one.hostile.refresh_delay = 0.2
            cookie = expired_cookie(one)
            server.stop()
            try:
                responses = await asyncio.gather(*(browser_with(one, cookie).get("/") for _ in range(5)))
                assert [response.text for response in responses] == ["hello carol"] * 5
                # Still single-flight within the process.
                assert one.hostile.calls["refresh"] == 1
                assert_logged(caplog, "session_store_unavailable", detail="refresh not coordinated across processes")
            finally:
                server.start()  # back before the replicas close their Redis clients, as in production


# -- the store on its own ----------------------------------------------------------------------------


def new_session() -> Session:
    now = int(time.time())
    return Session(
        id=secrets.token_urlsafe(24),
        claims={"sub": "carol"},
        access_token="at-1",
        id_token="",
        refresh_token="rt-1",
        access_expires_at=now - 5,
        scopes=("openid",),
        created_at=now,
        expires_at=now + 3600,
        last_seen=now,
    )


@contextlib.asynccontextmanager
async def open_shared(url: str, **options: Any) -> AsyncIterator[SharedRefresh]:
    revocations = SharedRevocations(url, max_age=3600)
    try:
        yield SharedRefresh(revocations, SessionCodec(Sealer([strong_secret_key()], "refresh-result")), **options)
    finally:
        await revocations.aclose()


async def test_a_lock_held_longer_than_lock_wait_is_refresh_busy_not_a_hang(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    calls: list[Session] = []

    async def refresh(session: Session) -> Session:
        calls.append(session)
        return dataclasses.replace(session, access_token="at-2", refresh_token="rt-2")

    async with open_shared(redis_server.url, lock_wait=0.3) as shared:
        session = new_session()
        await inspector.set(redis_key("refresh-lock", refresh_key(session)), "another process", px=30_000)
        started = time.monotonic()
        with pytest.raises(RefreshBusy):
            await shared.single_flight(session, refresh)
        assert time.monotonic() - started < 2.0
        assert calls == []


def test_a_lock_shorter_than_the_safety_margin_is_refused() -> None:
    revocations = SharedRevocations("redis://127.0.0.1:1/0", max_age=3600)
    with pytest.raises(ValueError, match="lock_timeout"):
        SharedRefresh(revocations, session_codec(make_config()), lock_timeout=10.0)


# -- two real app processes, the real oidc-provider ----------------------------------------------------


@pytest.mark.node
@pytest.mark.servers
def test_two_app_processes_with_cookie_sessions_redeem_a_rotating_refresh_token_once(
    redis_server: RedisServer,
) -> None:
    ports = (free_port(), free_port())
    client = app_client(
        "cookie-replicas",
        ports[0],
        secret=secrets.token_urlsafe(16),
        auth_method=None,
        grant_types=["authorization_code", "refresh_token"],
    )
    client["redirect_uris"] = [f"http://127.0.0.1:{port}/auth/callback" for port in ports]
    with LocalProvider([client], ttl={"AccessToken": 60}, extra={"rotateRefreshToken": True}) as provider:
        # A margin longer than an access token lives: every session is due for refresh at once, so
        # nothing waits for a token to age, and all 20 requests carry one refresh token.
        env = app_env(provider, client, ports[0], PKCE_REFRESH_MARGIN="3600", PKCE_REVOCATION_STORE=redis_server.url)
        with (
            app_server("examples.starlette_app:app", ports[0], env) as first,
            app_server("examples.starlette_app:app", ports[1], env) as second,
        ):
            with httpx.Client() as browser:
                login_with_forms(browser, f"{first}/", "rotator")
                cookies = {c.name: c.value or "" for c in browser.cookies.jar if c.name.startswith("pkce_session")}
            before = provider.grant_count("refresh_token", client_id="cookie-replicas")

            def one_request(index: int) -> httpx.Response:
                return httpx.get(f"{(first, second)[index % 2]}/", cookies=cookies, timeout=20)

            with ThreadPoolExecutor(max_workers=20) as pool:
                responses = list(pool.map(one_request, range(20)))
            assert [r.status_code for r in responses] == [200] * 20
            assert all("hello rotator" in r.text for r in responses)
            assert provider.grant_count("refresh_token", client_id="cookie-replicas") - before == 1
            assert provider.grant_count("refresh_token", outcome="invalid_grant") == 0
            # The cookies they got back work on either process. The margin makes their token due too:
            # the first of these requests redeems it, the others take that result, again through Redis.
            for response, app in zip(responses[:4], (first, second, second, first), strict=True):
                returned = {name: value for name, value in response.cookies.items() if name.startswith("pkce_session")}
                assert returned
                assert "hello rotator" in httpx.get(f"{app}/", cookies=returned, timeout=20).text
            assert provider.grant_count("refresh_token", outcome="invalid_grant") == 0
