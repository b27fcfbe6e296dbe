"""Server-side sessions in Redis (`PKCE_SESSION_STORE=redis://...`) against a real `redis-server`.

Most tests go through the middleware as a browser would (`open_site(session_store=<url>)` with the
hostile provider); two middlewares sharing one Redis stand for two app processes. The refresh
single-flight is shown both ways: 20 concurrent requests through two middlewares (refresh grants
counted at the provider), and 20 `single_flight` calls on two `RedisStore`s with a counting fake
refresh, where a failing winner and a session ended mid-refresh can be staged too.

Restarts: the shared server keeps nothing on disk. The restart test runs its own server with
`appendonly yes`, as a deployment that wants sessions to outlive a Redis restart must (a Redis without
persistence or replicas loses every session when it restarts, and its users log in again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets
import time
from types import ModuleType, SimpleNamespace

import httpx
import pytest
import redis.asyncio

from pkce_middleware import ProviderError, SessionEnded, StoreUnavailable
from pkce_middleware import _lifecycle as lifecycle
from pkce_middleware import _redis_store as redis_store_module
from pkce_middleware._components import bound_purpose
from pkce_middleware._cookies import CookieWriter
from pkce_middleware._crypto import Sealer
from pkce_middleware._session import Session
from tests.support.hostile_provider import REMOVE, HostileProvider
from tests.support.processes import free_port
from tests.support.redis_checks import (
    cache_live,
    cache_off,
    command_calls,
    difference,
    make_store,
    new_session,
    redis_site,
    request_with,
    saved,
    session_keys,
    set_cookie_value,
    stores,
)
from tests.support.redis_server import RedisServer
from tests.support.site import SESSION_COOKIE, Site, login, session_codec, session_cookies, strong_secret_key

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}


IDLE = 3600


def sealed_id(key: str, session_id: str) -> str:
    return Sealer([key], "session-id").seal(session_id.encode())


def session_id_of(site: Site, cookie: str) -> bytes | None:
    """The session id sealed in the site's session cookie `cookie`."""
    return Sealer([str(k) for k in site.config.secret_keys], bound_purpose("session-id", site.config)).open(cookie)


def clock_at(monkeypatch: pytest.MonkeyPatch, module: ModuleType, moment: float) -> None:
    """`module`'s clock stands at `moment`."""
    monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: moment))


