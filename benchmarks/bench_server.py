"""Requests per second through a real server: uvicorn on loopback, bare vs. the login layers, under load.

Each variant is a uvicorn process of its own on 127.0.0.1 (one worker, `--http httptools` when it
is installed, else h11; `--no-access-log`, `--lifespan on`) serving the hello app of
`benchmarks.server_apps` behind:

* nothing (`bare`, the baseline);
* `PKCEMiddleware` with the cookie store and a fresh session cookie (made by `create_session`);
* the same with a cookie whose idle clock is older than the middleware's re-issue threshold, sent
  unchanged on every request (as a load balancer's health check or a script sends it);
* `PKCEMiddleware` with the Redis store (a private redis-server, started for the run);
* the Authlib + Starlette `SessionMiddleware` recipe, its session holding the same user and tokens.

Each is driven for a bounded time by Debian's `wrk` when it is on PATH, else by a bounded Python
client (asyncio, N keep-alive connections, each sending its next request when the last response is
in). Every response is checked: status 200 and body `hello`, and no `Set-Cookie` where none is due.
The provider is never contacted: `PKCE_ISSUER` names a loopback port this process holds bound
without listening, so the middleware's startup logs "provider not usable" and goes on, and a
request with a session never needs the provider.

Run `python -m benchmarks.bench_server` from the repository root (5 s per variant, about a minute
in all), or `--quick` (2 s per variant). See `benchmarks/README.md` for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import itsdangerous

from pkce_middleware import PKCEConfig, PKCEMiddleware

# Private pieces, used only to forge the aged cookie (see `aged_cookie`): a session's idle clock
# cannot be moved back through the public API, nor can time be faked in the server's process.
from pkce_middleware._components import bound_purpose
from pkce_middleware._crypto import Sealer
from pkce_middleware._session import SessionCodec
from tests.support.processes import PortTaken, Process, free_port

from .harness import BenchmarkError, require
from .scenarios import ACCEPT, USER_AGENT, redis_unavailable
from .server_apps import BODY, hello
from .session_data import CLIENT_ID, SessionData, realistic_session

BARE = "bare"
CONTROL = "bare, second process"
COOKIE_FRESH = "pkce cookie store (fresh cookie)"
COOKIE_AGED = "pkce cookie store (aged cookie)"
REDIS = "pkce redis store"
AUTHLIB = "authlib + SessionMiddleware"

DEFAULT_SECONDS = 5
QUICK_SECONDS = 2
#: A fresh session is made just before its variant runs; it must still be fresh (its idle clock
#: under a minute old, the least re-issue threshold) when the last request of the variant is answered.
MAX_SECONDS = 40
WARMUP_SECONDS = 2
QUICK_WARMUP_SECONDS = 1
MAX_ROUNDS = 20
DEFAULT_CONNECTIONS = 32
MAX_CONNECTIONS = 1024
#: The aged cookie's idle clock is this share of the idle timeout old: past the point where the
#: middleware writes the clock back (half the idle window, and never under a minute), yet far from
#: the idle timeout itself, so the session stays live for the whole run.
AGED_SHARE_OF_IDLE_TIMEOUT = 0.75
#: After the deadline, connections finish the request they have in flight within this time.
DRAIN_SECONDS = 10.0
#: Requests of a check, before and after the timed run (one connection).
CHECK_REQUESTS = 3
#: The Python client never sends more than this many requests in one run.
MAX_REQUESTS_PER_RUN = 20_000_000
#: A server that got less of a core than this during its load was held back by something else.
STARVED = 0.8
#: A response head larger than this is no answer from our servers.
MAX_HEAD_BYTES = 64 * 1024
SERVER_STARTUP_TIMEOUT = 60.0
#: Redis commands that change no data: the store's GET, a connection's setup, and the PUBLISH,
#: SUBSCRIBE and HGET of the store's local session cache (its listener's heartbeat and the data's
#: epoch it reads with it, a few times a second).
READS = frozenset({"get", "ping", "hello", "client", "select", "auth", "publish", "subscribe", "hget"})
#: What a uvicorn whose lifespan completed prints (at the default log level).
SERVER_READY = r"Application startup complete"


# -- the request ---------------------------------------------------------------------------------

BROWSER_HEADERS: tuple[tuple[str, str], ...] = (
    ("User-Agent", USER_AGENT),
    ("Accept", ACCEPT),
    ("Accept-Language", "en-GB,en;q=0.9"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Site", "none"),
    ("Sec-Fetch-User", "?1"),
    ("Upgrade-Insecure-Requests", "1"),
)


def request_headers(cookie_header: str) -> list[tuple[str, str]]:
    """A browser's `GET /` with the session cookie: the same headers for every variant."""
    return [*BROWSER_HEADERS, ("Cookie", cookie_header)]


