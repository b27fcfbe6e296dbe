"""Run ASGI apps under real uvicorn, hypercorn and granian processes on 127.0.0.1, for end-to-end tests.

`AppServer` is one server process; `serve_all` starts several at once (the slow part, importing a
framework, then happens in parallel) and stops them all at the end; `app_server` serves one app
under uvicorn and yields its URL:

    servers = [AppServer("granian", "examples.litestar_app:app", free_port(), env), ...]
    with serve_all(servers):
        httpx.get(servers[0].url)

    with app_server("examples.starlette_app:app", port, env) as url:
        httpx.get(url)

Each server is started the way its documentation says, from the repository root (so the target's
module path, e.g. `examples.starlette_app`, imports as it does there), with the app's `lifespan`
on, by `tests.support.processes.Process`. Ready means the app answered an HTTP request, not just
that the port accepts connections: granian and hypercorn bind the port in their main process,
before their worker process has imported the app and run its startup.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import httpx

from tests.support import processes
from tests.support.processes import REPO_ROOT, Process

__all__ = ["READY_PATH", "SERVERS", "AppServer", "Server", "app_server", "command", "serve_all"]

Server = Literal["uvicorn", "hypercorn", "granian"]
SERVERS: tuple[Server, ...] = ("uvicorn", "hypercorn", "granian")

#: Answered by PKCEMiddleware itself (the logout page) without calling the provider, in front of any app.
READY_PATH = "/auth/logout"


def command(server: Server, target: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The command line that serves `target` (`module:attribute`) on 127.0.0.1:`port`."""
    python = sys.executable  # the servers of this venv, whatever is first on PATH
    if server == "uvicorn":
        return [python, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on", *extra]
    if server == "hypercorn":
        # No lifespan switch: hypercorn always runs it (an app that raises in it is served without it).
        return [python, "-m", "hypercorn", target, "--bind", f"127.0.0.1:{port}", *extra]
    if server == "granian":
        # --interface asgi: granian's default is its own RSGI protocol; `asginl` would skip the lifespan.
        return [
            python,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            *extra,
            target,
        ]
    raise ValueError(f"unknown server {server!r}")


class AppServer:
    """One server process serving `target`; `start()`, then `wait_ready()`, then `stop()`."""

    def __init__(
        self, server: Server, target: str, port: int, env: Mapping[str, str], *, extra_args: Sequence[str] = ()
    ) -> None:
        self.server = server
        self.target = target
        self.port = port
        self.env = dict(env)
        self.command = command(server, target, port, extra_args)
        self._process = Process(self.command, name=repr(self), env=self.env, cwd=REPO_ROOT, ready_check=self._answers)
        #: Why the server did not become ready, when `serve_all(..., keep_going=True)` carried on.
        self.startup_error: str | None = None
        #: Exit code after `stop()`.
        self.returncode: int | None = None

    def __repr__(self) -> str:
        return f"AppServer({self.server}, {self.target}, port={self.port})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._process.start()

    def wait_ready(self, deadline: float | None = None) -> None:
        """Return once the app answers `READY_PATH` with 200; `ProcessError` with the output otherwise."""
        self._process.wait_ready(deadline)

    def _answers(self) -> str | None:
        try:
            status = httpx.get(self.url + READY_PATH, timeout=2.0).status_code
        except httpx.TransportError as exc:
            return f"GET {READY_PATH}: {exc!r}"
        return None if status == 200 else f"GET {READY_PATH}: HTTP {status}"

    def output(self, last: int = 80) -> str:
        """The last lines the server printed so far (stdout and stderr)."""
        return self._process.output(last)

    def terminate(self) -> None:
        """SIGTERM: every one of these servers shuts down gracefully on it (lifespan shutdown included)."""
        self._process.terminate()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate (if not done yet) and wait; kill the process group if it hangs. Returns the exit code."""
        self.returncode = self._process.stop(timeout)
        return self.returncode


@contextlib.contextmanager
def serve_all(
    servers: Sequence[AppServer], *, startup_timeout: float | None = None, keep_going: bool = False
) -> Iterator[Sequence[AppServer]]:
    """Start every server at once, wait until all are ready, and stop them all on exit.

    `startup_timeout` (one deadline for all) defaults to the launcher's. `keep_going=True` records
    a server that does not start in its `startup_error` and carries on with the others (so one
    broken combination fails its own test, not the whole module).
    """
    try:
        for server in servers:
            server.start()
        deadline = time.monotonic() + processes.startup_timeout(startup_timeout)
        for server in servers:
            try:
                server.wait_ready(deadline)
            except RuntimeError as exc:
                if not keep_going:
                    raise
                server.startup_error = str(exc)
        yield servers
    finally:
        for server in servers:  # all at once: each takes a moment to shut down
            server.terminate()
        for server in servers:
            server.stop()


@contextlib.contextmanager
def app_server(
    target: str, port: int, env: Mapping[str, str], *, server: Server = "uvicorn", startup_timeout: float | None = None
) -> Iterator[str]:
    """Serve `target` (e.g. `examples.starlette_app:app`) on 127.0.0.1:`port`; yields the base URL."""
    app = AppServer(server, target, port, env)
    with serve_all([app], startup_timeout=startup_timeout):
        yield app.url
