"""A FastAPI app behind PKCEMiddleware: `uvicorn examples.fastapi_app:app` with PKCE_* set."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from pkce_middleware import PKCEMiddleware

api = FastAPI()


@api.get("/", response_class=PlainTextResponse)
async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.user.identity}")


@api.get("/me")
async def me(request: Request) -> dict[str, Any]:
    return {"sub": request.user.identity, "name": request.user.display_name, "scopes": request.auth.scopes}


app = PKCEMiddleware(api)