def raw_request(port: int, cookie_header: str) -> bytes:
    lines = ["GET / HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in request_headers(cookie_header)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- load results --------------------------------------------------------------------------------


@dataclasses.dataclass
class Load:
    """What one bounded run of a load client saw."""

    #: Responses completed within the run's window (what req/s counts).
    requests: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    #: Responses that carried at least one Set-Cookie header.
    with_set_cookie: int
    #: All responses checked (the window's, and with the Python client those in flight at its end).
    responses: int
    #: Responses other than `200 hello`, and examples of them.
    not_ok: int
    examples: list[str]
    #: Socket errors and timeouts.
    errors: int
    #: CPU time the load client used, as a share of one core over the run.
    client_cpu: float | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def set_cookie_per_1000(self) -> float:
        return 1000.0 * self.with_set_cookie / self.responses if self.responses else 0.0


def percentile_ms(sorted_ns: list[int], fraction: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_ns:
        return None
    index = min(len(sorted_ns) - 1, max(0, math.ceil(fraction * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1e6


# -- the Python load client ----------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """Shared by the connections of one run."""

    deadline_ns: int
    max_requests: int
    sent: int = 0
    in_window: int = 0
    responses: int = 0
    with_set_cookie: int = 0
    not_ok: int = 0
    errors: int = 0
    latencies: list[int] = dataclasses.field(default_factory=list)
    examples: list[str] = dataclasses.field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


class LoadConnection(asyncio.Protocol):
    """One keep-alive connection: a request, its whole response, the next request, until the deadline."""

    def __init__(self, request: bytes, tally: Tally, finished: asyncio.Future[None]) -> None:
        self.request = request
        self.tally = tally
        self.finished = finished
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sent_at = 0
        self.waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self) -> None:
        assert self.transport is not None
        self.tally.sent += 1
        self.waiting = True
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.request)

    def finish(self, error: str | None = None) -> None:
        if error is not None:
            self.tally.errors += 1
            self.tally.note(error)
        if self.transport is not None:
            self.transport.close()
        if not self.finished.done():
            self.finished.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self.finish("a response head larger than 64 kB")
                return
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            try:
                status = int(lines[0].split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.finish(f"not an HTTP response: {lines[0][:80]!r}")
                return
            length: int | None = None
            cookies = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"set-cookie":
                    cookies += 1
            if length is None:
                self.finish(f"a {status} response without Content-Length")
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            self.response(status, cookies, body)

    def response(self, status: int, cookies: int, body: bytes) -> None:
        now = time.perf_counter_ns()
        tally = self.tally
        if not self.waiting:
            self.finish(f"an unrequested {status} response")
            return
        self.waiting = False
        tally.responses += 1
        if now <= tally.deadline_ns:
            tally.in_window += 1
            tally.latencies.append(now - self.sent_at)
        if cookies:
            tally.with_set_cookie += 1
        if status != 200 or body != BODY:
            tally.not_ok += 1
            tally.note(f"{status} {body[:60]!r}")
        if now < tally.deadline_ns and tally.sent < tally.max_requests:
            self.send()
        else:
            self.finish()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.tally.errors += 1
            self.tally.note(f"the server closed the connection ({exc or 'EOF'})")
            self.finished.set_result(None)


async def python_load(port: int, request: bytes, *, connections: int, seconds: float, max_requests: int) -> Load:
    """`connections` keep-alive connections, each one request at a time, for `seconds` (or `max_requests`)."""
    loop = asyncio.get_running_loop()
    tally = Tally(deadline_ns=0, max_requests=max_requests)
    finished: list[asyncio.Future[None]] = [loop.create_future() for _ in range(connections)]
    protocols: list[LoadConnection] = []

    def connection(future: asyncio.Future[None]) -> Callable[[], LoadConnection]:
        return lambda: LoadConnection(request, tally, future)

    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            made = await asyncio.gather(
                *(loop.create_connection(connection(future), "127.0.0.1", port) for future in finished)
            )
        protocols = [protocol for _, protocol in made]
        cpu = time.process_time()
        start = time.perf_counter_ns()
        tally.deadline_ns = start + int(seconds * 1e9)
        for protocol in protocols:
            protocol.send()
        async with asyncio.timeout(seconds + DRAIN_SECONDS):
            await asyncio.gather(*finished)
        cpu = time.process_time() - cpu
    except TimeoutError:
        raise BenchmarkError(f"the load did not finish within {seconds + DRAIN_SECONDS:g} s (server stuck?)") from None
    finally:
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.close()
    elapsed = min(time.perf_counter_ns(), tally.deadline_ns) - start
    tally.latencies.sort()
    return Load(
        requests=tally.in_window,
        seconds=elapsed / 1e9,
        p50_ms=percentile_ms(tally.latencies, 0.50),
        p99_ms=percentile_ms(tally.latencies, 0.99),
        with_set_cookie=tally.with_set_cookie,
        responses=tally.responses,
        not_ok=tally.not_ok,
        examples=tally.examples,
        errors=tally.errors,
        client_cpu=cpu / (elapsed / 1e9) if elapsed > 0 else None,
    )


def run_python_load(port: int, request: bytes, *, connections: int, seconds: float, max_requests: int) -> Load:
    return asyncio.run(python_load(port, request, connections=connections, seconds=seconds, max_requests=max_requests))


# -- wrk -----------------------------------------------------------------------------------------

#: wrk's Lua side: the request's headers, and per-thread counters of what came back, summed in `done`.
WRK_SCRIPT = """
wrk.method = "GET"
wrk.path = "/"
{headers}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) responses = 0; not_ok = 0; with_cookie = 0; first_bad = "" end
function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 or body ~= "{body}" then
    not_ok = not_ok + 1
    if first_bad == "" then first_bad = tostring(status) end
  end
  for name, _ in pairs(headers) do
    if string.lower(name) == "set-cookie" then with_cookie = with_cookie + 1; break end
  end
end
function done(summary, latency, requests)
  local r, n, c, bad = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    r = r + t:get("responses"); n = n + t:get("not_ok"); c = c + t:get("with_cookie")
    if bad == "" then bad = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT {{\\"requests\\": %.0f, \\"duration_us\\": %.0f, \\"p50_us\\": %.0f, \\"p99_us\\": %.0f, "
      .. "\\"responses\\": %.0f, \\"not_ok\\": %.0f, \\"with_cookie\\": %.0f, \\"first_bad\\": \\"%s\\", "
      .. "\\"errors\\": %.0f}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    r, n, c, bad, e.connect + e.read + e.write + e.timeout))
end
"""


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script(cookie_header: str) -> str:
    headers = "\n".join(
        f"wrk.headers[{lua_string(name)}] = {lua_string(value)}" for name, value in request_headers(cookie_header)
    )
    return WRK_SCRIPT.format(headers=headers, body=BODY.decode())


def run_wrk(wrk: str, port: int, cookie_header: str, *, connections: int, threads: int, seconds: int) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-server-", delete=False) as script:
        script.write(wrk_script(cookie_header))
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
        command += ["-s", script.name, f"http://127.0.0.1:{port}/"]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=seconds + DRAIN_SECONDS + 20, check=False
            )
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"wrk did not finish within {seconds + DRAIN_SECONDS + 20:g} s") from None
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(script.name)
    found = re.search(r"^BENCH_RESULT (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise BenchmarkError(f"wrk failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    data = json.loads(found.group(1))
    wall = data["duration_us"] / 1e6
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Load(
        requests=int(data["requests"]),
        seconds=wall,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        with_set_cookie=int(data["with_cookie"]),
        responses=int(data["responses"]),
        not_ok=int(data["not_ok"]),
        examples=[f"status {data['first_bad']}"] if data["not_ok"] else [],
        errors=int(data["errors"]),
        client_cpu=cpu / wall if wall > 0 else None,
    )


# -- the servers ---------------------------------------------------------------------------------


def http_implementation() -> str:
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def server_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux `/proc`); `None` where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def uvicorn_server(target: str, env: dict[str, str]) -> Iterator[tuple[int, Process]]:
    """`python -m uvicorn <target> --factory` on 127.0.0.1 and a free port; stopped on the way out."""
    for attempt in range(3):
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--workers", "1", "--http", http_implementation(), "--no-access-log", "--lifespan", "on"]
        process = Process(
            command,
            name=f"uvicorn {target} on port {port}",
            env=env,
            ready_pattern=SERVER_READY,
            ready_port=port,
            startup_timeout=SERVER_STARTUP_TIMEOUT,
        )
        try:
            process.start_and_wait()
        except PortTaken:
            if attempt == 2:
                raise
            continue
        try:
            yield port, process
        finally:
            process.stop()
        return


@contextlib.contextmanager
def unreachable_issuer() -> Iterator[str]:
    """An issuer URL on a loopback port held bound, but not listening: every connection is refused.

    Nothing else can take the port while the run holds it, so the middleware's startup (discovery)
    fails at once, logs "provider not usable at startup" and goes on; no request of the run needs
    the provider.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- sessions and cookies ------------------------------------------------------------------------


def session_cookie(middleware: PKCEMiddleware, headers: list[str]) -> str:
    """The `name=value` a browser would send back after these `Set-Cookie` headers."""
    name = middleware.session_cookie_name
    cookies: SimpleCookie = SimpleCookie()
    for header in headers:
        cookies.load(header)
    require(name in cookies and bool(cookies[name].value), f"create_session set no {name} cookie ({headers})")
    return f"{name}={cookies[name].value}"


async def created_cookie(env: dict[str, str], data: SessionData) -> str:
    """A session made by `create_session` on a middleware configured like the server (same keys, store)."""
    middleware = PKCEMiddleware(hello, config=PKCEConfig.from_environ(env))
    try:
        return session_cookie(middleware, await middleware.create_session(claims=data.claims, token=data.token))
    finally:
        await middleware.aclose()


def fresh_cookie(env: dict[str, str], data: SessionData) -> str:
    return asyncio.run(created_cookie(env, data))


def aged_cookie(env: dict[str, str], data: SessionData) -> str:
    """A session made by `create_session`, whose idle clock (`last_seen`) is then moved back.

    A benchmark-only forgery through private pieces (`SessionCodec`, `Sealer`, `bound_purpose`, as
    `tests/support/site.py` seals sessions): a client that never takes the re-issued cookie sends
    such a cookie after a minute, but the run cannot wait a minute per variant, nor fake the time
    of the server's process. Everything else is the session `create_session` made.
    """
    config = PKCEConfig.from_environ(env)
    name, _, value = fresh_cookie(env, data).partition("=")
    keys = [str(key) for key in config.secret_keys]
    codec = SessionCodec(Sealer(keys, bound_purpose("session", config)), cache_size=0)
    session = codec.open(value)
    require(session is not None, "the cookie create_session made does not open")
    assert session is not None
    aged = dataclasses.replace(session, last_seen=session.last_seen - aged_by_seconds(config))
    return f"{name}={codec.seal(aged)}"


def aged_by_seconds(config: PKCEConfig) -> int:
    return int(config.session_idle_timeout * AGED_SHARE_OF_IDLE_TIMEOUT)


def authlib_session(data: SessionData) -> dict[str, Any]:
    """What the Authlib recipe keeps after a login: the user (`token["userinfo"]`) and the token."""
    return {
        "user": dict(data.claims),
        "token": {
            "access_token": data.access_token,
            "id_token": data.id_token,
            "token_type": "Bearer",
            "scope": data.token["scope"],
            "expires_in": data.token["expires_in"],
            "expires_at": data.created_at + data.token["expires_in"],
        },
    }


def starlette_session_cookie(secret: str, session: dict[str, Any]) -> str:
    """The cookie SessionMiddleware sets for `session`: `TimestampSigner.sign(b64encode(json.dumps(...)))`."""
    value = itsdangerous.TimestampSigner(secret).sign(base64.b64encode(json.dumps(session).encode("utf-8")))
    return f"session={value.decode('utf-8')}"


# -- the variants --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    #: `module:factory` for uvicorn.
    target: str
    env: dict[str, str]
    #: Made just before the variant runs: the Cookie header's value.
    cookie: Callable[[], str]
    #: `False`: any Set-Cookie fails the run. `True`: counted and reported (the aged cookie's re-issue).
    set_cookie_due: bool
    #: A redis-server URL whose command counts are checked around the timed run.
    redis_url: str | None = None
    #: Printed below the table.
    detail: str = ""


@dataclasses.dataclass
class Result:
    name: str
    load: Load
    server_cpu: float | None
    cookie_chars: int
    check_set_cookies: int
    note: str = ""


def check(port: int, request: bytes, name: str, *, set_cookie_due: bool) -> int:
    """A few requests on one connection: `200 hello`; no Set-Cookie unless due. Returns how many had one."""
    seen = run_python_load(port, request, connections=1, seconds=DRAIN_SECONDS, max_requests=CHECK_REQUESTS)
    require(
        seen.errors == 0 and seen.responses == CHECK_REQUESTS,
        f"{name}: {seen.responses} of {CHECK_REQUESTS} check requests answered ({seen.examples})",
    )
    require(seen.not_ok == 0, f"{name}: expected 200 'hello' (an authenticated request), got {seen.examples}")
    require(
        set_cookie_due or seen.with_set_cookie == 0,
        f"{name}: {seen.with_set_cookie} of {CHECK_REQUESTS} responses set a cookie, where none is due",
    )
    return seen.with_set_cookie


def redis_calls(url: str) -> Counter[str]:
    """Calls per command since the server started (`INFO commandstats`)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})


