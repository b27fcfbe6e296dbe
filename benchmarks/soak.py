"""A bounded soak: many real logins, then mixed traffic on two app processes sharing one Redis store.

What runs, all on 127.0.0.1:

* the real OpenID Provider of the tests (panva's oidc-provider under node, `tests.support.oidc_provider`),
  issuing short-lived access tokens and rotating refresh tokens, so sessions refresh during the run
  (with `soak_provider_store.mjs` preloaded: its in-memory store would forget tokens past 1,000 entries);
* one real `redis-server` (`tests.support.redis_server`);
* two uvicorn processes of the same app (`benchmarks.server_apps:whoami`: `PKCEMiddleware` with
  `PKCE_SESSION_STORE=redis://...`, in front of an app that answers with the user's `sub`), with one
  environment: one secret key, one redirect URI, as two replicas behind a load balancer. With
  `--store cookie`, sessions live in cookies instead and Redis carries what the processes share:
  logouts (`PKCE_REVOCATION_STORE`) and refresh locks.

Then, in phases, each bounded in count and time:

1. **Logins**: `--users` distinct users (default 1,000) sign in through the provider's forms
   (`login_with_forms`, every redirect and form walked over HTTP), at most 16 at once, each starting
   at one of the two processes at random. A login is good when its last page names the user.
2. **Warm-up**: every user once on each process, then `--warmup` s of the mixed traffic of step 3,
   without logouts. Then each process's resident memory (`VmRSS`) is read.
3. **Run** (`--duration` s): `--concurrency` requests in flight at any time, each from a user chosen at
   random, to a process chosen at random, as a page load or as an API fetch. Every answer must be
   `200` naming exactly the user whose cookies were sent (another name counts as a cross-user
   answer). Meanwhile a tenth of the users, chosen at random, log out (a same-origin
   `POST /auth/logout` to either process), spread over the run; from then on the cookies they had
   must be refused (`401`, or a redirect to log in) at once by the process that did the logout, and
   by the other one within `OTHER_PROCESS_BOUND` (its session cache hears of the logout on Redis's
   invalidation channel; the middleware promises about a second): checked at once on each, again on
   the other once the bound has passed, and replayed as part of the traffic. Refreshes happen along
   the way (the access tokens live half the run, 4 to 30 s, and the middleware refreshes a fifth of
   that before: `PKCE_REFRESH_MARGIN`), counted from the provider's log.
4. **Final sweep**: every user once on each process (live ones answered with their name, logged-out
   ones refused); each process's memory read again.

The exit status is 1 when any check failed: a login failed, a 5xx or otherwise unexpected answer or
a transport error (errors), a cross-user answer, a logged-out cookie accepted, a refresh refused by
the provider (a refresh token used twice), a traceback in a server's log, no refresh at all, or a
process's memory grew by 20 MB or more from the end of the warm-up to the end; also when requests
are still unanswered long after their phase's deadline. Status 2: the soak could not go on (a server
did not start, or an app process exited).

Run from the repository root: `python -m benchmarks.soak` (1,000 users, 60 s; `make soak`), or
`python -m benchmarks.soak --smoke` (20 users, 5 s, as `tests/test_soak.py` runs it); `--logs DIR`
keeps the servers' output. It uses only `PKCE_*` variables and the public API of the middleware,
and the test suite's launchers (`tests.support`), as `bench_server` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httpx

from pkce_middleware.testing import BROWSER_HEADERS
from tests.support.oidc_provider import LocalProvider, login_with_forms
from tests.support.processes import REPO_ROOT, PortTaken, Process, ProcessError, ReadyCheck, free_port
from tests.support.real_apps import app_client, app_env
from tests.support.redis_server import RedisServer
from tests.support.servers import READY_PATH, command

from .bench_server import http_implementation, server_cpu_seconds

__all__ = ["Report", "main"]

APP = "benchmarks.server_apps:whoami"
CLIENT_ID = "soak"
DEFAULT_USERS = 1_000
MAX_USERS = 20_000
DEFAULT_DURATION = 60
MAX_DURATION = 3_600
DEFAULT_WARMUP = 10
DEFAULT_CONCURRENCY = 32
#: Logins walked at once (each is a dozen requests to the provider and the app).
LOGIN_CONCURRENCY = 16
#: The share of users who log out during the run.
LOGOUT_SHARE = 0.1
#: A process whose resident memory grows by this much from the end of the warm-up fails the soak.
MAX_RSS_GROWTH_KB = 20 * 1024
#: How long after a logout was answered the other process may still serve the session from its
#: Redis session cache: the cache's `stale_after` (1 s) and room for a busy machine.
OTHER_PROCESS_BOUND = 1.5
#: `--store`: what each choice runs.
STORES = {
    "redis": "the Redis session store",
    "cookie": "the cookie store, logouts shared through Redis (PKCE_REVOCATION_STORE)",
}
#: One request (including a login's every hop) gives up after this long: a stuck server is an error.
REQUEST_TIMEOUT = 30.0
#: The whole login phase may take this long per user (at LOGIN_CONCURRENCY at once), plus a minute.
LOGIN_SECONDS_PER_USER = 1.0
#: The traffic of one phase never sends more than this many requests, however fast the servers are.
MAX_REQUESTS_PER_SECOND = 20_000
#: After a phase's deadline, the requests in flight must be answered within this time.
DRAIN_SECONDS = REQUEST_TIMEOUT + 10.0
#: The share of the traffic sent as an API fetch (JSON), the rest as page loads.
FETCH_SHARE = 0.3
#: Answers that refuse a session: a fetch gets 401, a page load a redirect to the provider.
REFUSED = frozenset({401, 302, 303, 307})
#: How many examples of each kind of failure the report keeps.
EXAMPLES = 5
RSS_SAMPLE_SECONDS = 5.0
#: Preloaded into oidc-provider: an in-memory store with room for every user's grant and tokens
#: (its default keeps 1,000 entries, and would forget refresh tokens past a few hundred users).
PROVIDER_STORE = Path(__file__).with_name("soak_provider_store.mjs")
SERVER_KEEP_ALIVE = 120
#: A response head larger than this is no answer from our servers.
MAX_HEAD_BYTES = 64 * 1024
#: Lines of the middleware's log (`benchmarks.server_apps:whoami` sends it to stderr) worth showing.
NOTABLE_LOG = ("WARNING", "ERROR", "CRITICAL", "session ended", "not written")

FETCH_HEADERS = {
    "Accept": "application/json",
    "Sec-Fetch-Dest": "empty",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Site": "same-origin",
}


# -- what the run saw ----------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    """Counts of one soak; `failures()` says which of them fail it."""

    users: int
    duration: float
    warmup: float
    concurrency: int
    token_ttl: int
    refresh_margin: int
    http: str
    #: `redis`: sessions in the Redis store; `cookie`: in cookies, logouts shared through Redis.
    store: str = "redis"
    logins_ok: int = 0
    logins_failed: int = 0
    login_seconds: float = 0.0
    #: Requests of the warm-up, the run and the final sweep, and the logout checks (logouts not included).
    requests: int = 0
    #: 200 naming the right user, or a refusal where one is due.
    answers_ok: int = 0
    #: 5xx, a status not expected, a transport error or a timeout.
    errors: int = 0
    #: A 200 naming another user than the one whose cookies were sent.
    cross_user: int = 0
    logouts: int = 0
    #: Requests with a logged-out user's cookies sent after the logout was answered, and refused.
    logged_out_refused: int = 0
    #: ... and accepted (a 200 naming the user): by the process that did the logout, or by the other
    #: one more than `OTHER_PROCESS_BOUND` after it.
    logged_out_accepted: int = 0
    #: ... accepted by the other process within `OTHER_PROCESS_BOUND` (allowed; shown, not failed).
    logged_out_in_flight: int = 0
    #: Refresh grants the provider answered with new tokens, and those it refused (`invalid_grant`
    #: and any other error: a refresh token redeemed twice, under rotation).
    refreshes: int = 0
    refreshes_refused: int = 0
    #: Responses that set a session cookie again (the client takes it, as a browser does).
    cookies_set: int = 0
    #: ... and that deleted a live user's cookie.
    cookies_deleted: int = 0
    #: Lines of the app servers' logs holding "Traceback".
    server_tracebacks: int = 0
    #: The middleware's warnings, errors and ended sessions (logged at INFO), by message: how many.
    server_log: dict[str, int] = dataclasses.field(default_factory=dict)
    run_seconds: float = 0.0
    #: Requests of the run alone (step 3), logout checks included.
    run_requests: int = 0
    #: CPU time during the run, as a share of one core: each app process, and the load client.
    server_cpu: list[float] = dataclasses.field(default_factory=list)
    client_cpu: float = 0.0
    #: Latency of the requests (sent to answered), in ms: median, 99th percentile, largest.
    latency_ms: list[float] = dataclasses.field(default_factory=list)
    #: Resident memory of each app process in kB: after the warm-up, the largest sample of the run, at the end.
    rss_after_warmup_kb: list[int] = dataclasses.field(default_factory=list)
    rss_peak_kb: list[int] = dataclasses.field(default_factory=list)
    rss_end_kb: list[int] = dataclasses.field(default_factory=list)
    #: Every sample (every 5 s from the end of the warm-up): seconds, and each process's value.
    rss_samples_kb: list[tuple[float, list[int]]] = dataclasses.field(default_factory=list)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def note(self, kind: str, text: str) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < EXAMPLES:
            found.append(text)

    @property
    def rss_growth_kb(self) -> list[int]:
        return [end - start for start, end in zip(self.rss_after_warmup_kb, self.rss_end_kb, strict=True)]

    def failures(self) -> list[str]:
        found = []
        if self.logins_failed:
            found.append(f"{self.logins_failed} logins failed")
        if self.errors:
            found.append(f"{self.errors} errors")
        if self.cross_user:
            found.append(f"{self.cross_user} cross-user answers")
        if self.logged_out_accepted:
            found.append(f"{self.logged_out_accepted} requests with logged-out cookies accepted")
        if self.refreshes_refused:
            found.append(f"{self.refreshes_refused} refreshes refused by the provider")
        if not self.refreshes:
            found.append("no refresh happened (the run is too short for the token lifetime)")
        if self.server_tracebacks:
            found.append(f"{self.server_tracebacks} tracebacks in the app servers' logs")
        for index, growth in enumerate(self.rss_growth_kb):
            if growth >= MAX_RSS_GROWTH_KB:
                found.append(f"app process {index + 1} grew by {growth / 1024:.1f} MB")
        return found


# -- users and their cookies ---------------------------------------------------------------------


@dataclasses.dataclass
class User:
    name: str
    #: The cookies a browser would send to the app (path `/`), as the login left them.
    cookies: dict[str, str]
    #: `time.monotonic()` when its logout was sent, and when the logout's answer was in.
    logout_sent: float | None = None
    logged_out: float | None = None
    #: The process that got the logout.
    logout_app: str = ""

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def take_cookies(self, set_cookies: Sequence[str]) -> tuple[int, int]:
        """Keep what `Set-Cookie` headers say, as a browser does; how many cookies were set, and deleted."""
        taken = deleted = 0
        for header in set_cookies:
            cookie: SimpleCookie = SimpleCookie()
            try:
                cookie.load(header)
            except CookieError:
                continue
            for name, morsel in cookie.items():
                if morsel["path"] not in ("", "/"):
                    continue
                if morsel["max-age"] == "0" or not morsel.value:
                    deleted += self.cookies.pop(name, None) is not None
                else:
                    self.cookies[name] = morsel.value
                    taken += 1
        return taken, deleted


def user_name(index: int) -> str:
    return f"soak-user-{index:05d}"


def login(name: str, start: str) -> User:
    """One user's login through the provider's forms, starting at the app `start`; the app must then name them."""
    with httpx.Client(timeout=REQUEST_TIMEOUT) as browser:
        page, visited = login_with_forms(browser, f"{start}/", name)
        if page.status_code != 200 or page.text != name:
            raise AssertionError(f"{name}: the login ended with {page.status_code} {page.text[:80]!r} ({visited[-1]})")
        # Browsers ignore ports: what the provider (also on 127.0.0.1) set for path / goes to the app too.
        cookies = {c.name: c.value for c in browser.cookies.jar if c.path == "/" and c.value}
    return User(name, cookies)


def login_all(names: Sequence[str], apps: Sequence[str], rng: random.Random, report: Report) -> list[User]:
    """Every login (each starting at one of `apps`), LOGIN_CONCURRENCY at once, within a deadline;
    failures are counted and shown."""
    started = time.monotonic()
    deadline = started + 60.0 + LOGIN_SECONDS_PER_USER * len(names)
    users: list[User] = []
    shown = started
    with ThreadPoolExecutor(max_workers=LOGIN_CONCURRENCY, thread_name_prefix="login") as pool:
        pending: set[Future[User]] = set()
        queue = [(name, rng.choice(apps)) for name in reversed(names)]
        while queue or pending:
            while queue and len(pending) < LOGIN_CONCURRENCY * 2:
                pending.add(pool.submit(login, *queue.pop()))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done, pending = wait(pending, timeout=min(remaining, 5.0), return_when=FIRST_COMPLETED)
            for future in done:
                exc = future.exception()
                if exc is None:
                    users.append(future.result())
                else:
                    report.logins_failed += 1
                    report.note("login", f"{type(exc).__name__}: {str(exc)[:300]}")
            if time.monotonic() >= shown + 10.0:
                shown = time.monotonic()
                progress(f"  {len(users)} logins done, {report.logins_failed} failed")
        if queue or pending:
            left = len(queue) + len(pending)
            report.logins_failed += left
            report.note("login", f"{left} logins not done within {deadline - started:.0f} s")
            for future in pending:
                future.cancel()  # the running ones end within their requests' timeouts
    report.logins_ok = len(users)
    report.login_seconds = time.monotonic() - started
    return users


# -- the traffic ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Answer:
    """One HTTP response: status, headers (names lower-case), body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def get_list(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class TransportError(Exception):
    """No well-formed answer: a connection refused or closed, a timeout, a malformed response."""


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time.

    A few lines of asyncio streams rather than httpx: the load client shares two cores with both
    servers, node and Redis, and httpx's CPU per request would make it the limit of the soak.
    Every request carries its user's cookies and nothing else: no cookie jar at all.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=MAX_HEAD_BYTES)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes) -> tuple[Answer, bool]:
        """Send `request`, read the whole answer; and whether the connection can be used again."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        found = dict(headers)
        if found.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.readexactly(int(found.get("content-length", "0")))
        return Answer(status, headers, body), found.get("connection", "").lower() != "close"


class Client:
    """Keep-alive connections to the app processes (by port), reused one request at a time."""

    def __init__(self) -> None:
        self.idle: dict[int, list[Connection]] = {}

    async def request(self, method: str, url: str, headers: dict[str, str]) -> Answer:
        parts = urlsplit(url)
        port = parts.port
        assert port is not None
        lines = [f"{method} {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if method == "POST":
            lines.append("Content-Length: 0")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        idle = self.idle.setdefault(port, [])
        connection = idle.pop() if idle else None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                if connection is None:
                    connection = await Connection.open(port)
                answer, reusable = await connection.exchange(request)
        except (OSError, TimeoutError, EOFError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            if connection is not None:
                connection.close()
            raise TransportError(f"{method} {url}: {exc!r}") from exc
        if reusable:
            idle.append(connection)
        else:
            connection.close()
        return answer

    def close(self) -> None:
        for connections in self.idle.values():
            for connection in connections:
                connection.close()
        self.idle.clear()


@dataclasses.dataclass
class Traffic:
    """The mixed traffic: its client, users and report, and the deadline and budget of the phase that runs."""

    client: Client
    apps: Sequence[str]
    #: The origin every process is reached at as far as browsers know (the one redirect URI's).
    origin: str
    users: list[User]
    report: Report
    rng: random.Random
    deadline: float = 0.0
    max_requests: int = 0
    sent: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)
    #: The checks of logged-out cookies on the other process, once `OTHER_PROCESS_BOUND` has passed.
    rechecks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)

    async def request(self, user: User, app: str, *, fetch: bool) -> None:
        """One request with `user`'s cookies, its answer judged and counted."""
        report = self.report
        path = "/api/whoami" if fetch else "/"
        headers = {**(FETCH_HEADERS if fetch else BROWSER_HEADERS), "Cookie": user.cookie_header()}
        sent_names = sorted(user.cookies)
        sent = time.monotonic()
        report.requests += 1
        try:
            response = await self.client.request("GET", f"{app}{path}", headers)
        except TransportError as exc:
            report.errors += 1
            report.note("error", f"{user.name} GET {app}{path}: {exc!r}")
            return
        finally:
            self.latencies.append(time.monotonic() - sent)
        body = response.text
        status = response.status
        after_logout = user.logged_out is not None and sent > user.logged_out
        # A request answered after the user's logout was sent may be refused, even one sent before it:
        # the server may have handled the logout first.
        during_logout = user.logout_sent is not None
        if status == 200 and body != user.name:
            report.cross_user += 1
            report.note("cross-user", f"{user.name}'s cookies on {app}{path}: 200 naming {body[:80]!r}")
        elif (
            after_logout
            and status == 200
            and app != user.logout_app
            and sent - cast(float, user.logged_out) < OTHER_PROCESS_BOUND
        ):
            report.logged_out_in_flight += 1
            report.answers_ok += 1
        elif after_logout and status == 200:
            report.logged_out_accepted += 1
            assert user.logged_out is not None
            report.note(
                "accepted after logout",
                f"{user.name} on {app}{path}: 200, sent {sent - user.logged_out:.3f} s after the logout on "
                f"{user.logout_app} was answered",
            )
        elif after_logout and status in REFUSED:
            report.logged_out_refused += 1
            report.answers_ok += 1
        elif status == 200 or (during_logout and status in REFUSED):
            report.answers_ok += 1
        else:
            report.errors += 1
            kind = "logged out" if after_logout else "logging out" if during_logout else "live"
            report.note(
                "error",
                f"{user.name} ({kind}, cookies {', '.join(sent_names)}) GET {app}{path}: {status} {body[:120]!r}",
            )
        if user.logout_sent is None:
            taken, deleted = user.take_cookies(response.get_list("set-cookie"))
            report.cookies_set += taken
            if deleted:
                # A live user's session cookie deleted: the next request of theirs will fail.
                report.cookies_deleted += deleted
                report.note(
                    "cookie deleted", f"{user.name} on {app}{path}: {status}, {response.get_list('set-cookie')}"
                )

    async def loop(self) -> None:
        """Requests one after the other, until the deadline or the phase's request budget."""
        rng = self.rng
        while time.monotonic() < self.deadline and self.sent < self.max_requests:
            self.sent += 1
            await self.request(rng.choice(self.users), rng.choice(self.apps), fetch=rng.random() < FETCH_SHARE)

    async def logout(self, user: User, app: str) -> None:
        """A same-origin logout on `app`; then the old cookies must be refused by every process."""
        report = self.report
        headers = {
            **BROWSER_HEADERS,
            "Origin": self.origin,
            "Sec-Fetch-Site": "same-origin",
            "Cookie": user.cookie_header(),
        }
        user.logout_sent = time.monotonic()
        user.logout_app = app
        report.logouts += 1
        try:
            response = await self.client.request("POST", f"{app}/auth/logout", headers)
        except TransportError as exc:
            report.errors += 1
            report.note("error", f"{user.name} logout on {app}: {exc!r}")
            return
        user.logged_out = time.monotonic()
        if response.status != 303:
            report.errors += 1
            report.note("error", f"{user.name} logout on {app}: {response.status} {response.text[:120]!r}")
        for other in self.apps:
            await self.request(user, other, fetch=True)
        # Apart from the logouts' pace: once the other process's cache must have heard of it.
        self.rechecks.append(asyncio.get_running_loop().create_task(self.recheck(user, app)))

    async def recheck(self, user: User, app: str) -> None:
        """`user`'s logged-out cookies, refused by the processes other than `app` too."""
        assert user.logged_out is not None
        await asyncio.sleep(max(0.0, user.logged_out + OTHER_PROCESS_BOUND - time.monotonic()))
        for other in self.apps:
            if other != app:
                await self.request(user, other, fetch=True)

    async def logouts(self, leaving: list[User], seconds: float) -> None:
        """Each of `leaving` logs out once, at an even pace over the first four fifths of the phase."""
        started = time.monotonic()
        for index, user in enumerate(leaving):
            due = started + 0.8 * seconds * (index + 1) / len(leaving)
            # Past the deadline (slow answers), the remaining ones follow at once: all of them log out.
            await asyncio.sleep(max(0.0, min(due, self.deadline) - time.monotonic()))
            await self.logout(user, self.rng.choice(self.apps))


async def run_phase(
    traffic: Traffic, seconds: float, concurrency: int, leaving: list[User], rss: RssWatch | None
) -> None:
    """`concurrency` request loops (and the logouts) for `seconds`; bounded by a deadline and a budget."""
    traffic.deadline = time.monotonic() + seconds
    traffic.max_requests = int(MAX_REQUESTS_PER_SECOND * seconds) + 1
    traffic.sent = 0
    tasks = [traffic.loop() for _ in range(concurrency)]
    if leaving:
        tasks.append(traffic.logouts(leaving, seconds))
    if rss is not None:
        tasks.append(rss.watch(traffic.deadline))
    async with asyncio.timeout(seconds + DRAIN_SECONDS):
        await asyncio.gather(*tasks)
        await asyncio.gather(*traffic.rechecks)
    traffic.rechecks.clear()


async def sweep(traffic: Traffic, concurrency: int) -> None:
    """Every user once on every process, `concurrency` at once."""
    work = [(user, app) for user in traffic.users for app in traffic.apps]
    limit = asyncio.Semaphore(concurrency)

    async def one(user: User, app: str) -> None:
        async with limit:
            await traffic.request(user, app, fetch=False)

    async with asyncio.timeout(DRAIN_SECONDS + len(work) * 0.05):
        await asyncio.gather(*(one(user, app) for user, app in work))


# -- the app processes ---------------------------------------------------------------------------


def rss_kb(pid: int | None) -> int:
    """`VmRSS` of a running process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclasses.dataclass
class RssWatch:
    """Samples the app processes' memory while a phase runs, keeping the largest value of each."""

    processes: Sequence[Process]
    peaks: list[int]
    #: Every sample: seconds since the first, and each process's value.
    samples: list[tuple[float, list[int]]] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.monotonic)

    def sample(self) -> list[int]:
        for process in self.processes:
            if not process.running:
                raise RuntimeError(f"{process.name} exited during the soak; its output:\n{process.output(40)}")
        values = [rss_kb(process.pid) for process in self.processes]
        self.peaks = [max(peak, value) for peak, value in zip(self.peaks, values, strict=True)]
        self.samples.append((round(time.monotonic() - self.started, 1), values))
        return values

    async def watch(self, deadline: float) -> None:
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(RSS_SAMPLE_SECONDS, left))
            self.sample()


