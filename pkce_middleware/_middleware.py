from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._config import PKCEConfig
from ._cookies import CookiePolicy, CookieWriter, request_cookies
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
from ._lifecycle import SessionManager
from ._provider import Provider
from ._responses import (
    NO_STORE,
    error_response,
    is_navigation,
    login_required,
    logout_page,
    provider_error_page,
)
from ._session import Session, SessionCodec
from ._store import CookieStore, SessionStore

__all__ = ["PKCEMiddleware"]

logger = logging.getLogger("pkce_middleware")

DEFAULT_CALLBACK_PATH = "/auth/callback"
#: A logout token is a few hundred bytes; nobody needs to send us more (Starlette multipart DoS advisories).
MAX_LOGOUT_BODY = 64 * 1024
_SINGLE_VALUED = ("state", "code", "iss", "error")


class PKCEMiddleware:
    """OpenID Connect login (Authorization Code + PKCE) in front of an ASGI app.

    Every `http` and `websocket` request either carries a valid session cookie, and reaches the
    app with `scope["user"]` (`OIDCUser`) and `scope["auth"]` (`OIDCCredentials`), or never reaches
    the app: a browser loading a page is sent to the provider, anything else gets a 401 (WebSockets
    are closed with 1008). Paths in `public_paths` reach the app either way.

    `transport` replaces the network for calls to the provider (tests, or a custom proxy setup).
    """

    #: Seconds between checks that an open WebSocket's session was not logged out or revoked.
    websocket_check_interval = 30.0

    def __init__(
        self, app: ASGIApp, *, config: PKCEConfig | None = None, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.app = app
        self.config = config = config if config is not None else PKCEConfig.from_environ()
        keys = [str(key) for key in config.secret_keys]
        self._cookies = CookiePolicy(secure=config.cookie_secure)
        self._sessions = SessionCodec(Sealer(keys, "session"))
        self._flows = FlowCodec(Sealer(keys, "flow"))
        self._used_states = UsedStates()
        self._provider = Provider(config, transport=transport)
        self._store: SessionStore = _make_store(config, self._sessions, self._cookies, Sealer(keys, "session-id"))
        self._lifecycle = SessionManager(config, self._store, self._provider)
        self._callback_path = config.callback_path or DEFAULT_CALLBACK_PATH
        redirect = urlsplit(config.redirect_uri) if config.redirect_uri else None
        self._configured_origin = f"{redirect.scheme}://{redirect.netloc}" if redirect else None
        self._routes: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            self._callback_path: self._callback,
            config.login_path: self._login,
            config.logout_path: self._logout,
            config.backchannel_logout_path: self._backchannel_logout,
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

        try:
            if scope["type"] == "http" and (route := self._routes.get(scope["path"])) is not None:
                await route(scope, receive, send)
                return
            current = await self._lifecycle.current(scope)
        except PKCEMiddlewareError as exc:  # the provider or the store is down: say so, keep the session
            _log_refusal(exc, scope)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1011, "reason": exc.error})
            else:
                # A page for a browser (a form POST included), JSON for everything else.
                browser = is_navigation("GET", Headers(scope=scope))
                await error_response(exc, browser=browser)(scope, receive, send)
            return

        if current is not None:
            # Overwrites whatever an outer layer or a client-controlled value put there.
            scope["user"], scope["auth"] = current.user, current.credentials
            if scope["type"] == "websocket":
                await self._watched_websocket(current.session, scope, receive, send)
                return
            if current.write:
                send = await self._sending_session(current.session, scope, send)
            await self.app(scope, receive, send)
        elif self._is_public(scope["path"]):
            scope["user"], scope["auth"] = UnauthenticatedUser(), AuthCredentials()
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await _refuse_websocket(scope, send)
        elif is_navigation(scope["method"], Headers(scope=scope)):
            await self._start_login(scope, receive, send, return_to=_request_target(scope))
        else:
            login_url = f"{self.config.login_path}?next={quote(_request_target(scope), safe='')}"
            response = login_required(login_url)
            await self._forget_session(scope, response)
            await response(scope, receive, send)

    async def _sending_session(self, session: Session, scope: Scope, send: Send) -> Send:
        """`send`, adding the re-issued session cookie to the app's response headers."""
        cookies = CookieWriter()
        try:
            await self._store.save(session, scope, cookies)
        except PKCEMiddlewareError as exc:
            _log_refusal(exc, scope)  # this response goes out unchanged; the next request tries again
            return send

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookies.apply(message)
            await send(message)

        return send_with_cookie

    async def _watched_websocket(self, session: Session, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app's WebSocket, closing it with 1008 once the session ends: at its absolute
        expiry, or at the next check after a logout or revocation (every `websocket_check_interval`)."""
        closed = False

        async def watch() -> None:
            nonlocal closed
            while True:
                remaining = session.expires_at - time.time()
                await asyncio.sleep(max(0.0, min(self.websocket_check_interval, remaining)))
                try:
                    ended = time.time() >= session.expires_at or not await self._store.alive(session, scope)
                except PKCEMiddlewareError as exc:
                    _log_refusal(exc, scope)
                    continue  # an outage is not a logout; ask again at the next check
                if ended:
                    closed = True
                    logger.info("websocket closed: reason=session_ended sub=%r", session.sub)
                    await send({"type": "websocket.close", "code": 1008, "reason": "session ended"})
                    return

        async def send_until_closed(message: Message) -> None:
            if not closed:  # after our close, the app's late messages have nowhere to go
                await send(message)

        watcher = asyncio.create_task(watch())
        try:
            await self.app(scope, receive, send_until_closed)
        finally:
            watcher.cancel()

    async def _forget_session(self, scope: Scope, response: Response) -> None:
        """Delete a session cookie that no longer opens, so the browser stops sending it."""
        if any(name.startswith(self._cookies.session_name) for name in request_cookies(scope)):
            cookies = CookieWriter()
            try:
                await self._store.discard(None, scope, cookies)
            except PKCEMiddlewareError as exc:
                _log_refusal(exc, scope)  # the cookie is dead either way; the store forgets it by TTL
                self._cookies.delete(cookies, self._cookies.session_name)
            response.raw_headers.extend(cookies.raw_headers)

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
        if await self._store.load(scope) is not None:
            await RedirectResponse(safe_return_path(target), 303, headers=NO_STORE)(scope, receive, send)
            return
        await self._start_login(scope, receive, send, return_to=target)

    async def _start_login(self, scope: Scope, receive: Receive, send: Send, *, return_to: str) -> None:
        redirect_uri = self.config.redirect_uri or self._origin(scope) + DEFAULT_CALLBACK_PATH
        attempt = LoginAttempt.start(issuer=self.config.issuer, redirect_uri=redirect_uri, return_to=return_to)
        try:
            url = await self._provider.authorization_url(attempt)
        except PKCEMiddlewareError as exc:
            _log_refusal(exc, scope)
            await error_response(exc, browser=True, retry_url=attempt.return_to)(scope, receive, send)
            return
        response = RedirectResponse(url, 302, headers=NO_STORE)
        for name in self._stale_flows(request_cookies(scope)):
            self._cookies.delete(response, name)
        # A session that did not open is dead; a fresh login must not build on it (fixation).
        await self._forget_session(scope, response)
        suffix = flow_cookie_suffix(attempt.state)
        assert suffix is not None
        self._cookies.set(response, self._cookies.flow_prefix + suffix, self._flows.seal(attempt), max_age=FLOW_MAX_AGE)
        await response(scope, receive, send)

    def _origin(self, scope: Scope) -> str:
        """This app's origin: the configured redirect URI's when there is one (so a proxy that
        terminates TLS or rewrites Host changes nothing), else what the request says."""
        if self._configured_origin is not None:
            return self._configured_origin
        host = Headers(scope=scope).get("host") or "{}:{}".format(*scope.get("server") or ("localhost", 80))
        return f"{scope.get('scheme', 'http')}://{host}"

    def _stale_flows(self, cookies: dict[str, str]) -> list[str]:
        """Flow cookies to drop so that, with the new one, at most MAX_PARALLEL_FLOWS remain."""
        now = time.time()
        stale, live = [], []
        for name, value in cookies.items():
            if name.startswith(self._cookies.flow_prefix):
                attempt = self._flows.open(value)
                if attempt is None or attempt.expired(now):
                    stale.append(name)
                else:
                    live.append((attempt.created_at, name))
        live.sort()
        return stale + [name for _, name in live[: max(0, len(live) - MAX_PARALLEL_FLOWS + 1)]]

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
            if await self._store.load(scope) is not None:
                # Another tab already finished this login; nothing to do but carry on.
                return RedirectResponse("/", 303, headers=NO_STORE)
            raise CallbackError("no login attempt cookie for this state", error="flow_missing")
        attempt = self._flows.open(flow_value)
        if attempt is None:
            raise CallbackError("login attempt cookie does not open", error="flow_invalid")
        if not secrets.compare_digest(attempt.state, state):
            raise CallbackError("state differs from the login attempt", error="state_mismatch")
        if attempt.issuer != self.config.issuer:
            raise CallbackError("login attempt was for another provider", error="issuer_mismatch")
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
        session = self._lifecycle.keep(
            Session.new(
                claims=claims,
                token=token,
                scopes=self.config.scopes,
                now=time.time(),
                max_age=self.config.session_max_age,
            )
        )
        writer = CookieWriter()
        # Never adopt a session the browser brought along (fixation): drop it, then write the new one.
        old = await self._store.load(scope)
        await self._store.discard(old.session if old else None, scope, writer)
        await self._store.save(session, scope, writer)
        response = RedirectResponse(attempt.return_to, 303, headers=NO_STORE)
        response.raw_headers.extend(writer.raw_headers)
        logger.info("login ok: sub=%r", session.sub)
        return response

    # -- logout --------------------------------------------------------------------------------

    async def _logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET shows a button; POST (same origin only) ends the session here and at the provider."""
        headers = Headers(scope=scope)
        if scope["method"] in ("GET", "HEAD"):
            # Also the default post-logout landing: with no session left it says so and offers a new login.
            signed_in = await self._lifecycle.current(scope) is not None
            page = logout_page(self.config.logout_path, self.config.login_path, signed_in=signed_in)
            await page(scope, receive, send)
            return
        if scope["method"] != "POST":
            await Response(status_code=405, headers={"Allow": "GET, POST", **NO_STORE})(scope, receive, send)
            return
        if not _same_origin(headers, self._origin(scope)):
            exc = LoginError("logout POST from another origin", error="cross_origin_logout", status_code=403)
            _log_refusal(exc, scope)
            await error_response(exc, browser=is_navigation("GET", headers))(scope, receive, send)
            return
        loaded = await self._store.load(scope)
        cookies = CookieWriter()
        await self._store.discard(loaded.session if loaded else None, scope, cookies)
        target: str | None = "/"
        if loaded is not None:
            try:
                await self._provider.metadata()
            except PKCEMiddlewareError as exc:
                _log_refusal(exc, scope)  # the local logout still happens
            post_logout = self.config.post_logout_redirect_uri or self._origin(scope) + self.config.logout_path
            target = self._provider.end_session_url(
                id_token=loaded.session.id_token, post_logout_redirect_uri=post_logout
            )
            logger.info("logout: sub=%r", loaded.session.sub)
        response = RedirectResponse(target or "/", 303, headers=NO_STORE)
        response.raw_headers.extend(cookies.raw_headers)
        await response(scope, receive, send)

    async def _backchannel_logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        """OpenID Connect Back-Channel Logout 1.0: the provider ends sessions server to server."""
        try:
            if scope["method"] != "POST":
                raise LoginError("back-channel logout must be a POST", error="method_not_allowed", status_code=405)
            token = await _read_logout_token(scope, receive)
            now = int(time.time())
            claims = await self._provider.validate_logout_token(token, now=now)
            if claims.jti is not None and not await self._store.claim_jti(claims.jti, ttl=self.config.session_max_age):
                raise LoginError("logout token replayed", error="logout_token_replayed")
            await self._store.revoke(sid=claims.sid, sub=claims.sub, now=time.time())
        except PKCEMiddlewareError as exc:
            _log_refusal(exc, scope)
            # Section 2.8: 400 for a token we refuse; a provider or store outage is not the token's fault.
            status = exc.status_code if exc.status_code in (405, 502, 503, 504) else 400
            await JSONResponse({"error": exc.error}, status_code=status, headers=NO_STORE)(scope, receive, send)
            return
        logger.info("back-channel logout: sid=%r sub=%r", claims.sid, claims.sub)
        await Response(status_code=200, headers=NO_STORE)(scope, receive, send)

    # -- lifespan ------------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Load discovery and keys at startup; close the HTTP client at shutdown."""
        startup = await receive()
        try:
            await self._provider.startup()
            await self._store.startup()
        except ConfigError as exc:
            await self._provider.aclose()  # no shutdown follows a failed startup
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
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed"):
                await self._provider.aclose()
                await self._store.aclose()
            await send(message)

        await self.app(scope, receive_after_startup, send_closing_client)


async def _refuse_websocket(scope: Scope, send: Send) -> None:
    """403 where the server can send an HTTP answer to a WebSocket handshake, else close 1008."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = b'{"error":"login_required","message":"Sign in to use this resource."}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": "login required"})


def _make_store(config: PKCEConfig, codec: SessionCodec, cookies: CookiePolicy, id_sealer: Sealer) -> SessionStore:
    if config.session_store == "cookie":
        shared = None if config.revocation_store == "memory" else config.revocation_store
        return CookieStore(codec, cookies, max_age=config.session_max_age, shared_revocations=shared)
    from ._redis import RedisStore  # the redis package is needed only by those who use it

    return RedisStore(
        config.session_store,
        codec,
        cookies,
        id_sealer,
        max_age=config.session_max_age,
        idle_timeout=config.session_idle_timeout,
        # Long enough for discovery, a token call and a key fetch, each with its own deadline.
        lock_timeout=max(30.0, 3 * config.http_timeout + 10),
    )


async def _read_logout_token(scope: Scope, receive: Receive) -> str:
    """The `logout_token` of a form POST, reading at most MAX_LOGOUT_BODY bytes."""
    if Headers(scope=scope).get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise LoginError("not a form post", error="logout_token_invalid")
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise LoginError("client went away", error="logout_token_invalid")
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_LOGOUT_BODY:
            raise LoginError("body too large", error="logout_token_invalid", status_code=413)
    tokens = [
        value for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True) if name == "logout_token"
    ]
    if len(tokens) != 1 or not tokens[0]:
        raise LoginError("exactly one logout_token is needed", error="logout_token_invalid")
    return tokens[0]


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
        return sent == origin
    return headers.get("sec-fetch-site") == "same-origin"


def _log_refusal(exc: PKCEMiddlewareError, scope: Scope) -> None:
    # %r: the path is the client's, and must not be able to forge log lines.
    logger.warning(
        "login refused: reason=%s status=%d path=%r detail=%s", exc.error, exc.status_code, scope["path"], exc.detail
    )
