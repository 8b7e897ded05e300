"""Failover with real processes: three `callbot serve --redis` nodes and a redis-server, one of
them killed with SIGKILL mid-call. The clients (in this process) are given a list of nodes;
the echoed tone they hear must go on without a gap, and the hangup must still cross."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import RedisServer, redis_binary
from redis_server import free_port

from callbot import Bot, Incoming
from callbot.call import Call
from callbot.media import analysis
from callbot.signaling.state import RelayState

from helpers import eventually

#: Longest time between two echoed frames, and longest quiet stretch, allowed across a
#: failover (20 ms frames: anything near this is a real outage, not jitter).
MAX_GAP = 0.5


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole module (a test that kills it starts it again)."""
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@dataclass
class Node:
    """One `callbot serve --redis` process."""

    port: int
    state_dir: Path
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return json.load(r)
        except OSError:
            return None

    def kill(self) -> None:
        """kill -9: no goodbye; its keys stay in Redis until they expire."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
async def three_nodes(
    module_redis: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[Node, Node, Node]]:
    """Three nodes sharing the module's Redis and one token secret; stopped by PID."""
    RelayState(tmp_path / "a").close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    nodes = []
    for name in "abc":
        state_dir = tmp_path / name
        if name != "a":
            state_dir.mkdir(mode=0o700)
            shutil.copy(tmp_path / "a" / "state.db", state_dir / "state.db")
        port = free_port()
        command = [sys.executable, "-m", "callbot", "serve", "--port", str(port),
                   "--state-dir", str(state_dir), "--redis", module_redis.url]  # fmt: skip
        log = (tmp_path / f"node-{name}.log").open("w")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        nodes.append(Node(port, state_dir, process))
    await eventually(lambda: all(n.health() for n in nodes), "three nodes up", timeout=30)
    yield nodes[0], nodes[1], nodes[2]
    for node in nodes:
        if node.process.poll() is None:
            node.process.terminate()
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()


class Listening:
    """The frames a call receives, as they arrive (in the background)."""

    def __init__(self, call: Call) -> None:
        self.frames: list = []
        self.times: list[float] = []
        self._task = asyncio.get_running_loop().create_task(self._run(call))

    async def _run(self, call: Call) -> None:
        async for frame in call.audio_frames():
            self.frames.append(frame)
            self.times.append(time.monotonic())

    def since(self, start: float) -> tuple[list, list[float]]:
        kept = [i for i, t in enumerate(self.times) if t >= start]
        return [self.frames[i] for i in kept], [self.times[i] for i in kept]

    def stop(self) -> None:
        self._task.cancel()


def assert_no_gap(listening: Listening, start: float, frequency: float = 440.0) -> None:
    """From `start` on, frames kept coming, held the tone and never went quiet."""
    frames, times = listening.since(start)
    assert len(frames) > 50, f"only {len(frames)} frames after the failover began"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < MAX_GAP, f"media stopped for {max(gaps):.2f}s"
    assert abs(analysis.dominant_frequency(frames) - frequency) <= 5
    quiet = analysis.silent_spans(frames, min_duration=MAX_GAP)
    assert not quiet, f"silent stretches {quiet}"


def echo_bot(user: str, servers: list[str], state_dir: Path) -> Bot:
    token = _mint(state_dir, user, "bot")
    bot = Bot(user, server=servers, token=token, role="bot")

    @bot.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept()
        await call.set_audio_source(call.remote_track("audio"))

    return bot


def _mint(state_dir: Path, user: str, role: str = "user") -> str:
    state = RelayState(state_dir)
    try:
        return state.mint(user, 3600, role)
    finally:
        state.close()


@pytest.fixture
async def bots() -> AsyncIterator[Callable[[Bot], Bot]]:
    started: list[Bot] = []

    def keep(bot: Bot) -> Bot:
        started.append(bot)
        return bot

    yield keep
    await asyncio.gather(*(b.stop() for b in started), return_exceptions=True)


async def _call_with_tone(
    caller: Bot, tone: Path, calls: Callable[[], int]
) -> tuple[Call, Listening]:
    call = await caller.call("echo")
    await call.wait_connected(15)
    call.send_audio_file(tone, loop=True)
    listening = Listening(call)
    await eventually(lambda: len(listening.frames) > 25, "the echoed tone")
    assert calls() == 1
    return call, listening


