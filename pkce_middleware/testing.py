"""Test kit for apps behind `PKCEMiddleware`: log a test client in, or run the real login offline.

Two ways to test an app that sits behind the middleware, neither touching the network:

* **Log in directly.** `login(client, middleware, sub="alice", claims=..., scopes=[...])` puts a
  session cookie in the test client's cookie jar, sealed with the middleware's own keys and saved
  through its own session store (cookie or Redis), exactly as a finished login would. No provider
  is involved, and the session holds no refresh token, so nothing ever calls one.
  `session_cookies(...)` returns the cookie name(s) and value(s) instead, for any other client.
* **Run the whole login** against `FakeProvider`, an in-process OpenID Provider (discovery, JWKS,
  an authorization endpoint that redirects straight back with a code for a chosen user, token and
  end-session endpoints). It signs RS256 ID tokens and enforces PKCE (S256), the redirect URI and
  single-use codes, so the middleware does every check it does in production.

Installed with the package, this module is also a pytest plugin (entry point `pkce_middleware`)
with the fixtures `pkce_login`, `pkce_login_sync` and `pkce_fake_provider`. The Redis store needs
the event loop the middleware runs on, so with Redis use the async functions; the `_sync` ones
serve the cookie store (the default) from plain `def` tests, e.g. with Starlette's `TestClient`.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import importlib.util
import json
import secrets
import string
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from email.message import Message
from http.cookiejar import CookieJar
from http.cookies import Morsel, SimpleCookie
from typing import Any, Protocol, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ._config import PKCEConfig
from ._cookies import CookieWriter
from ._middleware import PKCEMiddleware
from ._session import Session
from ._store import CookieStore

__all__ = [
    "DEFAULT_SCOPES",
    "FAKE_CLIENT_ID",
    "FAKE_ISSUER",
    "AuthorizationRefused",
    "CookieClient",
    "FakeProvider",
    "PKCELogin",
    "PKCELoginSync",
    "login",
    "login_sync",
    "session_cookies",
    "session_cookies_sync",
]

FAKE_ISSUER = "https://idp.test"
#: The client id `FakeProvider.config()` uses when the provider accepts any client.
FAKE_CLIENT_ID = "test-client"
DEFAULT_SCOPES = ("openid", "profile", "email")

#: The type of the `pkce_login` fixture (`login`), for annotating a test's parameter.
PKCELogin: TypeAlias = Callable[..., Awaitable[dict[str, str]]]
#: The type of the `pkce_login_sync` fixture (`login_sync`).
PKCELoginSync: TypeAlias = Callable[..., dict[str, str]]

_T = TypeVar("_T")
#: RFC 7636 section 4.1: the verifier's alphabet; an S256 challenge is 43 characters of base64url.
_PKCE_ALPHABET = frozenset(string.ascii_letters + string.digits + "-._~")
_CODE_LIFETIME = 60.0


class _HasCookieJar(Protocol):
    @property
    def jar(self) -> CookieJar: ...


class CookieClient(Protocol):
    """A test client with a base URL and a standard cookie jar: `httpx.AsyncClient`, `httpx.Client`,
    Starlette's and FastAPI's `TestClient` (httpx2 or httpx)."""

    @property
    def base_url(self) -> object: ...

    @property
    def cookies(self) -> _HasCookieJar: ...


# -- logging in without a provider ------------------------------------------------------------


async def session_cookies(
    middleware: PKCEMiddleware,
    *,
    sub: str = "test-user",
    claims: Mapping[str, Any] | None = None,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    access_token: str | None = None,
    expires_in: int = 3600,
) -> dict[str, str]:
    """The cookies (name -> value) a browser holds right after logging in to `middleware` as `sub`.

    The session is built as a real login builds it: the claims are `claims` plus `sub`, `iss`
    (the configured issuer), `aud` (the client id), `iat`, `auth_time` and `exp` (explicit
    `claims` win, except for `sub`); the scopes are exactly `scopes` (a list, or a space-separated
    string); the access token is `access_token` (random by default) and expires in `expires_in`
    seconds. There is no refresh token, so the middleware never calls a provider for it. The ID
    token in the session (`request.auth.id_token`) carries the claims but is unsigned
    (`alg: none`): nothing validates it again after login.

    It is sealed with the middleware's keys and saved through its store. With the cookie store
    the values are the session itself, split over several cookies when large (past four it
    raises `SessionTooLarge`, a `PKCEMiddlewareError`, as the login would fail). With Redis the
    session is written to Redis and the cookie holds its sealed id: await this on the event loop
    the app runs on.
    """
    session = _session(
        middleware, sub=sub, claims=claims, scopes=scopes, access_token=access_token, expires_in=expires_in
    )
    return {morsel.key: morsel.value for morsel in await _sealed(middleware, session)}


def session_cookies_sync(
    middleware: PKCEMiddleware,
    *,
    sub: str = "test-user",
    claims: Mapping[str, Any] | None = None,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    access_token: str | None = None,
    expires_in: int = 3600,
) -> dict[str, str]:
    """`session_cookies` for the cookie store, callable without an event loop (or inside one)."""
    session = _session(
        middleware, sub=sub, claims=claims, scopes=scopes, access_token=access_token, expires_in=expires_in
    )
    return {morsel.key: morsel.value for morsel in _without_loop(middleware, _sealed(middleware, session))}


async def login(
    client: CookieClient,
    middleware: PKCEMiddleware,
    *,
    sub: str = "test-user",
    claims: Mapping[str, Any] | None = None,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    access_token: str | None = None,
    expires_in: int = 3600,
) -> dict[str, str]:
    """Log `client` in to `middleware` as `sub` (see `session_cookies`); returns the cookies set.

    `client` is an `httpx.AsyncClient`, `httpx.Client` or Starlette's (FastAPI's) `TestClient`,
    with a `base_url`; the cookies go into its jar for that host, replacing any
    session it held. `middleware` is the `PKCEMiddleware` instance in front of the app (for Quart,
    `app.asgi_app`).
    """
    session = _session(
        middleware, sub=sub, claims=claims, scopes=scopes, access_token=access_token, expires_in=expires_in
    )
    morsels = await _sealed(middleware, session)
    _put_in_jar(client, middleware, morsels)
    return {morsel.key: morsel.value for morsel in morsels}


def login_sync(
    client: CookieClient,
    middleware: PKCEMiddleware,
    *,
    sub: str = "test-user",
    claims: Mapping[str, Any] | None = None,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    access_token: str | None = None,
    expires_in: int = 3600,
) -> dict[str, str]:
    """`login` for the cookie store, from a plain `def` test (e.g. with `TestClient`)."""
    session = _session(
        middleware, sub=sub, claims=claims, scopes=scopes, access_token=access_token, expires_in=expires_in
    )
    morsels = _without_loop(middleware, _sealed(middleware, session))
    _put_in_jar(client, middleware, morsels)
    return {morsel.key: morsel.value for morsel in morsels}


def _session(
    middleware: PKCEMiddleware,
    *,
    sub: str,
    claims: Mapping[str, Any] | None,
    scopes: Sequence[str],
    access_token: str | None,
    expires_in: int,
) -> Session:
    if not isinstance(middleware, PKCEMiddleware):
        raise TypeError(f"expected the PKCEMiddleware in front of the app, got {type(middleware).__name__}")
    if not sub:
        raise ValueError("sub must not be empty")
    if not 0 < expires_in < 10**9:
        raise ValueError("expires_in must be a positive number of seconds")
    given = dict(claims or {})
    if given.get("sub", sub) != sub:
        raise ValueError(f"claims['sub'] is {given['sub']!r} but sub is {sub!r}")
    granted = scopes.split() if isinstance(scopes, str) else list(scopes)
    if any(not scope or scope != scope.strip() or " " in scope for scope in granted):
        raise ValueError(f"scopes must be non-empty words without spaces: {granted!r}")
    config = middleware.config
    now = time.time()
    seconds = int(now)
    id_claims = {
        "iss": config.issuer,
        "aud": config.client_id,
        "iat": seconds,
        "auth_time": seconds,
        "exp": seconds + expires_in,
        **given,
        "sub": sub,
    }
    token = {
        "access_token": access_token if access_token is not None else secrets.token_urlsafe(32),
        "token_type": "Bearer",
        "id_token": _unsigned_jwt(id_claims),
        "expires_in": expires_in,
        # Always sent, so the session's scopes are exactly the chosen ones, not the configured ones.
        "scope": " ".join(granted),
    }
    # The constructor the callback uses, then the same trimming (PKCE_SESSION_ID_TOKEN=false).
    session = Session.new(claims=id_claims, token=token, scopes=config.scopes, now=now, max_age=config.session_max_age)
    return middleware._lifecycle.keep(session)


async def _sealed(middleware: PKCEMiddleware, session: Session) -> list[Morsel[str]]:
    """The cookies the store sets for `session` on the response to a login."""
    writer = CookieWriter()
    # A request that carries no cookie: nothing to replace or delete, as on a first login.
    await middleware._store.save(session, {"type": "http", "headers": []}, writer)
    morsels: list[Morsel[str]] = []
    for name, value in writer.raw_headers:
        if name == b"set-cookie":
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(value.decode("latin-1"))
            morsels.extend(morsel for morsel in parsed.values() if morsel["max-age"] not in ("0", 0))
    if not morsels:
        raise RuntimeError("the session store set no session cookie")
    return morsels


def _without_loop(middleware: PKCEMiddleware, coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (the cookie store's `save`) to its end, loop or not.

    `asyncio.run` would refuse inside a running loop (an async test calling a sync helper), and
    the Redis store's client is bound to the loop the app runs on, so it is refused here.
    """
    if not isinstance(middleware._store, CookieStore):
        coroutine.close()
        raise TypeError("the _sync helpers serve the cookie store only; with Redis, await session_cookies/login")
    try:
        coroutine.send(None)
    except StopIteration as finished:
        result: _T = finished.value
        return result
    coroutine.close()
    raise RuntimeError("the session store waited for I/O; use the async helpers")


