"""Helpers shared by tests (importable thanks to `pythonpath = ["tests"]`)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import av
import pytest

from callbot.call import Call
from callbot.direct import connect_direct

T = TypeVar("T")


def missing_peer(reason: str) -> NoReturn:
    """Skip a test whose real peer (a Debian package) is not installed, naming the package.

    In CI (`CI` set, as `.ci/run` is run) nothing may skip for a missing package: `.ci/run`
    installs every peer, so a missing one is a failure of the setup, not of the test.
    """
    if os.environ.get("CI"):
        pytest.fail(f"CI must install every peer the tests need: {reason}")
    pytest.skip(reason)


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


def facts_of(directory: Path, call_id: str) -> list[dict[str, Any]]:
    """The JSON facts the record / voicemail plugins wrote in `directory` for this call id
    (files are named by the bot, so they are found by content)."""
    found = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    return [f for f in found if f.get("call_id") == call_id]


async def wait_for_facts(directory: Path, call_id: str, count: int = 1) -> list[dict[str, Any]]:
    """`facts_of` once at least `count` are there (fails after 10 s)."""
    return await eventually(
        lambda: facts_of(directory, call_id),
        f"{count} facts file(s) of call {call_id!r} in {directory}",
        until=lambda facts: len(facts) >= count,
    )


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    what: str = "",
    *,
    until: Callable[[T], object] = bool,
    timeout: float = 10.0,
    interval: float = 0.05,
) -> T:
    """Poll `probe()` (sync or async) until `until(value)` holds and return that value.

    The one poll-until helper of the tests: waiting on a condition instead of a fixed sleep
    is as fast as the machine allows and tolerant of a loaded one. After `timeout` seconds it
    fails naming `what` and showing the last value, so a failure says how far things got.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value):  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            label = what or _source_of(probe)
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {label}; last value: {value!r}"
            )
        await asyncio.sleep(interval)


def _source_of(probe: Callable[..., object]) -> str:
    """The line that wrote `probe` (a lambda has no useful name), for a failure message."""
    try:
        return inspect.getsource(probe).strip()
    except (OSError, TypeError):
        return repr(probe)


class RecordingPort:
    """A fake signalling port for a lone `Call`: keeps what the call sends, delivers nothing.

    Tests feed replies by hand with `call.handle_signal(...)` when they need any.
    """

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


@contextlib.asynccontextmanager
async def direct_call(**kwargs: Any) -> AsyncIterator[tuple[Call, Call]]:
    """`connect_direct(**kwargs)` whose two calls are hung up on exit, even if the test fails,
    so a failed test leaves no peer connection or task behind for the next one."""
    caller, callee = await connect_direct(**kwargs)
    try:
        yield caller, callee
    finally:
        for call in (caller, callee):
            with contextlib.suppress(Exception):
                await call.hangup()


class LossyTransport:
    """Wraps a UDP transport and drops a share of the RTP it sends (STUN, DTLS, RTCP kept)."""

    def __init__(self, transport: object, fraction: float, seed: int) -> None:
        import random

        self._transport = transport
        self._fraction = fraction
        self._rng = random.Random(seed)
        self.dropped = 0

    def sendto(self, data: bytes, addr: object = None) -> None:
        is_rtp = len(data) >= 12 and 127 < data[0] < 192 and not 192 <= data[1] <= 223
        if is_rtp and self._rng.random() < self._fraction:
            self.dropped += 1
            return
        self._transport.sendto(data, addr)

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


def drop_outgoing_rtp(call: object, fraction: float, seed: int = 7) -> list[LossyTransport]:
    """Simulate packet loss: drop `fraction` of the RTP packets `call` sends, at its sockets
    (below aiortc and callbot's fast path alike). Returns the wrappers, which count drops."""
    transceiver = next(t for t in call.peer_connection.getTransceivers() if t.kind == "audio")
    connection = transceiver.sender.transport.transport._connection  # aioice's Connection
    lossy = []
    for protocol in connection._protocols:
        protocol.transport = LossyTransport(protocol.transport, fraction, seed + len(lossy))
        lossy.append(protocol.transport)
    return lossy
