"""A real `redis-server` for tests (Debian's package), on 127.0.0.1 and a free port.

    with RedisServer() as server:
        server.url          # redis://127.0.0.1:<port>/0
        server.stop()       # the process exits; clients get "connection refused"
        server.start()      # again, same port and same directory (so `appendonly=True` keeps data)
        server.pause()      # SIGSTOP: connections stay open but nothing answers (timeouts)
        server.resume()     # SIGCONT

Without `appendonly`, the server keeps nothing on disk (`--save ""`), so a restart empties it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["RedisServer", "free_port"]

_PING = b"*1\r\n$4\r\nPING\r\n"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _executable() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise RuntimeError("redis-server is not installed; the Redis tests need it (`make redis-server`)")
    return found


class RedisServer:
    """One `redis-server` process; see the module docstring."""

    def __init__(self, *, appendonly: bool = False, startup_timeout: float = 10.0) -> None:
        self.port = free_port()
        self.appendonly = appendonly
        self._startup_timeout = startup_timeout
        self._dir = tempfile.TemporaryDirectory(prefix="pkce-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        self._started = False
        self._log_path = Path(self._dir.name) / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._dir.cleanup()

    def start(self) -> RedisServer:
        """Start (or start again, same port and directory); return once PING answers PONG."""
        if self._process is not None:
            raise RuntimeError("redis-server is already running")
        # A port from free_port() can be taken before redis binds it; only a restart must keep it.
        attempts = 1 if self._started else 3
        for attempt in range(attempts):
            try:
                self._launch()
            except RuntimeError:
                if attempt == attempts - 1 or "Address already in use" not in self._log_tail():
                    raise
                self.port = free_port()
            else:
                self._started = True
                return self
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        command = [
            _executable(),
            "--port",
            str(self.port),
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
            str(self._log_path),
        ]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}:\n{self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(_PING)
                    answer = sock.recv(64)
            except OSError as exc:
                last = repr(exc)
            else:
                if answer.startswith(b"+PONG") and self._process.poll() is None:
                    return
                last = answer.decode("latin-1").strip()  # "-LOADING ..." while it reads its data
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING within {self._startup_timeout}s ({last})")

    def stop(self) -> None:
        """Stop the process (SIGTERM: a clean shutdown, which also writes the append-only file)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def pause(self) -> None:
        """Freeze the server: connected clients see timeouts, not errors."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"