def _put_in_jar(client: CookieClient, middleware: PKCEMiddleware, morsels: Sequence[Morsel[str]]) -> None:
    base = urlsplit(str(client.base_url))
    if not base.hostname:
        raise ValueError("the client needs a base_url, e.g. https://testserver")
    jar = client.cookies.jar
    name = middleware._cookies.session_name
    # The jar files a dotless host such as "testserver" under "testserver.local".
    domains = {"", base.hostname, f".{base.hostname}", f"{base.hostname}.local"}
    for cookie in list(jar):
        # The session this client held goes, chunks included: left-over chunks of an earlier,
        # larger session would be ignored by the middleware, but confuse anyone inspecting the jar.
        if cookie.domain in domains and (cookie.name == name or cookie.name.startswith(name + ".")):
            jar.clear(cookie.domain, cookie.path, cookie.name)
    headers = Message()
    for morsel in morsels:
        copy = morsel.copy()
        if base.scheme != "https":
            # A jar never sends a `Secure` cookie over plain http, and test clients default to
            # http://testserver; the middleware does not look at the scheme, so the session works.
            copy["secure"] = False
        headers["Set-Cookie"] = copy.OutputString()
    # The jar files the cookies itself, as from a response of the app: host-only, under the
    # domain and path it gives a real login's cookies, so the middleware's own later Set-Cookie
    # (a re-issue, a logout's deletion) replaces exactly these. Done with the standard library's
    # `CookieJar` API, which httpx, httpx2 (Starlette's TestClient) and requests all keep.
    request = urllib.request.Request(f"{base.scheme}://{base.netloc}/")  # noqa: S310 (nothing is opened)
    jar.extract_cookies(_Response(headers), request)  # type: ignore[arg-type]


