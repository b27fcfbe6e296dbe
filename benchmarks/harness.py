"""Timing harness for in-process ASGI micro-benchmarks: loops, calibration, stall detection, tables.

It knows nothing of any middleware: it drives `Variant`s (an ASGI app, the scope it is called with,
a check, an optional untimed `prepare` hook) and turns their timings into `Row`s and a table.

Method (see `benchmarks/README.md`): per variant a check, a warm-up and a calibration that picks
the requests per rep (a multiple of CHUNK) so that a rep lasts about `rep_seconds`; then the reps,
interleaved across variants so that slow drift of the machine hits all of them alike, each with
the garbage collector off and a time bound; then the check again. Inside a rep the clock is read
once per CHUNK requests, and chunks that lost the CPU (STALL_FACTOR times the rep's median chunk)
are left out of the per-request figures but reported as "stalled".
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Scope

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
#: What a variant's `prepare` is told before a check (a handful of requests).
CHECK_SECONDS = 1.0

REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


class BenchmarkError(RuntimeError):
    """The benchmark would measure the wrong thing (e.g. the 401 path); never silently continue."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BenchmarkError(message)


# -- calling an app ------------------------------------------------------------------------------


async def receive_nothing() -> Message:
    return REQUEST


async def discard(message: Message) -> None:
    return None


async def call_capturing(app: ASGIApp, scope: Scope) -> list[Message]:
    """One request, untimed, returning every message the app sent."""
    sent: list[Message] = []

    async def capture(message: Message) -> None:
        sent.append(message)

    await app(dict(scope), receive_nothing, capture)
    return sent


def set_cookies(sent: list[Message]) -> list[bytes]:
    """The `Set-Cookie` header values of a captured response."""
    return [v for m in sent if m["type"] == "http.response.start" for k, v in m["headers"] if k == b"set-cookie"]


def status_and_body(sent: list[Message]) -> tuple[list[int], bytes]:
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    return statuses, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


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
    """One row of the table: `app` called with (a fresh shallow copy of) `scope`, again and again."""

    name: str
    app: ASGIApp
    scope: dict[str, Any]
    #: Run before calibration and after the last rep: raises BenchmarkError when the variant would
    #: measure the wrong thing.
    check: Callable[[], Awaitable[None]]
    #: Run, untimed, before every check and timed loop, with the longest (in seconds) that the loop
    #: may last; it may change `scope` in place (e.g. renew a session before it ages).
    prepare: Callable[[float], Awaitable[None]] | None = None
    #: A rep of this variant lasts at least this long, whatever `rep_seconds` says.
    min_rep_seconds: float = 0.0
    n: int = 0
    reps: list[Rep] = dataclasses.field(default_factory=list)

    def rep_seconds(self, rep_seconds: float) -> float:
        return max(rep_seconds, self.min_rep_seconds)

    async def ready(self, seconds: float) -> None:
        if self.prepare is not None:
            await self.prepare(seconds)


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


async def timed(variant: Variant, count: int, seconds: float) -> Rep:
    """`drive` with the garbage collector off, after the variant's `prepare`."""
    await variant.ready(seconds * DEADLINE_FACTOR)
    gc.collect()
    gc.disable()
    try:
        return await drive(variant.app, variant.scope, count, int(seconds * DEADLINE_FACTOR * 1e9))
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
        rep = await timed(variant, count, rep_seconds)
        enough = len(rep.chunks_ns) >= CALIBRATION_CHUNKS and sum(rep.kept) >= target_ns / 4
        if enough or count >= MAX_REQUESTS_PER_REP:
            wanted = math.ceil(target_ns / rep.ns_per_request / CHUNK) * CHUNK
            return max(CHUNK, min(MAX_REQUESTS_PER_REP, wanted))
        count *= 4


async def measure(variants: list[Variant], *, reps: int, rep_seconds: float, warmup_seconds: float) -> None:
    """Check, warm up and calibrate every variant, then time `reps` interleaved reps, then check again."""
    for variant in variants:
        await variant.ready(CHECK_SECONDS)
        await variant.check()
        await variant.ready(warmup_seconds)
        await drive(variant.app, variant.scope, MAX_REQUESTS_PER_REP, int(warmup_seconds * 1e9))
        variant.n = await calibrate(variant, variant.rep_seconds(rep_seconds))
    for _ in range(reps):  # interleaved, so slow drift of the machine hits every variant alike
        for variant in variants:
            variant.reps.append(await timed(variant, variant.n, variant.rep_seconds(rep_seconds)))
    for variant in variants:  # still the authenticated path after all that
        await variant.ready(CHECK_SECONDS)
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
    """One row per variant; the first variant is the baseline of the "added" and "x" columns."""
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
    """A Markdown table of the rows; the first one is the baseline."""
    baseline = result[0].name
    lines = [
        f"| variant | median µs/req | min µs/req | added over {baseline} (µs) | x {baseline} "
        "| wall median µs/req | stalled | requests x reps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result:
        added = "—" if r.name == baseline else f"{r.added_us:+.2f}"
        lines.append(
            f"| {r.name} | {r.median_us:.2f} | {r.min_us:.2f} | {added} | {r.ratio:.2f} "
            f"| {r.wall_median_us:.2f} | {r.stalled_fraction:.0%} | {r.requests_per_rep} x {reps} |"
        )
    return "\n".join(lines)


def target_line(met: bool, text: str, *, gating: bool = False) -> str:
    """A target's verdict: timings are figures to read, not assertions, so a miss is no failure unless `gating`."""
    if met:
        return f"target met: {text}"
    return f"target missed: {text}" + ("" if gating else " (informational)")


def stall_warning(result: list[Row]) -> str | None:
    """A warning when the median rep of some row had too many stalled chunks to be trusted."""
    noisy = [r.name for r in result if r.stalled_chunks > MAX_STALLED_CHUNKS]
    if not noisy:
        return None
    return (
        f"warning: in the median rep over {MAX_STALLED_CHUNKS:.0%} of the chunks were stalled for "
        f"{', '.join(noisy)}; the machine is too busy for these figures to mean much"
    )
