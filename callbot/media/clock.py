"""Pacing on absolute deadlines from a monotonic clock (no drift, no burst after a stall)."""

from __future__ import annotations

import asyncio
import time

#: Further behind than this, a pacer skips the missed ticks instead of sending them in a burst.
MAX_LAG = 0.1


class Pacer:
    """Ticks every `period` seconds on deadlines `start + n * period`.

    Sleeping a fixed period after each send drifts by the work done in between; deadlines do
    not. After a stall longer than `MAX_LAG` the missed ticks are skipped (and reported) so the
    peer never receives a burst of stale media.
    """

    def __init__(self, period: float) -> None:
        self._period = period
        self._origin: float | None = None  # monotonic time of tick 0 of the current period
        self._base = 0.0  # media time at the origin, carried over period changes
        self._ticks = 0

    @property
    def period(self) -> float:
        return self._period

    @property
    def elapsed(self) -> float:
        """Media time of the current tick, in seconds since the first tick."""
        return self._base + self._ticks * self._period

    @property
    def ticks(self) -> int:
        """Ticks since the last period change (including skipped ones)."""
        return self._ticks

    def set_period(self, period: float) -> None:
        """Change the tick period from the next tick on, keeping media time continuous."""
        if period == self._period:
            return
        if self._origin is not None:
            self._origin += self._ticks * self._period
            self._base = self.elapsed
            self._ticks = 0
        self._period = period

    async def tick(self) -> int:
        """Wait for the next deadline; return how many ticks were skipped to catch up."""
        now = time.monotonic()
        if self._origin is None:
            self._origin = now
            return 0
        self._ticks += 1
        deadline = self._origin + self._ticks * self._period
        skipped = 0
        if now - deadline > MAX_LAG:
            skipped = int((now - deadline) / self._period)
            self._ticks += skipped
            deadline += skipped * self._period
        delay = deadline - now
        if delay > 0:
            await asyncio.sleep(delay)
        return skipped
