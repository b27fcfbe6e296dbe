"""In-process cost of ONE authenticated request: bare ASGI app vs. PKCEMiddleware vs. SessionMiddleware.

The ASGI apps are called directly, in a tight loop on one event loop, with a prebuilt `http` scope
(a browser-like `GET /` carrying the session cookie), a no-op `receive` and a `send` that discards
every message. There is no server and no network: what is left is the middleware's own per-request
work (cookie parsing, opening the session, building the user) plus the cost of one ASGI call.

When `redis-server` and the `redis` package are installed, two more rows run against a private
redis-server on a free 127.0.0.1 port (started for the run, stopped at its end): the middleware with
the Redis session store, and the bare app doing the one Redis GET that store needs, so the table
shows what the store adds beyond the round trip itself. Without them those rows are skipped, and
the run says why.

Run `python benchmarks/bench_request.py` (about 30 s; longer on a busy machine), or `--quick` (a few
seconds, for CI). See `benchmarks/README.md` for how to read the table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import gc
import importlib.util
import json
import math
import os
import platform
import secrets
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import itsdangerous
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pkce_middleware import PKCEConfig, PKCEMiddleware
from pkce_middleware._cookies import CookieWriter
from pkce_middleware._session import Session

if TYPE_CHECKING:  # the `redis` package is optional: imported at run time only when the Redis rows run
    import redis.asyncio

BARE = "bare"
PKCE_SAME = "pkce (same cookie)"
PKCE_COLD = "pkce (cold, cache off)"
STARLETTE = "starlette SessionMiddleware"
REDIS_GET = "bare + one redis GET"
PKCE_REDIS = "pkce (redis store)"

#: Targets for the middleware's hot path (added cost over the bare app, same cookie every request).
TARGET_ADDED_US = 10.0
TARGET_SHARE_OF_SESSION = 0.50

#: Requests between two looks at the clock inside a timed loop (keeps `perf_counter_ns` out of the per-request cost).
CHUNK = 64
#: A chunk taking this many times the median chunk of its rep was interrupted (the OS or the
#: hypervisor took the CPU away); it is left out of the µs/request figures but shown as "stalled".
STALL_FACTOR = 3.0
#: Above this share of stalled chunks in the median rep, the run prints a warning (the median chunk is suspect).
MAX_STALLED_CHUNKS = 0.10
#: No loop may run longer than this many times its planned duration.
DEADLINE_FACTOR = 3.0
MAX_REQUESTS_PER_REP = 5_000_000
#: The calibration's trial loop has at least this many chunks, so its stalled ones can be left out.
CALIBRATION_CHUNKS = 8
#: A request of the Redis rows takes a loopback round trip (~0.1 ms, more on a busy machine): their
#: reps last at least this long, so even a `--quick` rep has enough chunks to find stalls among.
REDIS_MIN_REP_SECONDS = 0.2
#: Requests whose Redis commands are counted (with `INFO commandstats`) before and after timing.
REDIS_CHECKED_REQUESTS = 5

ROOT = Path(__file__).resolve().parent.parent

ISSUER = "https://op.example"
CLIENT_ID = "bench"
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
REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


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


def bare_with_redis_get(client: redis.asyncio.Redis, key: str) -> ASGIApp:
    """`bare` plus the one Redis GET a request costs the Redis store: the floor for `pkce (redis store)`.

    It GETs the very key (and so the very value) the store reads, over a client built by the store's
    own code; a KeyError (not a silent fast path) if the key is gone.
    """

    async def bare_that_gets(scope: Scope, receive: Receive, send: Send) -> None:
        if await client.get(key) is None:
            raise KeyError(key)
        await send(RESPONSE_START)
        await send(RESPONSE_BODY)

    return bare_that_gets


async def receive_nothing() -> Message:
    return REQUEST


async def discard(message: Message) -> None:
    return None


# -- realistic session contents ------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def fake_jwt(length: int, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A JWT-shaped string of exactly `length` characters (the signature part fills up the rest)."""
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    missing = length - len(head) - len(body) - 2
    if missing < 16:
        raise ValueError(f"a JWT of {length} characters cannot hold this payload")
    return f"{head}.{body}.{_b64(os.urandom(missing))[:missing]}"


