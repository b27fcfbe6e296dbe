"""WebSockets behind the gate under real servers: the handshake is refused without a session."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from pkce_middleware import PKCEConfig, PKCEMiddleware
from pkce_middleware.testing import session_cookies_sync
from tests.support.processes import free_port
from tests.support.servers import AppServer, Server, serve_all

pytestmark = pytest.mark.servers

SECRET_KEY = secrets.token_urlsafe(32)
#: uvicorn with each of its WebSocket implementations (only `websockets` can send a denial
#: response; with `wsproto` the middleware closes with 1008 and the server answers 403 itself),
#: and hypercorn.
SERVERS: list[tuple[Server, tuple[str, ...]]] = [
    ("uvicorn", ("--ws", "websockets")),
    ("uvicorn", ("--ws", "wsproto")),
    ("hypercorn", ()),
]


def _env() -> dict[str, str]:
    # No provider runs: a valid session needs none (the discovery failure at startup is only logged).
    return {
        "PKCE_ISSUER": "http://127.0.0.1:9",
        "PKCE_CLIENT_ID": "ws-client",
        "PKCE_SECRET_KEY": SECRET_KEY,
        "PKCE_COOKIE_SECURE": "false",
        "PKCE_PUBLIC_PATHS": "/health",
    }


@pytest.fixture(scope="module")
def servers() -> Iterator[list[AppServer]]:
    apps = [
        AppServer(server, "examples.starlette_app:app", free_port(), _env(), extra_args=extra)
        for server, extra in SERVERS
    ]
    with serve_all(apps):
        yield apps


def session_cookie(sub: str) -> str:
    middleware = PKCEMiddleware(
        lambda scope, receive, send: None,  # type: ignore[arg-type, return-value]
        config=PKCEConfig(
            issuer="http://127.0.0.1:9", client_id="ws-client", secret_key=SECRET_KEY, cookie_secure=False
        ),
    )
    return "; ".join(f"{name}={value}" for name, value in session_cookies_sync(middleware, sub=sub).items())


@pytest.mark.parametrize("index", range(len(SERVERS)), ids=[f"{s}{'-' + e[1] if e else ''}" for s, e in SERVERS])
async def test_websocket_without_session_is_refused_at_the_handshake(servers: list[AppServer], index: int) -> None:
    url = servers[index].url.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url, open_timeout=5):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("index", range(len(SERVERS)), ids=[f"{s}{'-' + e[1] if e else ''}" for s, e in SERVERS])
async def test_websocket_with_session_reaches_the_app_as_the_user(servers: list[AppServer], index: int) -> None:
    url = servers[index].url.replace("http://", "ws://") + "/ws"
    async with websockets.connect(
        url, additional_headers={"Cookie": session_cookie("socket-user")}, open_timeout=5
    ) as socket:
        assert await asyncio.wait_for(socket.recv(), 5) == "hello socket-user"
        await socket.send("ping")
        assert await asyncio.wait_for(socket.recv(), 5) == "ping"