async def test_kill_the_callers_node_mid_call(three_nodes, bots, tone_file) -> None:
    a, b, c = three_nodes
    echo = bots(echo_bot("echo", [b.url, c.url], a.state_dir))
    alice = bots(Bot("alice", server=[a.url, c.url], token=_mint(c.state_dir, "alice"),
                     role="user"))  # fmt: skip
    await echo.start()
    await alice.start()
    await eventually(lambda: a.health()["connections"] == 1 and b.health()["connections"] == 1)
    await asyncio.sleep(0.3)  # node a hears of echo's connection on b
    call, listening = await _call_with_tone(
        alice, tone_file(".wav", 440.0, 2.0), lambda: a.health()["calls"]
    )
    (answered,) = echo.active_calls

    killed = time.monotonic()
    a.kill()
    # alice moves to c and claims the call there; c owns it from then on, and echo's node
    # b learns so and claims echo's side at c too
    await eventually(lambda: (c.health() or {}).get("calls") == 1, "node c owns the call")
    print(f"node c owned alice's call {time.monotonic() - killed:.2f}s after kill -9 of a")
    assert alice._client is not None and alice._client.url == c.url
    await asyncio.sleep(2.0)  # media across the failover
    assert_no_gap(listening, killed)
    listening.stop()

    await call.hangup()  # routed by node c to echo on node b
    assert await answered.wait_ended(10) == "remote_hangup"
    await eventually(lambda: c.health()["calls"] == 0, "the call gone from node c")


async def test_kill_the_bots_node_mid_call(three_nodes, bots, tone_file) -> None:
    a, b, c = three_nodes
    echo = bots(echo_bot("echo", [b.url, c.url], b.state_dir))
    alice = bots(Bot("alice", server=[a.url, c.url], token=_mint(a.state_dir, "alice"),
                     role="user"))  # fmt: skip
    await echo.start()
    await alice.start()
    await eventually(lambda: a.health()["connections"] == 1 and b.health()["connections"] == 1)
    await asyncio.sleep(0.3)
    call, listening = await _call_with_tone(
        alice, tone_file(".wav", 440.0, 2.0), lambda: a.health()["calls"]
    )
    (answered,) = echo.active_calls

    killed = time.monotonic()
    b.kill()
    # echo moves to c and claims the call there: node a hands it over, alice claims it at c
    await eventually(lambda: (c.health() or {}).get("calls") == 1, "node c owns the call")
    await eventually(lambda: a.health()["calls"] == 0, "node a handed the call over")
    print(f"node c owned echo's call {time.monotonic() - killed:.2f}s after kill -9 of b")
    assert echo._client is not None and echo._client.url == c.url
    await asyncio.sleep(2.0)
    assert_no_gap(listening, killed)
    listening.stop()

    await answered.hangup()  # from echo on node c to alice on node a
    assert await call.wait_ended(10) == "remote_hangup"


async def test_kill_redis_mid_call(three_nodes, bots, tone_file, module_redis) -> None:
    """Signalling sent while Redis is down is kept and delivered once it is back."""
    a, b, _ = three_nodes
    echo = bots(echo_bot("echo", [b.url], b.state_dir))
    alice = bots(Bot("alice", server=[a.url], token=_mint(a.state_dir, "alice"), role="user"))
    await echo.start()
    await alice.start()
    await eventually(lambda: a.health()["connections"] == 1 and b.health()["connections"] == 1)
    await asyncio.sleep(0.3)
    call, listening = await _call_with_tone(
        alice, tone_file(".wav", 440.0, 2.0), lambda: a.health()["calls"]
    )
    (answered,) = echo.active_calls

    killed = time.monotonic()
    module_redis.stop(kill=True)
    await asyncio.sleep(1.5)
    assert_no_gap(listening, killed)
    listening.stop()
    await call.hangup()  # node a keeps it for node b while Redis is down
    await asyncio.sleep(0.5)
    assert answered.state != "ended"
    restarted = time.monotonic()
    module_redis.start()  # empty: the nodes announce everything again
    assert await answered.wait_ended(15) == "remote_hangup"
    print(f"the hangup kept for Redis arrived {time.monotonic() - restarted:.2f}s after restart")

    again = await alice.call("echo")  # and the cluster works as before
    await again.wait_connected(15)
    await again.hangup()


def test_a_node_started_without_redis_exits_with_one_line(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "callbot", "serve", "--port", str(free_port()),
         "--state-dir", str(tmp_path / "s"), "--redis", url],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = (result.stdout + result.stderr).strip().splitlines()
    assert line.startswith(f"Error: cannot reach Redis at {url}: ")
    assert time.monotonic() - started < 15
