"""Group-call fixtures: one real Janus for the session, a relay that announces it, bots.

Every bot's ICE uses only JANUS_ADDRESS (see janus_server.py), never a STUN server; Janus's
API listens on 127.0.0.1. Media is small (320x240 video) to keep three bots and an SFU
comfortable on a two-core machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from janus_server import JANUS_ADDRESS, JanusServer, Unavailable, ensure_janus_address

from callbot import Bot
from callbot.signaling.relay import Relay
from callbot.testing import generate

from helpers import missing_peer

VIDEO_SIZE = (320, 240)


@pytest.fixture(scope="session")
def janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JanusServer]:
    """Janus on 127.0.0.1 (WebSocket API), its media on JANUS_ADDRESS."""
    server = JanusServer(tmp_path_factory.mktemp("janus"))
    try:
        ensure_janus_address()
        server.start()
    except Unavailable as exc:
        missing_peer(f"no Janus for the group-call tests (apt-get install janus): {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def janus_relay(tmp_path: Path, janus: JanusServer) -> AsyncIterator[Relay]:
    """A relay that tells its clients (welcome) where Janus is, as `callbot serve --janus`."""
    async with Relay(port=0, state_dir=tmp_path / "relay-state", janus_url=janus.url) as relay:
        yield relay


@pytest.fixture
async def group_bot(janus_relay: Relay) -> AsyncIterator[Callable[..., Bot]]:
    """Factory of started bots on the relay, ICE on JANUS_ADDRESS only; stopped at the end."""
    bots: list[Bot] = []

    async def make(user: str, **kwargs: object) -> Bot:
        bot = Bot(
            user, server=janus_relay.url,
            token=janus_relay.mint(user, role=str(kwargs.get("role", "bot"))),
            ice_addresses=[JANUS_ADDRESS], video_size=VIDEO_SIZE, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        bots.append(bot)
        await bot.start()
        return bot

    yield make
    await asyncio.gather(*(b.stop() for b in bots), return_exceptions=True)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bots' sources: a 440 Hz and a 1000 Hz tone, and a VP8 clip with a 440 Hz soundtrack."""
    folder = tmp_path_factory.mktemp("group-media")
    return {
        "tone440": generate.write_tone(folder / "tone-440.wav", 440.0, seconds=2.0),
        "tone1000": generate.write_tone(folder / "tone-1000.wav", 1000.0, seconds=2.0),
        "clip440": generate.write_video(
            folder / "clip-440.webm", seconds=2.0, size=VIDEO_SIZE, fps=15, tone=440.0
        ),
    }
