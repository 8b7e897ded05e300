"""Concurrent G.711 SIP calls per bot process, SIPp as the load generator.

The bot (`callbot run benchmarks/bots/sip_bot.py`, one process) answers every INVITE, loops a
3 s prompt into the call and records what it hears to .wav. SIPp (tests/sip's caller scenario)
places N - 2 calls at 10 calls/s, each streaming a looped 440 Hz PCMU tone, and two Debian
baresip softphones (tests/sip's peers) place the last two, recording what the bot sends them.
All calls are held for the warm-up and the measurement window, then hung up.

Over the window: the bot's CPU per call, event-loop lag, clock ticks dropped. From the SIP
stack's final report of every call: frames it sent as silence or padded because the bot wrote
nothing in time (`silence`, `starved`) and received bytes it skipped because the bot read too
slowly (`discarded`). Then whether every recording carries the callers' tone in every 0.1 s
after its first second (`recorded ok`), and whether the softphones heard the bot's prompt in
every 0.1 s of the window (`heard ok`: a late or stalled bot leaves gaps there).

Linux, loopback only: run it inside a network namespace, e.g.
`unshare -n sh -c 'ip link set lo up && .venv/bin/python benchmarks/sip_density.py'`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "sip"))  # the SIPp driver and its scenarios

from _common import cpu_seconds, machine, process_tree, rss_mb, table  # noqa: E402
from baresip_peer import BaresipPeer, PeerConfig  # noqa: E402
from sip_media import HOST, free_port, write_mulaw_wav, write_pcm_wav  # noqa: E402
from sipp_peer import Sipp, render  # noqa: E402

from callbot.media import analysis  # noqa: E402

PROMPT_HZ, CALLER_HZ = 1000.0, 440.0
RATE = 10  # new calls per second
MONITORS = 2  # calls placed by baresip softphones that record what the bot sends


@dataclass
class Point:
    calls: int
    cpu_per_call: float = float("nan")
    cpu_total: float = float("nan")
    lag_p99_ms: float = float("nan")
    dropped: int = 0
    starved: int = 0
    discarded: int = 0
    reports: int = 0
    recordings_ok: int = 0
    heard_ok: int = 0
    silence: int = 0
    rss_per_call_mb: float = float("nan")
    sipp_ok: bool = False
    sipp_cpu: float = float("nan")
    notes: list[str] = field(default_factory=list)

    @property
    def real_time(self) -> bool:
        return (
            self.sipp_ok and self.lag_p99_ms < 60 and not self.dropped and not self.starved
            and not self.discarded and self.reports == self.calls
            and self.recordings_ok == self.calls and self.heard_ok == MONITORS
        )  # fmt: skip


def bot_figures(stats: Path) -> dict[str, Any]:
    """The bot process's latest figures (bots/sip_bot.py writes them twice a second)."""
    for path in stats.glob("[0-9]*.json"):
        return dict(json.loads(path.read_text()))
    return {}


