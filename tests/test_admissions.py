"""A request whose `Cookie` header came before is answered from its admission (`_admissions`):
without opening the cookie again, and never past what would have changed the answer (a logout,
the idle clock, a refresh or a re-issue due), nor for a header it was not given for."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.types import Message

from pkce_middleware import PKCEMiddleware
from pkce_middleware._admissions import MAX_HEADER_BYTES
from pkce_middleware._lifecycle import IDLE_RESOLUTION
from tests.support.clock import Clock
from tests.support.redis_server import RedisServer
from tests.support.site import (
    APP_ORIGIN,
    SESSION_COOKIE,
    Site,
    complete_login,
    hello_app,
    login,
    make_client,
    make_config,
    open_site,
    seal_session,
    session_cookies,
    strong_secret_key,
)
from tests.support.websocket import handshake

JSON = {"Accept": "application/json"}
IDLE = 3600


def opened_cookies(middleware: PKCEMiddleware, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests whose cookie the store opens from now on (an admitted one opens none)."""
    store: Any = middleware._parts.store
    opened: list[str] = []
    load_now = store.load_now

    def counting(scope: Any) -> Any:
        opened.append(scope["path"])
        return load_now(scope)

    monkeypatch.setattr(store, "load_now", counting)
    return opened


async def with_cookie(middleware: PKCEMiddleware, cookie: str, path: str = "/", **headers: str) -> httpx.Response:
    """One request with `Cookie: <session>=cookie`, from a client that stores nothing it gets back."""
    async with make_client(middleware) as client:
        return await client.get(path, headers={"Cookie": f"{SESSION_COOKIE}={cookie}", **headers})


async def admitted_login(site: Site) -> str:
    """Log alice in; her cookie, answered twice from a client that keeps no cookies (admitted)."""
    await login(site.client, site.hostile)
    cookie = site.client.cookies[SESSION_COOKIE]
    for _ in range(2):
        assert (await with_cookie(site.middleware, cookie)).text == "hello alice"
    return cookie


