"""The middleware's sign-out endpoints: logout, front-channel logout, back-channel logout.

Each endpoint does the I/O (cookies, provider calls, the store) between checks made without I/O
elsewhere (`_tokens` for logout tokens), and answers a browser's refusal through the app's
`on_error` hook or the default page; a provider's (front- or back-channel) gets a bare status, as
it reads no page. `Routes` (`_routes`) builds `LogoutRoutes` and serves its `paths`.

References:
    OpenID Connect RP-Initiated Logout 1.0, OpenID Connect Front-Channel Logout 1.0,
    OpenID Connect Back-Channel Logout 1.0 (2.5-2.8).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from ._components import Components
from ._cookies import CookieWriter
from ._exceptions import LogoutError, PKCEMiddlewareError, Reason, StoreUnavailable
from ._forms import MAX_QUERY, read_form
from ._hooks import Hooks, log_refusal
from ._origins import Origins
from ._responses import NO_STORE, logout_page, page
from ._session import revocation_key

__all__: list[str] = []

logger = logging.getLogger("pkce_middleware")

#: A logout token is a few hundred bytes; nobody needs to send us more (Starlette multipart DoS advisories).
MAX_LOGOUT_BODY = 64 * 1024


class LogoutRoutes:
    def __init__(self, components: Components, hooks: Hooks, origins: Origins) -> None:
        self._parts = components
        self._hooks = hooks
        #: The app's origins, shared with `Routes`: a logout POST must come from one of them.
        self.origins = origins
        config = components.config
        self.paths: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            config.logout_path: self.logout,
            config.backchannel_logout_path: self.backchannel_logout,
        }
        if config.frontchannel_logout_path is not None:
            self.paths[config.frontchannel_logout_path] = self.frontchannel_logout

    def _provider_named_by(self, issuer: str | None) -> str | None:
        """The provider whose issuer is `issuer` (plain OAuth 2.0 providers have none)."""
        return next(
            (name for name, _, own in self._parts.config.each_provider if issuer and own.issuer == issuer), None
        )

    # -- logout --------------------------------------------------------------------------------

    async def logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET shows a button; POST (same origin only) ends the session here and at the provider."""
        parts = self._parts
        if scope["method"] in ("GET", "HEAD"):
            # Also the default post-logout landing: with no session left it says so and offers a new login.
            current = await parts.lifecycle.live(scope)
            page = logout_page(
                parts.config.logout_path,
                parts.config.login_path,
                signed_in=current is not None,
                provider_origin=parts.providers[current.provider].end_session_origin if current else None,
            )
            await page(scope, receive, send)
            return
        if scope["method"] != "POST":
            await Response(status_code=405, headers={"Allow": "GET, POST", **NO_STORE})(scope, receive, send)
            return
        if not self.origins.same_origin(scope):
            exc = LogoutError("logout POST from another origin", error=Reason.CROSS_ORIGIN_LOGOUT)
            await (await self._hooks.error_response(exc, scope, receive))(scope, receive, send)
            return
        # A dead session (expired, idle, logged out) is no session: its cookie goes, but nothing
        # is revoked for it, and its ID token is never sent anywhere as a hint.
        session = await parts.lifecycle.live(scope)
        cookies = CookieWriter()
        await parts.store.discard(session, scope, cookies)
        target: str | None = "/"
        if session is not None:
            provider = parts.providers[session.provider]  # the provider this session signed in at, only
            try:
                await provider.metadata()
            except PKCEMiddlewareError as exc:
                log_refusal(exc, scope)  # the local logout still happens
            post_logout = parts.config.post_logout_redirect_uri or self.origins.of_app(scope) + parts.config.logout_path
            target = provider.end_session_url(id_token=session.id_token, post_logout_redirect_uri=post_logout)
            logger.info("logout: sub=%r", session.sub)
            await self._hooks.logged_out(scope, receive, session.user())
        response = RedirectResponse(target or "/", 303, headers=NO_STORE)
        response.raw_headers.extend(cookies.raw_headers)
        await response(scope, receive, send)

    async def frontchannel_logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        """OpenID Connect Front-Channel Logout 1.0: the provider's iframe ends a session.

        With `iss` and `sid` (section 2), every session of that provider session ends, in every
        process (the revocation back-channel logout uses): a cross-site iframe does not carry our
        `SameSite=Lax` cookie. Without them, the session of the cookie this request brought, if any.
        The answer may be framed by the provider only, and is never cached (section 3).
        """
        parts = self._parts
        if scope["method"] not in ("GET", "HEAD"):
            await Response(status_code=405, headers={"Allow": "GET, HEAD", **NO_STORE})(scope, receive, send)
            return
        query = scope["query_string"]
        params = dict(parse_qsl(query.decode("latin-1"))) if len(query) <= MAX_QUERY else {}
        iss, sid = params.get("iss"), params.get("sid")
        cookies = CookieWriter()
        try:
            if iss is None and sid is None:
                session = await parts.lifecycle.live(scope)
                await parts.store.discard(session, scope, cookies)
                logger.info("front-channel logout: sub=%r", session.sub if session else None)
            elif (name := self._provider_named_by(iss)) is None or not sid:
                raise LogoutError(
                    "front-channel logout of another issuer, or without sid",
                    error=Reason.LOGOUT_TOKEN_INVALID,
                    status_code=400,
                )
            else:
                await parts.store.revoke(sid=revocation_key(name, sid), sub=None, now=time.time())
                logger.info("front-channel logout: provider=%r sid=%r", name, sid)
        except PKCEMiddlewareError as exc:
            log_refusal(exc, scope)
            status = 503 if isinstance(exc, StoreUnavailable) else 400
            await JSONResponse({"error": exc.error}, status_code=status, headers=NO_STORE)(scope, receive, send)
            return
        framers = {origin for own in parts.providers.values() for origin in own.origins} - {""}
        csp = f"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors {' '.join(sorted(framers))}"
        response = page("Signed out", "<p>Signed out.</p>", status_code=200, headers={"Content-Security-Policy": csp})
        response.raw_headers.extend(cookies.raw_headers)
        await response(scope, receive, send)

    async def backchannel_logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        """OpenID Connect Back-Channel Logout 1.0: the provider ends sessions server to server."""
        parts = self._parts
        try:
            if scope["method"] != "POST":
                raise LogoutError(
                    "back-channel logout must be a POST", error=Reason.METHOD_NOT_ALLOWED, status_code=405
                )
            token = await _read_logout_token(scope, receive)
            # Which provider's token it claims to be decides whose keys check it (and whose
            # sessions it can end); a token of B cannot end sessions made at A.
            name = self._provider_named_by(_unverified_issuer(token))
            if name is None:
                raise LogoutError("logout token of no configured provider", error=Reason.LOGOUT_TOKEN_INVALID)
            claims = await parts.providers[name].validate_logout_token(token, now=int(time.time()))
            if not await parts.store.claim_jti(revocation_key(name, claims.jti), ttl=parts.config.session_max_age):
                raise LogoutError("logout token replayed", error=Reason.LOGOUT_TOKEN_REPLAYED, status_code=400)
            sid = None if claims.sid is None else revocation_key(name, claims.sid)
            sub = None if claims.sub is None else revocation_key(name, claims.sub)
            await parts.store.revoke(sid=sid, sub=sub, now=time.time())
        except PKCEMiddlewareError as exc:
            log_refusal(exc, scope)
            # Section 2.8: 400 for a token we refuse; a provider or store outage is not the token's fault.
            status = exc.status_code if exc.status_code in (405, 502, 503, 504) else 400
            await JSONResponse({"error": exc.error}, status_code=status, headers=NO_STORE)(scope, receive, send)
            return
        logger.info("back-channel logout: sid=%r sub=%r", claims.sid, claims.sub)
        await Response(status_code=200, headers=NO_STORE)(scope, receive, send)


def _unverified_issuer(token: str) -> str | None:
    """The `iss` a JWT claims, read without checking anything: only to pick whose keys check it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, RecursionError):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) else None


def _logout_refused(detail: str, status: int) -> Exception:
    return LogoutError(detail, error=Reason.LOGOUT_TOKEN_INVALID, status_code=status)


async def _read_logout_token(scope: Scope, receive: Receive) -> str:
    """The `logout_token` of a form POST, reading at most MAX_LOGOUT_BODY bytes."""
    body = await read_form(scope, receive, limit=MAX_LOGOUT_BODY, refused=_logout_refused)
    tokens = [
        value for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True) if name == "logout_token"
    ]
    if len(tokens) != 1 or not tokens[0]:
        raise LogoutError("exactly one logout_token is needed", error=Reason.LOGOUT_TOKEN_INVALID, status_code=400)
    return tokens[0]
