"""The machinery of the fuzzing suite (`tests/test_fuzz.py`): raw ASGI calls, oracles, and counts.

Every request goes straight into `PKCEMiddleware` as an ASGI call built by hand (`Harness.call`),
so any header bytes, any `raw_path` and any body split can be sent, and whatever goes wrong is
seen as it is: an exception escaping the middleware, a second `http.response.start`, a missing
body, a 500. The app behind the middleware records whether it was reached and as whom.

`check_reply` holds every answer to the properties all fuzz tests share:

* no exception escapes the middleware, and it sends exactly one complete response;
* never a 500, and no 5xx but the documented 502/503/504 (provider or store trouble);
* no header carries CR, LF or NUL, and no HTML page carries a `<script>` (input is escaped);
* a `Location` is a same-origin path (as a browser would resolve it) or an endpoint of the provider;
* every log line of the `pkce_middleware` logger, formatted, is free of control characters;
* no session cookie is set unless the caller says a valid login allows it, and every cookie the
  middleware sets is `Secure`, `HttpOnly`, `Path=/`, host-only, and small enough for a browser to
  keep (name and value at most 4096 bytes).

`FuzzStats` counts examples, statuses, sessions and redirects per property, for the summary printed
at the end of the run (and written as JSON to `$FUZZ_REPORT` when that is set).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import re
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import httpx
from starlette.types import Message, Receive, Scope, Send

from pkce_middleware import PKCEConfig, PKCEMiddleware
from pkce_middleware._session import Session
from tests.support.hostile_provider import HostileProvider, b64url
from tests.support.site import (
    APP_ORIGIN,
    CALLBACK_PATH,
    CLIENT_ID,
    FLOW_COOKIE_PREFIX,
    ISSUER,
    SESSION_COOKIE,
    make_config,
    session_codec,
)

__all__ = [
    "ALLOWED_5XX",
    "APP_HOST",
    "CHUNK_NAMES",
    "END_SESSION_ENDPOINT",
    "FuzzSite",
    "FuzzStats",
    "Harness",
    "Reply",
    "Scripted",
    "browser_resolves_same_origin",
    "check_reply",
    "control_characters",
    "reference_cookies",
]

APP_HOST = urlsplit(APP_ORIGIN).netloc
END_SESSION_ENDPOINT = f"{ISSUER}/logout"
AUTHORIZATION_ENDPOINT = f"{ISSUER}/authorize"
#: The only 5xx statuses the middleware documents: the provider's or the store's trouble.
ALLOWED_5XX = frozenset({502, 503, 504})
#: RFC 6265 section 6.1 and RFC 6265bis: browsers ignore a cookie whose name and value pass this.
MAX_COOKIE_BYTES = 4096
CHUNK_NAMES = tuple(f"{SESSION_COOKIE}.{index}" for index in range(4))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_LOG_FORMAT = logging.Formatter("%(levelname)s %(name)s: %(message)s")


def control_characters(text: str) -> list[str]:
    """The control characters (C0 and DEL) in `text`, as escapes, for a failure message."""
    return sorted({repr(ch) for ch in _CONTROL.findall(text)})


# -- the app behind the middleware -----------------------------------------------------------


class RecordingApp:
    """Answers 200 and remembers who reached it (the scope's `user`), per call."""

    def __init__(self) -> None:
        self.reached = False
        self.user: Any = None

    def reset(self) -> None:
        self.reached = False
        self.user = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # pragma: no cover - the fuzz sites run without a lifespan
            return
        self.reached = True
        self.user = scope.get("user")
        body = b"reached the app"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


# -- a provider whose token endpoint says whatever the test scripts -----------------------------


@dataclasses.dataclass
class Scripted:
    """One answer of the token endpoint: any status, media type and body bytes."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"


class ScriptedProvider:
    """`HostileProvider` (discovery, JWKS, its own token endpoint), except that a scripted answer,
    when set, is what `POST /token` gets: the hostile provider's own JSON encoder cannot send lone
    surrogates raw, numbers too large for Python's int-to-str limit, or non-JSON under any status."""

    def __init__(self, hostile: HostileProvider) -> None:
        self.hostile = hostile
        self.token_answer: Scripted | None = None
        self.token_calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/token" and self.token_answer is not None:
            self.token_calls += 1
            answer = self.token_answer
            while (await receive()).get("more_body", False):
                pass
            headers = [(b"content-type", answer.content_type), (b"content-length", str(len(answer.body)).encode())]
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": answer.body})
            return
        if scope["type"] == "http" and scope["path"] == "/token":
            self.token_calls += 1
        await self.hostile(scope, receive, send)


# -- replies ---------------------------------------------------------------------------------


@dataclasses.dataclass
class SetCookie:
    name: str
    value: str
    attributes: list[str]

    @property
    def deletes(self) -> bool:
        return any(attr.replace(" ", "").lower() == "max-age=0" for attr in self.attributes)


@dataclasses.dataclass(repr=False)
class Reply:
    status: int | None
    headers: list[tuple[bytes, bytes]]
    body: bytes
    #: The app ran for this request; `user` is what it found in `scope["user"]`.
    reached: bool
    user: Any
    error: BaseException | None
    protocol_errors: list[str]
    logs: list[str]

    def __repr__(self) -> str:
        # Short: failure messages quote replies, and a body or a log line may be 70 KB.
        location = self.header("location")
        where = f", location={location[:120]!r}" if location else ""
        return f"Reply(status={self.status}{where}, reached={self.reached}, body={self.body[:120]!r})"

    def header(self, name: str) -> str | None:
        values = self.header_list(name)
        return values[0] if values else None

    def header_list(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [value.decode("latin-1") for header, value in self.headers if header.lower() == key]

    @property
    def set_cookies(self) -> list[SetCookie]:
        cookies = []
        for raw in self.header_list("set-cookie"):
            pair, *attributes = raw.split(";")
            name, _, value = pair.partition("=")
            cookies.append(SetCookie(name.strip(), value.strip(), [attr.strip() for attr in attributes]))
        return cookies

    def session_set(self) -> list[SetCookie]:
        """Session cookies (or chunks, or chunk markers) this reply sets, deletions left out."""
        return [c for c in self.set_cookies if c.name in (SESSION_COOKIE, *CHUNK_NAMES) and not c.deletes]

    def session_deleted(self) -> bool:
        return any(c.name == SESSION_COOKIE and c.deletes for c in self.set_cookies)

    @property
    def authenticated(self) -> bool:
        """The app ran with a signed-in user (not the anonymous user of a public path)."""
        return self.reached and getattr(self.user, "is_authenticated", False) is True

    def identity(self) -> str | None:
        return str(self.user.identity) if self.authenticated else None


# -- oracles ---------------------------------------------------------------------------------


def browser_resolves_same_origin(location: str) -> bool:
    """Whether a browser, following `location` from a page of this app, stays on this origin
    *on a path of its own*: the WHATWG URL parser strips leading and trailing C0 controls and
    spaces, removes tabs and newlines anywhere, and reads backslashes as slashes for http(s)."""
    text = location.strip("".join(chr(c) for c in range(0x21)))
    text = re.sub(r"[\t\n\r]", "", text)
    if _SCHEME.match(text):
        parts = urlsplit(text.replace("\\", "/"))
        return parts.scheme.lower() == "https" and parts.netloc.lower() == APP_HOST
    return text.replace("\\", "/").startswith("/") and not text.replace("\\", "/").startswith("//")


def is_provider_endpoint(location: str, endpoints: Iterable[str]) -> bool:
    """`location` is exactly one of the provider's endpoints (plus a query), as written, and as a
    browser would read it."""
    if location != location.strip() or _CONTROL.search(location) or "\\" in location:
        return False
    parts = urlsplit(location)
    return any(
        (parts.scheme, parts.netloc, parts.path) == (urlsplit(e).scheme, urlsplit(e).netloc, urlsplit(e).path)
        and not parts.fragment
        and not parts.username
        and not parts.password
        for e in endpoints
    )


def location_problem(location: str, endpoints: Iterable[str]) -> str | None:
    """Why `location` is not a place the middleware may send a browser, or `None` if it is."""
    if is_provider_endpoint(location, endpoints):
        return None
    if not location.startswith("/") or location.startswith(("//", "/\\")):
        return f"Location {location!r} is neither a same-origin path nor a provider endpoint"
    if not browser_resolves_same_origin(location):
        return f"Location {location!r} leaves the origin once a browser parses it"
    if _CONTROL.search(location) or " " in location:
        return f"Location {location!r} carries raw control characters or spaces"
    return None


def reference_cookies(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Cookies as RFC 6265 section 5.4 reads them: pairs between `;`, the name up to the first
    `=`, spaces and tabs trimmed, several `cookie` headers joined with `; `, the first of a name wins.

    Deliberately written apart from the middleware's parser: the fuzz tests compare the two."""
    joined = "; ".join(value.decode("latin-1") for name, value in headers if name == b"cookie")
    cookies: dict[str, str] = {}
    if not joined:
        return cookies
    for pair in joined.split(";"):
        if "=" not in pair:
            continue
        name, value = pair.split("=", 1)
        cookies.setdefault(name.strip(" \t"), value.strip(" \t"))
    return cookies


def reference_session(cookies: Mapping[str, str], sealed: str) -> bool:
    """Whether the browser really sent the session `sealed`: whole, or as `~N` and N chunks."""
    value = cookies.get(SESSION_COOKIE)
    if value is None:
        return False
    if value == sealed:
        return True
    if len(value) == 2 and value[0] == "~" and value[1] in "234":
        parts = [cookies.get(name, "") for name in CHUNK_NAMES[: int(value[1])]]
        return all(parts) and "".join(parts) == sealed
    return False


def jwt_segments(token: str) -> tuple[Any, Any] | None:
    """The decoded header and payload of a compact JWS, or `None` if they are not JSON."""
    try:
        header, payload, _ = token.split(".")
        return (
            json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))),
            json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))),
        )
    except (ValueError, TypeError, RecursionError):
        return None