class _Response:
    """What `CookieJar.extract_cookies` reads of a response: its headers."""

    def __init__(self, headers: Message) -> None:
        self._headers = headers

    def info(self) -> Message:
        return self._headers


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unsigned_jwt(claims: Mapping[str, Any]) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": "pkce_middleware.testing"}
    return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(dict(claims)).encode())}."


# -- a fake provider for end-to-end tests -----------------------------------------------------


@functools.cache
def _signing_key() -> RSAKey:
    # Generated once per process: RSA key generation is the slowest step of a test otherwise.
    return RSAKey.generate_key(2048, parameters={"kid": "fake-provider-1", "use": "sig", "alg": "RS256"}, private=True)


class AuthorizationRefused(ValueError):
    """An authorization request the provider answers with an error page, not a redirect.

    RFC 6749 section 4.1.2.1: with an unknown client or redirect URI, the browser is never sent
    to that URI.
    """


@dataclasses.dataclass(frozen=True)
class _Grant:
    client_id: str
    sub: str
    claims: dict[str, Any]
    scopes: tuple[str, ...]
    sid: str
    auth_time: int


@dataclasses.dataclass(frozen=True)
class _Code:
    grant: _Grant
    redirect_uri: str
    challenge: str
    nonce: str | None
    expires_at: float


