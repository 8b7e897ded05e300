"""Shared fixtures: loopback-only ICE, in-process call pairs, generated media."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

# Tests use loopback only, whatever other interfaces this host has (see DEVELOPERS.md).
os.environ.setdefault("CALLBOT_ICE_ADDRESSES", "127.0.0.1")
# One process per `callbot run` unless a test asks for a pool (the default is one per core).
os.environ.setdefault("CALLBOT_WORKERS", "1")

from callbot.bot import Bot
from callbot.call import Call
from callbot.embedded import start_relay
from callbot.signaling.relay import Relay
from callbot.testing import generate

import netns
from helpers import direct_call

# Markers applied by where a test lives or which fixture it uses (declared in pyproject.toml),
# so `pytest -m "not browser and not janus"` skips the layers that need a heavy real peer.
MARKED_DIRECTORIES = {"web": "browser", "group": "janus", "sip": "sip", "cluster": "cluster"}
MARKED_FILE_PREFIXES = {"test_turn": "turn", "test_sip": "sip", "test_cluster": "cluster"}
MARKED_FIXTURES = {
    "browser": "browser",
    "softphone": "browser",
    "janus": "janus",
    "coturn": "turn",
    "turn_relay": "turn",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (README's test command): two workers, since most tests wait on real-time
    media, each in a network namespace of its own (tests/netns.py); where namespaces cannot
    be made, or on one core, no workers: the tests run in this process."""
    if (os.cpu_count() or 1) < 2 or not netns.can_isolate():
        return 0
    return 2


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker gets its own 127.0.0.1 before any test runs (see tests/netns.py)."""
    if hasattr(config, "workerinput") and config.workerinput.get("workercount", 1) > 1:
        netns.enter_own()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the layers it needs, from its directory, file name and fixtures."""
    root = Path(__file__).parent
    for item in items:
        path = Path(str(item.path))
        names = set()
        if path.is_relative_to(root):
            relative = path.relative_to(root)
            names |= {MARKED_DIRECTORIES.get(part, "") for part in relative.parts[:-1]}
            names |= {m for p, m in MARKED_FILE_PREFIXES.items() if relative.stem.startswith(p)}
        names |= {MARKED_FIXTURES.get(name, "") for name in getattr(item, "fixturenames", ())}
        for name in sorted(names - {""}):
            item.add_marker(name)


@pytest.fixture
async def call_pair() -> AsyncIterator[tuple[Call, Call]]:
    """An audio call between two in-process aiortc peers on 127.0.0.1, connected."""
    async with direct_call() as pair:
        yield pair


@pytest.fixture
async def video_pair() -> AsyncIterator[tuple[Call, Call]]:
    """An audio+video call (both directions) between two in-process peers, connected."""
    async with direct_call(video=True) as pair:
        yield pair


@pytest.fixture
async def connect_pair() -> AsyncIterator[Callable[..., Awaitable[tuple[Call, Call]]]]:
    """Factory: `await connect_pair(**connect_direct_kwargs)` for tests that need their own
    settings or several calls; every pair it made is hung up at teardown, pass or fail."""
    async with contextlib.AsyncExitStack() as stack:

        async def connect(**kwargs: object) -> tuple[Call, Call]:
            return await stack.enter_async_context(direct_call(**kwargs))

        yield connect


@pytest.fixture
def tone_file(tmp_path: Path):
    """Factory: write a tone file with the given suffix and return its path."""

    def make(
        suffix: str = ".wav",
        frequency: float = 440.0,
        seconds: float = 1.0,
        rate: int = 48000,
        channels: int = 1,
    ) -> Path:
        name = f"tone-{frequency:g}-{seconds:g}s-{rate}-{channels}ch{suffix}"
        return generate.write_tone(tmp_path / name, frequency, seconds, rate, channels)

    return make


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """A relay on 127.0.0.1 (free port) with its own state dir, embedded as `callbot run` and
    `Bot()` embed theirs (its /metrics include this process's media clock)."""
    running = await start_relay("127.0.0.1", 0, tmp_path / "relay-state")
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def make_bot(relay: Relay) -> AsyncIterator[Callable[..., Bot]]:
    """Factory for bots on the test relay (started by the test); all are stopped at the end."""
    bots: list[Bot] = []

    def make(user: str, **kwargs: object) -> Bot:
        token = relay.mint(user, role=str(kwargs.get("role", "bot")))  # a pool needs a bot token
        bot = Bot(user, server=relay.url, token=token, **kwargs)  # type: ignore[arg-type]
        bots.append(bot)
        return bot

    yield make
    await asyncio.gather(*(b.stop() for b in bots), return_exceptions=True)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment for callbot subprocesses: a state dir of the test's own, no relay or
    token inherited from the shell."""
    env = dict(os.environ)
    env["CALLBOT_STATE_DIR"] = str(tmp_path / "state")
    env.pop("CALLBOT_SERVER", None)
    env.pop("CALLBOT_TOKEN", None)
    return env