def ready(url: str) -> ReadyCheck:
    def check() -> str | None:
        try:
            status = httpx.get(url + READY_PATH, timeout=2.0).status_code
        except httpx.TransportError as exc:
            return f"GET {READY_PATH}: {exc!r}"
        return None if status == 200 else f"GET {READY_PATH}: HTTP {status}"

    return check


@contextlib.contextmanager
def app_processes(ports: Sequence[int], env: dict[str, str]) -> Iterator[list[Process]]:
    """The uvicorn processes of the app, one per port, started together; ready once each answers."""
    # Keep-alive longer than any pause of the load client's, as a server behind a load balancer is
    # set up: else a request can go out on a connection the server is just closing.
    extra = ["--factory", "--workers", "1", "--http", http_implementation(), "--no-access-log"]
    extra += ["--timeout-keep-alive", str(SERVER_KEEP_ALIVE)]
    processes = [
        Process(
            command("uvicorn", APP, port, extra),
            name=f"uvicorn {APP} on port {port}",
            env=env,
            cwd=REPO_ROOT,
            ready_check=ready(f"http://127.0.0.1:{port}"),
        )
        for port in ports
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.stop()


@contextlib.contextmanager
def node_preload(module: Path) -> Iterator[None]:
    """`--import <module>` in NODE_OPTIONS while a node process is started within (the launchers pass
    this process's environment on to theirs); NODE_OPTIONS as it was afterwards."""
    before = os.environ.get("NODE_OPTIONS")
    os.environ["NODE_OPTIONS"] = f"{before or ''} --import={module.as_uri()}".strip()
    try:
        yield
    finally:
        if before is None:
            del os.environ["NODE_OPTIONS"]
        else:
            os.environ["NODE_OPTIONS"] = before


def tracebacks(processes: Sequence[Process]) -> int:
    return sum(line.count("Traceback") for process in processes for line in process.lines)


def notable_log_lines(processes: Sequence[Process]) -> Counter[str]:
    """The middleware's warnings, errors and ended sessions, by message (the part before `sub=`)."""
    found: Counter[str] = Counter()
    for process in processes:
        for line in process.lines:
            if line.startswith("pkce_middleware ") and any(word in line for word in NOTABLE_LOG):
                found[line.partition(" sub=")[0].partition(" [")[0]] += 1
    return found


# -- the soak ------------------------------------------------------------------------------------


def token_lifetimes(duration: float) -> tuple[int, int]:
    """Access token lifetime and refresh margin: every session is refreshed at least once within
    the run (more with longer runs), but not on every request."""
    ttl = int(min(30, max(4, duration // 2)))
    return ttl, max(1, ttl // 5)


def soak(options: argparse.Namespace) -> Report:
    ttl, margin = token_lifetimes(options.duration)
    report = Report(
        users=options.users,
        duration=options.duration,
        warmup=options.warmup,
        concurrency=options.concurrency,
        token_ttl=ttl,
        refresh_margin=margin,
        http=http_implementation(),
        store=options.store,
    )
    rng = random.Random(options.seed)
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    apps = [f"http://127.0.0.1:{port}" for port in ports]
    client = app_client(CLIENT_ID, ports[0], secret=secrets.token_urlsafe(24), auth_method=None)
    client["grant_types"] = ["authorization_code", "refresh_token"]
    with contextlib.ExitStack() as stack:
        progress("starting redis-server and oidc-provider")
        redis = stack.enter_context(RedisServer())
        with node_preload(PROVIDER_STORE):
            provider = stack.enter_context(
                LocalProvider([client], ttl={"AccessToken": ttl}, extra={"rotateRefreshToken": True})
            )
        # One environment for both processes, as for replicas behind one origin: the first one's
        # callback is the redirect URI (browsers send their cookies to either port).
        stores = {"PKCE_SESSION_STORE": redis.url}
        if options.store == "cookie":  # what the other process must learn comes by the revocation log
            stores = {"PKCE_SESSION_STORE": "cookie", "PKCE_REVOCATION_STORE": redis.url}
        env = app_env(provider, client, ports[0], PKCE_REFRESH_MARGIN=str(margin), **stores)
        progress(f"starting two uvicorn processes of {APP} (--http {report.http})")
        processes = stack.enter_context(app_processes(ports, env))

        progress(f"logging in {options.users} users, {LOGIN_CONCURRENCY} at once")
        users = login_all([user_name(index) for index in range(options.users)], apps, rng, report)
        if not users:
            return report
        leaving = rng.sample(users, k=round(LOGOUT_SHARE * len(users)))
        refreshes_before = provider.grant_count("refresh_token", client_id=CLIENT_ID)

        async def traffic() -> None:
            http = Client()
            try:
                mixed = Traffic(http, apps, apps[0], users, report, rng)
                # Every session once in each process first, so that what the processes keep per
                # session (caches) is in place before the memory is measured.
                progress(f"warm-up: every user on both processes, then {options.warmup:g} s")
                await sweep(mixed, options.concurrency)
                await run_phase(mixed, options.warmup, options.concurrency, [], None)
                watch = RssWatch(processes, [0] * len(processes))
                report.rss_after_warmup_kb = watch.sample()
                progress(f"run: {options.duration:g} s, {len(leaving)} of the users log out")
                started = time.monotonic()
                before = report.requests
                cpu_before = [server_cpu_seconds(process.pid) or 0.0 for process in processes]
                client_before = time.process_time()
                await run_phase(mixed, options.duration, options.concurrency, leaving, watch)
                report.run_seconds = time.monotonic() - started
                report.run_requests = report.requests - before
                report.client_cpu = (time.process_time() - client_before) / report.run_seconds
                report.server_cpu = [
                    ((server_cpu_seconds(process.pid) or 0.0) - cpu) / report.run_seconds
                    for process, cpu in zip(processes, cpu_before, strict=True)
                ]
                progress("final sweep: every user on both processes")
                await sweep(mixed, options.concurrency)
                report.rss_end_kb = watch.sample()
                report.latency_ms = percentiles_ms(mixed.latencies)
                report.rss_peak_kb = watch.peaks
                report.rss_samples_kb = watch.samples
            finally:
                http.close()

        asyncio.run(traffic())
        report.refreshes = provider.grant_count("refresh_token", client_id=CLIENT_ID) - refreshes_before
        all_refreshes = sum(1 for line in provider.log_lines if line.split()[:3] == ["OPLOG", "grant", "refresh_token"])
        report.refreshes_refused = all_refreshes - provider.grant_count("refresh_token")
        report.server_tracebacks = tracebacks(processes)
        report.server_log = dict(notable_log_lines(processes).most_common(20))
        if options.logs is not None:
            save_logs(Path(options.logs), provider, processes)
        for process in processes:
            if any("Traceback" in line for line in process.lines):
                report.note("server log", process.output(40))
    return report


def percentiles_ms(seconds: list[float]) -> list[float]:
    """Median, 99th percentile (nearest rank) and largest, in milliseconds."""
    if not seconds:
        return []
    ordered = sorted(seconds)
    return [
        1000 * ordered[len(ordered) // 2],
        1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        1000 * ordered[-1],
    ]


def save_logs(folder: Path, provider: LocalProvider, processes: Sequence[Process]) -> None:
    """The provider's and each app process's output, one file each, to read after a failed soak."""
    folder.mkdir(parents=True, exist_ok=True)
    provider.sync_log()
    (folder / "oidc-provider.log").write_text("\n".join(provider.log_lines) + "\n", encoding="utf-8")
    for index, process in enumerate(processes):
        (folder / f"app-{index + 1}.log").write_text("\n".join(process.lines) + "\n", encoding="utf-8")
    progress(f"logs written to {folder}")


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def print_report(report: Report) -> None:
    mb = 1024.0
    print(
        f"soak: {report.users:,} users, {report.warmup:g} s warm-up + {report.duration:g} s run, "
        f"{report.concurrency} requests in flight, two uvicorn processes (--http {report.http}) on one "
        f"Redis ({STORES[report.store]}); access tokens live {report.token_ttl} s, refreshed "
        f"{report.refresh_margin} s before"
    )
    print(f"logins ok                  {report.logins_ok:,} ({report.login_seconds:.0f} s)")
    print(f"logins failed              {report.logins_failed:,}")
    rate = report.run_requests / report.run_seconds if report.run_seconds else 0.0
    print(f"requests                   {report.requests:,} ({report.run_requests:,} in the run: {rate:,.0f}/s)")
    if report.server_cpu:
        servers = ", ".join(f"{share:.0%}" for share in report.server_cpu)
        print(f"CPU during the run         app processes {servers} of a core; load client {report.client_cpu:.0%}")
    if report.latency_ms:
        p50, p99, most = report.latency_ms
        print(f"latency                    {p50:.0f} ms median, {p99:.0f} ms p99, {most:.0f} ms largest")
    print(f"answers as expected        {report.answers_ok:,}")
    print(f"errors                     {report.errors:,}")
    print(f"cross-user answers         {report.cross_user:,}")
    print(f"logouts                    {report.logouts:,}")
    print(f"logged-out cookie refused  {report.logged_out_refused:,}")
    print(f"logged-out cookie accepted {report.logged_out_accepted:,}")
    print(f"  ... by the other process within {OTHER_PROCESS_BOUND} s (allowed) {report.logged_out_in_flight:,}")
    print(f"refreshes                  {report.refreshes:,}")
    print(f"refreshes refused          {report.refreshes_refused:,}")
    print(f"session cookies re-set     {report.cookies_set:,}")
    print(f"session cookies deleted    {report.cookies_deleted:,}")
    print(f"server tracebacks          {report.server_tracebacks:,}")
    for message, count in report.server_log.items():
        print(f"server log: {count:,} x {message}")
    for index, (start, peak, end) in enumerate(
        zip(report.rss_after_warmup_kb, report.rss_peak_kb, report.rss_end_kb, strict=True)
    ):
        print(
            f"app process {index + 1} RSS         {start / mb:.1f} MB after warm-up, {peak / mb:.1f} MB peak, "
            f"{end / mb:.1f} MB at the end: {(end - start) / mb:+.1f} MB"
        )
    if report.rss_samples_kb:
        series = ", ".join(
            f"{seconds:.0f}s " + "/".join(f"{value / mb:.1f}" for value in values)
            for seconds, values in report.rss_samples_kb
        )
        print(f"RSS samples (MB)           {series}")
    for kind, texts in report.examples.items():
        print(f"{kind}:")
        for text in texts:
            print(f"  {text}")
    failures = report.failures()
    print("FAILED: " + "; ".join(failures) if failures else "OK")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--users", type=int, default=None, help=f"distinct users (default {DEFAULT_USERS:,})")
    parser.add_argument("--duration", type=float, default=None, help=f"seconds of the run (default {DEFAULT_DURATION})")
    parser.add_argument("--warmup", type=float, default=None, help=f"seconds of warm-up (default {DEFAULT_WARMUP})")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument("--store", choices=sorted(STORES), default="redis", help="where sessions live (default redis)")
    parser.add_argument("--smoke", action="store_true", help="20 users, 1 s warm-up, 5 s run (the test's)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random choices (default: a new one)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    parser.add_argument("--logs", metavar="DIR", help="write the provider's and the app processes' output to DIR")
    options = parser.parse_args(argv)
    smoke = options.smoke
    options.users = options.users if options.users is not None else 20 if smoke else DEFAULT_USERS
    options.duration = options.duration if options.duration is not None else 5.0 if smoke else DEFAULT_DURATION
    options.warmup = options.warmup if options.warmup is not None else 1.0 if smoke else DEFAULT_WARMUP
    if not 1 <= options.users <= MAX_USERS:
        parser.error(f"--users must be between 1 and {MAX_USERS:,}")
    if not 1 <= options.duration <= MAX_DURATION or not 0 <= options.warmup <= MAX_DURATION:
        parser.error(f"--duration must be between 1 and {MAX_DURATION} s, --warmup between 0 and it")
    if not 1 <= options.concurrency <= 1024:
        parser.error("--concurrency must be between 1 and 1024")
    if options.seed is None:
        options.seed = secrets.randbits(32)
    progress(f"seed {options.seed}")
    # A SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so every process started for the soak is stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        report = soak(options)
    except (ProcessError, PortTaken, RuntimeError) as exc:
        print(f"soak stopped: {exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print("soak failed: requests still unanswered long after their phase's deadline", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every process started for the soak was stopped", file=sys.stderr)
        return 130
    print_report(report)
    if options.json is not None:
        document = {**dataclasses.asdict(report), "failures": report.failures(), "seed": options.seed}
        Path(options.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
