"""The variants of `bench_request`: the apps, the browser's request, the sessions, and their checks.

Everything goes through the public API of `pkce_middleware`: sessions are made by
`PKCEMiddleware.create_session` (exactly as a finished login makes them), the cold variant is
`session_cache_size=0`, and what a check needs to know it learns from the responses, the user the
inner app sees, and (for Redis) the server's own counters. One exception: the aged cookie (whose
idle clock is moved back) is forged through private pieces, as `bench_server` forges its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pkce_middleware import PKCEConfig, PKCEMiddleware, Require

# Private pieces, used only to forge the aged cookie (see `aged_cookie`).
from pkce_middleware._components import bound_purpose
from pkce_middleware._crypto import Sealer
from pkce_middleware._session import SessionCodec

from .harness import BenchmarkError, Variant, call_capturing, require, set_cookies, status_and_body
from .session_data import CLIENT_ID, ISSUER, SCOPES, SessionData, starlette_cookie

BARE = "bare"
PKCE_SAME = "pkce (same cookie)"
PKCE_COLD = "pkce (cold, cache off)"
PKCE_AGED = "pkce (aged cookie, Set-Cookie every answer)"
PKCE_RULES = "pkce + rules (same cookie)"
STARLETTE = "starlette SessionMiddleware"
REDIS_GET = "bare + one redis GET"
PKCE_REDIS = "pkce (redis store)"

#: The middleware writes a session back (a new cookie; with Redis an EVALSHA) once its idle clock is
#: a minute old. This loop sends the same cookie for ever, so a session is made anew, untimed,
#: before a loop that could end after it is this old; every timed request stays on the read-only path.
RENEW_AFTER_SECONDS = 40.0
#: The aged cookie's idle clock is this share of the idle timeout old (as in `bench_server`): past
#: the half at which the middleware re-issues it, and a quarter of the timeout (15 minutes by
#: default) from its end, far more than a run takes.
AGED_SHARE_OF_IDLE_TIMEOUT = 0.75
#: The module that starts a private redis-server, shared with the test suite.
REDIS_LAUNCHER = "tests.support.redis_server"

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"


# -- the apps ------------------------------------------------------------------------------------

RESPONSE_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"5")],
}
RESPONSE_BODY: Message = {"type": "http.response.body", "body": b"hello", "more_body": False}


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest useful ASGI app: 200 "hello"."""
    await send(RESPONSE_START)
    await send(RESPONSE_BODY)


async def bare_that_reads_session(scope: Scope, receive: Receive, send: Send) -> None:
    """`bare`, but it needs the session: a KeyError (not a silent fast path) if nothing was loaded.

    It reads `scope["session"]` directly, which does not mark the session as accessed; going
    through `request.session` would also make SessionMiddleware add `Vary: Cookie` to the response,
    so this is the cheaper (conservative) way to use SessionMiddleware.
    """
    scope["session"]["id_token"]
    await send(RESPONSE_START)
    await send(RESPONSE_BODY)


# -- the browser's request -----------------------------------------------------------------------


