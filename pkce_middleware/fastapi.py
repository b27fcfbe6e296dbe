"""FastAPI dependencies for the signed-in user (imports FastAPI, so only FastAPI users import it).

    from fastapi import Depends, FastAPI
    from pkce_middleware import OIDCUser, PKCEMiddleware
    from pkce_middleware.fastapi import CurrentUser, current_user, require_scopes

    api = FastAPI()

    @api.get("/me")
    async def me(user: CurrentUser) -> dict[str, str]:  # or: user: OIDCUser = Depends(current_user)
        return {"sub": user.identity}

    @api.get("/admin", dependencies=[Depends(require_scopes("admin"))])
    async def admin() -> str: ...

    app = PKCEMiddleware(api)

Behind the middleware a request normally has a session already; these dependencies matter on
`PKCE_PUBLIC_PATHS` (anonymous requests get through there) and wherever a route needs scopes.
Both work for HTTP and WebSocket routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Unpack

from fastapi import Depends, HTTPException, WebSocketException, status
from starlette.requests import HTTPConnection, Request, empty_receive
from starlette.responses import Response

from ._exceptions import AccessDenied, StepUpRequired
from ._guards import refusal_of
from ._rules import Require, RuleOptions
from ._scope import get_credentials, get_user
from ._session import OIDCCredentials, OIDCUser

__all__ = [
    "CurrentCredentials",
    "CurrentUser",
    "RuleRefused",
    "current_credentials",
    "current_user",
    "require",
    "require_scopes",
    "rule_refused_handler",
]

#: RFC 9110 section 15.5.2: a 401 must say how to authenticate. Same scheme as the middleware's own 401.
_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Cookie realm="pkce_middleware"'}


async def current_user(connection: HTTPConnection) -> OIDCUser:
    """The signed-in `OIDCUser`; 401 (HTTP) or close 1008 (WebSocket) when there is none."""
    user = get_user(connection.scope)
    if user is None:
        raise _unauthenticated(connection)
    return user


async def current_credentials(connection: HTTPConnection) -> OIDCCredentials:
    """The session's `OIDCCredentials` (scopes, access token); 401 / close 1008 without a session."""
    credentials = get_credentials(connection.scope)
    if credentials is None:
        raise _unauthenticated(connection)
    return credentials


def require_scopes(*scopes: str) -> Callable[[HTTPConnection], Awaitable[OIDCUser]]:
    """A dependency giving the `OIDCUser` when the session was granted every one of `scopes`.

    401 without a session, 403 when a scope is missing (close 1008 on a WebSocket either way):
    `Depends(require_scopes("admin"))` in a route's `dependencies=[...]` or as a parameter default.
    """
    for scope in scopes:
        # Scope tokens never hold spaces (RFC 6749 section 3.3): "read write" is surely two scopes.
        if not scope or any(char.isspace() for char in scope):
            raise ValueError(f"require_scopes() takes one scope per argument, got {scope!r}")
    needed = tuple(dict.fromkeys(scopes))

    async def scoped_user(connection: HTTPConnection) -> OIDCUser:
        user = get_user(connection.scope)
        credentials = get_credentials(connection.scope)
        if user is None or credentials is None:
            raise _unauthenticated(connection)
        missing = [scope for scope in needed if scope not in credentials.scopes]
        if missing:
            detail = "missing scope: " + " ".join(missing)
            if connection.scope["type"] == "websocket":
                raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason=detail)
            raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=detail)
        return user

    # Shown in tracebacks and FastAPI's dependency errors instead of a bare "scoped_user".
    scoped_user.__qualname__ = f"require_scopes({', '.join(map(repr, needed))})"
    return scoped_user


class RuleRefused(HTTPException):
    """Raised by `require(...)` when its rule refuses the request; `response` is the middleware's
    own answer (the 403 page or JSON, the step-up redirect or 401), which `rule_refused_handler`
    sends. Without that handler FastAPI answers the same status and headers with its JSON."""

    def __init__(self, response: Response, body: dict[str, Any]) -> None:
        headers = {k: v for k, v in response.headers.items() if k in ("www-authenticate", "location", "cache-control")}
        super().__init__(status_code=response.status_code, detail=body, headers=headers)
        self.response = response


async def rule_refused_handler(request: Request, exc: Exception) -> Response:
    """`api.add_exception_handler(RuleRefused, rule_refused_handler)`: answers exactly as the middleware."""
    assert isinstance(exc, RuleRefused)
    return exc.response


def require(**options: Unpack[RuleOptions]) -> Callable[[HTTPConnection], Awaitable[OIDCUser]]:
    """A dependency giving the `OIDCUser` when this route's rule lets them in (see `Require`).

    `Depends(require(groups=["admins"]))`: a refused user gets a 403, a login that is not strong or
    recent enough a step-up (a browser is sent to the provider again, anything else gets a 401 with
    the RFC 9470 challenge), a WebSocket a close with 1008. Register `rule_refused_handler` for
    `RuleRefused` to answer with the middleware's own page and JSON body.
    """
    rule = Require(**options)

    async def required_user(connection: HTTPConnection) -> OIDCUser:
        guard, refusal = refusal_of(rule, connection.scope)
        user = get_user(connection.scope)
        if refusal is None and user is not None:
            return user
        assert refusal is not None
        if connection.scope["type"] == "websocket":
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason=refusal.error.replace("_", " "))
        response = await guard.response(refusal, connection.scope, empty_receive)
        raise RuleRefused(response, {"error": _ERRORS.get(type(refusal), refusal.error), "reason": refusal.error})

    required_user.__qualname__ = f"require({rule!r})"
    return required_user


_ERRORS = {AccessDenied: "access_denied", StepUpRequired: "insufficient_user_authentication"}


#: `user: CurrentUser` in an endpoint's parameters; the same as `user: OIDCUser = Depends(current_user)`.
CurrentUser = Annotated[OIDCUser, Depends(current_user)]
#: `credentials: CurrentCredentials`, e.g. to call an API with `credentials.access_token`.
CurrentCredentials = Annotated[OIDCCredentials, Depends(current_credentials)]


def _unauthenticated(connection: HTTPConnection) -> HTTPException | WebSocketException:
    if connection.scope["type"] == "websocket":
        # A WebSocket handshake has no 401; 1008 is what the middleware itself closes with.
        return WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="login required")
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED, detail="Not authenticated", headers=_WWW_AUTHENTICATE
    )