@dataclasses.dataclass(frozen=True)
class SessionData:
    claims: dict[str, Any]
    access_token: str
    id_token: str
    scopes: tuple[str, ...]
    created_at: int
    expires_at: int
    access_expires_at: int


def realistic_session(now: int) -> SessionData:
    """Profile claims as a typical provider returns them, an ~800-char access and ~900-char ID token."""
    sub = "248289761001"
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": sub,
        "aud": CLIENT_ID,
        "exp": now + 300,
        "iat": now,
        "auth_time": now - 5,
        "sid": "b1a3c5e7-9d2f-4b6a-8c0e-1f3a5b7d9e2c",
        "name": "Jane Q. Doe",
        "given_name": "Jane",
        "family_name": "Doe",
        "preferred_username": "jane.doe",
        "email": "jane.doe@example.com",
        "email_verified": True,
        "locale": "en-GB",
        "picture": "https://op.example/avatars/248289761001.png",
    }
    jwt_header = {"alg": "RS256", "typ": "JWT", "kid": "2024-11-rsa-1"}
    access_token = fake_jwt(
        800,
        {**jwt_header, "typ": "at+jwt"},
        {
            "iss": ISSUER,
            "sub": sub,
            "aud": "https://api.example",
            "client_id": CLIENT_ID,
            "exp": now + 3600,
            "iat": now,
            "jti": secrets.token_hex(16),
            "scope": "openid profile email",
            "sid": claims["sid"],
        },
    )
    id_token = fake_jwt(
        900, jwt_header, {**claims, "nonce": secrets.token_urlsafe(24), "at_hash": secrets.token_urlsafe(16)}
    )
    return SessionData(
        claims=claims,
        access_token=access_token,
        id_token=id_token,
        scopes=("openid", "profile", "email"),
        created_at=now,
        expires_at=now + 86400,
        access_expires_at=now + 3600,
    )


def bench_session(data: SessionData, session_id: str = "bench-session") -> Session:
    """The session a login with these contents would create."""
    return Session(
        id=session_id,
        claims=data.claims,
        access_token=data.access_token,
        id_token=data.id_token,
        refresh_token=None,
        access_expires_at=data.access_expires_at,
        scopes=data.scopes,
        created_at=data.created_at,
        expires_at=data.expires_at,
        # The idle clock is written back (a new cookie; for Redis an EVALSHA) once it is a minute
        # old. A browser would then send the new cookie, but this loop sends the same one for ever,
        # so a run longer than a minute would measure that write-back on every request. Seen a day
        # "ahead", the session stays on the read-only path however long the run; the checks require it.
        last_seen=int(time.time()) + 86400,
    )


def pkce_cookie(middleware: PKCEMiddleware, data: SessionData) -> str:
    """A session cookie value, sealed by the middleware's own codec (exactly what a login would set)."""
    return middleware._sessions.seal(bench_session(data))


