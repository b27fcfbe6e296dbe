"""Who may enter, per app, per path and per route: `uvicorn examples.authorization_app:app` with PKCE_* set.

The app-wide rule comes from the environment (`PKCE_ALLOWED_EMAIL_DOMAINS`, `PKCE_ALLOWED_GROUPS`,
...). On top of it:

* `/admin/...` is for the `admins` group (a path rule);
* `/reports` is for `admins` too, said by a FastAPI dependency on the route;
* `/billing` needs a login at most `EXAMPLE_BILLING_MAX_AGE` seconds old (default 300): an older
  session is sent to the provider again (step-up), an API call gets a 401 (RFC 9470);
* `/vault` needs the login's `acr` to be `EXAMPLE_VAULT_ACR` (default `urn:example:mfa`).

Every page answers with the user it was served to, as JSON.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from pkce_middleware import OIDCUser, PKCEMiddleware, Require
from pkce_middleware.fastapi import RuleRefused, require, rule_refused_handler

api = FastAPI()
# Without it FastAPI would answer a refusal with its own JSON; with it, as the middleware does.
api.add_exception_handler(RuleRefused, rule_refused_handler)


def _user(request: Request, page: str) -> dict[str, Any]:
    claims = request.user.claims
    return {"page": page, "sub": request.user.identity, "email": claims.get("email"), "acr": claims.get("acr")}


@api.get("/")
async def home(request: Request) -> dict[str, Any]:
    return _user(request, "home")


@api.get("/admin/{rest:path}")
async def admin(request: Request, rest: str) -> dict[str, Any]:
    return _user(request, "admin")


@api.get("/reports")
async def reports(request: Request, user: Annotated[OIDCUser, Depends(require(groups=["admins"]))]) -> dict[str, Any]:
    return _user(request, "reports")


@api.get("/billing")
async def billing(request: Request) -> dict[str, Any]:
    return _user(request, "billing")


@api.get("/vault")
async def vault(request: Request) -> dict[str, Any]:
    return _user(request, "vault")


app = PKCEMiddleware(
    api,
    rules={
        "/admin": Require(groups=["admins"]),
        "/billing": Require(max_age=int(os.environ.get("EXAMPLE_BILLING_MAX_AGE", "300"))),
        "/vault": Require(acr_values=[os.environ.get("EXAMPLE_VAULT_ACR", "urn:example:mfa")]),
    },
)