class FakeProvider:
    """An in-process OpenID Provider: plug it in with `transport=provider.transport`.

        provider = FakeProvider()                       # or the pkce_fake_provider fixture
        provider.login_as("bob", claims={"email": "bob@example.com"}, scopes=["openid", "admin"])
        app = PKCEMiddleware(inner, config=provider.config(), transport=provider.transport)
        async with provider.browser(app) as browser:    # follows redirects between app and provider
            assert (await browser.get("/")).status_code == 200

    The authorization endpoint logs in the current user (`sub`, `claims`; `login_as` changes
    them) without any form and redirects back with a code, `state` and `iss`. `scopes=None` grants
    what was asked for. A sync test can play the browser itself: `provider.authorize(url)` gives
    the callback URL for an authorization URL the app redirected to.

    It is strict where a real provider is: `client_id` (when given) and `redirect_uris` (when
    given) must match, PKCE with S256 is required, a code is single use, expires after a minute
    and is bound to its client and redirect URI, and `client_secret` (when given) is required at
    the token endpoint (basic or post). `offline_access` gets a refresh token, rotated on use.
    `issuer` may have a path; the provider answers under it.
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
        self._codes: dict[str, _Code] = {}
        self._refresh_tokens: dict[str, _Grant] = {}
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

        One `browser.get("/page")` then runs the whole login. Close it (`async with`).
        """
        provider = httpx.URL(self._base)
        transport = _Router({(provider.scheme, provider.netloc): self.transport}, httpx.ASGITransport(app=app))
        return httpx.AsyncClient(transport=transport, base_url=base_url, follow_redirects=True)

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
        return JSONResponse({"keys": [_signing_key().as_dict(private=False)]})

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
        if names.count("redirect_uri") != 1 or not _is_http_url(redirect_uri):
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
        if (
            query.get("code_challenge_method") != "S256"
            or len(challenge) != 43
            or not _PKCE_ALPHABET.issuperset(challenge)
        ):
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        grant = _Grant(
            client_id=client_id,
            sub=self.sub,
            claims=dict(self.claims),
            scopes=requested if self.scopes is None else self.scopes,
            sid=secrets.token_urlsafe(16),
            auth_time=int(time.time()),
        )
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(grant, redirect_uri, challenge, query.get("nonce"), time.monotonic() + _CODE_LIFETIME)
        self.logins.append(grant.sub)
        return back(code=code)

    async def _token(self, request: Request) -> Response:
        params = parse_qsl((await request.body()).decode("latin-1"), keep_blank_values=True)
        names = [name for name, _ in params]
        if any(names.count(name) > 1 for name in names):
            return _oauth_error("invalid_request", "a parameter is repeated")
        form = dict(params)
        client_id = self._authenticate(request.headers.get("authorization"), form)
        if client_id is None:
            return _oauth_error("invalid_client", "client authentication failed", status_code=401)
        if form.get("grant_type") == "authorization_code":
            code = self._codes.pop(form.get("code", ""), None)  # single use, RFC 6749 section 4.1.2
            if code is None or code.expires_at < time.monotonic() or code.grant.client_id != client_id:
                return _oauth_error("invalid_grant", "unknown, used or expired code")
            # RFC 6749 section 4.1.3: the same redirect URI as in the authorization request.
            if form.get("redirect_uri") != code.redirect_uri:
                return _oauth_error("invalid_grant", "redirect_uri differs from the authorization request")
            verifier = form.get("code_verifier", "")
            if not (43 <= len(verifier) <= 128 and _PKCE_ALPHABET.issuperset(verifier)) or not secrets.compare_digest(
                _b64url(hashlib.sha256(verifier.encode("ascii")).digest()), code.challenge
            ):
                return _oauth_error("invalid_grant", "PKCE verification failed")
            return self._tokens(code.grant, nonce=code.nonce)
        if form.get("grant_type") == "refresh_token":
            grant = self._refresh_tokens.pop(form.get("refresh_token", ""), None)  # rotated: single use
            if grant is None or grant.client_id != client_id:
                return _oauth_error("invalid_grant", "unknown or used refresh token")
            return self._tokens(grant, nonce=None)  # OIDC Core 12.2: no nonce in a refreshed ID token
        return _oauth_error("unsupported_grant_type", "authorization_code or refresh_token")

    def _authenticate(self, authorization: str | None, form: Mapping[str, str]) -> str | None:
        """The authenticated client id (RFC 6749 section 2.3.1), or `None`."""
        secret: str | None
        if authorization is not None and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
            except ValueError:
                return None
            client_id, _, secret = decoded.partition(":")
            # Both halves are form-encoded before they are joined.
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
            if "client_secret" in form:
                return None  # one authentication method per request
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if not client_id or self.client_id not in (None, client_id):
            return None
        if self.client_secret is not None and (
            secret is None or not secrets.compare_digest(secret.encode(), self.client_secret.encode())
        ):
            return None
        return client_id

    def _tokens(self, grant: _Grant, *, nonce: str | None) -> Response:
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
            # OIDC Core 3.1.3.6: left half of SHA-256 of the access token.
            "at_hash": _b64url(hashlib.sha256(access_token.encode("ascii")).digest()[:16]),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        key = _signing_key()
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
                claims = jwt.decode(hint, _signing_key(), algorithms=["RS256"]).claims
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
        if not _is_http_url(target):
            return PlainTextResponse("post_logout_redirect_uri is not an absolute http(s) URL", status_code=400)
        if "state" in params:
            target += ("&" if "?" in target else "?") + urlencode({"state": params["state"]})
        return RedirectResponse(target, 302, headers={"Cache-Control": "no-store"})