def assert_store_unavailable_page(response: httpx.Response) -> None:
    """The browser's 503: says why, keeps the session (no cookie deleted), no redirect to login."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "reason: session_store_unavailable" in response.text
    assert "location" not in response.headers
    assert not [c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)]


# -- through the middleware ------------------------------------------------------------------------


async def test_login_puts_only_a_small_sealed_id_in_the_cookie(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with redis_site(redis_server.url, session_max_age=7200) as site:
        assert (await login(site.client, site.hostile)).status_code == 303
        cookie = site.client.cookies[SESSION_COOKIE]
        assert len(cookie) < 200
        assert session_codec(site.config).open(cookie) is None  # not a sealed session: only its id
        access_token = site.hostile.issued_access_tokens[-1]

        [key] = await session_keys(inspector)
        id_purpose = bound_purpose("session-id", site.config)
        session_id = Sealer([str(k) for k in site.config.secret_keys], id_purpose).open(cookie)
        assert session_id is not None
        assert key.decode() == "pkce:session:" + hashlib.sha256(session_id).hexdigest()
        stored = await inspector.get(key)
        assert stored is not None and access_token.encode() not in stored  # sealed at rest too
        assert 3600 - 5 <= await inspector.ttl(key) <= 7200  # idle timeout (plus slack), within max age
        assert not [k async for k in inspector.scan_iter() if session_id in k]

        response = await site.client.get("/")
        assert response.text == "hello alice"


async def test_a_refresh_sends_no_cookie_the_browser_already_has(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Redis store's cookie only names the session: a refresh changes what Redis holds. The
    # clock stands still, so no second turns over between the request's idle clock and the refresh's.
    clock_at(monkeypatch, lifecycle, time.time())
    async with redis_site(redis_server.url) as site:
        site.hostile.token_overrides = {"expires_in": 30}  # due for refresh at once (60 s margin)
        await login(site.client, site.hostile)
        cookie = site.client.cookies[SESSION_COOKIE]
        response = await site.client.get("/")
        assert response.text == "hello alice"
        assert site.hostile.calls["refresh"] == 1
        assert "set-cookie" not in response.headers
        assert site.client.cookies[SESSION_COOKIE] == cookie
        # The same cookie now carries the refreshed session: no second refresh.
        assert (await site.client.get("/")).text == "hello alice"
        assert site.hostile.calls["refresh"] == 1


async def test_an_active_session_gets_its_cookie_again_with_the_idle_reissue(
    redis_server: RedisServer, inspector: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Browsers cap a cookie's lifetime whatever its Max-Age (Chrome 400 days, Safari's ITP down to
    # 7): the cookie set at login must be sent again while the user comes back, or a month-long
    # session ends at the cap.
    month = 30 * 86400
    start = time.time()
    clock_at(monkeypatch, lifecycle, start)
    async with redis_site(redis_server.url, session_max_age=month, session_idle_timeout=IDLE) as site:
        site.hostile.token_overrides = {"expires_in": 30}  # the login's access token: refreshed at once
        site.hostile.refresh_overrides = {"expires_in": 7200}  # the refreshed one: not due again in this test
        await login(site.client, site.hostile)
        cookie = site.client.cookies[SESSION_COOKIE]

        refreshed = await site.client.get("/")
        assert refreshed.text == "hello alice" and site.hostile.calls["refresh"] == 1
        assert session_cookies(refreshed) == []
        warm = await site.client.get("/")
        assert warm.text == "hello alice" and session_cookies(warm) == []

        # Half the idle window on, the idle clock is written back, and the cookie comes with it.
        clock_at(monkeypatch, lifecycle, start + IDLE // 2 + 5)
        reissued = await site.client.get("/")
        assert reissued.text == "hello alice" and site.hostile.calls["refresh"] == 1
        [set_cookie] = session_cookies(reissued)
        assert f"Max-Age={month}" in set_cookie  # to the session's end, as at login
        renewed = site.client.cookies[SESSION_COOKIE]
        assert renewed != cookie  # sealed again (a fresh nonce), for the same session
        assert session_id_of(site, renewed) == session_id_of(site, cookie)
        assert len(await session_keys(inspector)) == 1

        after = await site.client.get("/")
        assert after.text == "hello alice" and session_cookies(after) == []


async def test_a_session_refreshed_more_often_than_it_idles_gets_its_cookie_again_with_a_refresh(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short access tokens: each refresh moves the idle clock, so the idle re-issue never comes, and
    # a refresh sends the cookie once the one this process sent is half an idle window old.
    start = time.time()
    clock_at(monkeypatch, lifecycle, start)
    async with redis_site(redis_server.url, session_idle_timeout=IDLE) as site:
        site.hostile.token_overrides = {"expires_in": 30}
        site.hostile.refresh_overrides = {"expires_in": 30}  # every access token is due at once
        await login(site.client, site.hostile)
        cookie = site.client.cookies[SESSION_COOKIE]
        first = await site.client.get("/")
        assert first.text == "hello alice" and site.hostile.calls["refresh"] == 1
        assert session_cookies(first) == []  # sent at login, moments ago

        # Only the store's clock, which dates the cookies it sends, moves on: the provider dates its
        # tokens by the real one, and the session's own clock standing still keeps them valid.
        clock_at(monkeypatch, redis_store_module, start + IDLE // 2 + 5)
        renewing = await site.client.get("/")
        assert renewing.text == "hello alice" and site.hostile.calls["refresh"] == 2
        [set_cookie] = session_cookies(renewing)
        assert "Max-Age=86400" in set_cookie
        assert session_id_of(site, site.client.cookies[SESSION_COOKIE]) == session_id_of(site, cookie)

        again = await site.client.get("/")
        assert again.text == "hello alice" and site.hostile.calls["refresh"] == 3
        assert session_cookies(again) == []


async def test_redis_commands_per_request_kind(redis_server: RedisServer, inspector: redis.asyncio.Redis) -> None:
    async with redis_site(redis_server.url) as site:
        # Access tokens from logins are due for refresh at once (60 s margin); refreshed ones are not.
        site.hostile.token_overrides = {"expires_in": 30}
        # Warm-up: connections opened and Lua scripts loaded, so only per-request commands are counted.
        await login(site.client, site.hostile)
        assert (await site.client.get("/")).text == "hello alice"
        browser = site.browser()
        await cache_live(site)

        before = await command_calls(inspector)
        await login(browser, site.hostile)
        # One round trip, EVALSHA; the rest runs inside the script (the session and its sub index).
        assert difference(before, await command_calls(inspector)) == {
            "evalsha": 1,
            "set": 1,
            "zadd": 1,
            "zremrangebyscore": 1,
            "zrange": 1,
            "expireat": 1,
        }

        before = await command_calls(inspector)
        assert (await browser.get("/")).text == "hello alice"
        assert site.hostile.calls["refresh"] == 2
        # Refresh: GET (load), SET NX (lock), GET (re-read under the lock), EVALSHA (save: GET, to
        # compare the tokens, and SET inside), EVALSHA (lock release: GET and DEL inside). The
        # response's write-back needs no second save.
        assert difference(before, await command_calls(inspector)) == {
            "get": 4,
            "set": 2,
            "evalsha": 2,
            "del": 1,
            "zadd": 1,
            "zrange": 1,
            "expireat": 1,
        }

        before = await command_calls(inspector)
        for _ in range(5):
            assert (await browser.get("/")).text == "hello alice"
        # The hot path: one GET for the session the refresh changed, then nothing: it is cached.
        assert difference(before, await command_calls(inspector)) == {"get": 1}

        before = await command_calls(inspector)
        response = await browser.post("/auth/logout", headers={"Origin": "https://app.test"})
        assert response.status_code == 303
        # MULTI: DEL of the session and ZREM from its sub index, EXEC (the load is cached).
        assert difference(before, await command_calls(inspector)) == {
            "multi": 1,
            "del": 1,
            "zrem": 1,
            "exec": 1,
        }


async def test_concurrent_requests_in_two_processes_refresh_once(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    hostile = HostileProvider()
    hostile.token_overrides = {"expires_in": 30}  # due for refresh at once (60 s margin)
    hostile.refresh_delay = 0.3  # a slow token endpoint, so every request arrives during the refresh
    key = strong_secret_key()
    async with (
        redis_site(redis_server.url, hostile=hostile, secret_key=key) as one,
        redis_site(redis_server.url, hostile=hostile, secret_key=key) as two,
    ):
        await login(one.client, hostile)
        two.client.cookies.set(SESSION_COOKIE, one.client.cookies[SESSION_COOKIE], domain="app.test")
        responses = await asyncio.gather(*((one.client if i % 2 else two.client).get("/") for i in range(20)))
        assert [r.text for r in responses] == ["hello alice"] * 20
        assert hostile.calls["refresh"] == 1
        assert hostile.calls["refresh_invalid_grant"] == 0  # the rotated refresh token was never replayed

        # Both processes now serve the refreshed session, and nobody refreshes again.
        for client in (one.client, two.client):
            assert (await client.get("/")).text == "hello alice"
        assert hostile.calls["refresh"] == 1
        loaded = await two.middleware._parts.store.load(request_with(one.client.cookies[SESSION_COOKIE]))
        assert loaded is not None
        assert loaded.session.refresh_token == hostile.issued_refresh_tokens[-1]
        assert loaded.session.access_token == hostile.issued_access_tokens[-1]


async def test_two_processes_share_sessions_and_logout_ends_it_in_both(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    hostile = HostileProvider()
    key = strong_secret_key()
    async with (
        redis_site(redis_server.url, hostile=hostile, secret_key=key) as one,
        redis_site(redis_server.url, hostile=hostile, secret_key=key) as two,
    ):
        await login(one.client, hostile)
        cookie = one.client.cookies[SESSION_COOKIE]
        two.client.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
        assert (await one.client.get("/")).text == "hello alice"
        assert (await two.client.get("/")).text == "hello alice"

        response = await two.client.post("/auth/logout", headers={"Origin": "https://app.test"})
        assert response.status_code == 303
        assert await session_keys(inspector) == []
        # Unlike a cookie session, a copy of the cookie taken before the logout is now worthless.
        replay = one.browser()
        replay.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
        assert (await replay.get("/", headers=JSON)).status_code == 401
        response = await one.client.get("/")
        assert response.status_code == 302
        assert response.headers["location"].startswith(hostile.authorization_endpoint)


async def test_backchannel_logout_ends_the_session_in_every_process(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    hostile = HostileProvider()
    key = strong_secret_key()
    async with (
        redis_site(redis_server.url, hostile=hostile, secret_key=key) as one,
        redis_site(redis_server.url, hostile=hostile, secret_key=key) as two,
    ):
        hostile.sid = "op-session-1"
        await login(one.client, hostile)
        other_session = one.browser()
        hostile.sid = "op-session-2"
        await login(other_session, hostile)  # same user, another provider session: must survive
        two.client.cookies.set(SESSION_COOKIE, one.client.cookies[SESSION_COOKIE], domain="app.test")
        assert (await two.client.get("/")).text == "hello alice"

        token = hostile.logout_token(sid="op-session-1")
        response = await one.client.post("/auth/backchannel-logout", data={"logout_token": token})
        assert response.status_code == 200, response.text

        for client in (one.client, two.client):
            assert (await client.get("/", headers=JSON)).status_code == 401
        assert (await other_session.get("/")).text == "hello alice"
        assert len(await session_keys(inspector)) == 1
        # The token id is remembered in Redis, so the other process refuses the replay too.
        replayed = await two.client.post("/auth/backchannel-logout", data={"logout_token": token})
        assert replayed.status_code == 400
        assert replayed.json()["error"] == "logout_token_replayed"

        # A token with only `sub` ends every session of that user (section 2.4).
        token = hostile.logout_token(sub="alice", claim_overrides={"sid": REMOVE})
        assert (await two.client.post("/auth/backchannel-logout", data={"logout_token": token})).status_code == 200
        assert (await other_session.get("/", headers=JSON)).status_code == 401
        assert await session_keys(inspector) == []


async def test_forged_or_tampered_cookie_is_no_session(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    async with redis_site(redis_server.url) as site:
        await login(site.client, site.hostile)
        good = site.client.cookies[SESSION_COOKIE]
        middle = len(good) // 2
        tampered = good[:middle] + ("A" if good[middle] != "A" else "B") + good[middle + 1 :]
        forged = [
            "garbage",
            "",
            tampered,
            good[:-4],
            sealed_id(strong_secret_key(), "x" * 32),  # sealed, but with a key not configured here
            Sealer([str(k) for k in site.config.secret_keys], "session").seal(b"x" * 32),  # another purpose
            "~2",  # a cookie-store chunk marker
            "A" * 10_000,
        ]
        before = await command_calls(inspector)
        for value in forged:
            page, api = site.browser(), site.browser()
            for browser in (page, api):
                browser.cookies.set(SESSION_COOKIE, value, domain="app.test")
            response = await page.get("/")
            assert response.status_code == 302, value
            assert response.headers["location"].startswith(site.hostile.authorization_endpoint)
            assert (await api.get("/", headers=JSON)).status_code == 401
        # None of them opened, so none reached Redis (nor could pick a key there).
        assert difference(before, await command_calls(inspector)) == {}

        # A genuine id whose session does not exist: one GET, then the cookie is dropped.
        browser = site.browser()
        ours = str(site.config.secret_keys[0])
        browser.cookies.set(SESSION_COOKIE, sealed_id(ours, secrets.token_urlsafe(24)), domain="app.test")
        response = await browser.get("/", headers=JSON)
        assert response.status_code == 401
        assert any(
            c.startswith(f"{SESSION_COOKIE}=") and "Max-Age=0" in c for c in response.headers.get_list("set-cookie")
        )
        assert (await site.client.get("/")).text == "hello alice"


async def test_redis_restart_keeps_users_logged_in_and_an_outage_is_a_503() -> None:
    # Its own server with an append-only file: a restart then keeps the data, as in production.
    with RedisServer(appendonly=True) as server:
        async with redis_site(server.url) as site:
            await login(site.client, site.hostile)
            assert (await site.client.get("/")).text == "hello alice"

            # A restart between two requests: the pooled connection is dead, and the request that
            # finds it so reconnects and succeeds; the user sees nothing.
            server.stop()
            server.start()
            assert (await site.client.get("/")).text == "hello alice"

            # Redis down: a clear 503 for the browser and for the API, never a login redirect (once
            # the session cache, which serves for up to a second after its last heartbeat, stops).
            server.stop()
            await cache_off(site)
            assert_store_unavailable_page(await site.client.get("/"))
            api = await site.client.get("/api", headers=JSON)
            assert api.status_code == 503
            assert api.json()["error"] == "session_store_unavailable"

            # Back again: the same browser carries on with the same session, without a new login.
            server.start()
            assert (await site.client.get("/")).text == "hello alice"
            assert site.hostile.calls["token"] == 1


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/auth/login"), ("GET", "/auth/logout"), ("POST", "/auth/logout")]
)
async def test_login_and_logout_routes_answer_503_while_redis_is_down(method: str, path: str) -> None:
    with RedisServer() as server:
        async with redis_site(server.url) as site:
            await login(site.client, site.hostile)
            server.stop()
            response = await site.client.request(method, path, headers={"Origin": "https://app.test"})
            assert_store_unavailable_page(response)


async def test_hung_redis_times_out_to_a_503_and_recovers() -> None:
    with RedisServer() as server:
        # The URL's query string tunes the client; a short timeout keeps this test quick.
        async with redis_site(server.url + "?socket_timeout=0.3") as site:
            await login(site.client, site.hostile)
            server.pause()
            try:
                started = time.monotonic()
                assert_store_unavailable_page(await site.client.get("/"))
                assert time.monotonic() - started < 2
            finally:
                server.resume()
            assert (await site.client.get("/")).text == "hello alice"


# -- the store itself ------------------------------------------------------------------------------


async def test_concurrent_refresh_across_two_processes_redeems_once(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    key = strong_secret_key()
    one, two = make_store(redis_server.url, key), make_store(redis_server.url, key)
    calls: list[str | None] = []

    async def refresh(session: Session) -> Session:
        calls.append(session.refresh_token)
        await asyncio.sleep(0.3)  # a provider round trip, long enough for everyone to pile up
        return dataclasses.replace(session, access_token="at-2", refresh_token="rt-2")

    async with stores(one, two):
        session = new_session()
        cookie = await saved(one, session)
        results = await asyncio.gather(
            *((one if index % 2 else two).single_flight(session, refresh) for index in range(20))
        )
        assert calls == ["rt-1"]
        assert {(r.access_token, r.refresh_token) for r in results} == {("at-2", "rt-2")}
        for store in (one, two):
            loaded = await store.load(request_with(cookie))
            assert loaded is not None and loaded.session.refresh_token == "rt-2"

        # A request that loaded the session just before the refresh was saved comes later still:
        # it gets the saved result; the rotated-out "rt-1" is not redeemed again.
        late = await two.single_flight(session, refresh)
        assert (late.refresh_token, calls) == ("rt-2", ["rt-1"])
        assert [k async for k in inspector.scan_iter(match="pkce:lock:*")] == []


async def test_when_the_refreshing_process_fails_another_one_refreshes(redis_server: RedisServer) -> None:
    key = strong_secret_key()
    one, two = make_store(redis_server.url, key), make_store(redis_server.url, key)
    calls: list[str] = []
    refreshing = asyncio.Event()

    async def failing(session: Session) -> Session:
        calls.append("one")
        refreshing.set()
        await asyncio.sleep(0.2)
        raise ProviderError("the provider answered 500")

    async def working(session: Session) -> Session:
        calls.append("two")
        return dataclasses.replace(session, access_token="at-2", refresh_token="rt-2")

    async with stores(one, two):
        session = new_session()
        cookie = await saved(one, session)
        first = asyncio.create_task(one.single_flight(session, failing))
        await asyncio.wait_for(refreshing.wait(), timeout=5)  # `one` holds the lock and is refreshing
        result = await two.single_flight(session, working)
        with pytest.raises(ProviderError):
            await first
        assert calls == ["one", "two"]
        assert result.refresh_token == "rt-2"
        loaded = await one.load(request_with(cookie))
        assert loaded is not None and loaded.session.refresh_token == "rt-2"


async def test_a_session_ended_meanwhile_is_neither_refreshed_nor_brought_back(redis_server: RedisServer) -> None:
    store = make_store(redis_server.url, strong_secret_key())
    calls = 0

    async def refresh(session: Session) -> Session:
        nonlocal calls
        calls += 1
        return dataclasses.replace(session, access_token="at-2")

    async with stores(store):
        session = new_session()
        cookie = await saved(store, session)
        await store.revoke(sid="op-1", sub=None, now=int(time.time()))
        with pytest.raises(SessionEnded):
            await store.single_flight(session, refresh)
        assert calls == 0

        # A request that loaded it before the logout writes it back afterwards: it stays gone.
        writer = CookieWriter()
        await store.save(dataclasses.replace(session, last_seen=session.last_seen + 60), request_with(cookie), writer)
        assert set_cookie_value(writer) == ""
        assert await store.load(request_with(cookie)) is None


async def test_revoke_by_sid_and_by_sub(redis_server: RedisServer) -> None:
    store = make_store(redis_server.url, strong_secret_key())
    async with stores(store):
        sessions = {
            "alice-1": new_session("alice", "op-1"),
            "alice-2": new_session("alice", "op-2"),
            "alice-no-sid": new_session("alice", None),
            "bob": new_session("bob", "op-3"),
        }
        cookies = {name: await saved(store, session) for name, session in sessions.items()}

        async def alive() -> set[str]:
            return {name for name, cookie in cookies.items() if await store.load(request_with(cookie)) is not None}

        # Section 2.4: with a sid, only that provider session ends, even though sub is given too.
        await store.revoke(sid="op-1", sub="alice", now=int(time.time()))
        assert await alive() == {"alice-2", "alice-no-sid", "bob"}
        await store.revoke(sid=None, sub="alice", now=int(time.time()))
        assert await alive() == {"bob"}
        await store.revoke(sid="unknown", sub=None, now=int(time.time()))
        assert await alive() == {"bob"}
        assert store.is_revoked(sessions["bob"]) is False


async def test_logout_token_ids_are_single_use_across_processes(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    key = strong_secret_key()
    one, two = make_store(redis_server.url, key), make_store(redis_server.url, key)
    async with stores(one, two):
        assert await one.claim_jti("jti-1", ttl=600) is True
        assert await one.claim_jti("jti-1", ttl=600) is False
        assert await two.claim_jti("jti-1", ttl=600) is False
        assert await two.claim_jti("jti-2", ttl=600) is True
        [stored, *_] = [k async for k in inspector.scan_iter(match="pkce:jti:*")]
        assert b"jti-" not in stored  # hashed: the sender does not choose our keys
        assert 590 <= await inspector.ttl(stored) <= 600


async def test_key_rotation_marks_the_session_stale_until_written_again(redis_server: RedisServer) -> None:
    old, new = strong_secret_key(), strong_secret_key()
    before, after, only_new = (
        make_store(redis_server.url, old),
        make_store(redis_server.url, [new, old]),
        make_store(redis_server.url, new),
    )
    async with stores(before, after, only_new):
        session = new_session()
        cookie = await saved(before, session)
        loaded = await after.load(request_with(cookie))
        assert loaded is not None and loaded.stale
        writer = CookieWriter()
        await after.save(loaded.session, request_with(cookie), writer)
        resealed = set_cookie_value(writer)
        assert resealed
        loaded = await after.load(request_with(resealed))
        assert loaded is not None and not loaded.stale
        assert await only_new.load(request_with(resealed)) is not None
        # A key that was dropped from the list opens nothing.
        assert await before.load(request_with(resealed)) is None


async def test_a_session_copied_under_another_id_is_refused(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    store = make_store(redis_server.url, strong_secret_key())
    async with stores(store):
        mine, theirs = new_session("mallory"), new_session("alice")
        my_cookie = await saved(store, mine)
        await saved(store, theirs)

        def key(session: Session) -> str:
            return "pkce:session:" + hashlib.sha256(session.id.encode()).hexdigest()

        stolen = await inspector.get(key(theirs))
        assert stolen is not None
        await inspector.set(key(mine), stolen)
        assert await store.load(request_with(my_cookie)) is None


async def test_discard_by_cookie_alone_deletes_the_session(
    redis_server: RedisServer, inspector: redis.asyncio.Redis
) -> None:
    store = make_store(redis_server.url, strong_secret_key())
    async with stores(store):
        cookie = await saved(store, new_session())
        writer = CookieWriter()
        await store.discard(None, request_with(cookie), writer)
        assert set_cookie_value(writer) == ""
        assert await session_keys(inspector) == []


async def test_no_redis_at_startup_is_a_warning_then_a_503(caplog: pytest.LogCaptureFixture) -> None:
    key = strong_secret_key()
    store = make_store(f"redis://127.0.0.1:{free_port()}/0", key)
    async with stores(store):
        with caplog.at_level(logging.WARNING, logger="pkce_middleware"):
            await store.startup()
        assert any("session store not answering at startup" in r.getMessage() for r in caplog.records)
        with pytest.raises(StoreUnavailable):
            await store.load(request_with(sealed_id(key, "some-session-id")))
        assert await store.load(request_with(None)) is None  # no cookie: Redis is not even asked


async def test_startup_connects_and_aclose_closes(redis_server: RedisServer) -> None:
    store = make_store(redis_server.url, strong_secret_key())
    await store.startup()
    assert store._client is not None
    await store.aclose()
    assert store._client is None
    await store.aclose()  # twice is harmless


def test_repr_shows_no_password() -> None:
    key = strong_secret_key()
    store = make_store("redis://app:s3cret-pw@redis.internal:6380/2?password=other-secret", key)
    text = repr(store)
    assert "s3cret" not in text and "other-secret" not in text
    assert text == "RedisStore(url='redis://***@redis.internal:6380/2')"
