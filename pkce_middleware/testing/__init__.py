"""Test kit for apps behind `PKCEMiddleware`: log a test client in, or run the real login offline.

Two ways to test an app that sits behind the middleware, neither touching the network:

* **Log in directly.** `login(client, middleware, sub="alice", claims=..., scopes=[...])` puts a
  session cookie in the test client's cookie jar, sealed with the middleware's own keys and saved
  through its own session store (cookie or Redis), exactly as a finished login would
  (`PKCEMiddleware.create_session`). No provider is involved, and the session holds no refresh
  token, so nothing ever calls one. `session_cookies(...)` returns the cookie name(s) and
  value(s) instead, for any other client.
* **Run the whole login** against `FakeProvider`, an in-process OpenID Provider (discovery, JWKS,
  an authorization endpoint that redirects straight back with a code for a chosen user, token and
  end-session endpoints). It signs RS256 ID tokens and enforces PKCE (S256), the redirect URI and
  single-use codes, so the middleware does every check it does in production. Only a page load
  starts a login: a test client playing the browser sends `BROWSER_HEADERS` (what a browser sends
  then); `FakeProvider.browser` does so itself.

Installed with the package, `pkce_middleware.testing.plugin` is a pytest plugin (entry point
`pkce_middleware`) with the fixtures `pkce_login`, `pkce_login_sync` and `pkce_fake_provider`;
importing this package does not import pytest. The Redis store needs the event loop the
middleware runs on, so with Redis use the async functions; the `_sync` ones serve the cookie
store (the default) from plain `def` tests, e.g. with Starlette's `TestClient`. Async tests need
an async test plugin (pytest-asyncio or anyio's).

The kit uses only the package's public API, so it is also an example of what an app can do with it.
"""

from __future__ import annotations

from ._fake_provider import BROWSER_HEADERS, FAKE_CLIENT_ID, FAKE_ISSUER, AuthorizationRefused, FakeProvider
from ._kit import (
    DEFAULT_SCOPES,
    CookieClient,
    PKCELogin,
    PKCELoginSync,
    login,
    login_sync,
    session_cookies,
    session_cookies_sync,
)

__all__ = [
    "BROWSER_HEADERS",
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

# Reprs, tracebacks and `help()` show `pkce_middleware.testing.FakeProvider`, not the private module.
for __public in (
    AuthorizationRefused,
    CookieClient,
    FakeProvider,
    login,
    login_sync,
    session_cookies,
    session_cookies_sync,
):
    __public.__module__ = __name__
del __public
