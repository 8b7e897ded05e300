"""DTMF between real peers: RFC 4733 telephone-events and in-band tones, both ways, with loss."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from callbot import CallConfig, InvalidStateError
from callbot.media.dtmf import KeyPresses
from callbot.testing import generate

from helpers import drop_outgoing_rtp, eventually

ALL_KEYS = "0123456789*#ABCD"


@pytest.mark.parametrize(
    ("caller_mode", "callee_mode", "expected"),
    [("auto", "auto", "rfc4733"), ("inband", "inband", "inband"), ("auto", "inband", "inband")],
)
async def test_keys_both_ways(
    connect_pair, caller_mode: str, callee_mode: str, expected: str
) -> None:
    caller, callee = await connect_pair(
        caller_config=CallConfig(dtmf=caller_mode), callee_config=CallConfig(dtmf=callee_mode)
    )
    events: list[str] = []
    callee.on("dtmf", events.append)
    try:
        assert caller.dtmf_mode == callee.dtmf_mode == expected
        await caller.send_dtmf(ALL_KEYS)
        await eventually(lambda: callee.received_dtmf, until=lambda keys: keys == ALL_KEYS)
        assert "".join(events) == ALL_KEYS
        await callee.send_dtmf("159#", duration_ms=80, gap_ms=60)
        await eventually(lambda: caller.received_dtmf, until=lambda keys: keys == "159#")
        assert await callee.read_dtmf(1) == "0"  # the queue keeps every key, in order
    finally:
        await caller.hangup()


@pytest.mark.parametrize("mode", ["auto", "inband"])
async def test_keys_survive_five_percent_loss(connect_pair, mode: str) -> None:
    config = CallConfig(dtmf=mode)
    caller, callee = await connect_pair(caller_config=config, callee_config=config)
    try:
        lossy = drop_outgoing_rtp(caller, 0.05, seed=11) + drop_outgoing_rtp(callee, 0.05, seed=23)
        await caller.send_dtmf(ALL_KEYS)
        await eventually(lambda: callee.received_dtmf, until=lambda keys: keys == ALL_KEYS)
        await callee.send_dtmf("#*9876")
        await eventually(lambda: caller.received_dtmf, until=lambda keys: keys == "#*9876")
        assert sum(t.dropped for t in lossy) >= 5  # packets really were lost on the way (~14)
    finally:
        await caller.hangup()


async def test_repeated_key_and_mute_do_not_swallow_keys(connect_pair) -> None:
    caller, callee = await connect_pair(
        caller_config=CallConfig(dtmf="inband"), callee_config=CallConfig(dtmf="inband")
    )
    try:
        await caller.mute("audio")  # keys still go out while the microphone is muted
        await caller.send_dtmf("5555")
        await eventually(lambda: callee.received_dtmf, until=lambda keys: keys == "5555")
    finally:
        await caller.hangup()


async def test_bad_keys_and_states(connect_pair) -> None:
    caller, callee = await connect_pair()
    with pytest.raises(ValueError, match="'x' is not a DTMF key"):
        await caller.send_dtmf("12x")
    with pytest.raises(ValueError, match="between 40 and 2000"):
        await caller.send_dtmf("1", duration_ms=10)
    await caller.hangup()
    with pytest.raises(InvalidStateError):
        await caller.send_dtmf("1")
    assert await callee.read_dtmf(0.1) is None


async def test_keys_played_as_audio_are_heard_where_telephone_events_are_negotiated(
    connect_pair,
    tmp_path: Path,
) -> None:
    """A callbot caller plays a recording of keys (callbot to callbot negotiates RFC 4733):
    the callee still gets each key, in order, once."""
    keys = generate.write_dtmf(tmp_path / "keys.wav", "19#*0", duration=0.12, gap=0.1)
    caller, callee = await connect_pair()
    events: list[str] = []
    callee.on("dtmf", events.append)
    try:
        assert caller.dtmf_mode == callee.dtmf_mode == "rfc4733"
        await caller.send_audio_file(keys)
        await eventually(lambda: callee.received_dtmf, until=lambda keys: keys == "19#*0")
        await asyncio.sleep(0.5)  # nothing more comes (no key reported twice)
        assert "".join(events) == callee.received_dtmf == "19#*0"
    finally:
        await caller.hangup()


async def test_a_key_sent_both_as_event_and_as_tone_is_one_key_press(
    connect_pair, tmp_path: Path
) -> None:
    """Each key is sent as a telephone-event while the same key plays as audio: one `dtmf`
    event per press, a key pressed again later counts again, and read_dtmf alone listens."""
    caller, callee = await connect_pair()
    events: list[str] = []
    callee.on("dtmf", events.append)
    try:
        for index, digit in enumerate("55#"):
            tone = generate.write_dtmf(tmp_path / f"key-{index}.wav", digit, duration=0.3)
            playing = caller.send_audio_file(tone)  # 0.2 s of silence, then 0.3 s of tone
            await caller.send_dtmf(digit)  # 100 ms: it replaces the audio meanwhile
            await playing
            await asyncio.sleep(KeyPresses.PAIR_WINDOW + 0.3)
        assert "".join(events) == callee.received_dtmf == "55#"
    finally:
        await caller.hangup()


async def test_read_dtmf_listens_for_tones_too(connect_pair, tmp_path: Path) -> None:
    caller, callee = await connect_pair()
    try:
        reading = asyncio.ensure_future(callee.read_dtmf(10))
        await asyncio.sleep(0.1)
        await caller.send_audio_file(generate.write_dtmf(tmp_path / "7.wav", "7"))
        assert await reading == "7"
    finally:
        await caller.hangup()


def test_key_presses_pair_each_report_once() -> None:
    now = [0.0]
    heard: list[str] = []
    presses = KeyPresses(heard.append, clock=lambda: now[0])
    presses.event("1")
    presses.event("2")
    now[0] = 0.3
    presses.tone("1")  # the first press, heard late as tones
    presses.tone("2")
    presses.tone("3")  # only as tones
    now[0] = 2.0
    presses.event("3")  # too late to be the same press
    presses.tone("3")  # pairs with that event
    assert heard == ["1", "2", "3", "3"]