def is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value and abs(value) < 1e300


def audience_ok(aud: object) -> bool:
    if isinstance(aud, str):
        return aud == CLIENT_ID
    return isinstance(aud, list) and bool(aud) and all(a == CLIENT_ID for a in aud)


# -- counts ----------------------------------------------------------------------------------


@dataclasses.dataclass
class PropertyStats:
    examples: int = 0
    requests: int = 0
    statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    sessions_set: int = 0
    app_reached: int = 0
    redirects: int = 0
    provider_redirects: int = 0
    off_origin_redirects: int = 0
    server_errors: int = 0
    log_lines: int = 0
    violations: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        data["seconds"] = round(self.seconds, 1)
        data["5xx"] = sum(v for k, v in self.statuses.items() if k >= 500)
        return data


class FuzzStats:
    def __init__(self) -> None:
        self.properties: dict[str, PropertyStats] = {}
        self.profile = ""

    def __getitem__(self, name: str) -> PropertyStats:
        return self.properties.setdefault(name, PropertyStats())

    def summary(self) -> list[str]:
        lines = [f"fuzz summary (hypothesis profile {self.profile!r}):"]
        header = (
            f"  {'property':<22}{'examples':>9}{'requests':>9}{'5xx':>6}{'500':>5}{'sessions':>9}"
            f"{'app':>7}{'redirects':>10}{'off-origin':>11}{'violations':>11}{'log lines':>10}{'s':>7}"
        )
        lines.append(header)
        total = PropertyStats()
        for name, stats in self.properties.items():
            lines.append(self._row(name, stats))
            for field in dataclasses.fields(PropertyStats):
                if field.name == "statuses":
                    total.statuses.update(stats.statuses)
                else:
                    setattr(total, field.name, getattr(total, field.name) + getattr(stats, field.name))
        lines.append(self._row("total", total))
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(total.statuses.items()))
        lines.append(f"  statuses: {statuses}")
        return lines

    @staticmethod
    def _row(name: str, s: PropertyStats) -> str:
        five = sum(v for k, v in s.statuses.items() if k >= 500)
        return (
            f"  {name:<22}{s.examples:>9}{s.requests:>9}{five:>6}{s.statuses.get(500, 0):>5}{s.sessions_set:>9}"
            f"{s.app_reached:>7}{s.redirects:>10}{s.off_origin_redirects:>11}{s.violations:>11}{s.log_lines:>10}"
            f"{s.seconds:>7.1f}"
        )

    def as_json(self) -> str:
        total_examples = sum(s.examples for s in self.properties.values())
        data = {
            "profile": self.profile,
            "total_examples": total_examples,
            "properties": {name: s.as_dict() for name, s in self.properties.items()},
        }
        return json.dumps(data, indent=2)


