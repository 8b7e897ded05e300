"""The callers of density.py: N calls to the bot from one process, made as cheap as possible
(a prompt encoded once, packets never decoded), timing every packet that arrives.

Prints CONNECTED <seconds to set up>, MEASURE START, MEASURE END, then RESULT <json>.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import numpy as np
from _common import LagProbe, percentile

from callbot import Bot, Call
from callbot.config import CallConfig

RATE = 48000
BATCH = 10  # calls set up at once


class Arrivals:
    """A packet sink noting when each packet arrived and its media time."""

    def __init__(self) -> None:
        self.arrived: list[float] = []
        self.pts: list[int] = []

    def write_packet(self, payload: bytes, pts: int) -> None:
        self.arrived.append(time.monotonic())
        self.pts.append(pts)

    def end(self) -> None:
        pass


def drift_per_minute(arrived: np.ndarray, offsets: np.ndarray) -> float:
    """How fast lateness grows (s per minute): the median offset of the last quarter of the
    window minus that of the first, over the time between them. Medians, so that one stall
    or burst (load noise, not drift) does not pass for a trend as it would in a line fit."""
    quarter = len(arrived) // 4
    first, last = slice(0, quarter), slice(len(arrived) - quarter, None)
    span = np.median(arrived[last]) - np.median(arrived[first])
    return float((np.median(offsets[last]) - np.median(offsets[first])) / span * 60)


def analyse(sinks: list[Arrivals], seconds: float) -> dict[str, float]:
    """Lateness, drift and gaps of what arrived, over all calls."""
    lateness: list[float] = []
    drifts: list[float] = []
    missing = expected = 0
    for sink in sinks:
        if len(sink.pts) < 10:
            missing += round(seconds * 50)
            expected += round(seconds * 50)
            continue
        arrived = np.array(sink.arrived)
        media = np.array(sink.pts) / RATE
        offsets = arrived - media  # constant for a stream that arrives in real time
        lateness.extend((offsets - offsets.min()).tolist())
        drifts.append(drift_per_minute(arrived, offsets))
        span = (max(sink.pts) - min(sink.pts)) // 960 + 1
        expected += span
        missing += span - len(set(sink.pts))
    return {
        "lateness_p50_ms": percentile(lateness, 50) * 1000,
        "lateness_p99_ms": percentile(lateness, 99) * 1000,
        "lateness_max_ms": max(lateness, default=float("nan")) * 1000,
        "drift_ms_per_min": max((abs(d) for d in drifts), default=float("nan")) * 1000,
        "missing_share": missing / expected if expected else 1.0,
        "packets": sum(len(s.pts) for s in sinks),
    }


async def main(args: argparse.Namespace) -> None:
    caller = Bot(
        args.user, server=args.url, token=args.token, role="user",
        config=CallConfig(media_timeout=0),
    )  # fmt: skip
    await caller.start()
    started = time.monotonic()
    calls: list[Call] = []
    for first in range(0, args.calls, BATCH):
        batch = await asyncio.gather(
            *(caller.call(args.bot) for _ in range(min(BATCH, args.calls - first)))
        )
        await asyncio.gather(*(call.wait_connected(60) for call in batch))
        calls += batch
    print(f"CONNECTED {time.monotonic() - started:.2f}", flush=True)
    for call in calls:
        call.send_audio_file(args.prompt, loop=True)
    probe = LagProbe()
    probe.start()
    await asyncio.sleep(args.warmup)
    sinks = [Arrivals() for _ in calls]
    for call, sink in zip(calls, sinks, strict=True):
        call._incoming["audio"].add_packet_sink(sink)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("MEASURE START", flush=True)
    await asyncio.sleep(args.seconds)
    print("MEASURE END", flush=True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    for call, sink in zip(calls, sinks, strict=True):
        call._incoming["audio"].remove_packet_sink(sink)
    result = analyse(sinks, args.seconds)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    result["callers_cpu"] = cpu / args.seconds
    result["callers_lag_p99_ms"] = percentile(probe.recent(args.seconds), 99) * 1000
    result["ended_early"] = sum(call.state == "ended" for call in calls)
    print("RESULT " + json.dumps(result), flush=True)
    await asyncio.gather(*(call.hangup() for call in calls), return_exceptions=True)
    await caller.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--user", default="bench-caller")
    parser.add_argument("--bot", default="bench")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    asyncio.run(main(parser.parse_args()))
