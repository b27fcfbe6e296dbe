"""The test site: a configured middleware in front of a tiny app, and a browser that logs in.

A "browser" is an `httpx.AsyncClient` on `https://app.test` (https, so `Secure` cookies are kept)
that does not follow redirects, so each step of a login can be looked at:

    async with open_site() as site:
        location, params = await begin_login(site.client, "/reports?year=2024")
        response = await complete_login(site.client, site.hostile, params)
        assert response.status_code == 303

`open_site()` wires a `HostileProvider` in through `httpx.ASGITransport`; nothing touches the
network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from pkce_middleware import PKCEConfig, PKCEMiddleware
from pkce_middleware._components import bound_purpose
from pkce_middleware._crypto import Sealer
from pkce_middleware._session import Session, SessionCodec
from tests.support.hostile_provider import DEFAULT_CLIENT_ID, DEFAULT_ISSUER, HostileProvider

__all__ = [
    "APP_ORIGIN",
    "CALLBACK_PATH",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "FLOW_COOKIE_PREFIX",
    "ISSUER",
    "SESSION_COOKIE",
    "RecordingApp",
    "Site",
    "assert_logged",
    "assert_no_session",
    "assert_refusal_page",
    "begin_login",
    "callback",
    "complete_login",
    "flow_cookie_names",
    "hello_app",
    "login",
    "make_client",
    "make_config",
    "open_site",
    "seal_session",
    "session_codec",
    "strong_secret_key",
]

APP_ORIGIN = "https://app.test"
CALLBACK_PATH = "/auth/callback"
ISSUER = DEFAULT_ISSUER
CLIENT_ID = DEFAULT_CLIENT_ID
CLIENT_SECRET = "client-secret-" + "x7Qp2Lm9Zr4Tk8Wb"
SESSION_COOKIE = "__Host-pkce_session"
FLOW_COOKIE_PREFIX = "__Host-pkce_flow_"

_DEFAULT = object()


async def hello_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The protected app: `hello <sub>` (`hello anonymous` without a login) over HTTP or a WebSocket
    (accepted, greeted once and closed), and a well-behaved lifespan."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    user = scope["user"]
    text = f"hello {user.identity if user.is_authenticated else 'anonymous'}"
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": text})
        await send({"type": "websocket.close", "code": 1000})
        return
    assert scope["type"] == "http"
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RecordingApp:
    """`hello_app`, recording the path of every call in `calls` (a refused request never gets here)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            self.calls.append(scope["path"])
        await hello_app(scope, receive, send)


def strong_secret_key() -> str:
    return secrets.token_urlsafe(48)


def make_config(**overrides: Any) -> PKCEConfig:
    """A confidential client of `HostileProvider`'s defaults, with a fresh random cookie key."""
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "secret_key": strong_secret_key(),
    }
    values.update(overrides)
    return PKCEConfig(**values)


def make_client(app: ASGIApp) -> httpx.AsyncClient:
    """A browser: https origin (keeps `Secure` cookies), its own cookie jar, no redirect following."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=APP_ORIGIN,
        follow_redirects=False,
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )


@dataclasses.dataclass
class Site:
    """The middleware (with `hello_app` inside) in front of a hostile provider, and one browser."""

    hostile: HostileProvider
    config: PKCEConfig
    middleware: PKCEMiddleware
    client: httpx.AsyncClient
    _browsers: list[httpx.AsyncClient] = dataclasses.field(default_factory=list)

    def browser(self) -> httpx.AsyncClient:
        """Another browser (empty cookie jar) on the same site; closed with the site."""
        client = make_client(self.middleware)
        self._browsers.append(client)
        return client


@contextlib.asynccontextmanager
async def open_site(hostile: HostileProvider | None = None, **config_overrides: Any) -> AsyncIterator[Site]:
    hostile = hostile if hostile is not None else HostileProvider()
    config = make_config(**config_overrides)
    middleware = PKCEMiddleware(hello_app, config=config, transport=httpx.ASGITransport(app=hostile))
    site = Site(hostile, config, middleware, make_client(middleware))
    try:
        yield site
    finally:
        for client in (site.client, *site._browsers):
            await client.aclose()
        await middleware.aclose()


async def begin_login(client: httpx.AsyncClient, path: str = "/") -> tuple[str, dict[str, str]]:
    """Load a protected page logged out: the 302 to the provider, and its query parameters."""
    response = await client.get(path)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), location
    return location, {name: values[0] for name, values in query.items()}


async def callback(client: httpx.AsyncClient, query: Sequence[tuple[str, str]]) -> httpx.Response:
    """The provider's redirect back, exactly these parameters in this order (repeats allowed)."""
    return await client.get(CALLBACK_PATH, params=list(query))