def starlette_cookie(secret_key: str, data: SessionData, target_length: int) -> str:
    """A SessionMiddleware cookie holding the same data, within 4 characters of `target_length`.

    Encoded the way SessionMiddleware does it: `TimestampSigner.sign(b64encode(json.dumps(session)))`.
    Its JSON is less compact than the sealed one (default separators, longer keys), so the access
    token's signature part is shortened, or a CSRF-token-like string added, until both middlewares
    parse cookies of the same size.
    """
    signer = itsdangerous.TimestampSigner(secret_key)

    def encode(trim: int, padding: int) -> str:
        # Like the sealed session, the claims travel once, inside the ID token.
        session: dict[str, Any] = {
            "access_token": data.access_token[: len(data.access_token) - trim],
            "id_token": data.id_token,
            "scope": " ".join(data.scopes),
            "access_expires_at": data.access_expires_at,
            "login_at": data.created_at,
        }
        if padding:
            session["csrf"] = "x" * padding
        return signer.sign(base64.b64encode(json.dumps(session).encode("utf-8"))).decode("utf-8")

    trim = padding = 0
    value = encode(trim, padding)
    while len(value) > target_length:
        trim += 1
        value = encode(trim, padding)
    while len(value) < target_length - 3:  # base64 grows in steps of 4 characters
        padding += 1
        value = encode(trim, padding)
    if trim > len(data.access_token) // 4:
        raise ValueError("the SessionMiddleware cookie cannot be brought to the target length")
    return value


# -- scopes --------------------------------------------------------------------------------------


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


# -- checks before (and after) timing ------------------------------------------------------------


class BenchmarkError(RuntimeError):
    """The benchmark would measure the wrong thing (e.g. the 401 path); never silently continue."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BenchmarkError(message)


async def call_capturing(app: ASGIApp, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    await app(dict(scope), receive_nothing, capture)
    return sent


def set_cookies(sent: list[Message]) -> list[bytes]:
    return [v for m in sent if m["type"] == "http.response.start" for k, v in m["headers"] if k == b"set-cookie"]


def require_hello(sent: list[Message], name: str) -> None:
    statuses = [m.get("status") for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    require(statuses == [200] and body == b"hello", f"{name}: expected 200 'hello', got {statuses} {body[:80]!r}")


async def check_bare(scope: Scope) -> None:
    require_hello(await call_capturing(bare, scope), BARE)


async def check_pkce(middleware: PKCEMiddleware, scope: Scope, *, cached: bool, name: str) -> None:
    """The inner app is reached with an authenticated user; the cache is (or is not) what the label says."""
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
        # Users are built per request; their claims come from the one cached Session.
        require(seen[0].claims is seen[1].claims, f"{name}: the second request did not come from the cache")
    else:
        require(seen[0].claims is not seen[1].claims, f"{name}: the second request came from the cache")
        require(len(middleware._sessions._cache) == 0, f"{name}: the cache is not empty")


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
    require(seen[0]["scope"] == "openid profile email", f"{STARLETTE}: the session holds the wrong data")


async def redis_command_calls(inspector: redis.asyncio.Redis) -> Counter[str]:
    """Calls per command since the server started, as the server counts them (`INFO commandstats`)."""
    stats: dict[str, Any] = await inspector.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})


async def check_one_get(app: ASGIApp, scope: Scope, inspector: redis.asyncio.Redis, name: str) -> None:
    """Each request runs exactly one Redis command, a GET: no write-back, no health-check PING."""
    require_hello(await call_capturing(app, scope), name)  # the connection (and its CLIENT SETINFO) is set up
    before = await redis_command_calls(inspector)
    for _ in range(REDIS_CHECKED_REQUESTS):
        require_hello(await call_capturing(app, scope), name)
    after = await redis_command_calls(inspector)
    ran = {command: after[command] - before[command] for command in after if command != "info"}
    ran = {command: calls for command, calls in ran.items() if calls}
    require(
        ran == {"get": REDIS_CHECKED_REQUESTS},
        f"{name}: expected one GET per request, but {REDIS_CHECKED_REQUESTS} requests ran {ran}",
    )


async def check_pkce_redis(middleware: PKCEMiddleware, scope: Scope, inspector: redis.asyncio.Redis) -> None:
    """Authenticated, the session opened from the codec's cache (same blob), and one GET per request."""
    await check_pkce(middleware, scope, cached=True, name=PKCE_REDIS)
    await check_one_get(middleware, scope, inspector, PKCE_REDIS)


