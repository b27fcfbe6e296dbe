"""`FakeProvider`: an in-process OpenID Provider for end-to-end tests of the middleware's real login.

Discovery, JWKS, an authorization endpoint that redirects straight back with a code for a chosen
user, token and end-session endpoints. It signs RS256 ID tokens and enforces PKCE (S256), the
redirect URI and single-use codes, so the middleware does every check it does in production.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from pkce_middleware import PKCEConfig

from ._protocol import (
    CODE_LIFETIME,
    Code,
    Grant,
    OriginRouter,
    at_hash,
    client_credentials,
    is_http_url,
    is_s256_challenge,
    oauth_error,
    signing_key,
    verifier_matches,
)

__all__ = ["BROWSER_HEADERS", "FAKE_CLIENT_ID", "FAKE_ISSUER", "AuthorizationRefused", "FakeProvider"]

FAKE_ISSUER = "https://idp.test"
#: The client id `FakeProvider.config()` uses when the provider accepts any client.
FAKE_CLIENT_ID = "test-client"
#: What a browser sends when it loads a page: `TestClient(app, headers=BROWSER_HEADERS)` plays one.
#: Without a session, only such a request is redirected to the provider; a test client's own
#: `Accept: */*` (as curl's, an SDK's) gets a 401 with a `login_url`, as a script does.
BROWSER_HEADERS: Final[dict[str, str]] = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
}


class AuthorizationRefused(ValueError):
    """An authorization request the provider answers with an error page, not a redirect.

    RFC 6749 section 4.1.2.1: with an unknown client or redirect URI, the browser is never sent
    to that URI.
    """


class FakeProvider:
    """An in-process OpenID Provider: plug it in with `transport=provider.transport`.

        provider = FakeProvider()                       # or the pkce_fake_provider fixture
        provider.login_as("bob", claims={"email": "bob@example.com"}, scopes=["openid", "admin"])
        app = PKCEMiddleware(inner, config=provider.config(), transport=provider.transport)
        async with provider.browser(app) as browser:    # follows redirects between app and provider
            assert (await browser.get("/")).status_code == 200   # a page load: the whole login

    The authorization endpoint logs in the current user (`sub`, `claims`; `login_as` changes
    them) without any form and redirects back with a code, `state` and `iss`. `scopes=None` grants
    what was asked for. A sync test can play the browser itself: `provider.authorize(url)` gives
    the callback URL for an authorization URL the app redirected to.

    It is strict where a real provider is: `client_id` (when given) and `redirect_uris` (when
    given) must match, PKCE with S256 is required, a code is single use, expires after a minute
    and is bound to its client and redirect URI, and `client_secret` (when given) is required at
    the token endpoint (basic or post). `offline_access` gets a refresh token, rotated on use.
    `issuer` may have a path; the provider answers under it.

    Only a page load is sent to the provider: a sync test's own client sends `BROWSER_HEADERS`
    (`TestClient(app, headers=BROWSER_HEADERS)`); `browser()` sends them itself.
    """

    def __init__(
        self,
        *,
        issuer: str = FAKE_ISSUER,
        client_id: str | None = None,
        client_secret: str | None = None,
        redirect_uris: Sequence[str] | None = None,
        sub: str = "test-user",
        claims: Mapping[str, Any] | None = None,
        scopes: Sequence[str] | None = None,
        expires_in: int = 3600,
    ) -> None:
        parts = urlsplit(issuer)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("issuer must be an http(s) URL without query or fragment")
        self._issuer = issuer
        self._base = issuer.rstrip("/")
        #: `None` accepts any client id (each code stays bound to the client that asked for it).
        self.client_id = client_id
        #: `None` accepts any client authentication, or none.
        self.client_secret = client_secret
        #: `None` accepts any http(s) redirect URI (still bound to its code).
        self.redirect_uris: list[str] | None = None if redirect_uris is None else list(redirect_uris)
        self.sub = sub
        self.claims: dict[str, Any] = dict(claims or {})
        self.scopes: tuple[str, ...] | None = None if scopes is None else tuple(scopes)
        #: Lifetime of access tokens; short ones make the middleware refresh (with `offline_access`).
        self.expires_in = expires_in
        #: The `sub` of every completed authorization, in order.
        self.logins: list[str] = []
        #: The parameters of every end-session (RP-initiated logout) request, in order.
        self.logouts: list[dict[str, str]] = []
        self._codes: dict[str, Code] = {}
        self._refresh_tokens: dict[str, Grant] = {}
        path = urlsplit(self._base).path
        self._router = Router(
            routes=[
                Route(f"{path}/.well-known/openid-configuration", self._discovery, methods=["GET"]),
                Route(f"{path}/jwks", self._jwks, methods=["GET"]),
                Route(f"{path}/authorize", self._authorize, methods=["GET"]),
                Route(f"{path}/token", self._token, methods=["POST"]),
                Route(f"{path}/logout", self._end_session, methods=["GET"]),
            ]
        )

    def __repr__(self) -> str:
        return f"FakeProvider(issuer={self._issuer!r}, sub={self.sub!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._router(scope, receive, send)

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def authorization_endpoint(self) -> str:
        return f"{self._base}/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self._base}/token"

    @property
    def end_session_endpoint(self) -> str:
        return f"{self._base}/logout"

    @property
    def transport(self) -> httpx.ASGITransport:
        """For `PKCEMiddleware(app, config=..., transport=provider.transport)`: no network."""
        return httpx.ASGITransport(app=self)

    def login_as(
        self, sub: str, *, claims: Mapping[str, Any] | None = None, scopes: Sequence[str] | None = None
    ) -> None:
        """Who the next logins are: `sub`, with extra ID token `claims`, granted `scopes` (`None`: as asked)."""
        self.sub = sub
        self.claims = dict(claims or {})
        self.scopes = None if scopes is None else tuple(scopes)

    def config(self, **overrides: Any) -> PKCEConfig:
        """A `PKCEConfig` for this provider (a fresh random cookie key); `overrides` are passed on."""
        values: dict[str, Any] = {
            "issuer": self._issuer,
            "client_id": self.client_id or FAKE_CLIENT_ID,
            "client_secret": self.client_secret,
            "secret_key": secrets.token_urlsafe(32),
        }
        values.update(overrides)
        return PKCEConfig(**values)

    def browser(self, app: ASGIApp, *, base_url: str = "https://testserver") -> httpx.AsyncClient:
        """A client that follows redirects, sending the provider's URLs here and the rest to `app`.

        Every request carries `BROWSER_HEADERS`, a page load, so one `browser.get("/page")` runs
        the whole login. To play a script instead (a 401 without a session), override them:
        `headers={"Sec-Fetch-Mode": "cors", "Accept": "application/json"}`. Close it (`async with`).
        """
        provider = httpx.URL(self._base)
        transport = OriginRouter({(provider.scheme, provider.netloc): self.transport}, httpx.ASGITransport(app=app))
        return httpx.AsyncClient(transport=transport, base_url=base_url, follow_redirects=True, headers=BROWSER_HEADERS)

    def authorize(self, url: str) -> str:
        """Where the authorization endpoint redirects the browser for authorization request `url`.

        The redirect URI with a `code` for the current user, or with an `error` (as a real provider
        would); `AuthorizationRefused` when the client or redirect URI is unknown.
        """
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}{parts.path}" != self.authorization_endpoint:
            raise AuthorizationRefused(f"not this provider's authorization endpoint: {url}")
        return self._authorization_response(parse_qsl(parts.query, keep_blank_values=True))

    # -- endpoints -----------------------------------------------------------------------------

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self._issuer,
                "authorization_endpoint": self.authorization_endpoint,
                "token_endpoint": self.token_endpoint,
                "jwks_uri": f"{self._base}/jwks",
                "end_session_endpoint": self.end_session_endpoint,
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
                "authorization_response_iss_parameter_supported": True,
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [signing_key().as_dict(private=False)]})

    async def _authorize(self, request: Request) -> Response:
        try:
            location = self._authorization_response(parse_qsl(request.url.query, keep_blank_values=True))
        except AuthorizationRefused as exc:
            return PlainTextResponse(f"authorization refused: {exc}", status_code=400)
        return RedirectResponse(location, 302, headers={"Cache-Control": "no-store"})

    def _authorization_response(self, params: list[tuple[str, str]]) -> str:
        names = [name for name, _ in params]
        query = dict(params)
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        if names.count("client_id") != 1 or not client_id or self.client_id not in (None, client_id):
            raise AuthorizationRefused("unknown client_id")
        if names.count("redirect_uri") != 1 or not is_http_url(redirect_uri):
            raise AuthorizationRefused("redirect_uri missing or not an absolute http(s) URL")
        if self.redirect_uris is not None and redirect_uri not in self.redirect_uris:
            raise AuthorizationRefused("redirect_uri not registered")

        def back(**answer: str) -> str:
            if "state" in query:
                answer["state"] = query["state"]
            answer["iss"] = self._issuer  # RFC 9207, on errors too
            return redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(answer)

        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            return back(error="invalid_request", error_description=f"repeated: {', '.join(repeated)}")
        if query.get("response_type") != "code":
            return back(error="unsupported_response_type")
        requested = tuple(query.get("scope", "").split())
        if "openid" not in requested:
            return back(error="invalid_scope", error_description="openid is required")
        challenge = query.get("code_challenge", "")
        # No "plain", and no missing method (which RFC 7636 would read as "plain").
        if query.get("code_challenge_method") != "S256" or not is_s256_challenge(challenge):
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        grant = Grant(
            client_id=client_id,
            sub=self.sub,
            claims=dict(self.claims),
            scopes=requested if self.scopes is None else self.scopes,
            sid=secrets.token_urlsafe(16),
            auth_time=int(time.time()),
        )
        code = secrets.token_urlsafe(32)
        self._codes[code] = Code(grant, redirect_uri, challenge, query.get("nonce"), time.monotonic() + CODE_LIFETIME)
        self.logins.append(grant.sub)
        return back(code=code)

    async def _token(self, request: Request) -> Response:
        params = parse_qsl((await request.body()).decode("latin-1"), keep_blank_values=True)
        names = [name for name, _ in params]
        if any(names.count(name) > 1 for name in names):
            return oauth_error("invalid_request", "a parameter is repeated")
        form = dict(params)
        client_id = self._authenticate(request.headers.get("authorization"), form)
        if client_id is None:
            return oauth_error("invalid_client", "client authentication failed", status_code=401)
        if form.get("grant_type") == "authorization_code":
            code = self._codes.pop(form.get("code", ""), None)  # single use, RFC 6749 section 4.1.2
            if code is None or code.expires_at < time.monotonic() or code.grant.client_id != client_id:
                return oauth_error("invalid_grant", "unknown, used or expired code")
            # RFC 6749 section 4.1.3: the same redirect URI as in the authorization request.
            if form.get("redirect_uri") != code.redirect_uri:
                return oauth_error("invalid_grant", "redirect_uri differs from the authorization request")
            if not verifier_matches(form.get("code_verifier", ""), code.challenge):
                return oauth_error("invalid_grant", "PKCE verification failed")
            return self._tokens(code.grant, nonce=code.nonce)
        if form.get("grant_type") == "refresh_token":
            grant = self._refresh_tokens.pop(form.get("refresh_token", ""), None)  # rotated: single use
            if grant is None or grant.client_id != client_id:
                return oauth_error("invalid_grant", "unknown or used refresh token")
            return self._tokens(grant, nonce=None)  # OIDC Core 12.2: no nonce in a refreshed ID token
        return oauth_error("unsupported_grant_type", "authorization_code or refresh_token")

    def _authenticate(self, authorization: str | None, form: Mapping[str, str]) -> str | None:
        """The authenticated client id (RFC 6749 section 2.3.1), or `None`."""
        credentials = client_credentials(authorization, form)
        if credentials is None:
            return None
        client_id, secret = credentials
        if not client_id or self.client_id not in (None, client_id):
            return None
        if self.client_secret is not None and (
            secret is None or not secrets.compare_digest(secret.encode(), self.client_secret.encode())
        ):
            return None
        return client_id

    def _tokens(self, grant: Grant, *, nonce: str | None) -> Response:
        access_token = secrets.token_urlsafe(32)
        now = int(time.time())
        claims: dict[str, Any] = {
            **grant.claims,
            "iss": self._issuer,
            "sub": grant.sub,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + 600,
            "auth_time": grant.auth_time,
            "sid": grant.sid,
            "at_hash": at_hash(access_token),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        key = signing_key()
        answer: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": " ".join(grant.scopes),
            "id_token": jwt.encode({"alg": "RS256", "typ": "JWT", "kid": key.kid}, claims, key),
        }
        if "offline_access" in grant.scopes:
            refresh_token = secrets.token_urlsafe(32)
            self._refresh_tokens[refresh_token] = grant
            answer["refresh_token"] = refresh_token
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    async def _end_session(self, request: Request) -> Response:
        """RP-Initiated Logout 1.0: ends the provider session of the hinted ID token, then redirects."""
        params = dict(request.query_params)
        self.logouts.append(params)
        hint = params.get("id_token_hint")
        if hint:
            try:
                # Signature and issuer only: an expired hint is still a valid hint (section 2).
                claims = jwt.decode(hint, signing_key(), algorithms=["RS256"]).claims
            except (JoseError, ValueError):
                return PlainTextResponse("invalid id_token_hint", status_code=400)
            if claims.get("iss") != self._issuer:
                return PlainTextResponse("id_token_hint is from another issuer", status_code=400)
            # The provider session is over: its refresh tokens die with it.
            sid = claims.get("sid")
            for token in [token for token, grant in self._refresh_tokens.items() if grant.sid == sid]:
                del self._refresh_tokens[token]
        target = params.get("post_logout_redirect_uri")
        if target is None:
            return PlainTextResponse("You are signed out.")
        if not is_http_url(target):
            return PlainTextResponse("post_logout_redirect_uri is not an absolute http(s) URL", status_code=400)
        if "state" in params:
            target += ("&" if "?" in target else "?") + urlencode({"state": params["state"]})
        return RedirectResponse(target, 302, headers={"Cache-Control": "no-store"})
