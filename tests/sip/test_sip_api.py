"""The `Call` API over SIP, between two callbot ends in one process (one SIP stack): a bot
with a SIP address and a bot calling it. Interop with independent SIP peers (baresip, sipp,
Kamailio) is in the other tests of this directory."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from callbot.bot import Bot, Incoming
from callbot.errors import CallError, SipError
from callbot.media.analysis import dominant_frequency
from callbot.sip import SipSettings, stack
from callbot.sip.call import end_reason

from helpers import eventually

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("baresip") is None, reason="pip install 'callbot[sip]'"
)


@pytest.fixture
async def sip_pair(make_bot: Callable[..., Bot]) -> AsyncIterator[Callable[..., Any]]:
    """Factory: (answering bot with a SIP address on a free port, calling bot), started."""

    async def make(**settings: Any) -> tuple[Bot, Bot, str]:
        address = f"sip:ivr@127.0.0.1:{stack.free_port('127.0.0.1')}"
        ivr = make_bot("ivr", sip=SipSettings(address, **settings))
        caller = make_bot("caller")
        await ivr.start()
        await caller.start()
        return ivr, caller, address

    yield make


async def test_bot_answers_a_sip_call_plays_records_and_gets_digits_in_order(
    sip_pair: Callable[..., Any], tone_file: Callable[..., Path], tmp_path: Path
) -> None:
    ivr, caller, address = await sip_pair()
    prompt, answer = tone_file(frequency=1000, seconds=3), tone_file(frequency=600, seconds=3)
    seen: dict[str, Any] = {}

    @ivr.on_incoming
    async def take(incoming: Incoming) -> None:
        seen["from"], seen["to"], seen["meta"] = incoming.from_, incoming.to, incoming.metadata
        call = await incoming.accept()
        seen["call"] = call
        call.record_incoming(tmp_path / "at-bot.wav")
        call.send_audio_file(prompt)

    call = await caller.call(address)
    assert call.state == "calling"
    await call.wait_connected(10)
    call.record_incoming(tmp_path / "at-caller.ogg")
    call.send_audio_file(answer)
    await asyncio.sleep(1.5)
    await call.send_dtmf("47#")
    bot_call = await eventually(lambda: seen.get("call"), "the bot's call")
    await eventually(lambda: bot_call.received_dtmf, "the digits", until=lambda d: d == "47#")
    stats = await call.stats()
    await call.hangup()
    assert await bot_call.wait_ended(10) == "remote_hangup"
    assert call.end_reason == "hangup"
    assert seen["from"].startswith("sip:caller@127.0.0.1")
    assert seen["to"] == f"<{address}>"
    assert seen["meta"]["sip_call_id"] and seen["meta"]["from"].startswith("<sip:caller@")
    assert stats["received"]["audio"]["frames"] > 20
    assert abs(dominant_frequency(tmp_path / "at-caller.ogg") - 1000) < 20
    assert abs(dominant_frequency(tmp_path / "at-bot.wav") - 600) < 20


async def test_a_declined_sip_call_ends_rejected_on_both_sides(
    sip_pair: Callable[..., Any],
) -> None:
    """The stack answers a refusal 486 Busy Here whatever the reason (it has no 603 for an
    unanswered call), so the caller sees busy; a peer's 603 maps to decline (test_sipp.py)."""
    ivr, caller, address = await sip_pair()
    refused: list[Any] = []

    @ivr.on_incoming
    async def refuse(incoming: Incoming) -> None:
        refused.append(incoming._call)
        await incoming.decline("decline")

    call = await caller.call(address)
    assert await call.wait_ended(10) == "rejected:busy"
    assert refused[0].end_reason == "rejected:decline"


async def test_hold_and_resume_reach_the_sip_peer(sip_pair: Callable[..., Any]) -> None:
    ivr, caller, address = await sip_pair()
    calls: list[Any] = []
    ivr.on_incoming(lambda incoming: calls.append(incoming) or incoming.accept())
    call = await caller.call(address)
    await call.wait_connected(10)
    bot_call = await eventually(lambda: calls and calls[0]._call, "the bot's call")
    held: list[str] = []
    bot_call.on("held", held.append)
    await call.hold()
    assert call.state == "held"
    await eventually(lambda: bot_call.state, "remote hold", until=lambda s: s == "held")
    assert held == ["remote"]
    await call.resume()
    await eventually(lambda: bot_call.state, "resumed", until=lambda s: s == "connected")
    with pytest.raises(CallError, match="no data channel") as refused:  # not queued for nothing
        call.send_data("hello")
    assert refused.value.code == "no_data_channel"
    await call.hangup()


