"""DTMF between real peers: RFC 4733 telephone-events and in-band tones, both ways, with loss."""

from __future__ import annotations

import asyncio

import pytest

from callbot import CallConfig, InvalidStateError
from callbot.signaling.direct import connect_direct

from helpers import drop_outgoing_rtp

ALL_KEYS = "0123456789*#ABCD"


async def _wait_for(call, count: int, timeout: float = 5.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(call.received_dtmf) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return call.received_dtmf


@pytest.mark.parametrize(
    ("caller_mode", "callee_mode", "expected"),
    [("auto", "auto", "rfc4733"), ("inband", "inband", "inband"), ("auto", "inband", "inband")],
)
async def test_keys_both_ways(caller_mode: str, callee_mode: str, expected: str) -> None:
    caller, callee = await connect_direct(
        caller_config=CallConfig(dtmf=caller_mode), callee_config=CallConfig(dtmf=callee_mode)
    )
    events: list[str] = []
    callee.on("dtmf", events.append)
    try:
        assert caller.dtmf_mode == callee.dtmf_mode == expected
        await caller.send_dtmf(ALL_KEYS)
        assert await _wait_for(callee, len(ALL_KEYS)) == ALL_KEYS
        assert "".join(events) == ALL_KEYS
        await callee.send_dtmf("159#", duration_ms=80, gap_ms=60)
        assert await _wait_for(caller, 4) == "159#"
        assert await callee.read_dtmf(1) == "0"  # the queue keeps every key, in order
    finally:
        await caller.hangup()


@pytest.mark.parametrize("mode", ["auto", "inband"])
async def test_keys_survive_five_percent_loss(mode: str) -> None:
    config = CallConfig(dtmf=mode)
    caller, callee = await connect_direct(caller_config=config, callee_config=config)
    try:
        lossy = drop_outgoing_rtp(caller, 0.05, seed=11) + drop_outgoing_rtp(callee, 0.05, seed=23)
        await caller.send_dtmf(ALL_KEYS)
        assert await _wait_for(callee, len(ALL_KEYS)) == ALL_KEYS
        await callee.send_dtmf("#*9876")
        assert await _wait_for(caller, 6) == "#*9876"
        assert sum(t.dropped for t in lossy) >= 5  # packets really were lost on the way (~14)
    finally:
        await caller.hangup()


async def test_repeated_key_and_mute_do_not_swallow_keys() -> None:
    caller, callee = await connect_direct(
        caller_config=CallConfig(dtmf="inband"), callee_config=CallConfig(dtmf="inband")
    )
    try:
        await caller.mute("audio")  # keys still go out while the microphone is muted
        await caller.send_dtmf("5555")
        assert await _wait_for(callee, 4) == "5555"
    finally:
        await caller.hangup()


async def test_bad_keys_and_states() -> None:
    caller, callee = await connect_direct()
    with pytest.raises(ValueError, match="'x' is not a DTMF key"):
        await caller.send_dtmf("12x")
    with pytest.raises(ValueError, match="between 40 and 2000"):
        await caller.send_dtmf("1", duration_ms=10)
    await caller.hangup()
    with pytest.raises(InvalidStateError):
        await caller.send_dtmf("1")
    assert await callee.read_dtmf(0.1) is None
