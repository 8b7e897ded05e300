"""RTCP sender and receiver reports of every fast-path audio call of a process, in one pass.

aiortc runs a task per RTP sender and one per receiver, each waking every 0.5-1.5 s (RFC 3550
section 6.2's randomised interval, https://www.rfc-editor.org/rfc/rfc3550#section-6.2) to
send one report down three awaits. At a hundred calls that is two hundred timers and task
switches a second. Here one task per event loop wakes every `GRANULE` s and sends every report
due: each built as aiortc builds it (the same packets, the sender noting its report's time for
round-trip times), protected and sent without awaiting. Every sender and receiver keeps its
own randomised interval (in steps of the granule). A stopping sender still sends its BYE, as
aiortc's task does. The internals involved are reached through `callbot._compat`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import weakref
from collections.abc import Callable
from typing import Any

from .._compat import rtp
from ..safe import get_logger

logger = get_logger(__name__)

GRANULE = 0.1  # s between passes


class _End:
    """One sender or receiver: how to build its report, and where to send it."""

    __slots__ = ("build", "dtls")

    def __init__(self, build: Callable[[], bytes | None], dtls: Any) -> None:
        self.build = build
        self.dtls = dtls

    def report(self) -> None:
        payload = self.build()
        if payload is not None:
            rtp.send_rtcp_now(self.dtls, payload)


class _Pass:
    """Every reporting end of one event loop, by when its next report is due."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _End]] = []
        self._order = itertools.count()  # ties: first come, first served
        self._task: asyncio.Task[None] | None = None

    def add(self, end: _End) -> None:
        loop = asyncio.get_running_loop()
        self._schedule(end, loop.time())
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="callbot-rtcp")

    def remove(self, end: _End) -> None:
        """Forget `end` now: an ended call's objects are freed at once, not at its next due."""
        self._due = [entry for entry in self._due if entry[2] is not end]
        heapq.heapify(self._due)

    def _schedule(self, end: _End, now: float) -> None:
        heapq.heappush(self._due, (now + 0.5 + random.random(), next(self._order), end))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due:
            await asyncio.sleep(GRANULE)
            now = loop.time()
            while self._due and self._due[0][0] <= now:
                end = heapq.heappop(self._due)[2]
                try:
                    end.report()
                except Exception:  # one call's bug must not stop the others' reports
                    logger.exception("sending an RTCP report failed; that call sends no more")
                    continue
                self._schedule(end, now)


_PASSES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pass] = weakref.WeakKeyDictionary()


def _pass() -> _Pass:
    loop = asyncio.get_running_loop()
    found = _PASSES.get(loop)
    if found is None:
        found = _PASSES[loop] = _Pass()
    return found


def report_in_pass(end: Any, build: Callable[[Any], bytes | None]) -> None:
    """Have `end` (an aiortc sender or receiver about to start) send its RTCP reports,
    `build(end)`, in the process's pass instead of its own task."""

    async def run_rtcp() -> None:
        rtp.rtcp_task_started(end)
        reporting, reports = _End(lambda: build(end), end.transport), _pass()
        reports.add(reporting)
        try:
            await asyncio.get_running_loop().create_future()  # until stop() cancels the task
        except asyncio.CancelledError:
            pass
        finally:
            reports.remove(reporting)
        if build is rtp.sender_report:
            await rtp.send_bye(end)
        rtp.rtcp_task_exited(end)

    rtp.replace_rtcp_task(end, run_rtcp)
