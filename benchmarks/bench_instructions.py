"""Instructions per request, counted by valgrind's callgrind: `bench_request`'s rows, not timed.

On a shared VM a microsecond moves with the neighbours: the same code measured a cold request at
+12.6 µs over bare on one host and +54 µs on another, a day apart, and two identical servers
differ by 10% from one round to the next. An instruction count does not move: the same code, the
same Python and the same packages give the same count whatever else the machine is doing. It is
not a time (a cache miss costs more than an add), but it says whether a change made a path do
more or less work, and how a row compares with the bare app and with SessionMiddleware.

Each row runs in two child processes, `valgrind --tool=callgrind python -m
benchmarks.bench_instructions --child ROW N`, one with `--base` requests and one with `--base` +
`--count`: the difference over `--count` is one request, without the interpreter's start-up, the
imports and the checks. Needs Debian's `valgrind`; about two minutes on 2 cores.

    python -m benchmarks.bench_instructions [--count 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from starlette.types import Message

from .harness import BenchmarkError
from .scenarios import BARE, PKCE_AGED, PKCE_COLD, PKCE_RULES, PKCE_SAME, STARLETTE, cookie_rows
from .session_data import realistic_session

ROWS = (BARE, PKCE_SAME, PKCE_RULES, PKCE_COLD, PKCE_AGED, STARLETTE)
#: callgrind's summary line on stderr: `==123== Collected : 456789`.
COLLECTED = re.compile(r"^==\d+== Collected : (\d+)$", re.MULTILINE)


async def _child(row: str, requests: int) -> None:
    """`requests` calls of `row`'s app, after its check (which raises if it would count the wrong path)."""
    data = realistic_session(int(time.time()))
    offline = httpx.MockTransport(lambda request: httpx.Response(503))
    async with contextlib.AsyncExitStack() as stack:
        rows = await cookie_rows(stack, data, secrets.token_urlsafe(32), offline)
        variant = next(variant for variant in rows.variants if variant.name == row)
        if variant.prepare is not None:
            await variant.prepare(600.0)
        await variant.check()

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            pass

        app, scope = variant.app, variant.scope
        for _ in range(requests):
            await app(dict(scope), receive, send)


def _count(valgrind: str, row: str, requests: int) -> int:
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "benchmarks.bench_instructions", "--child", row, str(requests)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise BenchmarkError(f"{row}: valgrind exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(valgrind: str, *, base: int, count: int) -> dict[str, float]:
    """Instructions of one request of each row: (count at base + count) - (count at base), over count."""
    jobs = [(row, n) for row in ROWS for n in (base, base + count)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        totals = list(pool.map(lambda job: _count(valgrind, *job), jobs))
    counted = dict(zip(jobs, totals, strict=True))
    return {row: (counted[row, base + count] - counted[row, base]) / count for row in ROWS}


def report(instructions: dict[str, float], *, count: int) -> str:
    bare = instructions[BARE]
    session_added = instructions[STARLETTE] - bare
    lines = [
        f"instructions per request (callgrind; {count} requests per row, Python {sys.version.split()[0]})",
        "",
        "| variant | instructions | added over bare | x bare | added, share of SessionMiddleware's |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in ROWS:
        added = instructions[row] - bare
        share = "—" if row == BARE else f"{added / session_added:.0%}"
        lines.append(
            f"| {row} | {instructions[row]:,.0f} | {'—' if row == BARE else f'+{added:,.0f}'} "
            f"| {instructions[row] / bare:.2f} | {share} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="requests counted per row (default 1000)")
    parser.add_argument("--base", type=int, default=100, help="requests of the run subtracted (default 100)")
    parser.add_argument("--child", nargs=2, metavar=("ROW", "N"), help=argparse.SUPPRESS)
    args: Any = parser.parse_args(argv)
    if args.child is not None:
        asyncio.run(_child(args.child[0], int(args.child[1])))
        return 0
    if not 1 <= args.count <= 100_000 or not 1 <= args.base <= 100_000:
        parser.error("--count and --base must be between 1 and 100000")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        instructions = per_request(valgrind, base=args.base, count=args.count)
    except BenchmarkError as exc:
        print(f"benchmark invalid: {exc}", file=sys.stderr)
        return 1
    print(report(instructions, count=args.count))
    print(f"\ntook {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