# -- sites and calls ------------------------------------------------------------------------


@dataclasses.dataclass
class FuzzSite:
    """The middleware around a `RecordingApp`, in front of a scripted hostile provider."""

    name: str
    hostile: HostileProvider
    provider: ScriptedProvider
    app: RecordingApp
    middleware: PKCEMiddleware

    @property
    def config(self) -> PKCEConfig:
        return self.middleware.config

    def reset(self) -> None:
        """Undo what the previous example scripted."""
        self.provider.token_answer = None
        self.hostile.claim_overrides = {}
        self.hostile.header_overrides = {}
        self.hostile.id_token_encoder = None
        self.hostile.token_overrides = {}
        self.hostile.raw_bodies = {}
        self.hostile.token_behaviour = "ok"
        self.hostile.refresh_behaviour = "ok"
        self.app.reset()

    def open_session(self, value: str) -> Session | None:
        return session_codec(self.config).open(value)


class _LogSink(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(_LOG_FORMAT.format(record))
        except Exception as exc:  # a record that cannot even be formatted is a finding too
            self.lines.append(f"UNFORMATTABLE LOG RECORD {record.msg!r}: {type(exc).__name__}\n")


class Harness:
    """One event loop for the whole module, the fuzz sites, the log sink and the counts."""

    def __init__(self, stats: FuzzStats) -> None:
        self.stats = stats
        self.runner = asyncio.Runner()
        self.sites: dict[str, FuzzSite] = {}
        self._sink = _LogSink()
        self._logger = logging.getLogger("pkce_middleware")
        self._saved = (self._logger.level, self._logger.propagate)

    def __enter__(self) -> Harness:
        # Everything the middleware logs, INFO included, into the sink (and not into pytest's report).
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            for site in self.sites.values():
                self.runner.run(site.middleware.aclose())
        finally:
            self.runner.close()
            self._logger.setLevel(self._saved[0])
            self._logger.propagate = self._saved[1]

    def site(self, name: str, **config_overrides: Any) -> FuzzSite:
        """The site `name`, built on first use and kept for the module (building one costs a
        discovery and a JWKS fetch; each example resets what it scripts)."""
        site = self.sites.get(name)
        if site is None:
            hostile = HostileProvider()
            provider = ScriptedProvider(hostile)
            app = RecordingApp()
            values: dict[str, Any] = {
                "redirect_uri": APP_ORIGIN + CALLBACK_PATH,
                "http_timeout": 5.0,
                **config_overrides,
            }
            middleware = PKCEMiddleware(app, config=make_config(**values), transport=httpx.ASGITransport(app=provider))
            site = self.sites[name] = FuzzSite(name, hostile, provider, app, middleware)
        site.reset()
        return site

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    @contextlib.contextmanager
    def example(self, name: str) -> Iterator[PropertyStats]:
        stats = self.stats[name]
        stats.examples += 1
        started = time.perf_counter()
        try:
            yield stats
        except AssertionError:
            stats.violations += 1
            raise
        finally:
            stats.seconds += time.perf_counter() - started

    async def call(
        self,
        site: FuzzSite,
        *,
        method: str = "GET",
        raw_path: bytes = b"/",
        query: bytes = b"",
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: Sequence[bytes] = (b"",),
        disconnect: bool = False,
        stats: PropertyStats | None = None,
    ) -> Reply:
        """One HTTP request into the middleware, as an ASGI server would make it.

        `body` is sent as that many `http.request` messages; `disconnect` sends `http.disconnect`
        instead of the last one. After the body, `receive` reports a disconnect (as servers do
        once the response is complete).
        """
        site.app.reset()
        path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in headers],
            "client": ("203.0.113.9", 50123),
            "server": (APP_HOST, 443),
            "extensions": {},
            "state": {},
        }
        chunks = list(body) or [b""]
        incoming: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
            for index, chunk in enumerate(chunks)
        ]
        if disconnect:
            incoming[-1] = {"type": "http.disconnect"}
        sent: list[Message] = []

        async def receive() -> Message:
            if incoming:
                return incoming.pop(0)
            await asyncio.sleep(0)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        error: BaseException | None = None
        # Only the sink sees this call's records (pytest also hooks non-propagating loggers).
        saved = self._logger.handlers
        self._logger.handlers = [self._sink]
        try:
            await site.middleware(scope, receive, send)
        except Exception as exc:
            error = exc
        finally:
            self._logger.handlers = saved
        logs, self._sink.lines = self._sink.lines, []

        problems: list[str] = []
        starts = [m for m in sent if m["type"] == "http.response.start"]
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        if len(starts) != 1:
            problems.append(f"{len(starts)} http.response.start messages")
        elif sent[0] is not starts[0]:
            problems.append("a message before http.response.start")
        if not bodies or bodies[-1].get("more_body", False):
            problems.append("the response body never ended")
        status = int(starts[0]["status"]) if starts else None
        reply = Reply(
            status=status,
            headers=list(starts[0].get("headers", [])) if starts else [],
            body=b"".join(m.get("body", b"") for m in bodies),
            reached=site.app.reached,
            user=site.app.user,
            error=error,
            protocol_errors=problems,
            logs=logs,
        )
        if stats is not None:
            _count(reply, stats)
        return reply


