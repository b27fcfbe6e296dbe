"""A FastAPI app behind PKCEMiddleware: `uvicorn examples.fastapi_app:app` with PKCE_* set.

`request.user` and `request.auth` work as in Starlette; the dependencies of `pkce_middleware.fastapi`
hand an endpoint the user and answer 401/403 the FastAPI way.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from pkce_middleware import OIDCCredentials, OIDCUser, PKCEMiddleware
from pkce_middleware.fastapi import current_credentials, current_user, require_scopes

api = FastAPI()


@api.get("/", response_class=PlainTextResponse)
async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.user.identity}")


@api.get("/me")
async def me(
    user: Annotated[OIDCUser, Depends(current_user)],
    credentials: Annotated[OIDCCredentials, Depends(current_credentials)],
) -> dict[str, Any]:
    # 401 with WWW-Authenticate if this path is in PKCE_PUBLIC_PATHS and the caller has no session.
    return {"sub": user.identity, "name": user.display_name, "scopes": list(credentials.scopes)}


@api.get("/admin", response_class=PlainTextResponse)
async def admin(user: Annotated[OIDCUser, Depends(require_scopes("admin"))]) -> PlainTextResponse:
    # 403 unless the provider granted the `admin` scope (add it to PKCE_SCOPES to ask for it).
    return PlainTextResponse(f"welcome, administrator {user.identity}")


# The whole app behind the gate, lifespan included (the middleware loads the provider's metadata then).
app = PKCEMiddleware(api)
