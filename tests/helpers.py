"""Helpers shared by tests (importable thanks to `pythonpath = ["tests"]`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import av


async def collect_frames(
    frames: AsyncIterator[av.frame.Frame], seconds: float
) -> list[av.frame.Frame]:
    """Take frames from an iterator for `seconds` of wall-clock time."""
    out: list[av.frame.Frame] = []
    deadline = time.monotonic() + seconds
    with contextlib.suppress(TimeoutError):
        while (left := deadline - time.monotonic()) > 0:
            out.append(await asyncio.wait_for(frames.__anext__(), left))
    return out


def drop_outgoing_rtp(call: object, fraction: float, seed: int = 7) -> None:
    """Simulate packet loss: drop `fraction` of the RTP packets `call` sends (RTCP is kept)."""
    import random

    transport = next(t for t in call.peer_connection.getTransceivers() if t.kind == "audio")
    dtls = transport.sender.transport
    original = dtls._send_rtp
    rng = random.Random(seed)

    async def lossy(data: bytes) -> None:
        is_rtcp = len(data) > 1 and 192 <= data[1] <= 223
        if not is_rtcp and rng.random() < fraction:
            return
        await original(data)

    dtls._send_rtp = lossy