def browser_scope(cookie_header: str) -> dict[str, Any]:
    """What a server hands the app for a browser's `GET /` over HTTPS."""
    headers = [
        (b"host", b"app.example"),
        (b"user-agent", USER_AGENT.encode()),
        (b"accept", ACCEPT.encode()),
        (b"accept-language", b"en-GB,en;q=0.9"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
        (b"sec-fetch-dest", b"document"),
        (b"sec-fetch-mode", b"navigate"),
        (b"sec-fetch-site", b"none"),
        (b"sec-fetch-user", b"?1"),
        (b"upgrade-insecure-requests", b"1"),
        (b"cookie", cookie_header.encode("latin-1")),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("203.0.113.7", 51234),
        "server": ("10.0.0.2", 443),
        "state": {},
    }


def set_cookie_header(scope: dict[str, Any], cookie_header: str) -> None:
    """Replace the request's Cookie header, in place (every variant holding the scope sees it)."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    headers[:] = [(k, v) for k, v in headers if k != b"cookie"] + [(b"cookie", cookie_header.encode("latin-1"))]


@dataclasses.dataclass
class LiveSession:
    """A session made by `create_session`, made anew before its idle clock would be written back."""

    middleware: PKCEMiddleware
    data: SessionData
    scope: dict[str, Any]
    cookie: str = ""
    made_at: float = -RENEW_AFTER_SECONDS
    #: Told, after every renewal, what changed (the Redis rows look up the new session's key).
    renewed: Callable[[], Awaitable[None]] | None = None

    @property
    def cookie_header(self) -> str:
        return f"{self.middleware.session_cookie_name}={self.cookie}"

    async def renew(self) -> None:
        headers = await self.middleware.create_session(claims=self.data.claims, token=self.data.token)
        name = self.middleware.session_cookie_name
        cookies: SimpleCookie = SimpleCookie()
        for header in headers:
            cookies.load(header)
        if name not in cookies or not cookies[name].value:
            raise BenchmarkError(f"create_session set no {name} cookie (Set-Cookie: {headers})")
        self.cookie = cookies[name].value
        self.made_at = time.monotonic()
        set_cookie_header(self.scope, self.cookie_header)
        if self.renewed is not None:
            await self.renewed()

    def preparing(self, app: ASGIApp) -> Callable[[float], Awaitable[None]]:
        """A variant's `prepare`: renew when due, then one untimed request (the session is opened)."""

        async def prepare(seconds: float) -> None:
            if time.monotonic() - self.made_at + seconds > RENEW_AFTER_SECONDS:
                await self.renew()
            await call_capturing(app, self.scope)

        return prepare


# -- checks before (and after) timing ------------------------------------------------------------


def require_hello(sent: list[Message], name: str) -> None:
    statuses, body = status_and_body(sent)
    require(statuses == [200] and body == b"hello", f"{name}: expected 200 'hello', got {statuses} {body[:80]!r}")


async def check_bare(scope: Scope) -> None:
    require_hello(await call_capturing(bare, scope), BARE)


async def check_pkce(middleware: PKCEMiddleware, scope: Scope, *, cached: bool, name: str) -> None:
    """The inner app is reached with an authenticated user; the cache is (or is not) used as the label says.

    Users are built per request, their claims taken from the opened session: the same claims object
    on two requests means the second was served from the cache of opened sessions, two objects that
    the cookie was opened twice. (Whether the cache of the cold variant is empty is not visible
    through the public API; that every request opens the cookie is.)
    """
    seen: list[Any] = []
    inner = middleware.app

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope.get("user"))
        await inner(scope, receive, send)

    middleware.app = recording
    try:
        for _ in range(2):
            sent = await call_capturing(middleware, scope)
            require_hello(sent, name)
            require(not set_cookies(sent), f"{name}: the session was written back (Set-Cookie on every request?)")
    finally:
        middleware.app = inner
    require(len(seen) == 2, f"{name}: the inner app was not reached (the 401/login path?)")
    require(all(user is not None and user.is_authenticated for user in seen), f"{name}: user not authenticated")
    if cached:
        require(seen[0].claims is seen[1].claims, f"{name}: the second request did not come from the cache")
    else:
        require(seen[0].claims is not seen[1].claims, f"{name}: the second request came from the cache")


async def check_aged(middleware: PKCEMiddleware, scope: Scope) -> None:
    """Every answer re-issues the session (one `Set-Cookie`), its user served from the cache."""
    seen: list[Any] = []
    inner = middleware.app

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope.get("user"))
        await inner(scope, receive, send)

    middleware.app = recording
    try:
        for _ in range(2):
            sent = await call_capturing(middleware, scope)
            require_hello(sent, PKCE_AGED)
            require(len(set_cookies(sent)) == 1, f"{PKCE_AGED}: expected the session re-issued on every answer")
    finally:
        middleware.app = inner
    require(len(seen) == 2 and all(u is not None and u.is_authenticated for u in seen), f"{PKCE_AGED}: no user")
    require(seen[0].claims is seen[1].claims, f"{PKCE_AGED}: the second request did not come from the cache")


def aged_cookie(config: PKCEConfig, cookie_header: str) -> str:
    """The Cookie header of the same session, its idle clock (`last_seen`) moved back.

    A benchmark-only forgery through private pieces (`SessionCodec`, `Sealer`, `bound_purpose`, as
    `tests/support/site.py` seals sessions): a client that never takes the re-issued cookie sends
    such a cookie after half the idle timeout, which a run cannot wait for.
    """
    name, _, value = cookie_header.partition("=")
    keys = [str(key) for key in config.secret_keys]
    codec = SessionCodec(Sealer(keys, bound_purpose("session", config)), cache_size=0)
    session = codec.open(value)
    require(session is not None, "the cookie create_session made does not open")
    assert session is not None
    aged_by = int(config.session_idle_timeout * AGED_SHARE_OF_IDLE_TIMEOUT)
    return f"{name}={codec.seal(dataclasses.replace(session, last_seen=session.last_seen - aged_by))}"


