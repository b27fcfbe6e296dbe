"""Run ASGI apps under real uvicorn, hypercorn and granian processes on 127.0.0.1, for end-to-end tests.

`AppServer` is one server process; `serve_all` starts several at once (the slow part, importing a
framework, then happens in parallel) and stops them all at the end:

    servers = [AppServer("granian", "examples.litestar_app:app", free_port(), env), ...]
    with serve_all(servers):
        httpx.get(servers[0].url)

Each server is started the way its documentation says, from the repository root, with the app's
`lifespan` on. Ready means the app answered an HTTP request, not just that the port accepts
connections: granian and hypercorn bind the port in their main process, before their worker process
has imported the app and run its startup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

import httpx

__all__ = ["SERVERS", "AppServer", "Server", "serve_all"]

REPO_ROOT = Path(__file__).resolve().parent.parent

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
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[str] | None = None
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
        # Lives as long as the process (closed in stop()), so no `with` here.
        self._output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._process = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env={**os.environ, **self.env},
            stdout=self._output,
            stderr=subprocess.STDOUT,
            # Own process group: granian's worker is a child process, and must go when the test ends.
            start_new_session=True,
        )

    def wait_ready(self, deadline: float) -> None:
        """Return once the app answers `READY_PATH` with 200; RuntimeError with the output otherwise."""
        process = self._process
        assert process is not None, "start() first"
        with httpx.Client(timeout=2.0) as http:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{self!r} exited with {process.returncode}:\n{self.output()}")
                try:
                    if http.get(self.url + READY_PATH).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self!r} did not answer {READY_PATH} in time:\n{self.output()}")
                time.sleep(0.05)

    def output(self, limit: int = 4000) -> str:
        """The tail of what the server printed so far (stdout and stderr)."""
        if self._output is None:
            return ""
        self._output.flush()
        self._output.seek(0)
        text = self._output.read()
        self._output.seek(0, os.SEEK_END)
        return text[-limit:]

    def terminate(self) -> None:
        """SIGTERM: every one of these servers shuts down gracefully on it (lifespan shutdown included)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate (if not done yet) and wait; kill the process group if it hangs. Returns the exit code."""
        process = self._process
        if process is None:
            return None
        self.terminate()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group is this server's own (start_new_session)
            code = process.wait(timeout=timeout)
        self.returncode = code
        # A worker left behind by a killed parent would keep the port; its group is the server's.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._output is not None:
            self._output.close()
            self._output = None
        self._process = None
        return code


@contextlib.contextmanager
def serve_all(
    servers: Sequence[AppServer], *, startup_timeout: float = 120.0, keep_going: bool = False
) -> Iterator[Sequence[AppServer]]:
    """Start every server at once, wait until all are ready, and stop them all on exit.

    `keep_going=True` records a server that does not start in its `startup_error` and carries on
    with the others (so one broken combination fails its own test, not the whole module).
    """
    try:
        for server in servers:
            server.start()
        deadline = time.monotonic() + startup_timeout
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
