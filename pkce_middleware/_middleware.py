"""`PKCEMiddleware`: the whole flow of a request, in one place.

A request is one of: a lifespan event (start and stop the parts), one of the middleware's own
endpoints (`_routes`, and the resource metadata of `_resource`), a request on a bearer path (its
access token decides, `_resource`), a request with a live session (the app runs, with the user in
the scope), a public path (the app runs, anonymously), or a request without a session (a browser
is sent to the provider, a WebSocket is refused, anything else gets a 401). Whoever the caller,
the authorization rules (`_rules`) are held to their claims before the app runs. Every refusal is a
`PKCEMiddlewareError` answered through the app's `on_error` hook or the default page or JSON.
What each step means lives in its own module; this one only decides which step comes next.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ._bearer import Presented, presented_token
from ._components import build, run_lifespan
from ._config import PKCEConfig
from ._exceptions import (
    BearerError,
    ConfigError,
    LoginRequired,
    PKCEMiddlewareError,
    Reason,
)
from ._guards import SCOPE_KEY as GUARD_KEY
from ._guards import Guard, request_target
from ._hooks import Hooks, OnError, OnLogin, OnLogout
from ._resource import Mode, Modes, ResourceServer, TokenCredentials, TokenUser
from ._responses import is_navigation
from ._routes import Routes
from ._rules import Require
from ._session import Session
from ._store import PENDING
from ._websockets import public_path, refuse_websocket, sending_session, watched_websocket

__all__ = ["PKCEMiddleware"]

logger = logging.getLogger("pkce_middleware")


class PKCEMiddleware:
    """OpenID Connect login (Authorization Code + PKCE) in front of an ASGI app.

    Every `http` and `websocket` request either carries a valid session cookie, and reaches the
    app with `scope["user"]` (`OIDCUser`) and `scope["auth"]` (`OIDCCredentials`), or never reaches
    the app: a browser loading a page is sent to the provider, anything else gets a 401 (WebSockets
    are refused with 403 or closed with 1008). Paths in `public_paths` reach the app either way.

    `config` defaults to `PKCEConfig.from_environ()`. `on_error`, `on_login` and `on_logout` are
    the app's hooks (see the README, "Customising error pages"). `transport` replaces the network
    for calls to the provider (tests, or a custom proxy setup). `session_cache_size` is how many
    opened session cookies each process remembers (0 turns the cache off). `rules` maps path
    prefixes to a `Require` on top of the `PKCE_ALLOWED_*` options (README, "Authorization");
    `modes` maps path prefixes to `"session"`, `"bearer"` or `"either"` on top of
    `PKCE_BEARER_PATHS` (README, "Bearer tokens").

    Without a server that runs the ASGI lifespan, use `async with PKCEMiddleware(...)` (or call
    `aclose()` when done) so that the HTTP client and store connections are closed.
    """

    #: Seconds between checks that an open WebSocket's session was not logged out or revoked.
    websocket_check_interval = 30.0

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: PKCEConfig | None = None,
        on_error: OnError | None = None,
        on_login: OnLogin | None = None,
        on_logout: OnLogout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        session_cache_size: int = 1024,
        rules: Mapping[str, Require] | None = None,
        modes: Mapping[str, Mode] | None = None,
    ) -> None:
        self.app = app
        self.config = config = config if config is not None else PKCEConfig.from_environ()
        if session_cache_size < 0:
            raise ValueError("session_cache_size must not be negative")
        self._parts = build(config, transport=transport, session_cache_size=session_cache_size, rules=rules)
        self._hooks = Hooks(on_error=on_error, on_login=on_login, on_logout=on_logout)
        # Bearer tokens come from the first provider: checked against its issuer (of several, its own configuration).
        first = config.each_provider[0][2]
        self._resource = ResourceServer(first, self._parts.provider) if config.resource is not None else None
        challenges = self._resource.challenges if self._resource is not None else None
        self._guard = Guard(
            self._hooks,
            login_path=config.login_path,
            leeway=config.clock_leeway,
            token_challenges=challenges,
            rules=self._parts.rules,
        )
        self._routes = Routes(self._parts, self._hooks)
        self._refuse = functools.partial(self._routes.refuse, challenges=challenges)
        self._lifecycle = self._parts.lifecycle
        try:
            self._modes = Modes(config.bearer_paths, modes or {})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self._resource is not None:
            self._routes.paths.update(self._resource.paths)
        elif self._modes.active:
            raise ConfigError("PKCE_RESOURCE is required for bearer paths (modes=...): the audience tokens must name")
        # Fixed from here on, and read by every request: one attribute each, not a chain.
        self._route_paths = self._routes.paths
        self._any_token_paths = self._modes.active
        self._any_rules = self._parts.rules.active

    def __repr__(self) -> str:
        return f"PKCEMiddleware(app={self.app!r}, config={self.config!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]  # read once: every request passes several of these tests
        if kind == "lifespan":
            await run_lifespan(self._parts, self.app, scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        if kind == "websocket" and not self._routes.origins.websocket_allowed(scope):
            logger.warning("websocket refused: reason=%s path=%r", Reason.CROSS_ORIGIN_WEBSOCKET, scope["path"])
            await refuse_websocket(scope, send, Reason.CROSS_ORIGIN_WEBSOCKET, "This page may not open this socket.")
            return
        mode: Mode | None = "session"
        try:
            if kind == "http" and (route := self._route_paths.get(scope["path"])) is not None:
                await route(scope, receive, send)
                return
            if self._any_token_paths and (mode := self._modes.for_scope(scope)) != "session":
                presented = presented_token(scope["headers"])
                if presented is None and mode == "bearer" and self._is_public(scope["path"]):
                    await self._serve_anonymous(scope, receive, send)  # public stays public; never a session here
                    return
                if presented is not None or mode == "bearer":
                    # A token decides, even beside a session cookie: one request, one identity.
                    await self._serve_token(presented, scope, receive, send)
                    return
            current = self._lifecycle.current_now(scope)
            if current is PENDING:  # a refresh is due, or the store must ask its server
                current = await self._lifecycle.current(scope)
            if current is None and not self._is_public(scope["path"]) and kind == "http":
                if is_navigation(scope["method"], Headers(scope=scope)):
                    await self._routes.start_login(scope, receive, send, return_to=request_target(scope))
                    return
                login_url = f"{self.config.login_path}?next={quote(request_target(scope), safe='')}"
                raise LoginRequired("no session", login_url=login_url)
        except PKCEMiddlewareError as exc:  # no session, or the provider or the store is down
            await self._refuse(exc, scope, receive, send, token_too=mode == "either")
            return

        if current is not None and current.write and kind == "http":
            # Even on a refusal: a refreshed session that is not written back loses its new tokens.
            send = await sending_session(self._parts.store, current.session, scope, send)
        if current is not None and self._any_rules:
            refusal = self._guard.refusal(current.session.claims, scope)
            if refusal is not None and not self._is_public(scope["path"]):
                await self._guard.answer(refusal, scope, receive, send)
                return
            if refusal is not None:
                current = None  # a public path: the app sees this user as anonymous
        if current is not None:
            # Overwrites whatever an outer layer or a client-controlled value put there.
            scope["user"], scope["auth"] = current.user, current.credentials
            scope[GUARD_KEY] = self._guard
            if kind == "websocket":
                await self._watched_websocket(scope, receive, send, current.session.expires_at, current.session)
                return
            await self.app(scope, receive, send)
        elif self._is_public(scope["path"]):
            await self._serve_anonymous(scope, receive, send)
        else:
            await refuse_websocket(scope, send, Reason.LOGIN_REQUIRED, "Sign in to use this resource.")

    async def _serve_token(self, presented: Presented | None, scope: Scope, receive: Receive, send: Send) -> None:
        """A request on a bearer path: the app runs as the token's caller, or a 401/403/503 answers."""
        assert self._resource is not None  # `Modes` has bearer paths only with a resource
        try:
            if presented is None:
                raise BearerError("no access token", error=Reason.BEARER_MISSING)
            info = await self._resource.authenticate(scope, presented)
        except BearerError as exc:
            await self._refuse(exc, scope, receive, send)
            return
        user, credentials = TokenUser(info), TokenCredentials(info, presented.token)
        if self._any_rules:
            refusal = self._guard.refusal(info.claims, scope)
            if refusal is not None:
                scope["auth"] = credentials  # the guard answers a token's caller as one: never a redirect
                await self._guard.answer(refusal, scope, receive, send)
                return
        scope["user"], scope["auth"] = user, credentials
        scope[GUARD_KEY] = self._guard
        if scope["type"] == "websocket":
            # A socket lives no longer than the token that opened it.
            await self._watched_websocket(scope, receive, send, info.expires_at + self.config.clock_leeway)
            return
        await self.app(scope, receive, send)

    async def _serve_anonymous(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["user"], scope["auth"] = UnauthenticatedUser(), AuthCredentials()
        scope[GUARD_KEY] = self._guard
        await self.app(scope, receive, send)

    async def _watched_websocket(
        self, scope: Scope, receive: Receive, send: Send, ends_at: float, session: Session | None = None
    ) -> None:
        """The app's WebSocket, closed with 1008 at `ends_at` or, for a session, once it ended."""
        interval, store = self.websocket_check_interval, self._parts.store
        await watched_websocket(
            self.app, scope, receive, send, ends_at=ends_at, check_interval=interval, store=store, session=session
        )

    def _is_public(self, path: str) -> bool:
        return public_path(path, self.config.public_paths)

    # -- public seams: sessions made in code, and a close without a lifespan ------------------

    @property
    def session_cookie_name(self) -> str:
        """The session cookie's name (`__Host-pkce_session` with secure cookies)."""
        return self._parts.cookies.session_name

    async def create_session(self, *, claims: Mapping[str, Any], token: Mapping[str, Any]) -> list[str]:
        """Start a session as a finished login would, for a user authenticated some other way.

        `claims` are the user's validated ID token claims (`sub` is required), `token` a token
        endpoint answer (`access_token`, `id_token`, optional `refresh_token`, `expires_in`,
        `scope`); nothing here checks them again. Returns the `Set-Cookie` header values to send
        (the test kit, `pkce_middleware.testing`, is built on this). With several providers, the
        session is one of the first provider's.
        """
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise ValueError("claims need a non-empty string 'sub'")
        return await self._parts.session_in_code(claims, token)

    async def __aenter__(self) -> PKCEMiddleware:
        await self._parts.startup()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client and the store's connections (what the lifespan's shutdown does)."""
        await self._parts.aclose()
