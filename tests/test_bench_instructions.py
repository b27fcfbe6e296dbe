"""`benchmarks.bench_instructions` without valgrind: every row's child runs its check and its
requests (so the script cannot rot unnoticed), and the table reads the counts as they are."""

from __future__ import annotations

import pytest

from benchmarks import bench_instructions
from benchmarks.bench_instructions import ROWS, report
from benchmarks.scenarios import BARE, PKCE_SAME, STARLETTE


@pytest.mark.parametrize("row", ROWS)
def test_every_row_runs_its_check_and_requests(row: str) -> None:
    assert bench_instructions.main(["--child", row, "3"]) == 0


def test_the_table_shows_what_each_row_adds_over_bare() -> None:
    counts = {row: 1000.0 for row in ROWS} | {BARE: 1000.0, PKCE_SAME: 3000.0, STARLETTE: 11000.0}
    table = report(counts, count=10)
    assert "| pkce (same cookie) | 3,000 | +2,000 | 3.00 | 20% |" in table
    assert "| starlette SessionMiddleware | 11,000 | +10,000 | 11.00 | 100% |" in table
