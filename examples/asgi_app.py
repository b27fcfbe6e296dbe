"""A bare ASGI callable behind PKCEMiddleware: `uvicorn examples.asgi_app:app` with PKCE_* set.

No framework: `get_user(scope)` reads the middleware's user from the ASGI scope.
"""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

from pkce_middleware import PKCEMiddleware, get_credentials, get_user

#: RFC 9110: a 401 says how to authenticate; the same scheme as the middleware's own 401.
CHALLENGE = b'Cookie realm="pkce_middleware"'


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return  # no WebSocket routes here; returning unanswered closes the handshake
    user, credentials = get_user(scope), get_credentials(scope)
    if user is None or credentials is None:  # only on a path in PKCE_PUBLIC_PATHS, without a session
        await _respond(send, 401, "text/plain", b"not signed in", [(b"www-authenticate", CHALLENGE)])
    elif scope["path"] == "/":
        await _respond(send, 200, "text/plain", f"hello {user.identity}".encode())
    elif scope["path"] == "/me":
        body = {"sub": user.identity, "name": user.display_name, "scopes": list(credentials.scopes)}
        await _respond(send, 200, "application/json", json.dumps(body).encode())
    else:
        await _respond(send, 404, "text/plain", b"not found")


async def _lifespan(receive: Receive, send: Send) -> None:
    # The middleware has loaded the provider's metadata by the time startup reaches us.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})  # the middleware closes its client on this
            return


async def _respond(
    send: Send, status: int, content_type: str, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", f"{content_type}; charset=utf-8".encode()),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = PKCEMiddleware(hello)
