"""What the benchmark bots report to density.py: a JSON file per process, rewritten twice a
second (calls, audio slots dropped, event-loop lag p99 and the longest garbage collection over
the measurement window)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import LagProbe, percentile


class StatsWriter:
    def __init__(self, figures: Callable[[], dict[str, Any]]) -> None:
        self.prompt = Path(os.environ["BENCH_PROMPT"])
        self.recordings = Path(os.environ["BENCH_RECORDINGS"])
        self._path = Path(os.environ["BENCH_STATS"]) / f"{os.getpid()}.json"
        self._window = float(os.environ.get("BENCH_WINDOW", "20"))
        self._figures = figures
        self._probe = LagProbe()
        self._task: asyncio.Task[None] | None = None
        self._collections: deque[tuple[float, int, float]] = deque(maxlen=10_000)
        self._collecting = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """Times every collection (generation, pause) to tell GC stalls from others."""
        now = time.perf_counter()
        if phase == "start":
            self._collecting = now
        else:
            self._collections.append((time.monotonic(), info["generation"], now - self._collecting))

    def ensure_started(self) -> None:
        if self._task is None:
            self._probe.start()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            lags = self._probe.recent(self._window)
            since = time.monotonic() - self._window
            pauses = [(g, d) for at, g, d in self._collections if at >= since]
            figures = {
                "lag_p99": percentile(lags, 99),
                "lag_max": max(lags, default=0.0),
                "gc_max": max((d for _, d in pauses), default=0.0),
                "gc_full": sum(g == 2 for g, _ in pauses),
            }
            figures.update(self._figures())
            temporary = self._path.with_suffix(".tmp")
            temporary.write_text(json.dumps(figures))
            temporary.replace(self._path)
            await asyncio.sleep(0.5)