def measure(variant: Variant, port: int, process: Process, options: Options) -> Result:
    """One round of a variant on its running server: a new cookie, checks, warm-up, the timed load, checks."""
    cookie = variant.cookie()
    request = raw_request(port, cookie)
    check_cookies = check(port, request, variant.name, set_cookie_due=variant.set_cookie_due)
    load = drive(port, cookie, request, options, seconds=options.warmup)
    require(load.not_ok == 0 and load.errors == 0, f"{variant.name}: warm-up failed: {load.examples}")
    before = redis_calls(variant.redis_url) if variant.redis_url else None
    cpu = server_cpu_seconds(process.pid)
    load = drive(port, cookie, request, options, seconds=options.seconds)
    cpu_after = server_cpu_seconds(process.pid)
    note = variant.detail
    if variant.redis_url is not None and before is not None:
        after = redis_calls(variant.redis_url)
        ran = {command: after[command] - before[command] for command in after if command != "info"}
        ran = {command: calls for command, calls in ran.items() if calls}
        # A connection the store's pool opens during the run says HELLO and CLIENT SETINFO first.
        writes = {command: calls for command, calls in ran.items() if command.partition("|")[0] not in READS}
        require(not writes, f"{variant.name}: the store wrote during the run: {ran}")
        note = f"{ran.get('get', 0) / max(1, load.responses):.2f} Redis GET per response, no write"
        if ran.get("publish"):
            note += f" ({ran['publish']} PUBLISH: the cache's heartbeat)"
        note = f"{variant.detail}; {note}" if variant.detail else note
    require(load.errors == 0, f"{variant.name}: {load.errors} socket errors or timeouts: {load.examples}")
    require(load.not_ok == 0, f"{variant.name}: {load.not_ok} responses were not 200 'hello': {load.examples}")
    require(
        variant.set_cookie_due or load.with_set_cookie == 0,
        f"{variant.name}: {load.with_set_cookie} responses set a cookie, where none is due",
    )
    check(port, request, variant.name, set_cookie_due=variant.set_cookie_due)
    output = "\n".join(process.lines)
    require("Traceback" not in output, f"{variant.name}: the server logged an error:\n{process.output(40)}")
    server_cpu = None
    if cpu is not None and cpu_after is not None and load.seconds > 0:
        server_cpu = (cpu_after - cpu) / load.seconds
    return Result(variant.name, load, server_cpu, len(cookie.partition("=")[2]), check_cookies, note)


