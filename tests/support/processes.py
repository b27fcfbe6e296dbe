"""One launcher for every external process the tests start: oidc-provider, redis-server, app servers.

    process = Process(["redis-server", "--port", "6400"], name="redis-server", ready_port=6400)
    with process:                  # start(), then wait_ready(); stop() on the way out
        process.output()           # what it printed so far (stdout and stderr, merged)

`start()` spawns the command in its own process group, with `env` laid over this process's
environment, and a thread that reads its output line by line (so a chatty process never blocks on
a full pipe, and a failure can show what it said). `wait_ready()` returns once every readiness
condition given holds: a line matching `ready_pattern`, `ready_port` accepting TCP connections on
127.0.0.1, and `ready_check()` returning `None`. It fails at once if the process exits first
(`PortTaken` when its output says the port was in use), and otherwise after the startup timeout,
in both cases with the collected output in the message. `stop()` sends SIGTERM, waits, and kills
the whole process group if it is still there after `stop_timeout` seconds.

The startup timeout is generous (`DEFAULT_STARTUP_TIMEOUT`): a process that works is ready long
before it, and on a loaded 2-core machine a Node or Python start can take tens of seconds. Time
in which the waiting test process itself did not run (a paused VM, a starved process) does not
count. The environment variable `PKCE_TEST_STARTUP_TIMEOUT` (seconds) overrides the default
everywhere; a process that times out is reported with its state and the CPU time it used.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "REPO_ROOT",
    "STARTUP_TIMEOUT_ENV",
    "Launcher",
    "PortTaken",
    "Process",
    "ProcessError",
    "ProviderLauncher",
    "ReadyCheck",
    "free_port",
    "port_is_free",
    "startup_timeout",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

STARTUP_TIMEOUT_ENV = "PKCE_TEST_STARTUP_TIMEOUT"
DEFAULT_STARTUP_TIMEOUT = 120.0

#: What the servers we run print when they cannot bind: node (EADDRINUSE), redis, uvicorn, hypercorn, granian.
_PORT_TAKEN = re.compile(r"EADDRINUSE|address already in use", re.IGNORECASE)

#: Called while waiting for readiness: `None` once ready, otherwise what it saw (shown on timeout).
ReadyCheck = Callable[[], str | None]


class ProcessError(RuntimeError):
    """A process exited before it was ready, or was not ready in time; the message holds its output."""


class PortTaken(ProcessError):
    """The process exited because its port was already in use."""


def startup_timeout(timeout: float | None = None) -> float:
    """`timeout` if given, else `PKCE_TEST_STARTUP_TIMEOUT` from the environment, else the default."""
    if timeout is not None:
        return timeout
    raw = os.environ.get(STARTUP_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_STARTUP_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{STARTUP_TIMEOUT_ENV} must be a positive number of seconds, not {raw!r}")
    return value


#: Seconds of one readiness step past which the step counts as a stall, not as waiting.
_STALL = 5.0


def _cpu_state(pid: int) -> str:
    """What a process that is not ready is doing: its state and the CPU time it has used (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return "process state unknown"
    ticks = os.sysconf("SC_CLK_TCK")
    return f"process state {fields[0]}, CPU used {(int(fields[11]) + int(fields[12])) / ticks:.2f} s"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind `host:port` now (with SO_REUSEADDR, as node, redis and uvicorn do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Process:
    """One external process; see the module docstring.

    `env` values are laid over `os.environ`; a `None` value removes that variable. `stdin_pipe`
    keeps a pipe to the process's stdin open until `stop()` (a process can watch it to exit when
    the test process dies); otherwise stdin is /dev/null.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: Path | str = REPO_ROOT,
        ready_pattern: str | re.Pattern[str] | None = None,
        ready_port: int | None = None,
        ready_check: ReadyCheck | None = None,
        startup_timeout: float | None = None,
        stop_timeout: float = 10.0,
        stdin_pipe: bool = False,
    ) -> None:
        self.command = list(command)
        self.name = name if name is not None else Path(self.command[0]).name
        self.env = dict(env or {})
        self.cwd = Path(cwd)
        self.ready_pattern = re.compile(ready_pattern) if isinstance(ready_pattern, str) else ready_pattern
        self.ready_port = ready_port
        self.ready_check = ready_check
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.stdin_pipe = stdin_pipe
        #: Exit code, once `stop()` ran.
        self.returncode: int | None = None
        self._lines: list[str] = []
        self._lines_changed = threading.Condition()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._started_at = 0.0
        self._pattern_seen = False

    def __repr__(self) -> str:
        return f"Process({self.name}, pid={self.pid})"

    def __enter__(self) -> Process:
        return self.start_and_wait()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> Process:
        """Spawn the process and its output reader; does not wait (see `wait_ready()`)."""
        if self._process is not None:
            raise RuntimeError(f"{self.name} is already running")
        environment = dict(os.environ)
        for key, value in self.env.items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        with self._lines_changed:
            self._lines = []
        self._pattern_seen = self.ready_pattern is None
        self.returncode = None
        self._started_at = time.monotonic()
        process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=environment,
            stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # so a crash's stack trace is in the output too
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            # Its own process group: a server's worker processes go with it in stop(), and a Ctrl-C
            # in the terminal reaches only the test process, which then stops it.
            start_new_session=True,
        )
        self._process = process
        self._reader = threading.Thread(
            target=self._read_output, args=(process,), name=f"output-of-{self.name}", daemon=True
        )
        self._reader.start()
        return self

    def start_and_wait(self) -> Process:
        """`start()`, then `wait_ready()`; a process that does not get ready is stopped again."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, deadline: float | None = None) -> None:
        """Block until every readiness condition holds; `ProcessError` (with the output) otherwise.

        `deadline` is a `time.monotonic()` value; by default the startup timeout after `start()`.
        """
        process = self._process
        if process is None:
            raise RuntimeError(f"{self.name}: start() first")
        if deadline is None:
            deadline = self._started_at + startup_timeout(self.startup_timeout)
        checked = time.monotonic()
        while True:
            if process.poll() is not None:
                self._raise_exited(process)
            waiting_for = self._not_ready()
            if waiting_for is None:
                return
            now = time.monotonic()
            # A step that took far longer than its 0.05 s wait means this process (or the whole
            # machine: a paused VM's monotonic clock jumps) did not run: that time is nobody's
            # startup, and must not use up the deadline of a process that never got to start.
            if now - checked > _STALL:
                deadline += now - checked
            checked = now
            if now >= deadline:
                raise ProcessError(
                    f"{self.name} was not ready within {deadline - self._started_at:.0f} s ({waiting_for}); "
                    f"{STARTUP_TIMEOUT_ENV} allows more time; {_cpu_state(process.pid)}; "
                    f"output so far:\n{self.output()}"
                )
            with self._lines_changed:
                self._lines_changed.wait(0.05)  # woken early by new output

    def _not_ready(self) -> str | None:
        """`None` when ready, else the first condition that does not hold yet."""
        if not self._pattern_seen:
            assert self.ready_pattern is not None
            with self._lines_changed:
                self._pattern_seen = any(self.ready_pattern.search(line) for line in self._lines)
            if not self._pattern_seen:
                return f"no output line matches {self.ready_pattern.pattern!r}"
        if self.ready_port is not None and not _accepts(self.ready_port):
            return f"nothing accepts connections on 127.0.0.1:{self.ready_port}"
        if self.ready_check is not None:
            return self.ready_check()
        return None

    def _raise_exited(self, process: subprocess.Popen[str]) -> None:
        self._drain()
        output = self.output()
        message = f"{self.name} exited with code {process.returncode} before it was ready; output:\n{output}"
        if _PORT_TAKEN.search(output):
            raise PortTaken(message)
        raise ProcessError(message)

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM) without waiting; `stop()` waits."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a paused (SIGSTOP) process cannot act on SIGTERM
            process.terminate()

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to `timeout` (default `stop_timeout`) s, then SIGKILL the group; the exit code."""
        process = self._process
        if process is None:
            return self.returncode
        timeout = self.stop_timeout if timeout is None else timeout
        self.terminate()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            code = process.wait(timeout=timeout)
        # A child left behind (a server's worker) would keep the port and the output pipe open.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self._drain(timeout)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        self._process = None
        self._reader = None
        self.returncode = code
        return code

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the process itself (e.g. SIGSTOP/SIGCONT to freeze and thaw it)."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        self._process.send_signal(sig)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    # -- output --------------------------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        """Every line printed so far (a copy; kept after `stop()` until the next `start()`)."""
        with self._lines_changed:
            return list(self._lines)

    def output(self, last: int = 80) -> str:
        """The last `last` lines printed so far, or "(no output)"."""
        with self._lines_changed:
            tail = self._lines[-last:]
        return "\n".join(tail) or "(no output)"

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str:
        """Block until a line (printed before or after this call) satisfies `predicate`; return it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._lines_changed:
            while True:
                for line in self._lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no matching line from {self.name} within {timeout} s; output:\n{self.output()}"
                    )
                self._lines_changed.wait(remaining)

    def _read_output(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            with self._lines_changed:
                self._lines.append(raw.rstrip("\n"))
                self._lines_changed.notify_all()
        with self._lines_changed:
            self._lines_changed.notify_all()

    def _drain(self, timeout: float = 2.0) -> None:
        """Let the reader take in what is left in the pipe (bounded: a leftover child may hold it open)."""
        if self._reader is not None:
            self._reader.join(timeout=timeout)


class Launcher:
    """What the launchers of one server share (`RedisServer`, `LocalProvider`, the Django providers).

    A context manager (`start()`, then `stop()`), with `port`, `running` and `log_lines`. A subclass
    implements `_launch()`: build `self._process` for `self.port` and `start_and_wait()` it. `start()`
    picks another port and launches again when the process says its port was taken, unless the port
    was given (`port=`): a port picked by `free_port()` can be taken by someone else before the server
    binds it. `_prepare()` runs once before the launches (e.g. to check that the program is installed).
    """

    def __init__(self, *, port: int | None = None, startup_timeout: float | None = None) -> None:
        self._fixed_port = port
        self._startup_timeout = startup_timeout
        self.port: int = port if port is not None else free_port()
        self._process: Process | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port})"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the process; return once it is ready (`ProcessError` otherwise)."""
        if self.running:
            raise RuntimeError(f"{self!r} already started")
        self._prepare()
        attempts = self._port_attempts()
        for attempt in range(attempts):
            try:
                self._launch()
            except PortTaken:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
            else:
                return self
        raise AssertionError("unreachable")

    def _prepare(self) -> None:
        """Checks before the launches; nothing by default."""

    def _port_attempts(self) -> int:
        """How many ports to try: one when the port is fixed."""
        return 3 if self._fixed_port is None else 1

    def _launch(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the process, kill it if it is still alive after `timeout` s (default: its `stop_timeout`)."""
        if self._process is not None:
            self._process.stop(timeout)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def log_lines(self) -> list[str]:
        """Every line the process printed so far (of its last start; kept after `stop()`)."""
        return [] if self._process is None else self._process.lines

    def wait_for_log(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str:
        """Block until a log line satisfies `predicate` (e.g. a back-channel event); return it."""
        if self._process is None:
            raise RuntimeError(f"{self!r} was never started")
        return self._process.wait_for_line(predicate, timeout)


class ProviderLauncher(Launcher):
    """A `Launcher` of an OpenID Provider that logs requests and grants as `<log_tag> ...` lines.

    Ready once discovery answers 200 (`_discovery_answers` is the `ready_check`; it fills
    `metadata`). The process logs `<log_tag> <METHOD> <path> <status>` for every request and
    `<log_tag> grant <type> <client> <outcome>` for every token request.
    """

    #: The first word of the process's log lines, and the path prefix of `sync_log()`'s requests.
    log_tag: ClassVar[str]
    sync_path: ClassVar[str]

    def __init__(self, *, port: int | None = None, startup_timeout: float | None = None) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.metadata: dict[str, Any] = {}

    @property
    def issuer(self) -> str:
        raise NotImplementedError

    def _discovery_answers(self) -> str | None:
        discovery = f"{self.issuer}/.well-known/openid-configuration"
        try:
            response = httpx.get(discovery, timeout=2.0)
        except httpx.TransportError as exc:
            return f"{discovery}: {exc!r}"
        if response.status_code != 200:
            return f"{discovery}: HTTP {response.status_code}"
        self.metadata = response.json()
        return None

    def sync_log(self, timeout: float = 5.0) -> None:
        """Wait until `log_lines` holds everything the provider logged before this call.

        The provider logs an event before it answers, but the reader thread may see that line
        only after the test got the answer. A request to a unique path is logged after all
        earlier lines, so once its line is read the earlier ones are too.
        """
        if not self.running:
            return  # stop() drained the pipe already
        marker = f"{self.sync_path}{secrets.token_hex(8)}"
        try:
            httpx.get(f"http://127.0.0.1:{self.port}{marker}", timeout=timeout)
        except httpx.TransportError as exc:
            raise RuntimeError(f"provider did not answer the log sync request: {exc!r}") from exc
        self.wait_for_log(lambda line: line.startswith(f"{self.log_tag} GET {marker} "), timeout=timeout)

    def grant_count(self, grant_type: str, outcome: str = "ok", client_id: str | None = None) -> int:
        """Count token endpoint requests (`<log_tag> grant <type> <client> <outcome>` lines).

        Calls `sync_log()` first while the provider runs, so grants answered just before count.
        """
        self.sync_log()
        count = 0
        for line in self.log_lines:
            fields = line.split()
            if len(fields) != 5 or fields[:2] != [self.log_tag, "grant"]:
                continue
            if fields[2] != grant_type or fields[4] != outcome:
                continue
            if client_id is not None and fields[3] != client_id:
                continue
            count += 1
        return count