# -- timing --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rep:
    """One timed loop: `requests` requests in chunks of CHUNK, each chunk timed on its own."""

    requests: int
    wall_ns: int
    chunks_ns: list[int]

    @property
    def kept(self) -> list[int]:
        """Chunks that were not stalled: a chunk taking STALL_FACTOR times the rep's median lost the CPU."""
        limit = STALL_FACTOR * statistics.median(self.chunks_ns)
        return [c for c in self.chunks_ns if c <= limit]

    @property
    def ns_per_request(self) -> float:
        kept = self.kept
        return sum(kept) / (len(kept) * CHUNK)

    @property
    def wall_ns_per_request(self) -> float:
        return self.wall_ns / self.requests

    @property
    def stalled_fraction(self) -> float:
        return 1 - sum(self.kept) / self.wall_ns

    @property
    def stalled_chunks(self) -> float:
        """Share of chunks left out; when it is large the median chunk itself is suspect."""
        return 1 - len(self.kept) / len(self.chunks_ns)


@dataclasses.dataclass
class Variant:
    name: str
    app: ASGIApp
    scope: dict[str, Any]
    check: Callable[[], Awaitable[None]]
    #: A rep of this variant lasts at least this long, whatever `--rep-seconds` says.
    min_rep_seconds: float = 0.0
    n: int = 0
    reps: list[Rep] = dataclasses.field(default_factory=list)


