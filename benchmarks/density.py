"""Density: how many real-time calls one bot process carries, callbot against plain aiortc.

The bot under test answers every call with a looped prompt and records what it receives to
.ogg. It runs in its own process (or `callbot run --workers N` processes), the callers in
others (cheap ones: see density_callers.py), the relay in this one. For each number of calls
N, after a warm-up, over a measurement window:

- bot CPU per call (% of one core) and in total (cores), RSS per call (MB);
- receive lateness p50/p99 (ms): how much later than its media time each packet from the bot
  arrives at the callers, relative to the earliest one of its call;
- drift (ms per minute, the worst call): lateness growing over the window (median lateness
  of its last quarter against its first);
- gaps (share of the window's packets never received) and audio slots the bot dropped;
- the bot's event-loop lag p99 (ms).

`--video`: each side also sends a looped silent 3 s 640x480 30 fps clip (`send_video_file` /
a second aiortc `MediaPlayer`), and the bot records what it receives to .webm (callbot: VP8
stored as received, audio to .ogg; plain aiortc: `MediaRecorder`, decoding and encoding both
tracks). `--load K` runs K busy-looping processes during each
point, as other work on a shared machine would: the bot should then drop audio slots and
count them, not drift. `--repeat R` measures every point R times.

`--pin` (Linux, 2 CPUs or more) keeps the bot and its load generator apart: the bot under test
(every process of `callbot run`, or the plain-aiortc bot) runs on the first half of the CPUs
this process may use, and this process (relay, harness) and the callers it starts on the rest;
with `--load K` the busy processes share the bot's CPUs, so the bot is starved and the callers
are not. It uses `os.sched_setaffinity`: on this process, which the callers inherit, and in
the bot's and busy processes' children before they exec (inherited by `--workers`' processes).
The CPU sets used are printed and checked on the bot's processes during the window.

"real-time" means p99 lateness < 60 ms, drift < 10 ms/min, no gaps, no drops, and every call
passing checker.py (its window's count of packets arrived, never 0.3 s without one, the prompt's
tone in every 0.1 s of the decoded audio: a bot sending silence, stopping or stuttering fails).
The same harness runs the plain-aiortc bot (bots/plain_aiortc_bot.py) in the same run, and the
CPU ratio between the two is printed. Run it where only loopback is needed (everything binds
127.0.0.1; `unshare -n` as root is a good idea). Plots: --plot DIR (needs matplotlib).

    python benchmarks/density.py                       # the full run (~8 minutes)
    python benchmarks/density.py --callbot 50 --aiortc 20 --seconds 10   # a quick look
    python benchmarks/density.py --video --callbot 10,20 --aiortc 2,4 --workers2 ""
    python benchmarks/density.py --load 2 --callbot 100 --aiortc "" --workers2 ""
    python benchmarks/density.py --pin --callbot 50,100,150 --aiortc 5,10 --workers2 ""
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
from _common import cpu_seconds, machine, process_tree, rss_mb, table

from callbot.signaling.relay import Relay
from callbot.testing import generate

HERE = Path(__file__).resolve().parent
PROMPT_HZ = 440.0  # the bot's prompt, which the callers check for
CALLERS_PER_PROCESS = 150
VIDEO_SIZE = (640, 480)  # callbot's default: its prompt is then sent as cached VP8
REAL_TIME = {"lateness_p99_ms": 60.0, "drift_ms_per_min": 10.0}


@dataclass
class Point:
    impl: str
    workers: int
    calls: int
    video: bool = False
    load: int = 0  # busy-looping processes running beside the bot
    pinned: bool = False  # the bot (and the busy processes) on CPUs of their own: --pin
    cpu_per_call: float = math.nan  # % of one core
    cpu_total: float = math.nan  # cores
    rss_per_call_mb: float = math.nan
    lateness_p50_ms: float = math.nan
    lateness_p99_ms: float = math.nan
    drift_ms_per_min: float = math.nan
    missing_share: float = math.nan
    dropped: int | None = None
    lag_p99_ms: float = math.nan
    callers_cpu: float = math.nan
    setup_s: float = math.nan
    recordings_ok: bool = False
    failed_calls: int | None = None  # calls failing checker.py's verdict
    notes: list[str] = field(default_factory=list)

    @property
    def real_time(self) -> bool:
        return (
            self.lateness_p99_ms < REAL_TIME["lateness_p99_ms"]
            and self.drift_ms_per_min < REAL_TIME["drift_ms_per_min"]
            and self.missing_share == 0
            and not self.dropped
            and self.failed_calls == 0
        )


class Callers:
    """One callers process (density_callers.py), its progress read from its output."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.measuring = asyncio.Event()
        self.measured = asyncio.Event()
        self.result: dict | None = None
        self.setup_s = math.nan
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            word, _, rest = raw.decode().strip().partition(" ")
            if word == "CONNECTED":
                self.setup_s = float(rest)
            elif word == "MEASURE" and rest == "START":
                self.measuring.set()
            elif word == "MEASURE" and rest == "END":
                self.measured.set()
            elif word == "RESULT":
                self.result = json.loads(rest)

    async def finish(self, timeout: float) -> dict:
        await asyncio.wait_for(self._reader, timeout)
        await self.process.wait()
        if self.result is None:
            code = self.process.returncode
            raise RuntimeError(f"a callers process ended without a result (exit {code})")
        return self.result


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the bot under test gets and which the rest (relay, harness, callers) get."""

    bot: frozenset[int]
    rest: frozenset[int]

    @classmethod
    def split(cls, cpus: set[int]) -> Pinning:
        """The first half of `cpus` (at least one) for the bot, the others for the rest."""
        if len(cpus) < 2:
            raise SystemExit(f"--pin needs at least 2 CPUs; this process may use {sorted(cpus)}")
        ordered = sorted(cpus)
        half = len(ordered) // 2
        return cls(frozenset(ordered[:half]), frozenset(ordered[half:]))

    @classmethod
    def here(cls) -> Pinning:
        """The split of the CPUs this process may use (Linux only)."""
        if not hasattr(os, "sched_getaffinity"):
            raise SystemExit("--pin needs Linux (os.sched_setaffinity)")
        return cls.split(os.sched_getaffinity(0))

    def on_bot_cpus(self) -> None:
        """`preexec_fn` of the bot and the busy processes: run on the bot's CPUs."""
        os.sched_setaffinity(0, self.bot)

    def describe(self) -> str:
        bot, rest = _cpus(self.bot), _cpus(self.rest)
        return f"bot (and --load) on CPUs {bot}; relay, harness, callers on {rest}"


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cpus)))


