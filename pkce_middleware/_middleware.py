from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, quote

import httpx
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.datastructures import URL, Headers
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._config import PKCEConfig
from ._cookies import CookiePolicy, read_cookie, request_cookies
from ._crypto import Sealer
from ._exceptions import CallbackError, ConfigError, LoginError, PKCEMiddlewareError
from ._flow import (
    FLOW_MAX_AGE,
    MAX_PARALLEL_FLOWS,
    FlowCodec,
    LoginAttempt,
    UsedStates,
    flow_cookie_suffix,
    safe_return_path,
)
from ._provider import Provider
from ._responses import (
    NO_STORE,
    error_response,
    is_navigation,
    login_required,
    logout_page,
    provider_error_page,
)
from ._session import OIDCCredentials, OIDCUser, Session, SessionCodec

__all__ = ["PKCEMiddleware"]

logger = logging.getLogger("pkce_middleware")

DEFAULT_CALLBACK_PATH = "/auth/callback"
#: Browsers drop a cookie whose name and value exceed 4096 bytes, silently (starlette #2412).
MAX_COOKIE_BYTES = 4000
_SINGLE_VALUED = ("state", "code", "iss", "error")


class PKCEMiddleware:
    """OpenID Connect login (Authorization Code + PKCE) in front of an ASGI app.

    Every `http` and `websocket` request either carries a valid session cookie, and reaches the
    app with `scope["user"]` (`OIDCUser`) and `scope["auth"]` (`OIDCCredentials`), or never reaches
    the app: a browser loading a page is sent to the provider, anything else gets a 401 (WebSockets
    are closed with 1008). Paths in `public_paths` reach the app either way.

    `transport` replaces the network for calls to the provider (tests, or a custom proxy setup).
    """

    def __init__(
        self, app: ASGIApp, *, config: PKCEConfig | None = None, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.app = app
        self.config = config = config if config is not None else PKCEConfig.from_environ()
        keys = [str(key) for key in config.secret_keys]
        self._cookies = CookiePolicy(secure=config.cookie_secure)
        self._session_cookie = self._cookies.session_name.encode()
        self._sessions = SessionCodec(Sealer(keys, "session"))
        self._flows = FlowCodec(Sealer(keys, "flow"))
        self._used_states = UsedStates()
        self._provider = Provider(config, transport=transport)
        self._callback_path = config.callback_path or DEFAULT_CALLBACK_PATH
        self._routes: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            self._callback_path: self._callback,
            config.login_path: self._login,
            config.logout_path: self._logout,
        }

    def __repr__(self) -> str:
        return f"PKCEMiddleware(app={self.app!r}, config={self.config!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        if scope["type"] == "http" and (route := self._routes.get(scope["path"])) is not None:
            await route(scope, receive, send)
            return

        opened = self._open_session(scope)
        if opened is not None:
            # Overwrites whatever an outer layer or a client-controlled value put there.
            scope["user"], scope["auth"] = opened
            await self.app(scope, receive, send)
        elif self._is_public(scope["path"]):
            scope["user"], scope["auth"] = UnauthenticatedUser(), AuthCredentials()
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "login required"})
        elif is_navigation(scope["method"], Headers(scope=scope)):
            await self._start_login(scope, receive, send, return_to=_request_target(scope))
        else:
            login_url = f"{self.config.login_path}?next={quote(_request_target(scope), safe='')}"
            await login_required(login_url)(scope, receive, send)

    def _open_session(self, scope: Scope) -> tuple[OIDCUser, OIDCCredentials] | None:
        """The hot path: cookie lookup, AEAD open (cached), expiry check. No I/O."""
        value = read_cookie(scope, self._session_cookie)
        if value is None:
            return None
        opened = self._sessions.open(value)
        if opened is None or opened[0].expires_at <= time.time():
            return None
        return opened[1], opened[2]

    def _is_public(self, path: str) -> bool:
        # Dot-segments are never public: "/static/../admin" must not ride on "/static".
        if "/./" in path or "/../" in path or path.endswith(("/.", "/..")):
            return False
        return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in self.config.public_paths)

    # -- login ---------------------------------------------------------------------------------

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET <login_path>?next=/path`: start a login on purpose (a link, or a SPA after a 401)."""
        if scope["method"] not in ("GET", "HEAD"):
            await Response(status_code=405, headers={"Allow": "GET, HEAD", **NO_STORE})(scope, receive, send)
            return
        target = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("next", "/")
        if self._open_session(scope) is not None:
            await RedirectResponse(safe_return_path(target), 303, headers=NO_STORE)(scope, receive, send)
            return
        await self._start_login(scope, receive, send, return_to=target)

    async def _start_login(self, scope: Scope, receive: Receive, send: Send, *, return_to: str) -> None:
        redirect_uri = self.config.redirect_uri or _origin(scope) + DEFAULT_CALLBACK_PATH
        attempt = LoginAttempt.start(redirect_uri=redirect_uri, return_to=return_to)
        try:
            url = await self._provider.authorization_url(attempt)
        except PKCEMiddlewareError as exc:
            _log_refusal(exc, scope)
            await error_response(exc, browser=True, retry_url=attempt.return_to)(scope, receive, send)
            return
        response = RedirectResponse(url, 302, headers=NO_STORE)
        cookies = request_cookies(scope)
        for name in self._stale_flows(cookies):
            self._cookies.delete(response, name)
        if self._cookies.session_name in cookies:
            # A session that did not open is dead; a fresh login must not build on it (fixation).
            self._cookies.delete(response, self._cookies.session_name)
        suffix = flow_cookie_suffix(attempt.state)
        assert suffix is not None
        self._cookies.set(response, self._cookies.flow_prefix + suffix, self._flows.seal(attempt), max_age=FLOW_MAX_AGE)
        await response(scope, receive, send)

    def _stale_flows(self, cookies: dict[str, str]) -> list[str]:
        """Flow cookies to drop so that, with the new one, at most MAX_PARALLEL_FLOWS remain."""
        ages = []
        now = time.time()
        for name, value in cookies.items():
            if name.startswith(self._cookies.flow_prefix):
                attempt = self._flows.open(value)
                ages.append((-1 if attempt is None or attempt.expired(now) else attempt.created_at, name))
        ages.sort()
        stale = [name for created, name in ages if created == -1]
        live = [name for created, name in ages if created != -1]
        return stale + live[: max(0, len(live) - MAX_PARALLEL_FLOWS + 1)]

    # -- callback ------------------------------------------------------------------------------

    async def _callback(self, scope: Scope, receive: Receive, send: Send) -> None:
        cookies = request_cookies(scope)
        params = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        query = dict(params)
        suffix = flow_cookie_suffix(query.get("state", ""))
        flow_name = self._cookies.flow_prefix + suffix if suffix else None
        try:
            response = await self._finish_login(scope, params, cookies, flow_name)
        except PKCEMiddlewareError as exc:
            _log_refusal(exc, scope)
            response = error_response(exc, browser=True)
        if flow_name is not None and flow_name in cookies:
            # Used or failed, the attempt is over either way.
            self._cookies.delete(response, flow_name)
        await response(scope, receive, send)

    async def _finish_login(
        self, scope: Scope, params: list[tuple[str, str]], cookies: dict[str, str], flow_name: str | None
    ) -> Response:
        """Every check that needs no network first (RFC 9700 section 4.7.1), then the code redemption."""
        if scope["method"] != "GET":
            raise CallbackError("callback must be a GET", error="method_not_allowed")
        names = [name for name, _ in params]
        if any(names.count(name) > 1 for name in _SINGLE_VALUED):
            raise CallbackError("a parameter is repeated", error="duplicate_parameter")
        query = dict(params)
        state = query.get("state")
        flow_value = cookies.get(flow_name) if flow_name else None
        if "error" in query:
            # Anyone can link to the callback with error=...; the provider's own words are shown
            # only when the answer belongs to an attempt of this browser (RFC 9207 section 2.4).
            attempt = self._flows.open(flow_value) if flow_value and state else None
            ours = attempt is not None and state is not None and secrets.compare_digest(attempt.state, state)
            logger.warning("login refused: reason=provider_error error=%r ours=%s", query["error"][:100], ours)
            return provider_error_page(query["error"], query.get("error_description") if ours else None)
        if not state:
            raise CallbackError("no state", error="state_missing")
        if flow_value is None:
            if self._open_session(scope) is not None:
                # Another tab already finished this login; nothing to do but carry on.
                return RedirectResponse("/", 303, headers=NO_STORE)
            raise CallbackError("no login attempt cookie for this state", error="flow_missing")
        attempt = self._flows.open(flow_value)
        if attempt is None:
            raise CallbackError("login attempt cookie does not open", error="flow_invalid")
        if not secrets.compare_digest(attempt.state, state):
            raise CallbackError("state differs from the login attempt", error="state_mismatch")
        now = int(time.time())
        if attempt.expired(now):
            raise CallbackError("login attempt is too old", error="flow_expired")
        metadata = await self._provider.metadata()
        iss = query.get("iss")
        if iss is None and metadata.iss_parameter_supported:
            raise CallbackError("iss missing though the provider promises it (RFC 9207)", error="iss_missing")
        if iss is not None and iss != metadata.issuer:
            raise CallbackError("iss is not our issuer (RFC 9207)", error="iss_mismatch")
        code = query.get("code")
        if not code:
            raise CallbackError("no code", error="code_missing")
        if not self._used_states.claim(state, now):
            raise CallbackError("state already used", error="state_replayed")

        token, claims = await self._provider.redeem(attempt, code, now=now)
        session = Session.new(
            claims=claims, token=token, scopes=self.config.scopes, now=now, max_age=self.config.session_max_age
        )
        value = self._sessions.seal(session)
        if len(value) + len(self._cookies.session_name) > MAX_COOKIE_BYTES:
            logger.warning(
                "session cookie is %d bytes; browsers may drop it (reason=session_cookie_too_large)", len(value)
            )
        response = RedirectResponse(attempt.return_to, 303, headers=NO_STORE)
        self._cookies.set(response, self._cookies.session_name, value, max_age=self.config.session_max_age)
        logger.info("login ok: sub=%r", claims["sub"])
        return response

    # -- logout --------------------------------------------------------------------------------

    async def _logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET shows a button; POST (same origin only) ends the session here and at the provider."""
        headers = Headers(scope=scope)
        if scope["method"] in ("GET", "HEAD"):
            # Also the default post-logout landing: with no session left it says so and offers a new login.
            signed_in = self._open_session(scope) is not None
            await logout_page(self.config.logout_path, self.config.login_path, signed_in=signed_in)(
                scope, receive, send
            )
            return
        if scope["method"] != "POST":
            await Response(status_code=405, headers={"Allow": "GET, POST", **NO_STORE})(scope, receive, send)
            return
        if not _same_origin(headers, _origin(scope)):
            exc = LoginError("logout POST from another origin", error="cross_origin_logout", status_code=403)
            _log_refusal(exc, scope)
            await error_response(exc, browser=is_navigation("GET", headers))(scope, receive, send)
            return
        value = read_cookie(scope, self._session_cookie)
        opened = self._sessions.open(value) if value else None
        target = "/"
        if opened is not None:
            try:
                await self._provider.metadata()
            except PKCEMiddlewareError as exc:
                _log_refusal(exc, scope)  # the local logout still happens
            target = (
                self._provider.end_session_url(
                    id_token=opened[0].id_token,
                    post_logout_redirect_uri=self.config.post_logout_redirect_uri
                    or _origin(scope) + self.config.logout_path,
                )
                or "/"
            )
        response = RedirectResponse(target, 303, headers=NO_STORE)
        self._cookies.delete(response, self._cookies.session_name)
        logger.info("logout: sub=%r", opened[0].claims.get("sub") if opened else None)
        await response(scope, receive, send)

    # -- lifespan ------------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Load discovery and keys at startup; close the HTTP client at shutdown."""
        startup = await receive()
        try:
            await self._provider.startup()
        except ConfigError as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        replayed = False

        async def receive_after_startup() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return startup
            return await receive()

        async def send_closing_client(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self._provider.aclose()
            await send(message)

        await self.app(scope, receive_after_startup, send_closing_client)


def _origin(scope: Scope) -> str:
    url = URL(scope=scope)
    return f"{url.scheme}://{url.netloc}"


def _request_target(scope: Scope) -> str:
    """Path and query exactly as the browser sent them, for coming back after login."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    query = scope["query_string"].decode("latin-1")
    return safe_return_path(f"{path}?{query}" if query else path)


def _same_origin(headers: Headers, origin: str) -> bool:
    """CSRF check for state-changing POSTs: the browser's Origin (or Sec-Fetch-Site) must be ours."""
    sent = headers.get("origin")
    if sent is not None:
        return secrets.compare_digest(sent.encode(), origin.encode())
    return headers.get("sec-fetch-site") == "same-origin"


def _log_refusal(exc: PKCEMiddlewareError, scope: Scope) -> None:
    logger.warning(
        "login refused: reason=%s status=%d path=%s detail=%s", exc.error, exc.status_code, scope["path"], exc.detail
    )