async def check_session(middleware: SessionMiddleware, scope: Scope) -> None:
    """The session dict the inner app sees is loaded from the cookie (not a fresh empty one)."""
    seen: list[Any] = []
    inner = middleware.app

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope.get("session"))
        await inner(scope, receive, send)

    middleware.app = recording
    try:
        require_hello(await call_capturing(middleware, scope), STARLETTE)
    except KeyError:
        raise BenchmarkError(f"{STARLETTE}: the session was empty (bad signature?)") from None
    finally:
        middleware.app = inner
    require(len(seen) == 1 and bool(seen[0]), f"{STARLETTE}: the session was empty (bad signature?)")
    require(seen[0]["scope"] == " ".join(SCOPES), f"{STARLETTE}: the session holds the wrong data")


# -- the cookie rows -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CookieRows:
    variants: list[Variant]
    session: LiveSession
    starlette_cookie_header: str


async def cookie_rows(
    stack: contextlib.AsyncExitStack, data: SessionData, secret_key: str, transport: httpx.AsyncBaseTransport
) -> CookieRows:
    """bare, pkce with and without its cache, SessionMiddleware: one browser, cookies of one size."""
    config = PKCEConfig(issuer=ISSUER, client_id=CLIENT_ID, secret_key=secret_key)
    pkce_same = PKCEMiddleware(bare, config=config, transport=transport)
    stack.push_async_callback(pkce_same.aclose)
    # Every request pays the full open: base64 decode, AES-GCM, JSON, building the user.
    pkce_cold = PKCEMiddleware(bare, config=config, transport=transport, session_cache_size=0)
    stack.push_async_callback(pkce_cold.aclose)
    # Authorization on every request: an email domain and a group rule, and a path rule to look past.
    rules_config = dataclasses.replace(config, allowed_email_domains=("example.com",), allowed_groups=("staff",))
    pkce_rules = PKCEMiddleware(
        bare, config=rules_config, transport=transport, rules={"/admin": Require(groups=["admins"])}
    )
    stack.push_async_callback(pkce_rules.aclose)
    # All have the same keys, so all open the one session cookie.
    session = LiveSession(pkce_same, data, browser_scope(""))
    await session.renew()
    pkce_scope = session.scope
    # Its own middleware (and caches); made once: it stays aged for a quarter of the idle timeout.
    pkce_aged = PKCEMiddleware(bare, config=config, transport=transport)
    # Every answer carries the re-issued cookie, as within `REISSUE_WINDOW` of a re-issue (a page's
    # burst of requests); past the window a client that keeps no cookies costs what `PKCE_SAME` does.
    pkce_aged._parts.lifecycle.reissue_window = 10**9
    pkce_aged._parts.lifecycle.reissue_answers = 10**9
    stack.push_async_callback(pkce_aged.aclose)
    aged_scope = browser_scope(aged_cookie(config, session.cookie_header))

    session_key = secrets.token_urlsafe(32)
    starlette_value = starlette_cookie(session_key, data, len(session.cookie))
    starlette_app = SessionMiddleware(bare_that_reads_session, secret_key=session_key)
    starlette_header = f"session={starlette_value}"
    starlette_scope = browser_scope(starlette_header)
    bare_scope = browser_scope(session.cookie_header)  # same headers: the bare app just never looks at them

    variants = [
        Variant(BARE, bare, bare_scope, lambda: check_bare(bare_scope)),
        Variant(
            PKCE_SAME,
            pkce_same,
            pkce_scope,
            lambda: check_pkce(pkce_same, pkce_scope, cached=True, name=PKCE_SAME),
            prepare=session.preparing(pkce_same),
        ),
        Variant(
            PKCE_RULES,
            pkce_rules,
            pkce_scope,
            lambda: check_pkce(pkce_rules, pkce_scope, cached=True, name=PKCE_RULES),
            prepare=session.preparing(pkce_rules),
        ),
        Variant(
            PKCE_COLD,
            pkce_cold,
            pkce_scope,
            lambda: check_pkce(pkce_cold, pkce_scope, cached=False, name=PKCE_COLD),
            prepare=session.preparing(pkce_cold),
        ),
        Variant(PKCE_AGED, pkce_aged, aged_scope, lambda: check_aged(pkce_aged, aged_scope)),
        Variant(STARLETTE, starlette_app, starlette_scope, lambda: check_session(starlette_app, starlette_scope)),
    ]
    return CookieRows(variants, session, starlette_header)


# -- the Redis rows ------------------------------------------------------------------------------


def redis_unavailable() -> str | None:
    """Why the Redis rows (`benchmarks.redis_rows`) cannot run here; `None` when they can."""
    if importlib.util.find_spec("redis") is None:
        return "the `redis` package is not installed (pip install 'pkce_middleware[redis]')"
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        return "redis-server is not installed (`make redis-server` installs Debian's package)"
    try:
        found = importlib.util.find_spec(REDIS_LAUNCHER) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{REDIS_LAUNCHER}, which starts the server, is missing (run from the repo root)"
