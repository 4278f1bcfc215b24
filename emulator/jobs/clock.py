"""The jobs engine's clock: how long one AWS "minute" lasts.

Rollout rates are per minute, timeouts are in minutes; a test cannot wait
minutes, so the emulator scales them: ``--jobs-minute SECONDS`` (server.py)
or ``IOTREG_EMULATOR_JOBS_MINUTE`` (default 60) is the number of real seconds
one AWS minute lasts for the jobs engine.  Timestamps the APIs return are
real wall-clock times; only durations are scaled.
"""

from __future__ import annotations

import os
import time

ENV = "IOTREG_EMULATOR_JOBS_MINUTE"
DEFAULT_MINUTE = 60.0


def minute_from_env() -> float:
    raw = os.environ.get(ENV)
    if not raw:
        return DEFAULT_MINUTE
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_MINUTE
    return value if value > 0 else DEFAULT_MINUTE


class Clock:
    """Monotonic time for deadlines, wall time for timestamps, and the scaled minute."""

    def __init__(self, minute: float | None = None) -> None:
        self._minute = minute

    @property
    def minute(self) -> float:
        return self._minute if self._minute is not None else minute_from_env()

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def minutes(self, count: float) -> float:
        """Real seconds of ``count`` AWS minutes."""
        return count * self.minute

    def aws_seconds(self, real_seconds: float) -> float:
        """Real seconds expressed as AWS seconds (60 per scaled minute)."""
        return real_seconds * 60.0 / self.minute
