"""A Quart app behind PKCEMiddleware: `uvicorn examples.quart_app:app` with PKCE_* set."""

from __future__ import annotations

from typing import Any

from quart import Quart, request

from pkce_middleware import PKCEMiddleware

app = Quart(__name__)


@app.get("/")
async def home() -> str:
    # Quart has no request.user; the middleware's user object is in the ASGI scope.
    scope: dict[str, Any] = dict(request.scope)
    return f"hello {scope['user'].identity}"


# Quart types ASGI with hypercorn's TypedDicts and the middleware with starlette's plain aliases;
# both describe the same protocol, hence the ignore.
app.asgi_app = PKCEMiddleware(app.asgi_app)  # type: ignore[arg-type, assignment, method-assign]