async def drive(app: ASGIApp, scope: dict[str, Any], count: int, max_ns: int) -> Rep:
    """`count` requests (rounded up to whole chunks), stopping early once `max_ns` have passed.

    Each request gets a fresh shallow copy of the scope, as a server would build a new one; the
    copy costs the same in every variant, so it cancels out of the "added over bare" column. The
    clock is read once per chunk of CHUNK requests, so it adds well under 1 ns per request.
    """
    receive, send = receive_nothing, discard
    chunks: list[int] = []
    start = previous = time.perf_counter_ns()
    deadline = start + max_ns
    for _ in range(-(-count // CHUNK)):
        for _ in range(CHUNK):
            await app(scope.copy(), receive, send)
        now = time.perf_counter_ns()
        chunks.append(now - previous)
        previous = now
        if now > deadline:
            break
    return Rep(requests=len(chunks) * CHUNK, wall_ns=previous - start, chunks_ns=chunks)


async def timed(app: ASGIApp, scope: dict[str, Any], count: int, max_ns: int) -> Rep:
    gc.collect()
    gc.disable()
    try:
        return await drive(app, scope, count, max_ns)
    finally:
        gc.enable()


async def calibrate(variant: Variant, rep_seconds: float) -> int:
    """Requests per rep so that one rep takes about `rep_seconds` (of CPU time actually given to us).

    The trial grows until it has CALIBRATION_CHUNKS chunks and a quarter of the target outside
    stalls: a trial of one or two chunks cannot tell a stall from the work, and one stalled chunk
    would make N far too small (a rep of one chunk, where no stall can be found).
    """
    target_ns = rep_seconds * 1e9
    count = CHUNK
    while True:
        rep = await timed(variant.app, variant.scope, count, int(target_ns * DEADLINE_FACTOR))
        enough = len(rep.chunks_ns) >= CALIBRATION_CHUNKS and sum(rep.kept) >= target_ns / 4
        if enough or count >= MAX_REQUESTS_PER_REP:
            wanted = math.ceil(target_ns / rep.ns_per_request / CHUNK) * CHUNK
            return max(CHUNK, min(MAX_REQUESTS_PER_REP, wanted))
        count *= 4


async def measure(variants: list[Variant], *, reps: int, rep_seconds: float, warmup_seconds: float) -> None:
    for variant in variants:
        await variant.check()
        await drive(variant.app, variant.scope, MAX_REQUESTS_PER_REP, int(warmup_seconds * 1e9))
        variant.n = await calibrate(variant, max(rep_seconds, variant.min_rep_seconds))
    for _ in range(reps):  # interleaved, so slow drift of the machine hits every variant alike
        for variant in variants:
            max_ns = int(max(rep_seconds, variant.min_rep_seconds) * DEADLINE_FACTOR * 1e9)
            variant.reps.append(await timed(variant.app, variant.scope, variant.n, max_ns))
    for variant in variants:  # still the authenticated path after all that
        await variant.check()


# -- report --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    median_us: float
    min_us: float
    added_us: float
    ratio: float
    wall_median_us: float
    stalled_fraction: float
    stalled_chunks: float
    requests_per_rep: int
    reps_us: list[float]
    reps_wall_us: list[float]


def rows(variants: list[Variant]) -> list[Row]:
    base = statistics.median(rep.ns_per_request for rep in variants[0].reps) / 1000
    result = []
    for v in variants:
        per_rep = [rep.ns_per_request / 1000 for rep in v.reps]
        median = statistics.median(per_rep)
        wall = [rep.wall_ns_per_request / 1000 for rep in v.reps]
        result.append(
            Row(
                name=v.name,
                median_us=median,
                min_us=min(per_rep),
                added_us=median - base,
                ratio=median / base,
                wall_median_us=statistics.median(wall),
                stalled_fraction=statistics.median(rep.stalled_fraction for rep in v.reps),
                stalled_chunks=statistics.median(rep.stalled_chunks for rep in v.reps),
                requests_per_rep=v.n,
                reps_us=per_rep,
                reps_wall_us=wall,
            )
        )
    return result


def table(result: list[Row], reps: int) -> str:
    lines = [
        "| variant | median µs/req | min µs/req | added over bare (µs) | x bare "
        "| wall median µs/req | stalled | requests x reps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result:
        added = "—" if r.name == BARE else f"{r.added_us:+.2f}"
        lines.append(
            f"| {r.name} | {r.median_us:.2f} | {r.min_us:.2f} | {added} | {r.ratio:.2f} "
            f"| {r.wall_median_us:.2f} | {r.stalled_fraction:.0%} | {r.requests_per_rep} x {reps} |"
        )
    return "\n".join(lines)


def target_checks(result: list[Row]) -> list[dict[str, Any]]:
    by_name = {r.name: r for r in result}
    session_added = by_name[STARLETTE].added_us
    checks: list[dict[str, Any]] = []
    for name in (PKCE_SAME, PKCE_COLD):
        added = by_name[name].added_us
        share = added / session_added if session_added > 0 else math.inf
        checks.append(
            {
                "variant": name,
                "added_us": added,
                "added_ok": added <= TARGET_ADDED_US,
                "share_of_session": share,
                "share_ok": share < TARGET_SHARE_OF_SESSION,
                "lines": [
                    f"{name} adds {added:.2f} µs over bare (target <= {TARGET_ADDED_US:g} µs): "
                    + ("PASS" if added <= TARGET_ADDED_US else "FAIL"),
                    f"{name} adds {share:.0%} of what SessionMiddleware adds "
                    f"({added:.2f} of {session_added:.2f} µs; target < {TARGET_SHARE_OF_SESSION:.0%}): "
                    + ("PASS" if share < TARGET_SHARE_OF_SESSION else "FAIL"),
                ],
            }
        )
    return checks


def redis_summary(result: list[Row]) -> dict[str, Any] | None:
    """What the Redis store adds beyond its one round trip (`None` when the Redis rows did not run)."""
    by_name = {r.name: r for r in result}
    if PKCE_REDIS not in by_name or REDIS_GET not in by_name:
        return None
    store_us = by_name[PKCE_REDIS].median_us - by_name[REDIS_GET].median_us
    round_trip_us = by_name[REDIS_GET].added_us
    return {
        "store_over_get_us": store_us,
        "get_over_bare_us": round_trip_us,
        "line": f"{PKCE_REDIS} adds {store_us:.2f} µs over {REDIS_GET} (the store's own work beyond its one "
        f"round trip; the GET itself adds {round_trip_us:.2f} µs over bare)",
    }


# -- the Redis rows ------------------------------------------------------------------------------


def redis_unavailable() -> str | None:
    """Why the Redis rows cannot run here; `None` when they can."""
    if importlib.util.find_spec("redis") is None:
        return "the `redis` package is not installed (pip install 'pkce_middleware[redis]')"
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        return "redis-server is not installed (`make redis-server` installs Debian's package)"
    if not (ROOT / "tests" / "redis_server.py").exists():
        return "tests/redis_server.py, which starts the server, is missing"
    return None


def set_cookie_value(writer: CookieWriter, name: str) -> str:
    """The value of the `name` cookie among the `Set-Cookie` headers the writer collected."""
    for header, raw in writer.raw_headers:
        if header == b"set-cookie":
            cookie_name, _, value = raw.decode("latin-1").split(";", 1)[0].partition("=")
            if cookie_name == name and value:
                return value
    raise BenchmarkError(f"{PKCE_REDIS}: saving the session set no {name} cookie")


@dataclasses.dataclass(frozen=True)
class RedisRows:
    variants: list[Variant]
    cookie_value: str
    cookie_header: str
    server: str


async def redis_rows(
    stack: contextlib.AsyncExitStack, data: SessionData, secret_key: str, transport: httpx.AsyncBaseTransport
) -> RedisRows:
    """Start a private redis-server (stopped by `stack`), store a real session in it, build the two rows."""
    import redis.asyncio

    from pkce_middleware._middleware import _make_store
    from pkce_middleware._redis import RedisStore

    sys.path.insert(0, str(ROOT / "tests"))  # the server launcher is shared with the test suite
    from redis_server import RedisServer  # type: ignore[import-not-found, unused-ignore]

    try:
        server = stack.enter_context(RedisServer())  # stopped when the run ends, also on errors
    except RuntimeError as exc:
        raise BenchmarkError(f"redis-server did not start: {exc}") from exc
    config = PKCEConfig(issuer=ISSUER, client_id=CLIENT_ID, secret_key=secret_key, session_store=server.url)
    middleware = PKCEMiddleware(bare, config=config, transport=transport)
    stack.push_async_callback(middleware._provider.aclose)
    store = middleware._store
    if not isinstance(store, RedisStore):
        raise BenchmarkError(f"{PKCE_REDIS}: session_store={server.url} did not give a RedisStore")
    stack.push_async_callback(store.aclose)
    inspector = redis.asyncio.from_url(server.url)  # looks into Redis on a connection of its own
    stack.push_async_callback(inspector.aclose)

    # A session written by the store itself, as a login writes it (one EVALSHA: the session and its
    # indexes); the cookie is the one that login would have set.
    session = bench_session(data, secrets.token_urlsafe(24))
    writer = CookieWriter()
    await store.save(session, {"type": "http", "headers": []}, writer)
    name = middleware._cookies.session_name
    value = set_cookie_value(writer, name)
    key = store._key("session", session.id)
    require(await inspector.exists(key) == 1, f"{PKCE_REDIS}: the session is not in Redis under {key}")
    header = f"{name}={value}"
    scope = browser_scope(header)

    # The reference's client is built by the store's own code from the same configuration (a second
    # RedisStore, never used for sessions), so its settings are the middleware's: timeouts, health
    # check, retry.
    reference = _make_store(config, middleware._sessions, middleware._cookies, store._id_sealer)
    if not isinstance(reference, RedisStore):
        raise BenchmarkError(f"{REDIS_GET}: session_store={server.url} did not give a RedisStore")
    stack.push_async_callback(reference.aclose)
    get_app = bare_with_redis_get(reference._redis(), key)

    info: dict[str, Any] = await inspector.info("server")
    variants = [
        Variant(
            REDIS_GET,
            get_app,
            scope,
            lambda: check_one_get(get_app, scope, inspector, REDIS_GET),
            min_rep_seconds=REDIS_MIN_REP_SECONDS,
        ),
        Variant(
            PKCE_REDIS,
            middleware,
            scope,
            lambda: check_pkce_redis(middleware, scope, inspector),
            min_rep_seconds=REDIS_MIN_REP_SECONDS,
        ),
    ]
    return RedisRows(
        variants=variants,
        cookie_value=value,
        cookie_header=header,
        server=f"redis-server {info.get('redis_version', '?')} on {server.url.removesuffix('/0')} (loopback TCP)",
    )


# -- main ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Results:
    reps: int
    rep_seconds: float
    rows: list[Row]
    cookie_chars: dict[str, int]
    cookie_header_bytes: dict[str, int]
    #: Why the Redis rows did not run (`None`: they ran, against `redis_server`).
    redis_skipped: str | None
    redis_server: str | None


async def run(*, reps: int, rep_seconds: float, warmup_seconds: float) -> Results:
    now = int(time.time())
    data = realistic_session(now)

    pkce_key = secrets.token_urlsafe(32)  # 43 characters
    config = PKCEConfig(issuer=ISSUER, client_id=CLIENT_ID, secret_key=pkce_key)
    # Never the network: were the cookie refused, the login redirect's discovery would get a 503 here.
    offline = httpx.MockTransport(lambda request: httpx.Response(503))
    pkce_same = PKCEMiddleware(bare, config=config, transport=offline)
    pkce_cold = PKCEMiddleware(bare, config=config, transport=offline)
    # Every request misses the LRU (the opened entry is evicted as soon as it is stored), so each one
    # pays the full open: base64 decode, AES-GCM, JSON, building Session/OIDCUser/OIDCCredentials.
    pkce_cold._sessions._cache_size = 0
    pkce_value = pkce_cookie(pkce_same, data)
    pkce_header = f"{pkce_same._cookies.session_name}={pkce_value}"
    pkce_scope = browser_scope(pkce_header)

    session_key = secrets.token_urlsafe(32)
    session_value = starlette_cookie(session_key, data, len(pkce_value))
    session_app = SessionMiddleware(bare_that_reads_session, secret_key=session_key)
    session_header = f"session={session_value}"
    session_scope = browser_scope(session_header)
    bare_scope = browser_scope(pkce_header)  # same headers: the bare app just never looks at them

    variants = [
        Variant(BARE, bare, bare_scope, lambda: check_bare(bare_scope)),
        Variant(
            PKCE_SAME, pkce_same, pkce_scope, lambda: check_pkce(pkce_same, pkce_scope, cached=True, name=PKCE_SAME)
        ),
        Variant(
            PKCE_COLD, pkce_cold, pkce_scope, lambda: check_pkce(pkce_cold, pkce_scope, cached=False, name=PKCE_COLD)
        ),
        Variant(STARLETTE, session_app, session_scope, lambda: check_session(session_app, session_scope)),
    ]
    cookie_chars = {"pkce": len(pkce_value), "starlette": len(session_value)}
    cookie_header_bytes = {"pkce": len(pkce_header), "starlette": len(session_header)}
    redis_server = None
    async with contextlib.AsyncExitStack() as stack:  # closes the clients, then stops redis-server
        stack.push_async_callback(pkce_same._provider.aclose)
        stack.push_async_callback(pkce_cold._provider.aclose)
        redis_skipped = redis_unavailable()
        if redis_skipped is None:
            extra = await redis_rows(stack, data, pkce_key, offline)
            variants += extra.variants
            cookie_chars["pkce redis"] = len(extra.cookie_value)
            cookie_header_bytes["pkce redis"] = len(extra.cookie_header)
            redis_server = extra.server
        await measure(variants, reps=reps, rep_seconds=rep_seconds, warmup_seconds=warmup_seconds)
    return Results(
        reps=reps,
        rep_seconds=rep_seconds,
        rows=rows(variants),
        cookie_chars=cookie_chars,
        cookie_header_bytes=cookie_header_bytes,
        redis_skipped=redis_skipped,
        redis_server=redis_server,
    )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (5 reps of 0.05 s) for CI")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per variant (default 7; ignored by --quick)")
    parser.add_argument(
        "--rep-seconds", type=float, default=0.3, help="target duration of one rep (default 0.3; ignored by --quick)"
    )
    parser.add_argument(
        "--fail-on-target",
        action="store_true",
        help="exit 1 when pkce (same cookie) misses a target (off by default: timings on shared CI machines are noisy)",
    )
    args = parser.parse_args(argv)
    if args.reps < 1 or args.rep_seconds <= 0:
        parser.error("--reps must be >= 1 and --rep-seconds > 0")
    reps, rep_seconds, warmup_seconds = (5, 0.05, 0.05) if args.quick else (args.reps, args.rep_seconds, 0.3)
    # A SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so the redis-server started for the run is stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        results = asyncio.run(run(reps=reps, rep_seconds=rep_seconds, warmup_seconds=warmup_seconds))
    except BenchmarkError as exc:
        print(f"benchmark invalid: {exc}", file=sys.stderr)
        return 2

    checks = target_checks(results.rows)
    versions = {name: version(name) for name in ("pkce_middleware", "starlette", "cryptography", "itsdangerous")}
    with contextlib.suppress(PackageNotFoundError):
        versions["redis"] = version("redis")
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    chars, header = results.cookie_chars, results.cookie_header_bytes
    print(
        f"pkce cookie: {chars['pkce']} chars (Cookie header {header['pkce']} bytes); "
        f"SessionMiddleware cookie: {chars['starlette']} chars (Cookie header {header['starlette']} bytes)"
        + (f"; pkce redis-store cookie: {chars['pkce redis']} chars" if "pkce redis" in chars else "")
    )
    redis_reps = ""
    if results.redis_skipped is not None:
        print(f"redis rows skipped: {results.redis_skipped}")
    else:
        print(f"redis rows: {results.redis_server}")
        redis_reps = f" (Redis rows ~{max(rep_seconds, REDIS_MIN_REP_SECONDS):g} s)"
    print(
        f"{'quick run' if args.quick else 'full run'}: median of {reps} reps of ~{rep_seconds:g} s each{redis_reps}\n"
    )
    print(table(results.rows, reps))
    print()
    for check in checks:
        for line in check["lines"]:
            print(line)
    redis = redis_summary(results.rows)
    if redis is not None:
        print(redis["line"])
    noisy = [r.name for r in results.rows if r.stalled_chunks > MAX_STALLED_CHUNKS]
    if noisy:
        print(
            f"warning: in the median rep over {MAX_STALLED_CHUNKS:.0%} of the chunks were stalled for "
            f"{', '.join(noisy)}; the machine is too busy for these figures to mean much"
        )

    if args.json is not None:
        report = {
            "quick": args.quick,
            "reps": reps,
            "rep_seconds": rep_seconds,
            "python": sys.version,
            "platform": platform.platform(),
            "versions": versions,
            "cookie_chars": chars,
            "cookie_header_bytes": header,
            "targets": {"added_us": TARGET_ADDED_US, "share_of_session": TARGET_SHARE_OF_SESSION},
            "variants": [dataclasses.asdict(r) for r in results.rows],
            "checks": [{k: v for k, v in c.items() if k != "lines"} for c in checks],
            "redis": {
                "skipped": results.redis_skipped,
                "server": results.redis_server,
                **({k: v for k, v in redis.items() if k != "line"} if redis is not None else {}),
            },
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    missed = not all(c["added_ok"] and c["share_ok"] for c in checks if c["variant"] == PKCE_SAME)
    return 1 if args.fail_on_target and missed else 0


if __name__ == "__main__":
    sys.exit(main())