async def complete_login(
    client: httpx.AsyncClient,
    hostile: HostileProvider,
    params: dict[str, str],
    *,
    code: str | None = None,
    iss: object = _DEFAULT,
) -> httpx.Response:
    """Come back from the provider for the attempt in `params` (from `begin_login`).

    `code` defaults to a fresh one the provider issues for the attempt's nonce and challenge;
    `iss` defaults to the provider's issuer, and `None` leaves it out (RFC 9207).
    """
    if code is None:
        code = hostile.issue_code(nonce=params["nonce"], challenge=params["code_challenge"])
    query = [("code", code), ("state", params["state"])]
    if iss is _DEFAULT:
        query.append(("iss", hostile.issuer))
    elif iss is not None:
        query.append(("iss", str(iss)))
    return await callback(client, query)


async def login(client: httpx.AsyncClient, hostile: HostileProvider, path: str = "/") -> httpx.Response:
    """A whole login from `path`; the callback's response."""
    _, params = await begin_login(client, path)
    return await complete_login(client, hostile, params)


def session_cookies(response: httpx.Response) -> list[str]:
    """The response's `Set-Cookie` values for the session cookie."""
    return [v for v in response.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE + "=")]


def flow_cookie_names(client: httpx.AsyncClient) -> list[str]:
    return [name for name in client.cookies if name.startswith(FLOW_COOKIE_PREFIX)]


def assert_refusal_page(
    response: httpx.Response, *, status: int, reason: str, secrets_: Iterable[str] = (), site: Site | None = None
) -> None:
    """The short HTML page a browser gets for a refused login, and nothing it must not show."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    text = response.text
    assert f"reason: {reason}" in text
    assert "Traceback" not in text
    assert 'File "' not in text
    forbidden = list(secrets_)
    if site is not None:
        forbidden += [site.config.client_secret_value or "", *(str(key) for key in site.config.secret_keys)]
        forbidden += site.hostile.issued_id_tokens + site.hostile.issued_access_tokens
    for secret in forbidden:
        if secret:
            assert secret not in text
    assert not [
        c
        for c in response.headers.get_list("set-cookie")
        if c.startswith(f"{SESSION_COOKIE}=") and "Max-Age=0" not in c
    ]


def assert_logged(caplog: pytest.LogCaptureFixture, reason: str, *, detail: str | None = None) -> None:
    """A record from the "pkce_middleware" logger names `reason` (and `detail`, if given)."""
    messages = [r.getMessage() for r in caplog.records if r.name == "pkce_middleware" and r.levelno >= logging.WARNING]
    matching = [m for m in messages if f"reason={reason}" in m]
    assert matching, messages
    if detail is not None:
        assert any(detail in m for m in matching), matching


async def assert_no_session(site: Site, client: httpx.AsyncClient | None = None) -> None:
    """The browser holds no session: no session cookie, and a protected page sends it to the provider."""
    client = client if client is not None else site.client
    assert SESSION_COOKIE not in client.cookies
    response = await client.get("/")
    assert response.status_code == 302
    assert response.headers["location"].startswith(site.hostile.authorization_endpoint + "?")


def seal_session(middleware: PKCEMiddleware, **overrides: Any) -> str:
    """A session cookie value sealed by `middleware` itself, as a login would set it (fields overridable)."""
    now = int(time.time())
    values: dict[str, Any] = {
        "id": "session-1",
        "claims": {"sub": "carol", "name": "Carol", "iss": middleware.config.issuer},
        "access_token": "at-" + "x" * 40,
        "id_token": "it-" + "y" * 40,
        "refresh_token": None,
        "access_expires_at": now + 300,
        "scopes": ("openid", "email"),
        "created_at": now,
        "expires_at": now + 3600,
        "last_seen": now,
    }
    values.update(overrides)
    return session_codec(middleware.config).seal(Session(**values))


def session_codec(config: PKCEConfig) -> SessionCodec:
    """A codec with the cookie keys of `config`: it opens and seals what that middleware does."""
    return SessionCodec(
        Sealer([str(key) for key in config.secret_keys], bound_purpose("session", config)),
        cache_size=0,
        bindings=config.provider_bindings,
    )
