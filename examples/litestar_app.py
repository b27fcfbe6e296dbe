"""A Litestar app behind PKCEMiddleware: `granian --interface asgi examples.litestar_app:app` with PKCE_* set.

`get_user(request.scope)` reads the middleware's user from the ASGI scope; here it feeds a Litestar
dependency, so handlers simply ask for `user: OIDCUser`.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, MediaType, Request, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException

from pkce_middleware import OIDCCredentials, OIDCUser, PKCEMiddleware, get_credentials, get_user

#: RFC 9110: a 401 says how to authenticate; the same scheme as the middleware's own 401.
CHALLENGE = {"WWW-Authenticate": 'Cookie realm="pkce_middleware"'}


async def provide_user(request: Request[Any, Any, Any]) -> OIDCUser:
    user = get_user(request.scope)
    if user is None:  # only on a path in PKCE_PUBLIC_PATHS, visited without a session
        raise NotAuthorizedException("Not authenticated", headers=CHALLENGE)
    return user


async def provide_credentials(request: Request[Any, Any, Any]) -> OIDCCredentials:
    credentials = get_credentials(request.scope)
    if credentials is None:
        raise NotAuthorizedException("Not authenticated", headers=CHALLENGE)
    return credentials


@get("/", media_type=MediaType.TEXT)
async def home(user: NamedDependency[OIDCUser]) -> str:
    return f"hello {user.identity}"


@get("/me")
async def me(user: NamedDependency[OIDCUser], credentials: NamedDependency[OIDCCredentials]) -> dict[str, Any]:
    return {"sub": user.identity, "name": user.display_name, "scopes": list(credentials.scopes)}


# Wrapped from outside rather than listed in `middleware=[...]`: Litestar builds its middleware stack
# once per route and never passes `lifespan` through it, so the gate would be several instances
# and would miss the startup where it loads the provider's metadata. Litestar types ASGI with its own
# TypedDicts and the middleware with Starlette's plain aliases; both describe the same protocol.
app = PKCEMiddleware(
    Litestar(  # type: ignore[arg-type]
        route_handlers=[home, me],
        dependencies={"user": Provide(provide_user), "credentials": Provide(provide_credentials)},
    )
)
