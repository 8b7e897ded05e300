"""What the benchmark bots report to density.py: a JSON file per process, rewritten twice a
second (calls, audio slots dropped, event-loop lag p99 over the measurement window)."""

from __future__ import annotations

import asyncio
import json
import os
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

    def ensure_started(self) -> None:
        if self._task is None:
            self._probe.start()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            lags = self._probe.recent(self._window)
            figures = {"lag_p99": percentile(lags, 99), "lag_max": max(lags, default=0.0)}
            figures.update(self._figures())
            temporary = self._path.with_suffix(".tmp")
            temporary.write_text(json.dumps(figures))
            temporary.replace(self._path)
            await asyncio.sleep(0.5)
