"""Who blocked the event loop: a watchdog thread on the media clock.

Every call of a process shares one event loop, so a handler that blocks it (`time.sleep`, a
slow synchronous HTTP request, heavy computation) silences every other call's audio. The media
clock (`media.clock.AUDIO_TICKER`) already measures how late its 20 ms ticks fire; this thread
watches its pending tick, and when that tick is overdue by `BLOCKED_WARNING` it samples the
task holding the loop. When the tick finally fires it logs a WARNING with the call that task
works for (see `attribute`) and how long the loop was held. Only a loop that carries audio is
watched: an idle clock has no deadline to miss.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from dataclasses import dataclass

from .media.clock import AUDIO_TICKER, Ticker
from .safe import get_logger

logger = get_logger(__name__)

#: A tick this late (s) means the loop is held: reported. Audio already drops past 0.1 s (see
#: media.clock.CATCH_UP); a higher bar keeps scheduler hiccups of a busy host out of the logs.
BLOCKED_WARNING = 0.5
#: How often the watchdog thread looks at the clock (s).
POLL_INTERVAL = 0.05

#: task -> the id of the call it works for (a bot's per-call tasks and handlers).
_owners: weakref.WeakKeyDictionary[asyncio.Task[object], str] = weakref.WeakKeyDictionary()


def attribute(task: asyncio.Task[object] | None, call_id: str) -> None:
    """Record that `task` works for call `call_id`, so the watchdog can name the call."""
    if task is not None:
        _owners[task] = call_id


@dataclass
class _Stall:
    due: float  # the deadline of the tick that is late
    loop: asyncio.AbstractEventLoop
    task: asyncio.Task[object] | None  # what held the loop when the stall was noticed


class LoopWatchdog:
    """A daemon thread that reports who held the event loop of `ticker` (see module doc)."""

    def __init__(self, ticker: Ticker = AUDIO_TICKER, threshold: float = BLOCKED_WARNING) -> None:
        self.ticker = ticker
        self.threshold = threshold
        self._users = 0
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._stall: _Stall | None = None

    def acquire(self) -> None:
        """Start watching (the first user starts the thread)."""
        with self._lock:
            self._users += 1
            if self._stop is None:
                self._stall = None
                self._stop = threading.Event()
                threading.Thread(
                    target=self._run, args=(self._stop,), name="callbot-watchdog", daemon=True
                ).start()

    def release(self) -> None:
        """Stop watching (the thread ends with the last user)."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._stop is not None:
                self._stop.set()
                self._stop = None

    def _run(self, stop: threading.Event) -> None:
        last = time.monotonic()
        while not stop.wait(POLL_INTERVAL):
            now = time.monotonic()
            # this thread itself ran that late: the whole process was starved of CPU, which
            # is no task's fault
            starved = now - last > POLL_INTERVAL + self.threshold
            last = now
            self.check(now, starved)

    def check(self, now: float, starved: bool = False) -> None:
        """One look at the clock: note a stall that begins, report one that has ended."""
        due, loop = self.ticker.due, self.ticker.loop
        stall = self._stall
        if stall is not None and due != stall.due:
            self._stall = None
            if stall.loop.is_running():  # not a tick left behind by a loop that was stopped
                self._report(stall, now - stall.due)
        late = due is not None and now - due > self.threshold
        if self._stall is None and late and not starved and loop and loop.is_running():
            assert due is not None
            self._stall = _Stall(due, loop, asyncio.current_task(loop))

    def _report(self, stall: _Stall, held: float) -> None:
        task = stall.task
        if task is None:
            culprit = "a callback outside any task"
        else:
            coro = task.get_coro()
            culprit = f"task {task.get_name()} ({getattr(coro, '__qualname__', coro)})"
            call_id = _owners.get(task)
            if call_id is not None:
                culprit = f"call {call_id}: {culprit}"
        logger.warning(
            "event loop blocked for %.2f s by %s: every call's media stalled meanwhile; run "
            "blocking work with `await call.run_blocking(fn, *args)`",
            held,
            culprit,
        )


#: The watchdog of the process's media clock (bots acquire it while they run).
WATCHDOG = LoopWatchdog()
