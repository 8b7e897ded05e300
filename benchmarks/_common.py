"""Shared by the benchmarks: process CPU and memory from /proc, an event-loop lag probe,
percentiles, tables and a description of the machine. Linux only (reads /proc)."""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

import aiortc
import av

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Benchmarks stay on this machine: every call gathers loopback candidates only.
os.environ.setdefault("CALLBOT_ICE_ADDRESSES", "127.0.0.1")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (e.g. the workers of `callbot run --workers N`)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time consumed so far by `pids` (seconds)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_mb(pids: Iterable[int]) -> float:
    """Resident memory of `pids` together (MB)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
    return total * PAGE_SIZE / 2**20


def percentile(values: Sequence[float], percent: float) -> float:
    """The `percent`-th percentile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * percent / 100) - 1))]


class LagProbe:
    """Measures the event loop's lag: a timer every `period` s, how late it runs."""

    def __init__(self, period: float = 0.01, keep: float = 120.0) -> None:
        self._period = period
        self._samples: deque[tuple[float, float]] = deque(maxlen=int(keep / period))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self._period
            await asyncio.sleep(self._period)
            now = loop.time()
            self._samples.append((time.monotonic(), max(0.0, now - due)))

    def recent(self, seconds: float) -> list[float]:
        """Lags measured over the last `seconds`."""
        since = time.monotonic() - seconds
        return [lag for at, lag in self._samples if at >= since]


def machine() -> str:
    """One line describing where the numbers come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} x {cpu}; Linux {platform.release()}; "
        f"Python {platform.python_version()}; aiortc {aiortc.__version__}; PyAV {av.__version__}"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table, columns right-aligned."""
    cells = [list(map(str, headers))] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "-" if value is None else str(value)
