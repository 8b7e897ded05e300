"""The Call object between real peers: states, events, data channel, ending, handler failures."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from callbot import Call, CallConfig, CallError, InvalidStateError

from helpers import RecordingPort, eventually


async def test_states_and_events_on_both_sides(connect_pair) -> None:
    caller, callee = await connect_pair()
    assert (caller.direction, callee.direction) == ("outbound", "inbound")
    assert (caller.prev_state, caller.state) == ("connecting", "connected")
    assert (callee.prev_state, callee.state) == ("connecting", "connected")
    assert callee.id == caller.id
    ended: dict[str, tuple[str, float]] = {}
    caller.on("ended", lambda reason, duration: ended.__setitem__("caller", (reason, duration)))
    callee.on("ended", lambda reason, duration: ended.__setitem__("callee", (reason, duration)))
    await asyncio.sleep(0.5)

    await caller.hangup()
    assert await callee.wait_ended(5) == "remote_hangup"
    assert ended["caller"][0] == "hangup" and ended["callee"][0] == "remote_hangup"
    assert 0.4 < ended["caller"][1] < 5
    assert caller.state == callee.state == "ended"
    assert caller.duration == ended["caller"][1]  # frozen at the end


async def test_data_channel_both_ways(connect_pair) -> None:
    caller, callee = await connect_pair()
    at_callee: list[Any] = []
    at_caller: list[Any] = []
    callee.on("data", at_callee.append)
    caller.on("data", at_caller.append)
    caller.send_data("hello")
    caller.send_data(b"\x00\x01binary")
    callee.send_data("hi back")
    await eventually(lambda: len(at_callee) == 2 and at_caller, "data both ways")
    assert at_callee == ["hello", b"\x00\x01binary"]
    assert at_caller == ["hi back"]
    await caller.hangup()


async def test_a_raising_handler_ends_only_that_call(
    connect_pair, caplog: pytest.LogCaptureFixture
) -> None:
    first_caller, first_callee = await connect_pair()
    second_caller, second_callee = await connect_pair()
    errors: list[Exception] = []
    first_callee.on("error", errors.append)

    @first_callee.on("data")
    async def explode(payload: Any) -> None:
        raise RuntimeError(f"bot bug on {payload!r}")

    with caplog.at_level(logging.ERROR, logger="callbot.call"):
        first_caller.send_data("boom")
        assert await first_callee.wait_ended(5) == "error"
    assert await first_caller.wait_ended(5) == "remote_hangup"
    assert isinstance(errors[0], CallError) and errors[0].code == "handler_failed"
    assert any(first_callee.id in r.getMessage() for r in caplog.records)
    assert second_caller.state == second_callee.state == "connected"
    await second_caller.hangup()


async def test_sync_handler_failure_in_state_event_is_contained(connect_pair) -> None:
    caller, callee = await connect_pair()

    def bad(*_: Any) -> None:
        raise ValueError("sync handler bug")

    caller.on("mediastatus", bad)
    await callee.mute("audio")
    assert await caller.wait_ended(5) == "error"
    assert await callee.wait_ended(5) == "remote_hangup"


async def test_wait_ended_times_out_with_none(connect_pair) -> None:
    caller, callee = await connect_pair()
    assert await caller.wait_ended(timeout=0.2) is None
    assert caller.state == "connected"
    await callee.hangup("done")
    assert await caller.wait_ended(5) == "remote_hangup"
    assert callee.end_reason == "done"


async def test_unanswered_call_ends_no_answer() -> None:
    port = RecordingPort()
    sent = port.sent
    call = Call(
        direction="outbound", peer="ghost", signaling=port, config=CallConfig(ring_timeout=0.5)
    )
    await call.start()
    assert call.state == "calling"
    assert await call.wait_ended(5) == "no_answer"
    assert [m["type"] for m in sent] == ["call_offer", "hangup"]
    assert sent[1]["reason"] == "no_answer"
    with pytest.raises(CallError, match="not_connected"):
        await call.wait_connected()


async def test_reject_reaches_the_caller() -> None:
    caller_port, callee_port = RecordingPort(), RecordingPort()
    caller = Call(direction="outbound", peer="busy-bob", signaling=caller_port)
    await caller.start()
    offer = caller_port.sent[0]
    callee = Call(
        direction="inbound",
        peer="alice",
        signaling=callee_port,
        call_id=offer["call_id"],
        remote_offer=offer["sdp"],
    )
    assert callee.state == "ringing"
    await callee.reject("busy")
    assert callee.end_reason == "rejected:busy"
    await caller.handle_signal(callee_port.sent[-1])
    assert caller.end_reason == "rejected:busy"
    with pytest.raises(InvalidStateError):
        await callee.answer()


async def test_ended_call_refuses_media_calls(connect_pair, tmp_path) -> None:
    caller, callee = await connect_pair()
    await caller.hangup()
    with pytest.raises(InvalidStateError, match="has ended"):
        caller.send_audio_file(tmp_path / "x.wav")
    with pytest.raises(InvalidStateError, match="has ended"):
        caller.record_incoming(audio_path=tmp_path / "x.wav")
    await caller.hangup()  # idempotent
    await callee.wait_ended(5)


async def test_playbacks_complete_as_ended_when_the_call_ends(connect_pair, tone_file) -> None:
    source = tone_file(".wav", 440.0, seconds=5.0)
    caller, callee = await connect_pair()
    playback = caller.send_audio_file(source)
    await asyncio.sleep(0.3)
    await callee.hangup()
    assert await asyncio.wait_for(playback, 5) == "ended"
    frames = caller.audio_frames()
    assert [f async for f in frames] == []  # iterators of an ended call end at once
