"""A WebSocket handshake driven by hand, as an ASGI server would run it.

`Socket` is one connection from this site's page (`https://app.test`): its `scope`, a `receive`
that hands the app what a test puts in `to_app` (first the `websocket.connect`), and a `send` that
records into `sent`. `handshake(app, ...)` runs one such connection through `app` to its end and
returns what the app sent:

    sent = await handshake(site.middleware, "/ws", cookie=session, denial_extension=True)
    assert sent[0]["status"] == 403

With `denial_extension` the server offers the ASGI `websocket.http.response` extension, so a
refusal can be an HTTP response; without it, a refusal can only be a close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Scope

from tests.support.site import APP_ORIGIN, SESSION_COOKIE

__all__ = ["Socket", "handshake"]


class Socket:
    """One WebSocket connection to `path`, sending `headers` (and the session cookie `cookie`)."""

    def __init__(
        self,
        path: str = "/ws",
        headers: Iterable[tuple[bytes, bytes]] = (),
        *,
        cookie: str | None = None,
        denial_extension: bool = False,
    ) -> None:
        sent_headers = [(b"host", b"app.test"), (b"origin", APP_ORIGIN.encode())]
        if cookie is not None:
            sent_headers.append((b"cookie", f"{SESSION_COOKIE}={cookie}".encode()))
        sent_headers.extend(headers)
        self.scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "wss",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": sent_headers,
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}} if denial_extension else {},
        }
        #: What the client sends next; `receive` waits for it.
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.to_app.put_nowait({"type": "websocket.connect"})
        #: Everything the app sent, in order.
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return await self.to_app.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)


async def handshake(
    app: ASGIApp,
    path: str = "/ws",
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    cookie: str | None = None,
    denial_extension: bool = False,
) -> list[Message]:
    """One connection through `app`, run to its end (within five seconds); what `app` sent.

    The client goes away (`websocket.disconnect`) as soon as the app reads past the connect.
    """
    socket = Socket(path, headers, cookie=cookie, denial_extension=denial_extension)
    socket.to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(app(socket.scope, socket.receive, socket.send), 5)
    return socket.sent
