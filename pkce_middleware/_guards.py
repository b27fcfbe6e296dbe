"""The answer to a request that an authorization rule refuses, for the middleware's path rules and
for the per-route helpers (`restrict`, and `pkce_middleware.fastapi.require`) alike.

A refusal (`AccessDenied`) is a 403: a page naming the signed-in user and the reason, with a way
to sign in as someone else, or JSON `{"error": "access_denied", ...}` for scripts. A step-up
(`StepUpRequired`) sends a browser loading a page back to the provider with `acr_values` and
`max_age`, keeping the session until the new login replaces it; anything else gets a 401 with the
RFC 9470 challenge. A WebSocket gets a 403 before it opens (or a close with 1008).

The middleware puts its `Guard` in the scope of every request it lets through, so route helpers
answer exactly as the middleware would (the app's `on_error` hook included).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Unpack
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from ._exceptions import AccessDenied, BearerError, LoginRequired, PKCEMiddlewareError, StepUpRequired
from ._flow import safe_return_path
from ._hooks import Hooks, log_refusal
from ._resource import TokenCredentials
from ._responses import NO_STORE, is_navigation
from ._rules import Require, RuleOptions, Rules
from ._scope import get_user
from ._websockets import refuse_websocket, routed_paths

__all__ = ["restrict"]

#: Where the middleware leaves its `Guard` for the route helpers.
SCOPE_KEY = "pkce_middleware.guard"

_F = TypeVar("_F", bound=Callable[..., Any])


def who(claims: Mapping[str, Any]) -> str:
    """How the refusal page names the user: the display name, and the email address if another."""
    name = next((claims[c] for c in ("name", "preferred_username") if isinstance(claims.get(c), str)), None)
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    name = name or email or str(claims.get("sub", ""))
    return f"{name} ({email})" if email and email != name else name


class Guard:
    """Checks a rule against a request's claims and answers a refusal the one way this app does."""

    def __init__(
        self,
        hooks: Hooks,
        *,
        login_path: str,
        leeway: int,
        token_challenges: Callable[[BearerError], list[str]] | None = None,
        rules: Rules | None = None,
    ) -> None:
        self._hooks = hooks
        #: The middleware's rules by path (`refusal`); a guard used by a route's decorator has none.
        self._rules = rules
        self.login_path = login_path
        self.leeway = leeway
        #: The `WWW-Authenticate` values for a token's caller (`_resource`), when bearer paths exist.
        self._token_challenges = token_challenges

    def refusal(self, claims: Mapping[str, Any], scope: Scope) -> AccessDenied | StepUpRequired | None:
        """The first refusal among the middleware's rules for this request's path; `None` lets it in."""
        assert self._rules is not None
        # Under a mount (`Mount("/app", ...)`, `--root-path`) the app routes on the path without the
        # prefix, which is what rules name; the full path's rules must pass too.
        rules = self._rules.for_request(scope["path"])
        if scope.get("root_path"):
            rules = (*rules, *(rule for path in routed_paths(scope)[1:] for rule in self._rules.for_request(path)))
        for rule in rules:
            refusal = self.verdict(rule, claims, scope)
            if refusal is not None:
                return refusal
        return None

    async def answer(self, refusal: PKCEMiddlewareError, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the refusal: the app's page or JSON over HTTP, a refused handshake or close for a socket."""
        if scope["type"] == "websocket":
            log_refusal(refusal, scope)
            await refuse_websocket(scope, send, refusal.error, refusal.message)
        else:
            await (await self.response(refusal, scope, receive))(scope, receive, send)

    def verdict(self, rule: Require, claims: Mapping[str, Any], scope: Scope) -> AccessDenied | StepUpRequired | None:
        """The refusal of `rule` for these claims, with its links filled in; `None` lets them in."""
        refusal = rule.check(claims, leeway=self.leeway)
        if refusal is None:
            return None
        target = request_target(scope)
        if isinstance(refusal, AccessDenied):
            refusal.who = who(claims)
            refusal.switch_url = self.login_url(target, prompt="login")
        else:
            refusal.login_url = self.login_url(target, acr_values=refusal.acr_values, max_age=refusal.max_age)
        return refusal

    def login_url(
        self, target: str, *, prompt: str | None = None, acr_values: tuple[str, ...] = (), max_age: int | None = None
    ) -> str:
        params = [("next", target)]
        if prompt:
            params.append(("prompt", prompt))
        if acr_values:
            params.append(("acr_values", " ".join(acr_values)))
        if max_age is not None:
            params.append(("max_age", str(max_age)))
        return f"{self.login_path}?{urlencode(params)}"

    async def response(self, refusal: PKCEMiddlewareError, scope: Scope, receive: Receive) -> Response:
        """A step-up redirect for a browser loading a page, else the refusal's page or JSON.

        A token's caller is never redirected (a step-up is the RFC 9470 401), and a 403 for it
        carries the RFC 6750 `insufficient_scope` challenge.
        """
        token_caller = isinstance(scope.get("auth"), TokenCredentials)
        if (
            not token_caller
            and isinstance(refusal, StepUpRequired | LoginRequired)
            and is_navigation(scope["method"], HTTPConnection(scope).headers)
        ):
            log_refusal(refusal, scope)
            return RedirectResponse(refusal.login_url, 303, headers=NO_STORE)
        response = await self._hooks.error_response(refusal, scope, receive)
        if token_caller and isinstance(refusal, AccessDenied) and self._token_challenges is not None:
            said = BearerError(refusal.detail, error=refusal.error, status_code=403)
            said.message = refusal.message
            response.raw_headers.extend(
                (b"www-authenticate", v.encode("latin-1")) for v in self._token_challenges(said)
            )
        return response


def restrict(**options: Unpack[RuleOptions]) -> Callable[[_F], _F]:
    """A decorator for Starlette endpoints (functions or `HTTPEndpoint` methods) that need more
    than the app-wide rule: `@restrict(groups=["admins"])`, `@restrict(acr_values=[...], max_age=300)`.

    The endpoint takes a `request` (or `websocket`) argument, as with Starlette's `@requires`.
    A refused user gets the middleware's 403; a login not strong or recent enough is sent to the
    provider again (a browser) or gets a 401 with the RFC 9470 challenge (anything else). A rule
    kind left unset here is not checked here (the middleware's global rule already was).
    """
    rule = Require(**options)

    def decorator(func: _F) -> _F:
        parameters = list(inspect.signature(func).parameters)
        index = next((i for i, name in enumerate(parameters) if name in ("request", "websocket")), None)
        if index is None:
            raise TypeError(f'@restrict needs an endpoint taking "request" or "websocket": {func.__qualname__}')

        @functools.wraps(func)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            connection = kwargs.get(parameters[index], args[index] if index < len(args) else None)
            if not isinstance(connection, HTTPConnection):
                raise TypeError(f"@restrict: {parameters[index]} is not a Starlette Request or WebSocket")
            guard, refusal = refusal_of(rule, connection.scope)
            if refusal is not None:
                if isinstance(connection, WebSocket):
                    log_refusal(refusal, connection.scope)
                    # A WebSocket endpoint's return value goes nowhere: close it here.
                    await connection.close(1008, str(refusal.error).replace("_", " "))
                    return None
                assert isinstance(connection, Request)
                return await guard.response(refusal, connection.scope, connection.receive)
            if inspect.iscoroutinefunction(func):
                return await func(*args, **kwargs)
            return await run_in_threadpool(func, *args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorator


def refusal_of(rule: Require, scope: Scope) -> tuple[Guard, PKCEMiddlewareError | None]:
    """The middleware's guard, and why `rule` refuses this request (`None` lets it in)."""
    guard = scope.get(SCOPE_KEY)
    if not isinstance(guard, Guard):
        raise RuntimeError("restrict(...) and require(...) need PKCEMiddleware in front of the app")
    user = get_user(scope)
    if user is None:  # a public path, visited without a session
        return guard, LoginRequired("no session", login_url=guard.login_url(request_target(scope)))
    return guard, guard.verdict(rule, user.claims, scope)


def request_target(scope: Scope) -> str:
    """Path and query exactly as the browser sent them, for coming back after login."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    query = scope["query_string"].decode("latin-1")
    return safe_return_path(f"{path}?{query}" if query else path)
