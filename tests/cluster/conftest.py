"""Cluster fixtures: a real Redis (Debian's redis-server) on a free loopback port, and relay
nodes in this process sharing it, each with its own state dir holding the same secret."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis_server import answers, free_port

from callbot import Bot
from callbot.signaling.backplane import RedisBackplane
from callbot.signaling.relay import Relay
from callbot.signaling.state import RelayState

from helpers import missing_peer

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 (no persistence), stopped by its PID."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def redis_binary() -> str:
    """Debian's redis-server (skips, naming the package, when it is not installed)."""
    binary = REDIS_SERVER if Path(REDIS_SERVER).exists() else shutil.which("redis-server")
    if binary is None:
        missing_peer("no redis-server for the cluster tests (apt-get install redis-server)")
    return binary


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def shared_state(tmp_path: Path) -> Callable[[str], Path]:
    """Factory: the state dir of node NAME, holding a copy of one cluster-wide secret."""
    first = tmp_path / "state-a"
    RelayState(first).close()

    def make(name: str) -> Path:
        directory = tmp_path / f"state-{name}"
        if not directory.exists():
            directory.mkdir(mode=0o700)
            shutil.copy(first / "state.db", directory / "state.db")
        return directory

    return make


@pytest.fixture
async def nodes(
    redis_url: str, shared_state: Callable[[str], Path]
) -> AsyncIterator[Callable[[str], object]]:
    """Factory of started relay nodes (`await nodes("a")`) on free ports, all in one cluster."""
    started: list[Relay] = []

    async def make(name: str) -> Relay:
        backplane = RedisBackplane(redis_url, f"node-{name}")
        relay = Relay(port=0, state_dir=shared_state(name), backplane=backplane)
        await relay.start()
        started.append(relay)
        return relay

    yield make
    for relay in reversed(started):
        await relay.stop()


@pytest.fixture
async def cluster_bot() -> AsyncIterator[Callable[..., Bot]]:
    """Factory of bots on a node (tokens minted by that node or `minted_by`); stopped at the
    end."""
    bots: list[Bot] = []

    def make(
        relay: Relay, user: str, role: str = "bot", minted_by: Relay | None = None, **kw: object
    ) -> Bot:
        token = (minted_by or relay).mint(user, role=role)
        bot = Bot(user, server=relay.url, token=token, role=role, **kw)  # type: ignore[arg-type]
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        with contextlib.suppress(Exception):
            await bot.stop()
