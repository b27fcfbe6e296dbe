"""WebSockets behind the gate: refused without a session, closed when the session ends."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.types import Receive, Scope, Send

from tests.support.site import APP_ORIGIN, SESSION_COOKIE, Site, login, seal_session
from tests.support.websocket import Socket


@pytest.fixture
def ws_site(site: Site) -> Site:
    """The shared `site`, checking open sockets' sessions every 0.05 s."""
    site.middleware.websocket_check_interval = 0.05
    return site


async def chatty_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts, greets the user, then echoes until the client goes away."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": f"hello {scope['user'].identity}"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text", "")})


async def run(site: Site, socket: Socket) -> asyncio.Task[None]:
    site.middleware.app = chatty_app
    task = asyncio.create_task(site.middleware(socket.scope, socket.receive, socket.send))
    await asyncio.sleep(0.02)
    return task


async def test_without_session_the_handshake_gets_a_403_where_the_server_allows(ws_site: Site) -> None:
    socket = Socket(denial_extension=True)
    await (await run(ws_site, socket))
    assert socket.sent[0]["type"] == "websocket.http.response.start" and socket.sent[0]["status"] == 403
    assert b"login_required" in socket.sent[1]["body"]


async def test_without_session_and_without_the_extension_it_is_closed_1008(ws_site: Site) -> None:
    socket = Socket()
    await (await run(ws_site, socket))
    assert socket.sent == [{"type": "websocket.close", "code": 1008, "reason": "login required"}]


async def test_with_a_session_the_app_sees_the_user(ws_site: Site) -> None:
    socket = Socket(cookie=seal_session(ws_site.middleware))
    task = await run(ws_site, socket)
    assert socket.sent[:2] == [{"type": "websocket.accept"}, {"type": "websocket.send", "text": "hello carol"}]
    socket.to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 1)


async def test_the_socket_is_closed_when_the_session_reaches_its_end(ws_site: Site) -> None:
    socket = Socket(cookie=seal_session(ws_site.middleware, expires_at=int(time.time()) + 1))
    task = await run(ws_site, socket)
    started = time.monotonic()
    while not any(m["type"] == "websocket.close" for m in socket.sent):
        assert time.monotonic() - started < 3, socket.sent
        await asyncio.sleep(0.05)
    assert socket.sent[-1] == {"type": "websocket.close", "code": 1008, "reason": "session ended"}
    socket.to_app.put_nowait({"type": "websocket.receive", "text": "too late"})
    socket.to_app.put_nowait({"type": "websocket.disconnect", "code": 1008})
    await asyncio.wait_for(task, 1)
    assert socket.sent[-1]["type"] == "websocket.close"  # the echo after the close went nowhere


async def test_logging_out_in_another_tab_closes_the_socket(ws_site: Site) -> None:
    await login(ws_site.client, ws_site.hostile)
    socket = Socket(cookie=ws_site.client.cookies[SESSION_COOKIE])
    task = await run(ws_site, socket)
    assert socket.sent[1] == {"type": "websocket.send", "text": "hello alice"}
    ws_site.middleware.app = chatty_app  # the logout below goes through the same middleware
    assert (await ws_site.client.post("/auth/logout", headers={"Origin": APP_ORIGIN})).status_code == 303
    await asyncio.sleep(0.3)
    assert socket.sent[-1] == {"type": "websocket.close", "code": 1008, "reason": "session ended"}
    socket.to_app.put_nowait({"type": "websocket.disconnect", "code": 1008})
    await asyncio.wait_for(task, 1)


async def test_a_backchannel_logout_closes_the_socket(ws_site: Site) -> None:
    ws_site.hostile.sid = "op-session-9"
    await login(ws_site.client, ws_site.hostile)
    socket = Socket(cookie=ws_site.client.cookies[SESSION_COOKIE])
    task = await run(ws_site, socket)
    token = ws_site.hostile.logout_token(sid="op-session-9")
    response = await ws_site.client.post("/auth/backchannel-logout", data={"logout_token": token})
    assert response.status_code == 200
    await asyncio.sleep(0.3)
    assert socket.sent[-1] == {"type": "websocket.close", "code": 1008, "reason": "session ended"}
    socket.to_app.put_nowait({"type": "websocket.disconnect", "code": 1008})
    await asyncio.wait_for(task, 1)