@dataclasses.dataclass(frozen=True)
class Options:
    seconds: int
    warmup: int
    connections: int
    threads: int
    #: Path of `wrk`, or `None` for the Python client.
    wrk: str | None
    rounds: int = 1


def drive(port: int, cookie: str, request: bytes, options: Options, *, seconds: int) -> Load:
    if options.wrk is not None:
        return run_wrk(
            options.wrk, port, cookie, connections=options.connections, threads=options.threads, seconds=seconds
        )
    return run_python_load(
        port, request, connections=options.connections, seconds=seconds, max_requests=MAX_REQUESTS_PER_RUN
    )


def variants(
    stack: contextlib.ExitStack, issuer: str, data: SessionData, *, control: bool = False
) -> tuple[list[Variant], str | None]:
    """The variants, and why the Redis row is skipped (`None`: it runs); with `control`, a second
    bare server right after the first, whose ratio to it is what two identical processes differ by."""
    secret_key = secrets.token_urlsafe(32)
    base = {"PKCE_ISSUER": issuer, "PKCE_CLIENT_ID": CLIENT_ID, "PKCE_SECRET_KEY": secret_key}
    cookie_env = {**base, "PKCE_SESSION_STORE": "cookie"}
    cookie_config = PKCEConfig.from_environ(cookie_env)
    # The bare app never looks at the cookie: it gets the same request as the fresh pkce row.
    result = [
        Variant(BARE, "benchmarks.server_apps:bare", base, lambda: fresh_cookie(cookie_env, data), False),
        Variant(COOKIE_FRESH, "benchmarks.server_apps:pkce", cookie_env, lambda: fresh_cookie(cookie_env, data), False),
        Variant(
            COOKIE_AGED,
            "benchmarks.server_apps:pkce",
            cookie_env,
            lambda: aged_cookie(cookie_env, data),
            True,
            detail=f"the cookie's idle clock is {aged_by_seconds(cookie_config)} s old "
            f"(idle timeout {cookie_config.session_idle_timeout} s), and the client never takes the re-issued one",
        ),
    ]
    if control:
        result.insert(
            1, Variant(CONTROL, "benchmarks.server_apps:bare", base, lambda: fresh_cookie(cookie_env, data), False)
        )
    skipped = redis_unavailable()
    if skipped is None:
        from tests.support.redis_server import RedisServer

        try:
            server = stack.enter_context(RedisServer())  # stopped when the run ends, also on errors
        except RuntimeError as exc:
            raise BenchmarkError(f"redis-server did not start: {exc}") from exc
        redis_env = {**base, "PKCE_SESSION_STORE": server.url}
        result.append(
            Variant(
                REDIS,
                "benchmarks.server_apps:pkce",
                redis_env,
                lambda: fresh_cookie(redis_env, data),
                False,
                redis_url=server.url,
            )
        )
    session_secret = secrets.token_urlsafe(32)
    result.append(
        Variant(
            AUTHLIB,
            "benchmarks.server_apps:authlib_recipe",
            {**base, "BENCH_SESSION_SECRET": session_secret},
            lambda: starlette_session_cookie(session_secret, authlib_session(data)),
            False,
        )
    )
    return result, skipped


