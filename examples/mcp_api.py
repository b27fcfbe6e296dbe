"""An API that browsers and agents share: `uvicorn examples.mcp_api:app` with PKCE_* set.

    PKCE_BEARER_PATHS=/mcp                      # tokens only here: no redirects, 401 + metadata
    PKCE_RESOURCE=http://127.0.0.1:8000/mcp     # the audience tokens must be issued for
    PKCE_BEARER_REQUIRED_SCOPES=mcp:tools       # optional: a token without it gets a 403

`/` is a page for people (a browser session), `/mcp` is the remote MCP-style endpoint for agents
(an access token for `PKCE_RESOURCE`). Both see the caller the same way: `request.user`. An agent
without a token gets a 401 whose `WWW-Authenticate` names the RFC 9728 metadata document, and finds
its way from there (see `examples/agent.py`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from pkce_middleware import PKCEMiddleware, TokenCredentials

api = FastAPI()


@api.get("/")
async def home(request: Request) -> dict[str, Any]:
    return {"hello": request.user.identity, "via": "session"}


@api.post("/mcp")
async def tools(request: Request) -> dict[str, Any]:
    # On a bearer path `request.auth` is always the token's (a session cookie alone gets a 401).
    credentials: TokenCredentials = request.auth
    return {
        "caller": request.user.identity,
        "scopes": list(credentials.scopes),
        "client_id": credentials.client_id,
        "dpop_bound": credentials.dpop_bound,
    }


app = PKCEMiddleware(api)
