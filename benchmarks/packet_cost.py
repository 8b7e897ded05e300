"""What one audio packet costs callbot: process CPU time per packet, both ends in one process.

N in-process call pairs (callbot to callbot, no relay) each play a looped prompt both ways;
every callee also records what it hears to .ogg, as the density bot does. After a warm-up the
process's CPU time (getrusage: user + system, all threads) is read over a window, R times, and
divided by the packets sent in it (50 per second per direction per call): each packet is sent,
received and (one direction of two) recorded in this process, so the figure is the whole
per-packet path. CPU time, not wall time: on a shared machine other processes slow a run down
but charge little to this one's CPU. `--profile` prints the functions taking the most of it.

    python benchmarks/packet_cost.py                    # 20 calls, 3 windows of 10 s
    python benchmarks/packet_cost.py --calls 50 --seconds 10 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import resource
import statistics
import tempfile
import time
from pathlib import Path

from _common import machine

from callbot.call import Call
from callbot.config import CallConfig
from callbot.direct import connect_direct
from callbot.testing import generate

PACKETS_PER_SECOND = 50  # 20 ms Opus


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _connect(count: int, prompt: Path, out: Path) -> list[tuple[Call, Call]]:
    config = CallConfig(media_timeout=0)
    pairs = []
    for index in range(count):
        caller, callee = await connect_direct(caller_config=config, callee_config=config)
        caller.send_audio_file(prompt, loop=True)
        callee.send_audio_file(prompt, loop=True)
        callee.record_incoming(audio_path=out / f"{index}.ogg")
        pairs.append((caller, callee))
    return pairs


async def _window(seconds: float) -> tuple[float, float]:
    """CPU seconds and wall seconds over one window."""
    cpu, wall = _cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    return _cpu() - cpu, time.monotonic() - wall


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="callbot-cost-") as work:
        out = Path(work)
        prompt = generate.write_tone(out / "prompt.wav", 440.0, seconds=3.0)
        pairs = await _connect(args.calls, prompt, out)
        await asyncio.sleep(args.warmup)
        profile = cProfile.Profile() if args.profile else None
        per_packet = []
        for _ in range(args.repeat):
            if profile is not None:
                profile.enable()
            cpu, wall = await _window(args.seconds)
            if profile is not None:
                profile.disable()
            packets = 2 * args.calls * PACKETS_PER_SECOND * wall
            per_packet.append(cpu / packets * 1e6)
            print(
                f"window: {cpu / wall * 100:.1f} % of a core, {cpu / wall / args.calls * 100:.3f}"
                f" % per call pair, {per_packet[-1]:.1f} µs per packet",
                flush=True,
            )
        ended = sum(c.state == "ended" for pair in pairs for c in pair)
        for pair in pairs:
            for call in pair:
                with contextlib.suppress(Exception):
                    await call.hangup()
    print(
        f"{args.calls} call pairs, {args.repeat} x {args.seconds:g} s: µs of CPU per packet "
        f"(sent, received, recorded) min {min(per_packet):.1f} median "
        f"{statistics.median(per_packet):.1f}" + (f"; {ended} calls ended early" if ended else "")
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(*args.only, args.profile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="call pairs")
    parser.add_argument("--seconds", type=float, default=10.0, help="one window")
    parser.add_argument("--repeat", type=int, default=3, help="windows")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N functions with the most own time")  # fmt: skip
    parser.add_argument("--sort", default="tottime", help="profile order (pstats key)")
    parser.add_argument("--only", nargs="*", default=[], help="profile: functions matching")
    asyncio.run(main(parser.parse_args()))
