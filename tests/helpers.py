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