class _Router(httpx.AsyncBaseTransport):
    """Sends each request to the transport of its origin, the rest to `default`."""

    def __init__(
        self, routes: Mapping[tuple[str, bytes], httpx.AsyncBaseTransport], default: httpx.AsyncBaseTransport
    ) -> None:
        self._routes = dict(routes)
        self._default = default

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._routes.get((request.url.scheme, request.url.netloc), self._default)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (*self._routes.values(), self._default):
            await transport.aclose()


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment


def _oauth_error(error: str, description: str, *, status_code: int = 400) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status_code,
        headers={"Cache-Control": "no-store", **({"WWW-Authenticate": "Basic"} if status_code == 401 else {})},
    )


# -- the pytest plugin ------------------------------------------------------------------------

# The functions above work without pytest; the fixtures exist only where it is installed.
if importlib.util.find_spec("pytest") is not None:
    import pytest

    @pytest.fixture
    def pkce_login() -> PKCELogin:
        """`await pkce_login(client, middleware, sub="alice", claims={...}, scopes=[...])`: see `login`."""
        return login

    @pytest.fixture
    def pkce_login_sync() -> PKCELoginSync:
        """`pkce_login_sync(client, middleware, sub="alice", ...)` for the cookie store: see `login_sync`."""
        return login_sync

    @pytest.fixture
    def pkce_fake_provider() -> FakeProvider:
        """A fresh `FakeProvider` on `https://idp.test`, logging everyone in as `test-user`."""
        return FakeProvider()
