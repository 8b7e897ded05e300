"""Files a bot writes for its callers are named by the bot and created new: a caller's call id
(`.beep`, `../x`, one reused after a relay restart) never replaces a recording or a bot asset."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import callbot.call
from callbot import Bot, MediaError
from callbot.media import analysis
from callbot.signaling.relay import Relay
from callbot.testing import generate

from helpers import facts_of, wait_for_facts


def _call_ids(monkeypatch: pytest.MonkeyPatch, *ids: str) -> None:
    """The calls placed from now on get these ids, in order (as a hostile caller picks them)."""
    chosen = iter(ids)
    fake = SimpleNamespace(uuid4=lambda: SimpleNamespace(hex=next(chosen)))
    monkeypatch.setattr(callbot.call, "uuid", fake)


def test_recording_names_are_safe_and_new() -> None:
    from callbot import recording_name

    for hostile in (".beep", "../../etc/x", "a/b\\c", "-rf", "", "é" * 10, "x" * 500):
        name = recording_name(hostile)
        assert name.replace("-", "").replace("_", "").isalnum() and len(name) < 70
        assert not name.startswith((".", "-"))
    assert recording_name("same") != recording_name("same")
    assert "ab12" in recording_name("ab12")  # a human still finds the call


async def test_recording_never_replaces_a_file(call_pair, tmp_path: Path) -> None:
    _, callee = call_pair
    for path in (tmp_path / "earlier.wav", tmp_path / "earlier.ogg", tmp_path / "earlier.mp4"):
        path.write_bytes(b"an earlier recording")
        with pytest.raises(MediaError, match="already exists"):
            callee.record_incoming(audio_path=path)
        assert path.read_bytes() == b"an earlier recording"


async def _leave_message(make_bot, hz: float, tmp_path: Path) -> str:
    """Call the voicemail box, wait for its beep, say a tone for 1 s, hang up; the call id."""
    caller = make_bot(f"caller{int(hz)}", role="user")
    await caller.start()
    call = await caller.call("voicemail")
    frames = call.audio_frames()
    await call.wait_connected(10)
    await _hear(frames, 1000.0)  # the beep
    await asyncio.sleep(0.6)
    await call.send_audio_file(generate.write_tone(tmp_path / f"say-{hz:g}.wav", hz, 1.0))
    await call.hangup()
    await frames.aclose()
    return call.id


async def _hear(frames, hz: float, timeout: float = 8.0) -> None:
    """Wait until a tone at `hz` is heard (100 ms windows)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    window: list = []
    while loop.time() < deadline:
        window.append(await asyncio.wait_for(frames.__anext__(), deadline - loop.time()))
        if len(window) == 5:
            if analysis.tone_level_db(window, hz) > -30:
                return
            window = []
    raise AssertionError(f"never heard {hz} Hz")


async def test_a_call_named_like_the_beep_does_not_replace_it(
    make_bot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = make_bot("voicemail")
    box.use("voicemail", dir=str(tmp_path / "box"), silence_seconds=1.0, max_seconds=6)
    await box.start()
    _call_ids(monkeypatch, ".beep", "next-caller")
    await _leave_message(make_bot, 523.0, tmp_path)
    await wait_for_facts(tmp_path / "box", ".beep", 1)
    await _leave_message(make_bot, 784.0, tmp_path)  # hears the 1000 Hz beep, not 523 Hz
    assert not list((tmp_path / "box").glob(".*"))


async def _message_through_a_new_relay(tmp_path: Path, hz: float) -> None:
    """Start a relay (same state dir each time) and a voicemail box, leave one message, stop."""
    async with Relay(port=0, state_dir=tmp_path / "relay-state") as relay:
        bots: list[Bot] = []

        def make(user: str, **kwargs: Any) -> Bot:
            token = relay.mint(user, role=str(kwargs.get("role", "bot")))
            bots.append(Bot(user, server=relay.url, token=token, **kwargs))
            return bots[-1]

        box = make("voicemail")
        box.use("voicemail", dir=str(tmp_path / "box"), silence_seconds=1.0, max_seconds=6)
        await box.start()
        try:
            await _leave_message(make, hz, tmp_path)
            await wait_for_facts(tmp_path / "box", "reused", 1 if hz == 523.0 else 2)
        finally:
            await asyncio.gather(*(b.stop() for b in bots))


async def test_a_call_id_reused_after_a_relay_restart_gets_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _call_ids(monkeypatch, "reused", "reused")  # the restarted relay forgot the first one
    for hz in (523.0, 784.0):
        await _message_through_a_new_relay(tmp_path, hz)
    facts = facts_of(tmp_path / "box", "reused")
    assert len(facts) == 2 and facts[0]["audio"] != facts[1]["audio"]
    heard = sorted(analysis.dominant_frequency(tmp_path / "box" / f["audio"]) for f in facts)
    assert abs(heard[0] - 523.0) <= 5 and abs(heard[1] - 784.0) <= 5