async def test_a_repeated_cookie_is_not_opened_again(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_site() as site:
        assert (await login(site.client, site.hostile)).status_code == 303
        opened = opened_cookies(site.middleware, monkeypatch)
        answers = [await site.client.get(f"/{n}") for n in range(4)]
        assert [a.text for a in answers] == ["hello alice"] * 4
        assert all(session_cookies(a) == [] for a in answers)
        assert opened == ["/0"]  # the first request opened it; the other three were admitted


async def test_a_logout_ends_an_admitted_session_at_once() -> None:
    async with open_site() as site:
        cookie = await admitted_login(site)
        assert (await site.client.post("/auth/logout", headers={"Origin": "https://app.test"})).status_code == 303
        # A copy of the cookie (another tab, or a thief) that was admitted a moment ago.
        assert (await with_cookie(site.middleware, cookie, **JSON)).status_code == 401


async def test_a_backchannel_logout_ends_an_admitted_session_at_once() -> None:
    async with open_site() as site:
        site.hostile.sid = "op-1"
        await login(site.client, site.hostile)
        for _ in range(2):
            assert (await site.client.get("/")).text == "hello alice"
        async with make_client(site.middleware) as op:
            token = site.hostile.logout_token(sid="op-1")
            assert (await op.post("/auth/backchannel-logout", data={"logout_token": token})).status_code == 200
        assert (await site.client.get("/", headers=JSON)).status_code == 401


async def test_an_admitted_session_is_reissued_once_half_its_idle_window_passed(clock: Clock) -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        cookie = seal_session(site.middleware, last_seen=int(clock.now), expires_at=int(clock.now) + 8 * IDLE)
        young = await with_cookie(site.middleware, cookie)
        again = await with_cookie(site.middleware, cookie)
        assert (young.text, session_cookies(young), session_cookies(again)) == ("hello carol", [], [])
        clock.now += IDLE // 2
        reissued = await with_cookie(site.middleware, cookie)
        assert reissued.text == "hello carol" and len(session_cookies(reissued)) == 1


async def test_an_admitted_session_idles_out(clock: Clock) -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        # Re-issued to a client that never stores it, then admitted, and never answered past its idle end.
        site.middleware._parts.lifecycle.reissue_window = 0
        cookie = seal_session(site.middleware, last_seen=int(clock.now) - IDLE + 90)
        answers = [await with_cookie(site.middleware, cookie) for _ in range(3)]
        assert [a.text for a in answers] == ["hello carol"] * 3
        assert [len(session_cookies(a)) for a in answers] == [1, 0, 0]
        clock.now += 90
        assert (await with_cookie(site.middleware, cookie, **JSON)).status_code == 401


async def test_an_admitted_session_ends_at_its_absolute_expiry(clock: Clock) -> None:
    async with open_site() as site:
        cookie = seal_session(site.middleware, last_seen=int(clock.now), expires_at=int(clock.now) + 30)
        for _ in range(2):
            assert (await with_cookie(site.middleware, cookie)).text == "hello carol"
        clock.now += 30
        assert (await with_cookie(site.middleware, cookie, **JSON)).status_code == 401


async def test_an_admitted_session_is_refreshed_when_due(clock: Clock) -> None:
    async with open_site() as site:
        site.hostile.sub = "carol"
        now, margin = int(clock.now), site.config.refresh_margin
        refresh_token = site.hostile.issue_refresh_token(sub="carol")
        cookie = seal_session(site.middleware, refresh_token=refresh_token, access_expires_at=now + margin + 20)
        for _ in range(2):
            assert (await with_cookie(site.middleware, cookie)).text == "hello carol"
        assert site.hostile.calls["refresh"] == 0
        clock.now += 20
        refreshed = await with_cookie(site.middleware, cookie)
        assert refreshed.text == "hello carol" and len(session_cookies(refreshed)) == 1
        assert site.hostile.calls["refresh"] == 1


async def test_a_session_in_one_of_two_cookie_headers_is_never_admitted_for_the_other() -> None:
    async with open_site() as site:
        cookie = seal_session(site.middleware)
        # HTTP/2 may split the header: the session is in the second part.
        split = [(b"cookie", b"theme=dark"), (b"cookie", f"{SESSION_COOKIE}={cookie}".encode())]
        for _ in range(2):
            assert (await raw_get(site, split)).text == "hello carol"
        assert len(site.middleware._parts.lifecycle._admissions or ()) == 0
        alone = await raw_get(site, [(b"cookie", b"theme=dark"), (b"accept", b"application/json")])
        assert alone.status_code == 401


async def test_a_cookie_header_as_a_bytearray_is_served_and_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_site() as site:
        cookie = seal_session(site.middleware)
        opened = opened_cookies(site.middleware, monkeypatch)
        # ASGI says bytes; a server that hands over a bytearray must not turn a login into a 500.
        header = cast(bytes, bytearray(f"{SESSION_COOKIE}={cookie}".encode()))
        for _ in range(2):
            assert (await raw_get(site, [(b"cookie", header)])).text == "hello carol"
        assert opened == ["/", "/"]


async def test_the_same_tail_with_another_header_is_not_the_same_session(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_site() as site:
        cookie = seal_session(site.middleware)
        assert (await with_cookie(site.middleware, cookie)).text == "hello carol"
        # The key's bytes (the end of the header) are the same; the rest of the header is not.
        forged = "x" * (len(cookie) - 64) + cookie[-64:]
        assert (await with_cookie(site.middleware, forged, **JSON)).status_code == 401


async def test_a_padded_cookie_header_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_site() as site:
        cookie = seal_session(site.middleware)
        opened = opened_cookies(site.middleware, monkeypatch)
        padding = "; ".join(f"pad{n}={'p' * 1000}" for n in range(MAX_HEADER_BYTES // 1000))
        for _ in range(2):
            async with make_client(site.middleware) as client:
                header = f"{padding}; {SESSION_COOKIE}={cookie}"
                assert (await client.get("/", headers={"Cookie": header})).text == "hello carol"
        assert opened == ["/", "/"]  # served, and opened each time: nothing of that size is kept


async def test_no_admissions_when_the_session_cache_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_site() as site:
        site.middleware = type(site.middleware)(site.middleware.app, config=site.config, session_cache_size=0)
        cookie = seal_session(site.middleware)
        opened = opened_cookies(site.middleware, monkeypatch)
        for _ in range(3):
            assert (await with_cookie(site.middleware, cookie)).text == "hello carol"
        assert opened == ["/"] * 3
        await site.middleware.aclose()


async def test_a_backchannel_logout_by_sub_ends_that_users_admitted_sessions_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_site() as site:
        await login(site.client, site.hostile)  # alice, no `sid`: only a sub-wide logout names her
        bob = site.browser()
        site.hostile.sub = "bob"
        await login(bob, site.hostile)
        opened = opened_cookies(site.middleware, monkeypatch)
        for _ in range(2):
            assert (await site.client.get("/a")).text == "hello alice"
            assert (await bob.get("/b")).text == "hello bob"
        assert opened == ["/a", "/b"]  # both admitted
        async with make_client(site.middleware) as op:
            token = site.hostile.logout_token(sub="alice")
            assert (await op.post("/auth/backchannel-logout", data={"logout_token": token})).status_code == 200
        assert (await site.client.get("/a", headers=JSON)).status_code == 401
        assert (await bob.get("/b")).text == "hello bob"


async def test_a_frontchannel_logout_by_sid_ends_an_admitted_session() -> None:
    async with open_site(frontchannel_logout_path="/auth/frontchannel-logout") as site:
        site.hostile.sid = "op-7"
        cookie = await admitted_login(site)
        # The provider's iframe: cross-site, so without our SameSite=Lax cookie.
        async with make_client(site.middleware) as iframe:
            params = {"iss": site.hostile.issuer, "sid": "op-7"}
            assert (await iframe.get("/auth/frontchannel-logout", params=params)).status_code == 200
        assert (await with_cookie(site.middleware, cookie, **JSON)).status_code == 401


async def test_a_login_that_replaces_a_session_ends_the_old_ones_admission() -> None:
    async with open_site() as site:
        old = await admitted_login(site)
        site.hostile.sub = "mallory"
        # The same browser switches account (`prompt=login` starts a login over a live session).
        switch = await site.client.get(site.config.login_path, params={"prompt": "login"})
        assert switch.status_code == 302, switch.text
        params = {k: v[0] for k, v in parse_qs(urlsplit(switch.headers["location"]).query).items()}
        assert (await complete_login(site.client, site.hostile, params)).status_code == 303
        assert site.client.cookies[SESSION_COOKIE] != old
        assert (await with_cookie(site.middleware, old, **JSON)).status_code == 401
        assert (await site.client.get("/")).text == "hello mallory"


async def test_a_cookie_sealed_with_a_retired_key_is_written_again_on_every_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old_key, new_key = strong_secret_key(), strong_secret_key()
    async with open_site(secret_key=[new_key, old_key]) as site:
        before_rotation = cast(PKCEMiddleware, SimpleNamespace(config=make_config(secret_key=old_key)))
        cookie = seal_session(before_rotation)
        opened = opened_cookies(site.middleware, monkeypatch)
        answers = [await with_cookie(site.middleware, cookie) for _ in range(3)]
        assert [a.text for a in answers] == ["hello carol"] * 3
        # Never admitted: every answer re-seals it with the new key, as the full path says.
        assert [len(session_cookies(a)) for a in answers] == [1, 1, 1]
        assert opened == ["/"] * 3
        resealed = session_cookies(answers[0])[0].split(";")[0].partition("=")[2]
        assert (await with_cookie(site.middleware, resealed)).text == "hello carol"
        assert session_cookies(await with_cookie(site.middleware, resealed)) == []


async def test_an_admitted_reissue_is_offered_again_the_next_minute(clock: Clock) -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        site.middleware._parts.lifecycle.reissue_window = 0  # a client that keeps no cookies
        cookie = seal_session(site.middleware, last_seen=int(clock.now) - IDLE // 2 - 5)
        first = [await with_cookie(site.middleware, cookie) for _ in range(3)]
        assert [len(session_cookies(a)) for a in first] == [1, 0, 0]  # the later two admitted
        clock.now += IDLE_RESOLUTION - 0.5  # still this minute: still admitted, still no cookie
        assert session_cookies(await with_cookie(site.middleware, cookie)) == []
        clock.now += 0.5  # the next minute: the full path re-issues, and so must the admission
        again = await with_cookie(site.middleware, cookie)
        assert again.text == "hello carol" and len(session_cookies(again)) == 1


async def test_an_admitted_session_ends_at_its_idle_second_not_a_fraction_later(clock: Clock) -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        site.middleware._parts.lifecycle.reissue_window = 0
        # Idle 30 s from now: before the minute ends, so its admission lasts to the idle end.
        last_seen = int(clock.now) - IDLE + 30
        cookie = seal_session(site.middleware, last_seen=last_seen)
        clock.now += 0.75  # re-issued, then admitted, from a fraction of a second on
        assert [(await with_cookie(site.middleware, cookie)).status_code for _ in range(3)] == [200] * 3
        clock.now = last_seen + IDLE - 0.001
        assert (await with_cookie(site.middleware, cookie)).text == "hello carol"
        clock.now = last_seen + IDLE
        assert (await with_cookie(site.middleware, cookie, **JSON)).status_code == 401
        # A WebSocket with the same header is refused at the same moment.
        sent = await handshake(site.middleware, cookie=cookie, denial_extension=True)
        assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 403


@pytest.mark.redis
async def test_a_logout_in_another_process_ends_a_session_admitted_here(redis_server: RedisServer) -> None:
    async with open_site(revocation_store=redis_server.url) as site:
        other = PKCEMiddleware(hello_app, config=site.config, transport=httpx.ASGITransport(app=site.hostile))
        try:
            await login(site.client, site.hostile)
            cookie = site.client.cookies[SESSION_COOKIE]
            opened: list[str] = []
            with pytest.MonkeyPatch.context() as patch:
                opened = opened_cookies(other, patch)
                for _ in range(3):
                    assert (await with_cookie(other, cookie)).text == "hello alice"
                sockets = [await handshake(other, cookie=cookie) for _ in range(2)]
            assert opened == ["/"]  # the other process answers it from its admission
            assert all(sent[0]["type"] == "websocket.accept" for sent in sockets)
            assert (await site.client.post("/auth/logout", headers={"Origin": APP_ORIGIN})).status_code == 303
            started = time.monotonic()
            while (await with_cookie(other, cookie, **JSON)).status_code != 401:
                assert time.monotonic() - started < 3.0, "the other process still admits the logged-out cookie"
                await asyncio.sleep(0.1)
            refused = await handshake(other, cookie=cookie, denial_extension=True)
            assert refused[0]["status"] == 403
        finally:
            await other.aclose()


async def raw_get(site: Site, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
    """A GET of `/` with exactly these headers (httpx would join two Cookie headers into one)."""
    sent: list[Message] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "2",
        "method": "GET",
        "scheme": "https",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"app.test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("app.test", 443),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await site.middleware(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return httpx.Response(start["status"], headers=start.get("headers", []), content=body)