async def test_early_media_plays_before_the_answer(
    sip_pair: Callable[..., Any], tone_file: Callable[..., Path], tmp_path: Path
) -> None:
    ivr, caller, address = await sip_pair(early_media=True)
    answer_now = asyncio.Event()

    @ivr.on_incoming
    async def early(incoming: Incoming) -> None:
        await incoming.early_media(tone_file(frequency=800, seconds=5), loop=True)
        await answer_now.wait()
        await incoming.accept()

    call = await caller.call(address)
    await eventually(lambda: call.state, "early media", until=lambda s: s == "early")
    call.record_incoming(tmp_path / "early.wav")
    await asyncio.sleep(1.0)
    assert call.state == "early"
    answer_now.set()
    await call.wait_connected(10)
    await call.hangup()
    assert abs(dominant_frequency(tmp_path / "early.wav") - 800) < 20


def test_sip_close_reasons_map_to_typed_end_reasons() -> None:
    assert end_reason("486 Busy Here") == "rejected:busy"
    assert end_reason("603 Decline") == "rejected:decline"
    assert end_reason("408 Request Timeout") == "no_answer"
    assert end_reason("480 Temporarily Unavailable") == "no_answer"
    assert end_reason("404 Not Found") == "failed"
    assert end_reason("rtp stream error") == "timeout"
    assert end_reason("Connection reset by peer") == "remote_hangup"


def test_bad_sip_settings_are_a_sip_error() -> None:
    with pytest.raises(SipError, match="not a SIP address"):
        SipSettings("ivr@127.0.0.1")
    with pytest.raises(SipError, match="needs a user"):
        SipSettings("sip:127.0.0.1:5080")


async def test_without_the_stack_using_sip_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stack, "baresip", None)
    monkeypatch.setitem(sys.modules, "baresip", None)  # `import baresip` now fails
    bot = Bot("lonely", sip="sip:lonely@127.0.0.1:5999")
    with pytest.raises(SipError, match=r"baresip-python==0\.5\.2a3.*callbot\[sip\]"):
        await bot.start()
    with pytest.raises(SipError, match="callbot\\[sip\\]"):
        await Bot("other").call("sip:desk@127.0.0.1:5060")


async def test_a_peers_refer_is_refused_and_the_call_goes_on(sip_pair: Callable[..., Any]) -> None:
    """A REFER could steer a bot into calling anywhere: it is refused (603), no `transfer`."""
    ivr, caller, address = await sip_pair()
    calls: list[Any] = []
    ivr.on_incoming(lambda incoming: calls.append(incoming) or incoming.accept())
    call = await caller.call(address)
    await call.wait_connected(10)
    bot_call = await eventually(lambda: calls and calls[0]._call, "the bot's call")
    asked: list[str] = []
    bot_call.on("transfer", lambda target, replaces: asked.append(target))
    with pytest.raises(SipError, match="transfer failed"):
        await call.transfer("sip:premium@127.0.0.1:5999")
    assert asked == []
    assert bot_call.state == "connected"
    await bot_call.hangup()


async def test_relay_messages_naming_a_sip_call_never_reach_it(
    sip_pair: Callable[..., Any],
) -> None:
    """A SIP call's signalling is SIP's: a relay `error` or `hangup` that names its id (a
    confused or hostile relay) is ignored, and the SIP call has no relay inbox to fill."""
    ivr, caller, address = await sip_pair()
    ivr.on_incoming(lambda incoming: incoming.accept())
    call = await caller.call(address)
    await call.wait_connected(10)
    caller._on_message({"type": "error", "call_id": call.id, "code": "call_failed"})
    caller._on_message({"type": "hangup", "call_id": call.id, "reason": "remote"})
    await asyncio.sleep(0.5)
    assert call.state == "connected"
    assert call.id not in caller._inboxes
    await call.hangup()
