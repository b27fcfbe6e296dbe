"""A real `redis-server` for tests (Debian's package), on 127.0.0.1 and a free port.

    with RedisServer() as server:
        server.url          # redis://127.0.0.1:<port>/0
        server.stop()       # the process exits; clients get "connection refused"
        server.start()      # again, same port and same directory (so `appendonly=True` keeps data)
        server.pause()      # SIGSTOP: connections stay open but nothing answers (timeouts)
        server.resume()     # SIGCONT

Without `appendonly`, the server keeps nothing on disk (`--save ""`), so a restart empties it.
`args` are more `redis-server` options, appended last (so they win): `["--replicaof", ...]`, cluster
mode. A subclass may listen otherwise (`_listen_args()`, `url`): TLS in `redis_topologies`.
Started and stopped by `tests.support.processes.Process`: ready once it logged "Ready to accept
connections" (after loading its append-only file) and its port accepts connections.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.support.processes import Launcher, Process

__all__ = ["RedisServer"]


def _executable() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise RuntimeError("redis-server is not installed; the Redis tests need it (`make redis-server`)")
    return found


class RedisServer(Launcher):
    """One `redis-server` process; see the module docstring."""

    def __init__(
        self, *, appendonly: bool = False, args: Sequence[str] = (), startup_timeout: float | None = None
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.appendonly = appendonly
        self.args = list(args)
        self._dir = tempfile.TemporaryDirectory(prefix="pkce-redis-")

    @property
    def directory(self) -> Path:
        """Its working directory (append-only file, cluster `nodes.conf`); removed on exit."""
        return Path(self._dir.name)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        self._dir.cleanup()

    def _listen_args(self) -> list[str]:
        """Where it listens: plain TCP on `port`."""
        return ["--port", str(self.port)]

    def _launch(self) -> None:
        command = [
            _executable(),
            *self._listen_args(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            # Every write is on disk before the reply, so a stop right after a login loses nothing.
            "--appendfsync",
            "always",
            "--dir",
            self._dir.name,
            "--daemonize",
            "no",
            "--logfile",
            "",  # stdout, which the launcher collects
            *self.args,
        ]
        self._process = Process(
            command,
            name=f"redis-server on port {self.port}",
            cwd=self._dir.name,
            ready_pattern=r"[Rr]eady to accept connections",
            ready_port=self.port,
            startup_timeout=self._startup_timeout,
        )
        self._process.start_and_wait()
        # Started again (same port and directory), it must keep this port.
        self._fixed_port = self.port

    def pause(self) -> None:
        """Freeze the server: connected clients see timeouts, not errors."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)
