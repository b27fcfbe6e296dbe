"""The soak's smoke mode (`python -m benchmarks.soak --smoke`): real provider, Redis, two app processes.

20 users log in through oidc-provider's forms, then 5 s of mixed traffic on both processes, with
logouts and refreshes; every count that fails the soak must be zero. `make soak` runs the full one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT

pytestmark = [pytest.mark.node, pytest.mark.redis, pytest.mark.servers]

#: The smoke run takes about 20 s here; the bound is for a busy 2-core machine.
TIMEOUT = 240


def test_smoke_soak_finds_no_error_no_leak_and_refreshes(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--smoke", "--json", str(report_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    report = json.loads(report_path.read_text())
    assert report["failures"] == [], output
    assert report["logins_ok"] == 20 and report["logins_failed"] == 0, output
    assert report["errors"] == 0 and report["cross_user"] == 0, output
    assert report["logouts"] == 2 and report["logged_out_accepted"] == 0, output
    assert report["logged_out_refused"] >= 2 * report["logouts"], output  # each checked on both processes
    assert report["refreshes"] > 0 and report["refreshes_refused"] == 0, output
    assert report["server_tracebacks"] == 0, output