def tone_everywhere(
    path: Path, frequency: float, start: float = 1.0, seconds: float | None = None
) -> bool:
    """Whether every 0.1 s of the recording from `start` (for `seconds`, else to its end)
    carries `frequency` at -30 dBFS or more (a gap, a stall or silence fails it)."""
    clip = analysis.load_audio(path)
    size = clip.rate // 10
    end = None if seconds is None else int((start + seconds) * clip.rate)
    samples = clip.samples[int(start * clip.rate) : end]
    if len(samples) < size * 10:
        return False
    blocks = samples[: len(samples) // size * size].reshape(-1, size)
    return all(analysis.tone_level_db(np.asarray(b), frequency, clip.rate) >= -30 for b in blocks)


class Harness:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work, self.args = work, args
        self.prompt = write_pcm_wav(work / "prompt.wav", PROMPT_HZ, 3.0, 48000)
        self.tone = write_mulaw_wav(work / "caller.wav", CALLER_HZ, 2.0)

    async def measure(self, calls: int) -> Point:
        point = Point(calls)
        run = self.work / f"sip-{calls}"
        stats, recordings = run / "stats", run / "recordings"
        stats.mkdir(parents=True)
        recordings.mkdir()
        sip_port = free_port()
        env = {
            **os.environ, "BENCH_PROMPT": str(self.prompt), "BENCH_RECORDINGS": str(recordings),
            "BENCH_STATS": str(stats), "BENCH_WINDOW": str(self.args.seconds),
            "PYTHONPATH": str(HERE),
        }  # fmt: skip
        command = [sys.executable, "-m", "callbot", "run", str(HERE / "bots" / "sip_bot.py"),
                   "--sip", f"sip:bench@{HOST}:{sip_port}",
                   "--port", str(free_port(socket.SOCK_STREAM))]  # fmt: skip
        with (run / "bot.log").open("wb") as log:
            bot = subprocess.Popen(command, env=env, cwd=HERE.parent, stdout=log, stderr=log)
        try:
            await self._wait(lambda: list(stats.glob("[0-9]*.json")), bot, "the bot to start")
            rss_before = rss_mb(process_tree(bot.pid))
            await self._drive(point, bot, stats, sip_port, run)
            point.rss_per_call_mb = (rss_mb(process_tree(bot.pid)) - rss_before) / calls
        finally:
            bot.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(bot.wait, 30)
            except subprocess.TimeoutExpired:
                bot.kill()
                bot.wait()
        self._collect(point, stats, recordings)
        return point

    async def _drive(
        self, point: Point, bot: subprocess.Popen[bytes], stats: Path, sip_port: int, run: Path
    ) -> None:
        """Place the calls; measure the bot's CPU over the window once all are up."""
        ramp = point.calls / RATE
        hold_ms = int((ramp + self.args.warmup + self.args.seconds + 3) * 1000)
        scenario = render(
            "uac.xml", run / "uac.xml", tone=self.tone, digit_steps="", digits_after_ms=0,
            hold_ms=hold_ms, reinvite_ms=1000,
        )  # fmt: skip
        loaded = point.calls - MONITORS
        sipp = Sipp(
            run / "sipp", scenario, target=f"{HOST}:{sip_port}", service="bench",
            calls=loaded, timeout=hold_ms / 1000 + ramp + 30,
            extra=("-r", str(RATE), "-l", str(loaded)),
        )  # fmt: skip
        seconds = hold_ms / 1000 + 10
        caller_tone = write_pcm_wav(run / "monitor.wav", CALLER_HZ, seconds)  # as SIPp's calls
        monitors = [BaresipPeer(run / f"monitor-{i}", PeerConfig(user=f"monitor{i}",
                    play=caller_tone, call_seconds=seconds)) for i in range(MONITORS)]  # fmt: skip
        await sipp.start()
        assert sipp.process is not None
        try:
            figures_of = partial(bot_figures, stats)
            await self._wait(lambda: figures_of().get("calls", 0) >= loaded, bot,
                             f"{loaded} calls up", timeout=ramp + 30)  # fmt: skip
            for monitor in monitors:
                await monitor.start()
                await monitor.dial(f"sip:bench@{HOST}:{sip_port}")
                await monitor.wait_established()
            await asyncio.sleep(self.args.warmup)
            bot_pids, sipp_pids = process_tree(bot.pid), [sipp.process.pid]
            start, bot_cpu, sipp_cpu = (
                time.monotonic(),
                cpu_seconds(bot_pids),
                cpu_seconds(sipp_pids),
            )
            dropped = figures_of().get("dropped", 0)
            await asyncio.sleep(self.args.seconds)
            elapsed = time.monotonic() - start
            point.cpu_total = (cpu_seconds(bot_pids) - bot_cpu) / elapsed
            point.cpu_per_call = 100 * point.cpu_total / point.calls
            point.sipp_cpu = (cpu_seconds(sipp_pids) - sipp_cpu) / elapsed
            figures = figures_of()
            point.dropped = figures.get("dropped", 0) - dropped
            point.lag_p99_ms = figures.get("lag_p99", float("nan")) * 1000
            for monitor in monitors:
                await monitor.hangup()
                await monitor.wait_closed()
                # the window, as the softphone heard it (its recording began at the warm-up's start)
                heard = monitor.recordings()[0]
                window = (self.args.warmup, self.args.seconds)
                point.heard_ok += tone_everywhere(heard, PROMPT_HZ, *window)
            await sipp.wait()
            point.sipp_ok = True
        except Exception as exc:  # a failed point is reported in the table, not raised
            point.notes.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        finally:
            await sipp.stop()
            for monitor in monitors:
                await monitor.stop()
        await asyncio.sleep(1.0)  # the last calls' reports reach calls.jsonl

    @staticmethod
    async def _wait(
        ready: Callable[[], object], bot: subprocess.Popen[bytes], what: str, timeout: float = 60
    ) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if bot.poll() is not None:
                raise RuntimeError(f"the bot exited with {bot.returncode} waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            await asyncio.sleep(0.2)

    @staticmethod
    def _collect(point: Point, stats: Path, recordings: Path) -> None:
        """The SIP stack's final reports and the recordings' verdicts."""
        reports_path = stats / "calls.jsonl"
        lines = reports_path.read_text().splitlines() if reports_path.exists() else []
        reports = [json.loads(line)["sip"] for line in lines]
        point.reports = len(reports)
        point.starved = sum(r.get("audio_tx_starved_frames", 0) for r in reports)
        point.discarded = sum(r.get("audio_rx_discarded_bytes", 0) for r in reports)
        point.silence = sum(r.get("audio_tx_silence_frames", 0) for r in reports)
        point.recordings_ok = sum(
            tone_everywhere(path, CALLER_HZ) for path in recordings.glob("*.wav")
        )


HEADERS = ["calls", "cpu/call %", "cpu total", "lag p99 ms", "dropped", "silence",
           "starved", "discarded", "recorded ok", "heard ok", "rss/call MB", "sipp cpu",
           "real time"]  # fmt: skip


def row(p: Point) -> list[object]:
    return [p.calls, p.cpu_per_call, p.cpu_total, p.lag_p99_ms, p.dropped, p.silence,
            p.starved, p.discarded, f"{p.recordings_ok}/{p.calls}", f"{p.heard_ok}/{MONITORS}",
            p.rss_per_call_mb, p.sipp_cpu, "yes" if p.real_time else "no"]  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="10,25,50", help="Comma-separated call counts.")
    parser.add_argument("--warmup", type=float, default=5.0, help="Seconds before measuring.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Measurement window (s).")
    parser.add_argument("--json", type=Path, help="Also write the points to this file.")
    parser.add_argument("--keep", type=Path, help="Work (logs, recordings) here, and keep it.")
    args = parser.parse_args()
    print(machine())
    points = []
    with tempfile.TemporaryDirectory(prefix="sip-density-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        harness = Harness(work, args)
        for calls in map(int, args.calls.split(",")):
            point = await harness.measure(calls)
            points.append(point)
            print(table(HEADERS, [row(point)]).splitlines()[-1], *point.notes, flush=True)
    print(table(HEADERS, map(row, points)))
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in points], indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
