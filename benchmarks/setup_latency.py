"""Call setup latency through the relay: from placing a call to both sides connected.

A bot (`callbot run --as setup-bench --plugin echo`, its own process) answers; this process
hosts the relay and places the calls. For each call the clock starts just before
`bot.call()` (which gathers ICE and sends the offer) and stops when the caller's call is
`connected` (the answer applied, ICE and DTLS done, media flowing both ways). Two runs:
50 calls one after the other, then 20 placed at once.

    python benchmarks/setup_latency.py                 # ~1 minute
    python benchmarks/setup_latency.py --sequential 100 --burst 50
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, percentile, table

from callbot import Bot, Call
from callbot.config import CallConfig
from callbot.signaling.relay import Relay

HERE = Path(__file__).resolve().parent
BOT = "setup-bench"


async def timed_call(caller: Bot) -> tuple[float, Call]:
    """Seconds from placing a call to `connected`."""
    started = time.monotonic()
    call = await caller.call(BOT)
    await call.wait_connected(30)
    return time.monotonic() - started, call


async def start_bot(relay: Relay) -> subprocess.Popen[bytes]:
    """The answering bot in its own process, once the relay knows it is online."""
    command = [
        sys.executable, "-m", "callbot", "run", "--as", BOT, "--plugin", "echo",
        "--server", relay.url, "--token", relay.mint(BOT, role="bot"), "--workers", "1",
        "--ice-address", "127.0.0.1",
    ]  # fmt: skip
    log = Path(tempfile.gettempdir()) / "callbot-setup-bench.log"  # the bot's own output
    with log.open("wb") as out:
        bot = subprocess.Popen(command, cwd=HERE.parent, stdout=out, stderr=out)
    probe = Bot("setup-probe", server=relay.url, token=relay.mint("setup-probe"), role="user")
    await probe.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            if bot.poll() is not None:
                raise RuntimeError(f"the bot exited with {bot.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the bot did not come online in 60 s")
            try:  # a first call also warms up both processes (imports, codec set-up)
                _, call = await timed_call(probe)
                await call.hangup()
                return bot
            except Exception:
                await asyncio.sleep(0.5)
    finally:
        await probe.stop()


def summary(name: str, seconds: list[float], wall: float | None = None) -> list[object]:
    ms = [s * 1000 for s in seconds]
    return [
        name, len(ms), percentile(ms, 50), percentile(ms, 95), max(ms),
        "-" if wall is None else f"{wall:.2f}",
    ]  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="callbot-setup-") as work:
        async with Relay(port=0, state_dir=Path(work) / "relay") as relay:
            bot = await start_bot(relay)
            caller = Bot(
                "setup-caller", server=relay.url, token=relay.mint("setup-caller"),
                role="user", config=CallConfig(media_timeout=0),
            )  # fmt: skip
            await caller.start()
            try:
                sequential = []
                for _ in range(args.sequential):
                    seconds, call = await timed_call(caller)
                    sequential.append(seconds)
                    await call.hangup()
                started = time.monotonic()
                burst = await asyncio.gather(*(timed_call(caller) for _ in range(args.burst)))
                wall = time.monotonic() - started
                await asyncio.gather(*(call.hangup() for _, call in burst))
            finally:
                await caller.stop()
                bot.send_signal(signal.SIGTERM)
                await asyncio.to_thread(bot.wait, 30)
    headers = ("run", "calls", "median ms", "p95 ms", "max ms", "all connected in s")
    print(
        table(
            headers,
            [
                summary("one after another", sequential),
                summary("placed at once", [s for s, _ in burst], wall),
            ],
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--burst", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
