"""Shared fixtures: loopback-only ICE, in-process call pairs, generated media."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

# Tests use loopback only, whatever other interfaces this host has (see DEVELOPERS.md).
os.environ.setdefault("CALLBOT_ICE_ADDRESSES", "127.0.0.1")
# One process per `callbot run` unless a test asks for a pool (the default is one per core).
os.environ.setdefault("CALLBOT_WORKERS", "1")

from callbot.bot import Bot
from callbot.call import Call
from callbot.media import generate
from callbot.signaling.direct import connect_direct
from callbot.signaling.relay import Relay


async def _pair(**kwargs: object) -> AsyncIterator[tuple[Call, Call]]:
    caller, callee = await connect_direct(**kwargs)  # type: ignore[arg-type]
    try:
        yield caller, callee
    finally:
        for call in (caller, callee):
            with contextlib.suppress(Exception):
                await call.hangup()


@pytest.fixture
async def call_pair() -> AsyncIterator[tuple[Call, Call]]:
    """An audio call between two in-process aiortc peers on 127.0.0.1, connected."""
    async for pair in _pair():
        yield pair


@pytest.fixture
async def video_pair() -> AsyncIterator[tuple[Call, Call]]:
    """An audio+video call (both directions) between two in-process peers, connected."""
    async for pair in _pair(video=True):
        yield pair


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
    """A relay on 127.0.0.1 (free port) with its own state dir."""
    async with Relay(port=0, state_dir=tmp_path / "relay-state") as running:
        yield running


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
