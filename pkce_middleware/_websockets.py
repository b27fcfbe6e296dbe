"""The ASGI mechanics under `PKCEMiddleware`'s flow: WebSockets refused or watched, and `send` wrapped.

A WebSocket is refused with a 403 where the server can answer the handshake, else closed with
1008; an admitted one is watched and closed with 1008 once its caller's right ends. An HTTP
response whose session was refreshed carries the re-issued cookie. `routed_paths` names the paths
a request answers to under a mount, `public_path` those that reach the app without a login. None
of this decides a step; `_middleware` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._cookies import CookieWriter
from ._exceptions import BearerError, PKCEMiddlewareError, Reason
from ._hooks import log_refusal
from ._session import Session
from ._store import SessionStore

__all__ = ["public_path", "refuse_websocket", "routed_paths", "sending_session", "watched_websocket"]

logger = logging.getLogger("pkce_middleware")


def public_path(path: str, prefixes: Iterable[str]) -> bool:
    """Whether `path` is under one of `prefixes`; dot-segments are never public ("/static/../admin")."""
    if "/./" in path or "/../" in path or path.endswith(("/.", "/..")):
        return False
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)


def routed_paths(scope: Scope) -> tuple[str, ...]:
    """The request's path, and the path the app routes on when it is mounted under `root_path`."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return (path, path[len(root) :] or "/")
    return (path,)


async def sending_session(store: SessionStore, session: Session, scope: Scope, send: Send) -> Send:
    """`send`, adding the re-issued session cookie to the app's response headers."""
    cookies = CookieWriter()
    try:
        await store.save(session, scope, cookies)
    except PKCEMiddlewareError as exc:
        log_refusal(exc, scope)  # this response goes out unchanged; the next request tries again
        return send

    async def send_with_cookie(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = cookies.applied(message)
        await send(message)

    return send_with_cookie


async def refused_socket(exc: PKCEMiddlewareError, scope: Scope, send: Send) -> None:
    """A WebSocket the middleware cannot let in: a token's caller is refused as any caller without
    the right is; anything else (the provider or the store down) closes with 1011."""
    log_refusal(exc, scope)
    if isinstance(exc, BearerError):
        await refuse_websocket(scope, send, exc.error, exc.message)
    else:
        await send({"type": "websocket.close", "code": 1011, "reason": exc.error})


async def refuse_websocket(scope: Scope, send: Send, error: Reason, message: str) -> None:
    """403 where the server can send an HTTP answer to a WebSocket handshake, else close 1008."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps({"error": error, "message": message}, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.replace("_", " ")})


async def watched_websocket(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    ends_at: float,
    check_interval: float,
    store: SessionStore,
    session: Session | None = None,
) -> None:
    """Run the app's WebSocket, closing it with 1008 once its caller's right ends: at `ends_at`
    (the session's absolute expiry, or the token's), or, for a session, at the next check after
    a logout or revocation (every `check_interval` seconds)."""
    closed = False

    async def watch() -> None:
        nonlocal closed
        while True:
            remaining = ends_at - time.time()
            await asyncio.sleep(max(0.0, min(check_interval, remaining)))
            try:
                ended = time.time() >= ends_at or (session is not None and not await store.alive(session, scope))
            except PKCEMiddlewareError as exc:
                log_refusal(exc, scope)
                continue  # an outage is not a logout; ask again at the next check
            if ended:
                closed = True
                logger.info("websocket closed: reason=session_ended path=%r", scope["path"])
                await send({"type": "websocket.close", "code": 1008, "reason": "session ended"})
                return

    async def send_until_closed(message: Message) -> None:
        if not closed:  # after our close, the app's late messages have nowhere to go
            await send(message)

    watcher = asyncio.create_task(watch())
    try:
        await app(scope, receive, send_until_closed)
    finally:
        watcher.cancel()
