"""A Quart app behind PKCEMiddleware: `hypercorn examples.quart_app:app` with PKCE_* set.

Quart has no `request.user`: `get_user(request.scope)` reads the middleware's user from the ASGI scope.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from pkce_middleware import PKCEMiddleware, get_credentials, get_user

app = Quart(__name__)

#: RFC 9110: a 401 says how to authenticate; the same scheme as the middleware's own 401.
CHALLENGE = WWWAuthenticate("Cookie", {"realm": "pkce_middleware"})


@app.get("/")
async def home() -> Response:
    user = get_user(request.scope)
    if user is None:  # only on a path in PKCE_PUBLIC_PATHS, visited without a session
        raise Unauthorized(www_authenticate=CHALLENGE)
    return Response(f"hello {user.identity}", mimetype="text/plain")


@app.get("/me")
async def me() -> dict[str, Any]:
    user, credentials = get_user(request.scope), get_credentials(request.scope)
    if user is None or credentials is None:
        raise Unauthorized(www_authenticate=CHALLENGE)
    return {"sub": user.identity, "name": user.display_name, "scopes": list(credentials.scopes)}


# Quart's own idiom for ASGI middleware: wrap `asgi_app`, so `app` stays the Quart object (and its
# lifespan reaches the middleware). Quart types ASGI with hypercorn's TypedDicts and the middleware
# with Starlette's plain aliases; both describe the same protocol, hence the ignore.
app.asgi_app = PKCEMiddleware(app.asgi_app)  # type: ignore[arg-type, assignment, method-assign]
