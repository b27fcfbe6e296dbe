"""Reading the signed-in user from the ASGI scope, for frameworks without Starlette's `request.user`.

`PKCEMiddleware` puts `scope["user"]` (`OIDCUser`) and `scope["auth"]` (`OIDCCredentials`) into the
scope of every request it lets through with a session. Starlette and FastAPI show them as
`request.user` / `request.auth`; Quart, Litestar and bare ASGI apps read them with these helpers:

    user = get_user(request.scope)        # Quart, Litestar
    user = get_user(scope)                # a bare ASGI app
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._session import OIDCCredentials, OIDCUser

__all__ = ["get_credentials", "get_user"]


def get_user(scope: Mapping[str, Any]) -> OIDCUser | None:
    """The signed-in user of this request, or None when there is none.

    None on a public path visited without a session (the middleware puts Starlette's
    `UnauthenticatedUser` there), on a scope the middleware never saw, or when something else
    put an object of another type under `"user"`: only the middleware's own `OIDCUser` counts.
    """
    user = scope.get("user")
    return user if isinstance(user, OIDCUser) else None


def get_credentials(scope: Mapping[str, Any]) -> OIDCCredentials | None:
    """The granted scopes and tokens of this request's session, or None when there is no session.

    On a request authenticated by an access token, its `TokenCredentials` (a subclass, with the
    token's claims, `client_id` and `dpop_bound`).

    None in the same cases as `get_user` (a public path's empty `AuthCredentials` is not a session).
    """
    auth = scope.get("auth")
    return auth if isinstance(auth, OIDCCredentials) else None
