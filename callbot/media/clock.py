"""Pacing on absolute deadlines from a monotonic clock (no drift, no burst after a stall)."""

from __future__ import annotations

import asyncio
import time
from collections import deque

#: Further behind than this, a pacer skips the missed ticks instead of sending them in a burst.
MAX_LAG = 0.1
#: A ticker's caller less late than this gets the missed tick at once (sent a little late)
#: rather than dropped: a short stall (a busy core, a garbage collection) must not cost audio,
#: and receivers' jitter buffers absorb 100 ms; a longer one drops ticks instead of queueing.
CATCH_UP = 0.1


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


class Ticker:
    """One clock for every audio track of the process: all wake on the same 20 ms deadlines.

    With a timer per track, N calls cost N timers every 20 ms; here one timer wakes all the
    waiting tracks in a single loop iteration. A track that could not keep up (the process is
    overloaded) simply gets the current tick: the ticks it missed are counted as dropped
    frames (`dropped`, all tracks together), never queued into lateness. `lag` is how late the
    last wake-up was: the event loop's lag, as seen from the media's point of view.
    """

    #: Wake-ups kept for `lag_percentile` (10 s of ticks).
    LAG_WINDOW = 500

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.lag = 0.0
        self.max_lag = 0.0
        self.dropped = 0
        self._lags: deque[float] = deque(maxlen=self.LAG_WINDOW)
        self._origin: float | None = None
        self._next: asyncio.Future[int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Monotonic deadline of the tick being waited for, None when none is: a deadline
        #: long past means the loop is held (callbot.watchdog reads it from its thread).
        self.due: float | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the clock last ticked on."""
        return self._loop

    def now_index(self) -> int:
        """The index of the latest tick that is due."""
        if self._origin is None:
            self._origin = time.monotonic()
        return int((time.monotonic() - self._origin) / self.period)

    async def next(self, previous: int | None = None) -> int:
        """Wait for the next tick; returns its index (ticks are numbered from the origin).

        `previous` is the tick the caller handled last. A caller back after the following tick
        was due (work or a stall in between) gets it at once if it is less than `CATCH_UP`
        late, else the current tick (the ones in between are dropped); either way the lateness
        counts as lag.
        """
        if previous is not None and self._origin is not None:
            due = previous + 1
            behind = time.monotonic() - (self._origin + due * self.period)
            if behind > 0:
                self._record(behind)
                await asyncio.sleep(0)  # let the loop breathe between back-to-back ticks
                return due if behind < CATCH_UP else max(due, self.now_index())
        loop = asyncio.get_running_loop()
        if self._next is None or self._next.done() or self._loop is not loop:
            self._loop = loop
            self._next = loop.create_future()
            index = self.now_index() + 1
            assert self._origin is not None
            self.due = self._origin + index * self.period
            loop.call_at(loop.time() + (self.due - time.monotonic()), self._fire, index)
        return await asyncio.shield(self._next)

    def lag_percentile(self, percent: float) -> float:
        """The `percent`-th percentile of the lag over the last ~10 s of ticks (0 if idle)."""
        if not self._lags:
            return 0.0
        ordered = sorted(self._lags)
        return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]

    def _record(self, lag: float) -> None:
        self.lag = lag
        self.max_lag = max(self.max_lag, lag)
        self._lags.append(lag)

    def _fire(self, index: int) -> None:
        assert self._origin is not None
        late = max(0.0, time.monotonic() - (self._origin + index * self.period))
        self.due = None
        self._record(late)
        future, self._next = self._next, None
        if future is not None and not future.done():  # a timer a little late still gets its tick
            future.set_result(index if late < CATCH_UP else max(index, self.now_index()))


#: The audio clock of this process.
AUDIO_TICKER = Ticker()