# -- report --------------------------------------------------------------------------------------


def command_version(command: list[str], pattern: str) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else None


def versions(wrk: str | None) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("uvicorn", "httptools", "h11", "uvloop", "pkce_middleware", "starlette", "authlib", "redis"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    redis_server = command_version([server], r"v=(\S+)") if Path(server).exists() else None
    if redis_server:
        found["redis-server"] = redis_server
    if wrk is not None:
        found["wrk"] = command_version([wrk, "-v"], r"wrk (?:debian/)?(\S+)") or "?"
    return found


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


@dataclasses.dataclass(frozen=True)
class Row:
    """A variant over all rounds: the round of median req/s stands for it."""

    name: str
    rounds: list[Result]

    @property
    def median(self) -> Result:
        return sorted(self.rounds, key=lambda r: r.load.rate)[len(self.rounds) // 2]

    @property
    def responses(self) -> int:
        return sum(r.load.responses for r in self.rounds)

    @property
    def with_set_cookie(self) -> int:
        return sum(r.load.with_set_cookie for r in self.rounds)

    @property
    def set_cookie_per_1000(self) -> float:
        return 1000.0 * self.with_set_cookie / self.responses if self.responses else 0.0


def table(rows: list[Row]) -> str:
    bare = rows[0].median.load.rate
    several = len(rows[0].rounds) > 1
    spread = " req/s range |" if several else ""
    lines = [
        f"| variant | req/s | x bare |{spread} p50 ms | p99 ms | Set-Cookie per 1,000 | responses | server CPU "
        "| client CPU |",
        "|---|---:|---:|" + ("---:|" if several else "") + "---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row.median
        load = r.load
        ratio = load.rate / bare if bare > 0 else math.nan
        rates = [x.load.rate for x in row.rounds]
        lines.append(
            f"| {row.name} | {load.rate:,.0f} | {ratio:.2f} |"
            + (f" {min(rates):,.0f} to {max(rates):,.0f} |" if several else "")
            + f" {fmt(load.p50_ms, '.2f')} | {fmt(load.p99_ms, '.2f')} | {row.set_cookie_per_1000:,.0f} "
            f"| {row.responses:,} | {fmt(r.server_cpu, '.0%')} | {fmt(load.client_cpu, '.0%')} |"
        )
    return "\n".join(lines)


def report(
    rows: list[Row], options: Options, found: dict[str, str], skipped: str | None, took: float, load_before: float
) -> None:
    print(f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs")
    print(", ".join(f"{name} {value}" for name, value in found.items() if name != "python"))
    client = (
        f"wrk -t{options.threads} -c{options.connections}"
        if options.wrk
        else f"Python client (asyncio, {options.connections} keep-alive connections; wrk not on PATH)"
    )
    rounds = f"; median of {options.rounds} rounds" if options.rounds > 1 else ""
    print(
        f"uvicorn: 1 worker, --http {http_implementation()}, --no-access-log, on 127.0.0.1; load: {client}, "
        f"{options.seconds} s per variant after {options.warmup} s of warm-up{rounds}"
    )
    if skipped is not None:
        print(f"redis row skipped: {skipped}")
    print(
        "cookies: "
        + "; ".join(f"{row.name} {row.median.cookie_chars} chars" for row in rows if row.name not in (BARE, CONTROL))
        + f" ({BARE} gets the request of {COOKIE_FRESH})"
    )
    print()
    print(table(rows))
    print()
    for row in rows:
        if row.name == COOKIE_AGED:
            checked = sum(r.check_set_cookies for r in row.rounds)
            print(
                f"aged cookie: {row.with_set_cookie:,} of {row.responses:,} responses re-issued the session "
                f"({checked} of {CHECK_REQUESTS * len(row.rounds)} in the checks before the load)"
            )
    for row in rows:
        if row.median.note:
            print(f"{row.name}: {row.median.note}")
    by_name = {row.name: row for row in rows}
    if CONTROL in by_name and BARE in by_name:
        # Processes of the same code differ by their memory layout and hash seeds, not only by
        # when they ran: a difference between rows smaller than this one is no difference.
        apart = by_name[CONTROL].median.load.rate / by_name[BARE].median.load.rate - 1
        print(f"control: two bare processes {apart:+.1%} apart; read differences between rows against it")
    busy = [row.name for row in rows if (row.median.load.client_cpu or 0.0) > 0.9]
    if busy:
        print(
            "note: the load client used over 90% of a core for "
            + ", ".join(busy)
            + "; those rows (bare above all) may be limited by the client, not the server"
        )
    starved = [row.name for row in rows if row.median.server_cpu is not None and row.median.server_cpu < STARVED]
    if starved:
        print(
            f"note: the server had under {STARVED:.0%} of a core for "
            + ", ".join(starved)
            + "; something else took the CPU (other work on the machine), so those rows are low"
        )
    cpus = os.cpu_count() or 1
    print(f"took {took:.0f} s; load average before the run {load_before:.2f} on {cpus} CPUs", end="")
    busy_machine = load_before > cpus / 2
    print(" (the machine was busy with other work: compare rows of one run, not runs)" if busy_machine else "")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_server", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS} s per variant")
    parser.add_argument(
        "--duration",
        type=int,
        default=None,
        help=f"seconds of load per variant (default {DEFAULT_SECONDS}, at most {MAX_SECONDS})",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help=f"keep-alive connections (default {DEFAULT_CONNECTIONS})",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="the load client: wrk if on PATH (auto), or the Python client",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help=f"run every variant this many times, in turn, and report the median (default 1, at most {MAX_ROUNDS})",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="a second bare server as a row of its own: how far two identical processes differ in this run",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    seconds = args.duration if args.duration is not None else QUICK_SECONDS if args.quick else DEFAULT_SECONDS
    if not 1 <= seconds <= MAX_SECONDS:
        parser.error(f"--duration must be between 1 and {MAX_SECONDS}")
    if not 1 <= args.connections <= MAX_CONNECTIONS or not 1 <= args.threads <= args.connections:
        parser.error(f"--connections must be between 1 and {MAX_CONNECTIONS}, --threads between 1 and it")
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS}")
    wrk = None if args.client == "python" else shutil.which("wrk")
    if args.client == "wrk" and wrk is None:
        parser.error("wrk is not on PATH (Debian's package `wrk`; `make bench-server` installs it)")
    options = Options(
        seconds=seconds,
        warmup=QUICK_WARMUP_SECONDS if args.quick else WARMUP_SECONDS,
        connections=args.connections,
        threads=args.threads,
        wrk=wrk,
        rounds=args.rounds,
    )
    # A SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so every server started for the run is stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.monotonic()
    load_before = os.getloadavg()[0]  # before this run adds its own processes
    try:
        with contextlib.ExitStack() as stack:  # stops every server, also on errors, Ctrl-C and SIGTERM
            issuer = stack.enter_context(unreachable_issuer())
            data = realistic_session(int(time.time()))
            planned, skipped = variants(stack, issuer, data, control=args.control)
            servers = []
            for variant in planned:
                print(f"starting {variant.name} ...", file=sys.stderr, flush=True)
                servers.append(stack.enter_context(uvicorn_server(variant.target, variant.env)))
            rows = [Row(variant.name, []) for variant in planned]
            for round_ in range(options.rounds):
                for variant, (port, process), row in zip(planned, servers, rows, strict=True):
                    print(f"round {round_ + 1}: {variant.name} ...", file=sys.stderr, flush=True)
                    row.rounds.append(measure(variant, port, process, options))
    except BenchmarkError as exc:
        print(f"benchmark invalid: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every server started for the run was stopped", file=sys.stderr)
        return 130
    found = versions(wrk)
    took = time.monotonic() - started
    report(rows, options, found, skipped, took, load_before)
    if args.json is not None:
        document = {
            "options": dataclasses.asdict(options),
            "versions": found,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "http": http_implementation(),
            "redis_skipped": skipped,
            "seconds_taken": took,
            "load_average_before": load_before,
            "variants": [
                {
                    "name": row.name,
                    "rate": row.median.load.rate,
                    "ratio_to_bare": row.median.load.rate / rows[0].median.load.rate,
                    "set_cookie_per_1000": row.set_cookie_per_1000,
                    "rounds": [
                        {
                            **dataclasses.asdict(r),
                            "rate": r.load.rate,
                            "set_cookie_per_1000": r.load.set_cookie_per_1000,
                        }
                        for r in row.rounds
                    ],
                }
                for row in rows
            ],
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
