"""Sliding expiry without a write per request: the idle clock goes back into the cookie only once
half of `PKCE_SESSION_IDLE_TIMEOUT` has passed (ASP.NET Core's rule), and concurrent requests
carrying the same old cookie share one re-issued cookie, sent to them for `REISSUE_WINDOW` seconds
and to at most `REISSUE_ANSWERS` of them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from pkce_middleware import PKCEMiddleware
from pkce_middleware import _lifecycle as lifecycle
from tests.support.clock import Clock
from tests.support.site import SESSION_COOKIE, login, make_client, open_site, seal_session, session_cookies

IDLE = 3600


async def old_cookie_request(app: PKCEMiddleware, cookie: str) -> httpx.Response:
    """One request with `cookie`, from a client that never stores what it gets back."""
    async with make_client(app) as client:
        client.headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
        return await client.get("/")


async def test_no_set_cookie_while_the_session_is_young() -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        assert (await login(site.client, site.hostile)).status_code == 303
        for _ in range(5):
            answer = await site.client.get("/")
            assert answer.text.startswith("hello")
            assert session_cookies(answer) == []
            assert "no-store" not in answer.headers.get("cache-control", "")


async def test_a_minute_old_session_is_not_rewritten_any_more() -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        site.client.cookies.set(SESSION_COOKIE, seal_session(site.middleware, last_seen=int(time.time()) - 600))
        answer = await site.client.get("/")
        assert answer.text == "hello carol"
        assert session_cookies(answer) == []  # 10 minutes of a 60-minute window: nothing to write


async def test_past_half_the_window_the_cookie_is_reissued_once_for_concurrent_requests() -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        aged = seal_session(site.middleware, last_seen=int(time.time()) - IDLE // 2 - 5)
        # A page firing parallel requests with the same old cookie, before it stores the new one.
        answers = await asyncio.gather(*(old_cookie_request(site.middleware, aged) for _ in range(8)))
        assert all(answer.text == "hello carol" for answer in answers)
        issued = {cookie for answer in answers for cookie in session_cookies(answer)}
        assert len(issued) == 1  # one re-issued cookie (one sealing), shared by all eight
        new_value = issued.pop().split(";", 1)[0].split("=", 1)[1]
        assert new_value != aged
        site.client.cookies.set(SESSION_COOKIE, new_value)
        after = await site.client.get("/")
        assert after.text == "hello carol" and session_cookies(after) == []


async def test_a_session_idle_longer_than_the_window_ends() -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        site.client.cookies.set(SESSION_COOKIE, seal_session(site.middleware, last_seen=int(time.time()) - IDLE - 1))
        assert (await site.client.get("/", headers={"Accept": "application/json"})).status_code == 401


START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


async def reusing_app(scope: Any, receive: Any, send: Any) -> None:
    """An app that sends the same start message object every time (a module-level constant)."""
    await send(START)
    await send({"type": "http.response.body", "body": b"ok"})


async def test_an_app_reusing_its_start_message_does_not_collect_our_cookies() -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        site.middleware.app = reusing_app
        aged = seal_session(site.middleware, last_seen=int(time.time()) - IDLE // 2 - 5)
        for _ in range(3):
            answer = await old_cookie_request(site.middleware, aged)
            assert len(session_cookies(answer)) == 1
        assert START["headers"] == [(b"content-type", b"text/plain")]


async def test_a_client_that_keeps_no_cookies_gets_the_reissue_only_in_its_window(clock: Clock) -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        site.middleware._parts.lifecycle.reissue_window = 0  # shut after the first answer
        aged = seal_session(site.middleware, last_seen=int(clock.now) - IDLE // 2 - 5)
        first = await old_cookie_request(site.middleware, aged)
        assert first.text == "hello carol" and len(session_cookies(first)) == 1
        for _ in range(3):  # a health check sending the old cookie again and again
            answer = await old_cookie_request(site.middleware, aged)
            assert answer.text == "hello carol"
            assert session_cookies(answer) == []


async def test_a_flood_with_the_old_cookie_gets_the_reissue_in_its_first_answers_only(clock: Clock) -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        aged = seal_session(site.middleware, last_seen=int(clock.now) - IDLE // 2 - 5)
        answers = [await old_cookie_request(site.middleware, aged) for _ in range(lifecycle.REISSUE_ANSWERS + 4)]
        assert all(answer.text == "hello carol" for answer in answers)
        carried = [len(session_cookies(answer)) for answer in answers]
        assert carried == [1] * lifecycle.REISSUE_ANSWERS + [0] * 4
        assert len({cookie for answer in answers for cookie in session_cookies(answer)}) == 1


@pytest.mark.parametrize("idle", [60, 61, 100, 119])
async def test_a_busy_session_outlives_short_idle_timeouts(clock: Clock, idle: int) -> None:
    """A request a second never idles out, even with the shortest idle timeout (60 s, where half
    the window is shorter than a minute of re-issue slots)."""
    async with open_site(session_idle_timeout=idle) as site:
        cookie = seal_session(site.middleware, last_seen=int(clock.now), expires_at=int(clock.now) + 8 * IDLE)
        async with make_client(site.middleware) as browser:  # keeps every cookie it is sent
            browser.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
            statuses = []
            for _ in range(3 * idle):
                statuses.append((await browser.get("/", headers={"Accept": "application/json"})).status_code)
                clock.now += 1
        assert statuses == [200] * (3 * idle)


async def test_a_session_left_alone_ends_after_between_half_and_all_of_a_short_idle_timeout(clock: Clock) -> None:
    idle = 100
    async with open_site(session_idle_timeout=idle) as site:
        cookie = seal_session(site.middleware, last_seen=int(clock.now), expires_at=int(clock.now) + 8 * IDLE)
        async with make_client(site.middleware) as browser:
            browser.cookies.set(SESSION_COOKIE, cookie, domain="app.test")
            clock.now += idle // 2 + 9  # the last request: re-issued (half the window passed)
            assert session_cookies(await browser.get("/")) != []
            clock.now += idle // 2 - 1  # quiet for just over half the window: still in
            assert (await browser.get("/")).text == "hello carol"
