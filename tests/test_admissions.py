"""A request whose `Cookie` header came before is answered from its admission (`_admissions`):
without opening the cookie again, and never past what would have changed the answer (a logout,
the idle clock, a refresh or a re-issue due), nor for a header it was not given for."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from starlette.types import Message

from pkce_middleware import _lifecycle as lifecycle
from pkce_middleware._admissions import MAX_HEADER_BYTES
from pkce_middleware._lifecycle import IDLE_RESOLUTION
from tests.support.site import SESSION_COOKIE, Site, login, make_client, open_site, seal_session

JSON = {"Accept": "application/json"}
IDLE = 3600


class Clock:
    """The lifecycle's clock, moved by the test (one clock for the slow path and the admissions)."""

    def __init__(self) -> None:
        # At the start of a minute, so the test's steps never cross into the next one by chance.
        self.now = float((int(time.time()) // IDLE_RESOLUTION) * IDLE_RESOLUTION)

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock()
    monkeypatch.setattr(lifecycle, "time", SimpleNamespace(time=clock.time))
    yield clock


def opened_cookies(site: Site, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The cookie values the session store opens from now on (a request answered from its admission opens none)."""
    store: Any = site.middleware._parts.store
    opened: list[str] = []
    load_now = store.load_now

    def counting(scope: Any) -> Any:
        opened.append(scope["path"])
        return load_now(scope)

    monkeypatch.setattr(store, "load_now", counting)
    return opened


def set_cookies(response: httpx.Response) -> list[str]:
    return [v for v in response.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE + "=")]


async def with_cookie(site: Site, cookie: str, path: str = "/", **headers: str) -> httpx.Response:
    """One request with `Cookie: <session>=cookie`, from a client that stores nothing it gets back."""
    async with make_client(site.middleware) as client:
        return await client.get(path, headers={"Cookie": f"{SESSION_COOKIE}={cookie}", **headers})


async def test_a_repeated_cookie_is_not_opened_again(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_site() as site:
        assert (await login(site.client, site.hostile)).status_code == 303
        opened = opened_cookies(site, monkeypatch)
        answers = [await site.client.get(f"/{n}") for n in range(4)]
        assert [a.text for a in answers] == ["hello alice"] * 4
        assert all(set_cookies(a) == [] for a in answers)
        assert opened == ["/0"]  # the first request opened it; the other three were admitted


async def test_a_logout_ends_an_admitted_session_at_once() -> None:
    async with open_site() as site:
        await login(site.client, site.hostile)
        cookie = site.client.cookies[SESSION_COOKIE]
        for _ in range(2):
            assert (await with_cookie(site, cookie)).text == "hello alice"
        assert (await site.client.post("/auth/logout", headers={"Origin": "https://app.test"})).status_code == 303
        # A copy of the cookie (another tab, or a thief) that was admitted a moment ago.
        assert (await with_cookie(site, cookie, **JSON)).status_code == 401


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
        young = await with_cookie(site, cookie)
        again = await with_cookie(site, cookie)
        assert (young.text, set_cookies(young), set_cookies(again)) == ("hello carol", [], [])
        clock.now += IDLE // 2
        reissued = await with_cookie(site, cookie)
        assert reissued.text == "hello carol" and len(set_cookies(reissued)) == 1


async def test_an_admitted_session_idles_out(clock: Clock) -> None:
    async with open_site(session_idle_timeout=IDLE) as site:
        # Re-issued to a client that never stores it, then admitted, and never answered past its idle end.
        site.middleware._parts.lifecycle.reissue_window = 0
        cookie = seal_session(site.middleware, last_seen=int(clock.now) - IDLE + 90)
        answers = [await with_cookie(site, cookie) for _ in range(3)]
        assert [a.text for a in answers] == ["hello carol"] * 3
        assert [len(set_cookies(a)) for a in answers] == [1, 0, 0]
        clock.now += 90
        assert (await with_cookie(site, cookie, **JSON)).status_code == 401


async def test_an_admitted_session_ends_at_its_absolute_expiry(clock: Clock) -> None:
    async with open_site() as site:
        cookie = seal_session(site.middleware, last_seen=int(clock.now), expires_at=int(clock.now) + 30)
        for _ in range(2):
            assert (await with_cookie(site, cookie)).text == "hello carol"
        clock.now += 30
        assert (await with_cookie(site, cookie, **JSON)).status_code == 401


async def test_an_admitted_session_is_refreshed_when_due(clock: Clock) -> None:
    async with open_site() as site:
        site.hostile.sub = "carol"
        now, margin = int(clock.now), site.config.refresh_margin
        refresh_token = site.hostile.issue_refresh_token(sub="carol")
        cookie = seal_session(site.middleware, refresh_token=refresh_token, access_expires_at=now + margin + 20)
        for _ in range(2):
            assert (await with_cookie(site, cookie)).text == "hello carol"
        assert site.hostile.calls["refresh"] == 0
        clock.now += 20
        refreshed = await with_cookie(site, cookie)
        assert refreshed.text == "hello carol" and len(set_cookies(refreshed)) == 1
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
        opened = opened_cookies(site, monkeypatch)
        # ASGI says bytes; a server that hands over a bytearray must not turn a login into a 500.
        header = cast(bytes, bytearray(f"{SESSION_COOKIE}={cookie}".encode()))
        for _ in range(2):
            assert (await raw_get(site, [(b"cookie", header)])).text == "hello carol"
        assert opened == ["/", "/"]


async def test_the_same_tail_with_another_header_is_not_the_same_session(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_site() as site:
        cookie = seal_session(site.middleware)
        assert (await with_cookie(site, cookie)).text == "hello carol"
        # The key's bytes (the end of the header) are the same; the rest of the header is not.
        forged = "x" * (len(cookie) - 64) + cookie[-64:]
        assert (await with_cookie(site, forged, **JSON)).status_code == 401


async def test_a_padded_cookie_header_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_site() as site:
        cookie = seal_session(site.middleware)
        opened = opened_cookies(site, monkeypatch)
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
        opened = opened_cookies(site, monkeypatch)
        for _ in range(3):
            assert (await with_cookie(site, cookie)).text == "hello carol"
        assert opened == ["/"] * 3
        await site.middleware.aclose()


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