def _count(reply: Reply, stats: PropertyStats) -> None:
    stats.requests += 1
    if reply.status is not None:
        stats.statuses[reply.status] += 1
        if reply.status >= 500:
            stats.server_errors += 1
    if reply.session_set():
        stats.sessions_set += 1
    if reply.reached:
        stats.app_reached += 1
    location = reply.header("location")
    if location is not None:
        stats.redirects += 1
        if is_provider_endpoint(location, (AUTHORIZATION_ENDPOINT, END_SESSION_ENDPOINT)):
            stats.provider_redirects += 1
        elif location_problem(location, ()) is not None:
            stats.off_origin_redirects += 1
    stats.log_lines += len(reply.logs)


def check_reply(
    reply: Reply,
    *,
    session_allowed: bool,
    endpoints: Sequence[str] = (AUTHORIZATION_ENDPOINT, END_SESSION_ENDPOINT),
    what: str = "",
) -> None:
    """The properties every answer must have (see the module docstring); `AssertionError` otherwise."""
    problems: list[str] = []
    if reply.error is not None:
        trace = "".join(traceback.format_exception(reply.error))
        problems.append(f"an exception escaped the middleware:\n{trace}")
    problems += reply.protocol_errors
    if reply.status is not None and (reply.status == 500 or (reply.status >= 500 and reply.status not in ALLOWED_5XX)):
        problems.append(f"status {reply.status}")
    if reply.status is not None and not 100 <= reply.status <= 599:
        problems.append(f"status {reply.status} is not an HTTP status")
    for name, value in reply.headers:
        if re.search(rb"[\r\n\x00]", name + value):
            problems.append(f"header {name!r} carries CR, LF or NUL: {value[:200]!r}")
    content_type = (reply.header("content-type") or "").lower()
    if content_type.startswith("text/html") and b"<script" in reply.body.lower():
        problems.append("an HTML page with a <script> in it (nothing the middleware writes has one)")
    locations = reply.header_list("location")
    if len(locations) > 1:
        problems.append(f"{len(locations)} Location headers")
    for location in locations:
        problem = location_problem(location, endpoints)
        if problem is not None:
            problems.append(problem)
    for line in reply.logs:
        bad = control_characters(line)
        if bad:
            problems.append(f"log line with control characters {bad}: {line!r}")
    if not session_allowed and reply.session_set():
        problems.append(f"session cookie set without a valid login: {[c.name for c in reply.session_set()]}")
    for cookie in reply.set_cookies:
        size = len(cookie.name.encode("latin-1")) + len(cookie.value.encode("latin-1"))
        if size > MAX_COOKIE_BYTES:
            problems.append(
                f"cookie {cookie.name} is {size} bytes (name and value): browsers drop one over {MAX_COOKIE_BYTES}"
            )
        if cookie.name.startswith(("__Host-", SESSION_COOKIE, FLOW_COOKIE_PREFIX)):
            attrs = {a.split("=", 1)[0].strip().lower(): a for a in cookie.attributes}
            if "secure" not in attrs or "httponly" not in attrs or attrs.get("path", "").replace(" ", "") != "Path=/":
                problems.append(f"cookie {cookie.name} lacks Secure, HttpOnly or Path=/: {cookie.attributes}")
            if "domain" in attrs:
                problems.append(f"cookie {cookie.name} has a Domain: {cookie.attributes}")
    if problems:
        context = f" ({what})" if what else ""
        raise AssertionError(f"status {reply.status}{context}: " + "\n".join(problems))


