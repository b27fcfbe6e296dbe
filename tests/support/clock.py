"""A clock for the session lifecycle that the test moves (the `clock` fixture in conftest.py)."""

from __future__ import annotations

import time

from pkce_middleware._lifecycle import IDLE_RESOLUTION


class Clock:
    """The session lifecycle's clock, moved by the test: one clock for the full path and the
    admissions, so both see the same second."""

    def __init__(self) -> None:
        # At the start of a minute, so the test's steps never cross into the next one by chance.
        self.now = float((int(time.time()) // IDLE_RESOLUTION) * IDLE_RESOLUTION)

    def time(self) -> float:
        return self.now