def _off_cpus(pids: list[int], cpus: frozenset[int]) -> list[int]:
    """The processes of `pids` allowed to run beyond `cpus` (a pinning that did not hold)."""
    off = []
    for pid in pids:
        with contextlib.suppress(OSError):  # ended meanwhile
            if not os.sched_getaffinity(pid) <= cpus:
                off.append(pid)
    return off


class Harness:
    def __init__(
        self, relay: Relay, work: Path, args: argparse.Namespace, pinning: Pinning | None
    ) -> None:
        self.relay = relay
        self.work = work
        self.args = args
        self.pinning = pinning
        self.prompt = generate.write_tone(work / "prompt.wav", PROMPT_HZ, seconds=3.0)
        self.callers_prompt = generate.write_tone(work / "callers.wav", 660.0, seconds=2.0)
        self.clip = (
            generate.write_video(work / "clip.webm", 3.0, VIDEO_SIZE, 30, tone=None)
            if args.video
            else None
        )
        self._runs = 0

    @property
    def on_bot_cpus(self) -> Callable[[], None] | None:
        """`preexec_fn` for the bot's and busy processes (None unpinned)."""
        return self.pinning.on_bot_cpus if self.pinning else None

    async def measure(self, impl: str, calls: int, workers: int = 1) -> Point:
        point = Point(impl, workers, calls, self.args.video, self.args.load, self.args.pin)
        self._runs += 1
        run = self.work / f"{self._runs}-{impl}-{workers}-{calls}"
        stats, recordings = run / "stats", run / "recordings"
        stats.mkdir(parents=True)
        recordings.mkdir()
        env = {
            **os.environ,
            "BENCH_PROMPT": str(self.prompt),
            "BENCH_RECORDINGS": str(recordings),
            "BENCH_STATS": str(stats),
            "BENCH_WINDOW": str(self.args.seconds),
            "BENCH_VIDEO": str(self.clip or ""),
            "PYTHONPATH": str(HERE),
        }
        log = (run / "bot.log").open("wb")  # the bot's own log, out of the table's way
        bot = subprocess.Popen(
            self._bot_command(impl, workers), env=env, cwd=HERE.parent, stdout=log, stderr=log,
            preexec_fn=self.on_bot_cpus,
        )  # fmt: skip
        load = [_busy(self.on_bot_cpus) for _ in range(self.args.load)]
        try:
            await self._wait_ready(bot, stats, workers)
            self._rss_before = rss_mb(process_tree(bot.pid))
            await self._drive(point, bot, env)
            figures = [json.loads(p.read_text()) for p in stats.glob("*.json")]
            point.lag_p99_ms = max(f["lag_p99"] for f in figures) * 1000
            gc_max = max(f.get("gc_max", 0.0) for f in figures) * 1000
            if gc_max > 20:
                full = sum(f.get("gc_full", 0) for f in figures)
                point.notes.append(f"longest GC pause {gc_max:.0f} ms ({full} full collections)")
        finally:
            for process in load:
                process.kill()
                process.wait()
            bot.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(bot.wait, 30)
            except subprocess.TimeoutExpired:
                bot.kill()
                bot.wait()
            log.close()
        # reading 100 recordings takes a second or more: off the loop that hosts the relay
        point.recordings_ok = await asyncio.to_thread(self._recordings_ok, recordings, calls, point)
        return point

    def _bot_command(self, impl: str, workers: int) -> list[str]:
        if impl == "callbot":
            token = self.relay.mint("bench", role="bot")
            return [
                sys.executable, "-m", "callbot", "run", str(HERE / "bots" / "callbot_bot.py"),
                "--server", self.relay.url, "--token", token, "--workers", str(workers),
                "--ice-address", "127.0.0.1",
            ]  # fmt: skip
        token = self.relay.mint("bench", role="bot")
        return [sys.executable, str(HERE / "bots" / "plain_aiortc_bot.py"), self.relay.url, token]

    async def _wait_ready(self, bot: subprocess.Popen[bytes], stats: Path, workers: int) -> None:
        deadline = time.monotonic() + 60
        while len(list(stats.glob("*.json"))) < workers:
            if bot.poll() is not None:
                raise RuntimeError(f"the bot exited with {bot.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the bot did not start in 60 s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # every worker welcomed by the relay

    async def _drive(self, point: Point, bot: subprocess.Popen[bytes], env: dict) -> None:
        """Run the callers; measure the bot's CPU over their measurement window."""
        count = max(1, math.ceil(point.calls / CALLERS_PER_PROCESS))
        shares = [point.calls // count + (i < point.calls % count) for i in range(count)]
        callers = []
        for index, share in enumerate(shares):
            user = f"bench-caller-{index}"
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(HERE / "density_callers.py"), "--url", self.relay.url,
                "--token", self.relay.mint(user), "--user", user, "--calls", str(share),
                "--prompt", str(self.callers_prompt), "--warmup", str(self.args.warmup),
                "--seconds", str(self.args.seconds), "--tone", str(PROMPT_HZ),
                *(["--video", str(self.clip)] if self.clip else []),
                stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            callers.append(Callers(process))
        setup_timeout = 60 + point.calls
        await asyncio.wait_for(
            asyncio.gather(*(c.measuring.wait() for c in callers)),
            setup_timeout + self.args.warmup,
        )
        tree = process_tree(bot.pid)
        stats = Path(env["BENCH_STATS"])
        cpu_start, started, drops_start = cpu_seconds(tree), time.monotonic(), _dropped(stats)
        await asyncio.sleep(self.args.seconds / 2)
        rss_during = rss_mb(tree)
        if self.pinning and _off_cpus(tree, self.pinning.bot):
            point.notes.append(f"bot processes not on CPUs {_cpus(self.pinning.bot)}")
        await asyncio.wait_for(
            asyncio.gather(*(c.measured.wait() for c in callers)), self.args.seconds + 60
        )
        # the callers' window closed (they judge what they received next): stop the bot's clock
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(tree) - cpu_start
        drops_end = _dropped(stats)
        results = await asyncio.gather(*(c.finish(120) for c in callers))
        point.cpu_total = cpu / elapsed
        point.cpu_per_call = point.cpu_total / point.calls * 100
        point.rss_per_call_mb = (rss_during - self._rss_before) / point.calls
        point.dropped = None if drops_end is None else drops_end - (drops_start or 0)
        weights = [r["packets"] for r in results]
        point.lateness_p50_ms = max(r["lateness_p50_ms"] for r in results)
        point.lateness_p99_ms = max(r["lateness_p99_ms"] for r in results)
        point.drift_ms_per_min = max(r["drift_ms_per_min"] for r in results)
        point.missing_share = sum(
            r["missing_share"] * w for r, w in zip(results, weights, strict=True)
        ) / max(1, sum(weights))
        point.callers_cpu = sum(r["callers_cpu"] for r in results)
        point.setup_s = max(c.setup_s for c in callers)
        point.failed_calls = sum(r["failed_calls"] for r in results)
        if point.failed_calls:
            first = next(f for r in results for f in r["failures"])
            point.notes.append(f"{point.failed_calls} calls failed checker.py ({first})")
        ended = sum(r["ended_early"] for r in results)
        if ended:
            point.notes.append(f"{ended} calls ended early")
        callers_lag = max(r["callers_lag_p99_ms"] for r in results)
        if callers_lag > 20:
            point.notes.append(f"callers' own loop lag p99 {callers_lag:.0f} ms")

    def _recordings_ok(self, recordings: Path, calls: int, point: Point) -> bool:
        """Every call left a playable recording covering at least the measured window."""
        suffix = ".webm" if self.args.video else ".ogg"
        files = sorted(recordings.glob(f"*{suffix}"))
        if len(files) != calls:
            point.notes.append(f"{len(files)} recordings for {calls} calls")
            return False
        short = 0
        for path in files:
            try:
                with av.open(str(path)) as container:
                    streams = container.streams
                    stream = streams.video[0] if self.args.video else streams.audio[0]
                    last = max((p.pts or 0) for p in container.demux(stream))
                    seconds = float(last * stream.time_base)
            except Exception:
                seconds = 0.0
            short += seconds < self.args.seconds
        if short:
            point.notes.append(f"{short} recordings shorter than the window")
        return short == 0


def _busy(preexec_fn: Callable[[], None] | None) -> subprocess.Popen[bytes]:
    """A process that only burns CPU: the rest of a shared machine's work."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=preexec_fn)


def _dropped(stats: Path) -> int | None:
    """Audio slots the bot's processes dropped so far (None: the bot does not count them)."""
    drops = [json.loads(p.read_text())["dropped"] for p in stats.glob("*.json")]
    return None if None in drops else sum(drops)


HEADERS = (
    "bot", "calls", "cpu/call %", "cpu total", "p50 ms", "p99 ms", "drift ms/min", "gaps %",
    "dropped", "failed", "lag p99 ms", "rss/call MB", "callers cpu", "setup s", "real-time",
    "notes",
)  # fmt: skip


def _row(point: Point) -> list[object]:
    name = point.impl if point.workers == 1 else f"{point.impl} x{point.workers}"
    name += " video" if point.video else ""
    name += " pinned" if point.pinned else ""
    name += f" +{point.load} busy" if point.load else ""
    return [
        name, point.calls, point.cpu_per_call, point.cpu_total, point.lateness_p50_ms,
        point.lateness_p99_ms, point.drift_ms_per_min, point.missing_share * 100, point.dropped,
        point.failed_calls, point.lag_p99_ms, point.rss_per_call_mb, point.callers_cpu,
        point.setup_s,
        "yes" if point.real_time and point.recordings_ok else "no", "; ".join(point.notes),
    ]  # fmt: skip


def _ratio(points: list[Point]) -> str:
    """CPU per call of plain aiortc over callbot's, at the largest N both ran in real time."""
    plain = {p.calls: p for p in points if p.impl == "aiortc" and p.real_time}
    ours = {p.calls: p for p in points if p.impl == "callbot" and p.workers == 1}
    if not plain or not ours:
        return "no ratio: a side has no real-time point"
    best = max(plain)
    nearest = min(ours, key=lambda n: abs(n - best))
    ratio = plain[best].cpu_per_call / ours[nearest].cpu_per_call
    return (
        f"bot CPU per call: plain aiortc {plain[best].cpu_per_call:.2f} % at {best} calls "
        f"(its largest real-time point), callbot {ours[nearest].cpu_per_call:.2f} % at "
        f"{nearest}: {ratio:.1f}x less"
    )


def plot(points: list[Point], directory: Path) -> list[Path]:
    """CPU per call and p99 lateness against N, callbot and plain aiortc."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    series: dict[str, list[Point]] = {}
    for point in points:
        label = "plain aiortc" if point.impl == "aiortc" else "callbot"
        if point.workers > 1:
            label += f" (--workers {point.workers})"
        series.setdefault(label, []).append(point)
    written = []
    for name, attribute, ylabel, log in (
        ("density-cpu.png", "cpu_per_call", "bot CPU per call (% of one core)", False),
        ("density-lateness.png", "lateness_p99_ms", "receive lateness p99 (ms)", True),
    ):
        figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for label, items in series.items():
            items = sorted(items, key=lambda p: p.calls)
            axes.plot([p.calls for p in items], [getattr(p, attribute) for p in items],
                      marker="o", label=label)  # fmt: skip
        if log:
            axes.set_yscale("log")
            axes.axhline(REAL_TIME["lateness_p99_ms"], color="grey", linestyle="--",
                         linewidth=1, label="real-time limit (60 ms)")  # fmt: skip
        axes.set_xlabel("concurrent calls in one bot")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = directory / name
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def _counts(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()]


async def main(args: argparse.Namespace) -> None:
    pinning = Pinning.here() if args.pin else None
    print(f"machine: {machine()}")
    if pinning:
        os.sched_setaffinity(0, pinning.rest)  # the relay, the harness and the callers
        print(f"pinned: {pinning.describe()}")
    media = "video prompt, .webm recording" if args.video else "prompt and .ogg recording"
    busy = f"; {args.load} busy-looping processes beside the bot" if args.load else ""
    busy += " (on its CPUs)" if args.load and pinning else ""
    print(f"window {args.seconds:g} s after {args.warmup:g} s of warm-up; {media} per call"
          f"{busy}\n", flush=True)  # fmt: skip
    plan = [("aiortc", 1, n) for n in _counts(args.aiortc)]
    plan += [("callbot", 1, n) for n in _counts(args.callbot)]
    plan += [("callbot", 2, n) for n in _counts(args.workers2)]
    plan = [step for step in plan for _ in range(args.repeat)]
    points: list[Point] = []
    with contextlib.ExitStack() as cleanup:
        if args.keep:
            work = Path(args.keep)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="callbot-")))
        async with Relay(port=0, state_dir=work / "relay") as relay:
            harness = Harness(relay, Path(work), args, pinning)
            fallen: set[tuple[str, int]] = set()
            for impl, workers, calls in plan:
                if (impl, workers) in fallen:
                    continue  # it already fell far behind at fewer calls
                try:
                    point = await harness.measure(impl, calls, workers)
                except (RuntimeError, TimeoutError) as exc:  # the harness gave up on this one
                    point = Point(impl, workers, calls, args.video, args.load, args.pin)
                    point.notes.append(f"not measured: {exc!r}")
                points.append(point)
                print(table(HEADERS, [_row(point)]).splitlines()[-1], flush=True)
                if point.lateness_p99_ms > 2000:
                    fallen.add((impl, workers))
    print()
    print(table(HEADERS, [_row(p) for p in points]))
    print()
    print(_ratio(points))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "points": [asdict(p) for p in points]}, indent=1)
        )
    if args.plot:
        for path in plot(points, Path(args.plot)):
            print(f"plot: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callbot", default="10,25,50,100,150,200", help="call counts (callbot)")
    parser.add_argument("--aiortc", default="10,20,30,40", help="call counts (plain aiortc)")
    parser.add_argument("--workers2", default="300", help="call counts with --workers 2")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--video", action="store_true", help="video calls (see above)")
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the bot")
    parser.add_argument("--pin", action="store_true", help="bot on its own CPUs (see above)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every point")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--plot", metavar="DIR", help="write PNG plots (needs matplotlib)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (bot logs)")
    asyncio.run(main(parser.parse_args()))
