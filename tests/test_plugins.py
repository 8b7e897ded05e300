"""Plugins: loading by name, entry point or path, typed options, and the built-in behaviours."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import av
import pytest

import callbot.call
from callbot import Bot
from callbot.media import analysis
from callbot.plugins import PluginError, available, configure, load_plugin, parse_spec
from callbot.signaling.relay import Relay
from callbot.testing import generate

from helpers import collect_frames, wait_for_facts


def test_builtins_are_registered_as_entry_points() -> None:
    assert {"autoaccept", "echo", "prompt", "record"} <= set(available())
    assert load_plugin("echo").__module__ == "callbot_plugins.echo"


def test_spec_parsing() -> None:
    assert parse_spec("record") == ("record", {})
    assert parse_spec("record:dir=out, video=false") == ("record", {"dir": "out", "video": "false"})
    assert parse_spec("./x.py:a=1") == ("./x.py", {"a": "1"})
    with pytest.raises(PluginError, match="not key=value"):
        parse_spec("record:dir")


def test_options_are_typed_and_checked() -> None:
    setup = load_plugin("record")
    assert configure(setup, {"dir": "out", "video": "no"}) == {"dir": Path("out"), "video": False}
    with pytest.raises(PluginError, match=r"no option 'colour' \(options: dir=recordings"):
        configure(setup, {"colour": "red"})
    with pytest.raises(PluginError, match="video='maybe': expected true or false"):
        configure(setup, {"video": "maybe"})
    with pytest.raises(PluginError, match=r"needs option.* file"):
        configure(load_plugin("prompt"), {})


def test_unknown_plugin_names_the_known_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown plugin 'nosuch' \(known: .*echo"):
        load_plugin("nosuch")
    with pytest.raises(PluginError, match="not found"):
        load_plugin("./missing_plugin.py")


def test_plugin_from_a_file_with_options(tmp_path: Path) -> None:
    source = tmp_path / "greeting.py"
    source.write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            def setup(bot, word: str = "hi", times: int = 1, out: Path | None = None):
                bot.greeting = word * times
            """
        )
    )
    bot = Bot("x", server="ws://unused", token="unused")
    bot.use(f"{source}:word=yo,times=3")
    assert bot.greeting == "yoyoyo"  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match="times='many': expected a number"):
        bot.use(str(source), times="many")
    broken = tmp_path / "broken.py"
    broken.write_text("def nothing(): pass\n")
    with pytest.raises(PluginError, match="defines no setup"):
        load_plugin(str(broken))


async def _bots(relay: Relay, *callee_plugins: tuple[str, dict[str, object]]) -> tuple[Bot, Bot]:
    callee = Bot("plugged", server=relay.url, token=relay.mint("plugged", role="bot"))
    for name, options in callee_plugins:
        callee.use(name, **options)
    caller = Bot("alice", server=relay.url, token=relay.mint("alice"), role="user")
    await callee.start()
    await caller.start()
    return callee, caller


async def test_record_plugin_writes_audio_video_and_facts(
    relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = generate.write_video(tmp_path / "clip.webm", seconds=1.5, tone=660.0)
    out = tmp_path / "recordings"
    # the caller picks the call id: one that would name hidden files (or a bot's `.beep`)
    monkeypatch.setattr(callbot.call, "uuid", SimpleNamespace(uuid4=lambda: SimpleNamespace(
        hex=".beep")))  # fmt: skip
    callee, caller = await _bots(
        relay, ("autoaccept", {"video": True}), ("record", {"dir": str(out)})
    )
    try:
        call = await caller.call("plugged", video=True, metadata={"case": 7})
        await call.wait_connected(10)
        await call.send_video_file(clip)
        await asyncio.sleep(0.3)
        await call.hangup()
        await wait_for_facts(out, ".beep")  # written once the recordings are finalised
    finally:
        await caller.stop()
        await callee.stop()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    (facts_file,) = out.glob("*.json")  # named by the bot: time, safe call id, random tag
    facts = json.loads(facts_file.read_text())
    assert facts["call_id"] == ".beep" and "-beep-" in facts_file.name
    assert facts["peer"] == "alice" and facts["end_reason"] == "remote_hangup"
    assert facts["metadata"] == {"case": 7} and facts["duration"] > 1.5
    assert facts["audio"] == f"{facts_file.stem}.wav"
    assert facts["video"] == f"{facts_file.stem}.webm"
    assert abs(analysis.dominant_frequency(out / facts["audio"]) - 660) <= 5
    with av.open(str(out / facts["video"])) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 30


async def test_prompt_plugin_plays_on_connect(relay: Relay, tmp_path: Path) -> None:
    prompt = generate.write_tone(tmp_path / "prompt.ogg", 880.0, seconds=1.0)
    callee, caller = await _bots(relay, ("autoaccept", {}), ("prompt", {"file": str(prompt)}))
    try:
        call = await caller.call("plugged")
        frames = call.audio_frames()
        await call.wait_connected(10)
        heard = await collect_frames(frames, 1.2)
        assert abs(analysis.dominant_frequency(heard) - 880) <= 5
        await call.hangup()
    finally:
        await caller.stop()
        await callee.stop()


async def test_prompt_plugin_rejects_a_bad_file_at_startup(tmp_path: Path) -> None:
    bot = Bot("x", server="ws://unused", token="unused")
    with pytest.raises(Exception, match="file not found"):
        bot.use("prompt", file=str(tmp_path / "missing.wav"))


async def test_echo_plugin_returns_audio_and_video(relay: Relay, tmp_path: Path) -> None:
    clip = generate.write_video(tmp_path / "clip.webm", seconds=3.0, tone=523.0)
    callee, caller = await _bots(relay, ("echo", {}))
    try:
        call = await caller.call("plugged", video=True)
        await call.wait_connected(10)
        audio, video = call.audio_frames(), call.video_frames()
        call.send_video_file(clip)
        heard, seen = await asyncio.gather(collect_frames(audio, 2.0), collect_frames(video, 2.0))
        assert abs(analysis.dominant_frequency(heard[-50:]) - 523) <= 5
        moving = {int(f.to_ndarray(format="gray")[240].argmax()) for f in seen[-15:]}
        assert len(seen) > 20 and len(moving) > 5  # the moving bar came back
        await call.hangup()
    finally:
        await caller.stop()
        await callee.stop()
