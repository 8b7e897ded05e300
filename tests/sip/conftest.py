"""SIP test peers, all independent of callbot and all on 127.0.0.1 (free ports):

- `baresip_peer`: factory of started Debian baresip user agents (tests/sip/baresip_peer.py);
- `sipp`: factory of SIPp callers, callees and registrars (tests/sip/sipp_peer.py);
- `kamailio`: a started Kamailio registrar with the users of `sip_users` (restartable);
- `ulaw_tone` / `pcm_tone`: tone files in the formats SIPp and baresip send.

Each fixture skips, naming the Debian package, when its binary is missing (and fails in CI,
which installs them all). Processes are ended by their PIDs at teardown, pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from baresip_peer import BARESIP, BaresipPeer, PeerConfig
from kamailio_server import KAMAILIO, Kamailio
from sip_media import write_mulaw_wav, write_pcm_wav
from sipp_peer import SIPP, SippFactory

from helpers import missing_peer

PACKAGES = {BARESIP: "baresip-core", SIPP: "sip-tester", KAMAILIO: "kamailio"}


def require(binary: str) -> None:
    """Skip (fail in CI) when `binary` is not installed, naming its Debian package."""
    if not Path(binary).exists():
        package = PACKAGES[binary]
        missing_peer(f"no {binary} for the SIP tests (apt-get install {package})")


@pytest.fixture
def ulaw_tone(tmp_path: Path) -> Callable[..., Path]:
    """Factory: an 8 kHz u-law WAV tone, as SIPp's rtp_stream sends it (PCMU)."""

    def make(frequency: float = 1000.0, seconds: float = 3.0) -> Path:
        return write_mulaw_wav(
            tmp_path / f"ulaw-{frequency:g}-{seconds:g}s.wav", frequency, seconds
        )

    return make


@pytest.fixture
def pcm_tone(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a mono 16-bit 8 kHz WAV tone, as a baresip peer plays it (`PeerConfig.play`)."""

    def make(frequency: float = 440.0, seconds: float = 3.0, rate: int = 8000) -> Path:
        path = tmp_path / f"pcm-{frequency:g}-{seconds:g}s-{rate}.wav"
        return write_pcm_wav(path, frequency, seconds, rate)

    return make


@pytest.fixture
async def baresip_peer(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[BaresipPeer]]]:
    """Factory: `await baresip_peer(user="alice", play=wav, ...)` (PeerConfig fields) starts a
    baresip peer in its own directory; every peer is stopped at teardown."""
    require(BARESIP)
    peers: list[BaresipPeer] = []

    async def make(**config: Any) -> BaresipPeer:
        peer = BaresipPeer(tmp_path / f"baresip-{len(peers)}", PeerConfig(**config))
        peers.append(peer)
        await peer.start()
        return peer

    yield make
    await asyncio.gather(*(peer.stop() for peer in peers), return_exceptions=True)


@pytest.fixture
async def sipp(tmp_path: Path) -> AsyncIterator[SippFactory]:
    """Factory of SIPp peers (`sipp.uac(...)`, `sipp.uas(...)`, `sipp.uas_reject(...)`,
    `sipp.registrar(...)`); each SIPp still running at teardown is stopped by its PID."""
    require(SIPP)
    factory = SippFactory(tmp_path)
    yield factory
    for process in factory.made:
        with contextlib.suppress(Exception):
            await process.stop()


@pytest.fixture
def sip_users() -> dict[str, str]:
    """The registrar's users and passwords (override in a test module to change them)."""
    return {"bot": "bot-secret", "peer": "peer-secret"}


@pytest.fixture
async def kamailio(tmp_path: Path, sip_users: dict[str, str]) -> AsyncIterator[Kamailio]:
    """A started Kamailio registrar on a free 127.0.0.1 port (`kamailio.uri`, `.restart()`)."""
    require(KAMAILIO)
    async with Kamailio(tmp_path / "kamailio", sip_users) as server:
        yield server
