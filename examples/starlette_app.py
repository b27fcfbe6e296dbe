"""A Starlette app behind PKCEMiddleware. Configure with PKCE_* variables, then:

    uvicorn examples.starlette_app:app

`make demo` starts it against a local provider with everything set.
"""

from __future__ import annotations

import html

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from pkce_middleware import PKCEMiddleware


async def home(request: Request) -> HTMLResponse:
    user = request.user
    return HTMLResponse(
        f"<!doctype html><title>pkce_middleware demo</title>"
        f"<p>hello {html.escape(user.identity)}</p>"
        f"<p>Signed in as <b>{html.escape(user.display_name)}</b> with scopes "
        f"<code>{html.escape(' '.join(request.auth.scopes))}</code>.</p>"
        f'<p><a href="/me">/me</a> shows your ID token claims as JSON.</p>'
        f'<form method="post" action="/auth/logout"><button>Sign out</button></form>'
    )


async def me(request: Request) -> JSONResponse:
    # Not `@requires("openid")`: granted scopes differ between providers (a plain OAuth 2.0 one
    # grants no `openid`). Anonymous only where PKCE_PUBLIC_PATHS makes this path public.
    if not request.user.is_authenticated:
        return JSONResponse({"error": "sign in first"}, status_code=403)
    return JSONResponse({"sub": request.user.identity, "claims": dict(request.user.claims)})


async def health(request: Request) -> PlainTextResponse:
    # Listed in PKCE_PUBLIC_PATHS by the demo: reachable without login.
    return PlainTextResponse("ok")


async def greet(websocket: WebSocket) -> None:
    # The handshake already passed the gate: no session, no connection (403, or close 1008).
    await websocket.accept()
    await websocket.send_text(f"hello {websocket.user.identity}")
    async for message in websocket.iter_text():
        await websocket.send_text(message)


app = PKCEMiddleware(
    Starlette(routes=[Route("/", home), Route("/me", me), Route("/health", health), WebSocketRoute("/ws", greet)])
)
