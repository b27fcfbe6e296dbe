"""Logging a test client in without a provider: `login`, `session_cookies` and their `_sync` twins.

Built on `PKCEMiddleware.create_session`, the public seam that starts a session exactly as a
finished login does (same constructor, same `PKCE_SESSION_ID_TOKEN` trimming, same store). This
module only makes up the claims and the token endpoint answer, and files the cookies in a jar.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from email.message import Message
from http.cookiejar import CookieJar
from http.cookies import Morsel, SimpleCookie
from typing import Any, Protocol, TypeAlias, TypeVar
from urllib.parse import urlsplit

from pkce_middleware import PKCEMiddleware

__all__ = [
    "DEFAULT_SCOPES",
    "CookieClient",
    "PKCELogin",
    "PKCELoginSync",
    "login",
    "login_sync",
    "session_cookies",
    "session_cookies_sync",
]

DEFAULT_SCOPES = ("openid", "profile", "email")

#: The type of the `pkce_login` fixture (`login`), for annotating a test's parameter.
PKCELogin: TypeAlias = Callable[..., Awaitable[dict[str, str]]]
#: The type of the `pkce_login_sync` fixture (`login_sync`).
PKCELoginSync: TypeAlias = Callable[..., dict[str, str]]

_T = TypeVar("_T")


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
    answer = _answer(middleware, sub, claims, scopes, access_token, expires_in)
    return _values(await _set_cookies(middleware, *answer))


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
    answer = _answer(middleware, sub, claims, scopes, access_token, expires_in)
    return _values(_without_loop(middleware, _set_cookies(middleware, *answer)))


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
    answer = _answer(middleware, sub, claims, scopes, access_token, expires_in)
    morsels = await _set_cookies(middleware, *answer)
    _put_in_jar(client, middleware, morsels)
    return _values(morsels)


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
    answer = _answer(middleware, sub, claims, scopes, access_token, expires_in)
    morsels = _without_loop(middleware, _set_cookies(middleware, *answer))
    _put_in_jar(client, middleware, morsels)
    return _values(morsels)


def _answer(
    middleware: PKCEMiddleware,
    sub: str,
    claims: Mapping[str, Any] | None,
    scopes: Sequence[str],
    access_token: str | None,
    expires_in: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The validated ID token claims and the token endpoint answer of a made-up login."""
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
    seconds = int(time.time())
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
    return id_claims, token


async def _set_cookies(
    middleware: PKCEMiddleware, claims: Mapping[str, Any], token: Mapping[str, Any]
) -> list[Morsel[str]]:
    """The cookies the middleware sets on the response to a finished login with this answer."""
    morsels: list[Morsel[str]] = []
    for header in await middleware.create_session(claims=claims, token=token):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        # Deletions (none on a first login, which carries no cookie) are not the session.
        morsels.extend(morsel for morsel in parsed.values() if morsel["max-age"] not in ("0", 0))
    if not morsels:
        raise RuntimeError("the session store set no session cookie")
    return morsels


def _values(morsels: Sequence[Morsel[str]]) -> dict[str, str]:
    return {morsel.key: morsel.value for morsel in morsels}


def _without_loop(middleware: PKCEMiddleware, coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (the cookie store's save) to its end, loop or not.

    `asyncio.run` would refuse inside a running loop (an async test calling a sync helper), and
    the Redis store's client is bound to the loop the app runs on, so it is refused here.
    """
    if middleware.config.session_store != "cookie":
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
    name = middleware.session_cookie_name
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


def _unsigned_jwt(claims: Mapping[str, Any]) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": "pkce_middleware.testing"}
    return f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(dict(claims)).encode())}."


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