# -- helpers for building requests ---------------------------------------------------------


BROWSER_ACCEPT = (b"accept", b"text/html,application/xhtml+xml,*/*;q=0.8")


@dataclasses.dataclass
class Flow:
    """A login this browser started: its flow cookie and what the authorization URL said."""

    cookie_name: str
    cookie_value: str
    state: str
    nonce: str
    challenge: str
    location: str


async def begin_flow(harness: Harness, site: FuzzSite, *, stats: PropertyStats | None = None) -> Flow:
    """A logged-out page load: the 302 to the provider and its flow cookie."""
    reply = await harness.call(site, raw_path=b"/start", headers=[BROWSER_ACCEPT], stats=stats)
    check_reply(reply, session_allowed=False, what="starting a login")
    assert reply.status == 302, reply
    location = reply.header("location")
    assert location is not None
    params = dict(parse_qsl(urlsplit(location).query))
    flows = [c for c in reply.set_cookies if c.name.startswith(FLOW_COOKIE_PREFIX) and not c.deletes]
    assert len(flows) == 1, reply.set_cookies
    return Flow(flows[0].name, flows[0].value, params["state"], params["nonce"], params["code_challenge"], location)


def cookie_header(pairs: Iterable[tuple[str, str]]) -> tuple[bytes, bytes]:
    return (b"cookie", "; ".join(f"{name}={value}" for name, value in pairs).encode("latin-1"))


def b64json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())
