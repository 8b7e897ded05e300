"""The callers of density.py: N calls to the bot from one process, made as cheap as possible
(a prompt encoded once, packets kept as they arrive and decoded only once the window is over),
timing every packet that arrives and judging every call with checker.py.

Prints CONNECTED <seconds to set up>, MEASURE START, MEASURE END, then RESULT <json>.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import time

import numpy as np
from _common import LagProbe, percentile
from checker import EDGE_PACKETS, PACKET_SECONDS, CallMeasurement, Limits, check_call, measure

from callbot import Bot, Call
from callbot.config import CallConfig

RATE = 48000
BATCH = 10  # calls set up at once
REASONS_SHOWN = 3


class Arrivals:
    """A packet sink noting when each packet arrived, its media time and its payload."""

    def __init__(self) -> None:
        self.arrived: list[float] = []
        self.pts: list[int] = []
        self.payloads: list[bytes] = []

    def write_packet(self, payload: bytes, pts: int) -> None:
        self.arrived.append(time.monotonic())
        self.pts.append(pts)
        self.payloads.append(payload)

    def end(self) -> None:
        pass


class Window:
    """The measurement window: every call's packets from the bot, from now until `close()`."""

    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls
        self.sinks = [Arrivals() for _ in calls]
        for call, sink in zip(calls, self.sinks, strict=True):
            call._incoming["audio"].add_packet_sink(sink)
        self.start = time.monotonic()
        self.end = math.inf

    def close(self) -> None:
        self.end = time.monotonic()
        for call, sink in zip(self.calls, self.sinks, strict=True):
            call._incoming["audio"].remove_packet_sink(sink)

    def measurements(self, frequency: float) -> list[CallMeasurement]:
        """Each call's measurements for checker.py (decodes what arrived: after the window)."""
        return [
            measure(self.start, self.end, s.arrived, list(zip(s.pts, s.payloads, strict=True)),
                    frequency)
            for s in self.sinks
        ]  # fmt: skip


def drift_per_minute(arrived: np.ndarray, offsets: np.ndarray) -> float:
    """How fast lateness grows (s per minute): the median offset of the last quarter of the
    window minus that of the first, over the time between them. Medians, so that one stall
    or burst (load noise, not drift) does not pass for a trend as it would in a line fit."""
    quarter = len(arrived) // 4
    first, last = slice(0, quarter), slice(len(arrived) - quarter, None)
    span = np.median(arrived[last]) - np.median(arrived[first])
    return float((np.median(offsets[last]) - np.median(offsets[first])) / span * 60)


def analyse(window: Window, frequency: float) -> dict[str, object]:
    """Lateness, drift and gaps of what arrived, over all calls, and each call's verdict."""
    lateness: list[float] = []
    drifts: list[float] = []
    missing = expected = 0
    for sink in window.sinks:
        slots = round((window.end - window.start) / PACKET_SECONDS)
        expected += slots
        missing += max(0, slots - EDGE_PACKETS - len(set(sink.pts)))
        if len(sink.pts) < 10:
            continue
        arrived = np.array(sink.arrived)
        media = np.array(sink.pts) / RATE
        offsets = arrived - media  # constant for a stream that arrives in real time
        lateness.extend((offsets - offsets.min()).tolist())
        drifts.append(drift_per_minute(arrived, offsets))
    verdicts = [check_call(m, Limits()) for m in window.measurements(frequency)]
    failed = [f"call {i}: {'; '.join(v)}" for i, v in enumerate(verdicts) if v]
    return {
        "lateness_p50_ms": percentile(lateness, 50) * 1000,
        "lateness_p99_ms": percentile(lateness, 99) * 1000,
        "lateness_max_ms": max(lateness, default=float("nan")) * 1000,
        "drift_ms_per_min": max((abs(d) for d in drifts), default=float("nan")) * 1000,
        "missing_share": missing / expected if expected else 1.0,
        "packets": sum(len(s.pts) for s in window.sinks),
        "failed_calls": len(failed),
        "failures": failed[:REASONS_SHOWN],
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
        count = min(BATCH, args.calls - first)
        video = args.video is not None
        batch = await asyncio.gather(*(caller.call(args.bot, video=video) for _ in range(count)))
        await asyncio.gather(*(call.wait_connected(60) for call in batch))
        for call in batch:  # at once: the bot ends a call that hears nothing for 10 s
            call.send_audio_file(args.prompt, loop=True)
            if args.video:
                call.send_video_file(args.video, loop=True)
        calls += batch
    print(f"CONNECTED {time.monotonic() - started:.2f}", flush=True)
    probe = LagProbe()
    probe.start()
    await asyncio.sleep(args.warmup)
    window = Window(calls)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("MEASURE START", flush=True)
    await asyncio.sleep(args.seconds)
    window.close()
    print("MEASURE END", flush=True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = analyse(window, args.tone)
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
    parser.add_argument("--tone", type=float, required=True, help="the bot's prompt (Hz)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--video", metavar="CLIP", help="video calls: send this silent clip too")
    asyncio.run(main(parser.parse_args()))
