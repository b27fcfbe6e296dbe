"""The test setup's process launcher (tests/support/processes.py): what it does when a process is
slow to start, and what it says when one never gets ready."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import pytest

from tests.support import processes
from tests.support.processes import Process, ProcessError

READY_AFTER = [sys.executable, "-c", "import time; time.sleep(0.5); print('READY', flush=True); time.sleep(30)"]
NEVER_READY = [sys.executable, "-c", "import time; time.sleep(30)"]


def test_a_stall_of_the_whole_machine_does_not_use_up_the_startup_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock jumps 600 s once (a paused VM, a starved test process): far past the 60 s allowed,
    # but the process had no chance to run in that time, so it is still waited for.
    jumped = [False]

    def monotonic() -> float:
        if not jumped[0] and time.monotonic() - started > 0.1:
            jumped[0] = True
        return time.monotonic() + (600.0 if jumped[0] else 0.0)

    started = time.monotonic()
    monkeypatch.setattr(processes, "time", SimpleNamespace(monotonic=monotonic, sleep=time.sleep))
    with Process(READY_AFTER, name="slow starter", ready_pattern="^READY$", startup_timeout=60) as process:
        assert jumped[0] and process.lines == ["READY"]


def test_a_process_that_never_gets_ready_is_reported_with_its_state() -> None:
    with pytest.raises(ProcessError) as raised:
        Process(NEVER_READY, name="sleeper", ready_pattern="^READY$", startup_timeout=1).start_and_wait()
    message = str(raised.value)
    assert "sleeper was not ready within 1 s (no output line matches '^READY$')" in message
    assert "process state S, CPU used" in message
