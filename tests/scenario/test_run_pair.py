"""Scenarios run on a real call between two in-process peers; the far side echoes, sends
keys or data, so each step's verdict is checked against media that really crossed."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbot.call import Call
from callbot.scenario import Impairment, from_strings, run_scenario, words
from callbot.testing import generate
from callbot.testing.generate import espeak_available


async def echo(callee: Call) -> None:
    await callee.set_audio_source(callee.remote_track("audio"))


async def test_echoed_tone_passes_and_wrong_tone_fails(call_pair, tmp_path: Path) -> None:
    caller, callee = call_pair
    await echo(callee)
    generate.write_tone(tmp_path / "a.wav", 440.0, 1.0)
    scenario = from_strings(
        ["play a.wav", "expect tone 440 within 2s", "expect tone 1000 within 1s", "hangup"],
        base=tmp_path,
    )
    report = await run_scenario(caller, scenario)
    steps = report["steps"]
    print(report)
    assert [s["ok"] for s in steps] == [True, True, False, None]
    failure = report["scenario"]["failure"]
    assert failure.startswith("step 3 (--step 3) `expect tone 1000 within 1s` failed:")
    assert "440" in failure and "\n" not in failure
    assert report["grades"]["mouth_to_ear_ms"] is not None


async def test_impaired_loss_lowers_the_mos(connect_pair, tmp_path: Path) -> None:
    """10 % loss each way at the caller's sockets: both directions see it, the MOS drops, and
    `expect mos >= 4.0` fails naming the loss; the clean call passes it. (4 s: the sent
    direction needs the far side's receiver reports, one every 0.5-1.5 s, some lost too.)"""
    generate.write_tone(tmp_path / "a.wav", 440.0, 4.0)
    steps = ["play a.wav", "expect mos >= 4.0"]
    moses = {}
    for impair in (None, Impairment.parse("loss=10%,burst=2")):
        caller, callee = await connect_pair()
        await echo(callee)
        report = await run_scenario(caller, from_strings(steps, tmp_path, impair))
        moses[impair is not None] = report
    clean, lossy = moses[False], moses[True]
    assert clean["scenario"]["ok"], clean["scenario"]["failure"]
    assert not lossy["scenario"]["ok"]
    assert lossy["scenario"]["failure"].startswith("step 2 (--step 2) `expect mos >= 4.0` failed")
    dropped = lossy["grades"]["impaired_packets"]
    assert dropped["sent"]["dropped"] > 0 and dropped["received"]["dropped"] > 0
    assert lossy["grades"]["received"]["loss_percent"] > 3
    assert lossy["grades"]["received"]["mos"] < clean["grades"]["received"]["mos"] - 0.3
    assert lossy["grades"]["sent"]["mos"] < clean["grades"]["sent"]["mos"] - 0.3


async def test_keys_and_data_from_the_far_side(call_pair) -> None:
    caller, callee = call_pair

    async def reply() -> None:
        assert await callee.read_dtmf(5) == "4"
        await callee.send_dtmf("27")
        callee.send_data("got 4")

    import asyncio

    task = asyncio.ensure_future(reply())
    steps = ["dtmf 4", "expect dtmf 27 within 3s", "expect-data 'got 4' within 2s"]
    scenario = from_strings([*steps, "expect dtmf 99 within 0.5s"])
    report = await run_scenario(caller, scenario)
    await task
    assert [s["ok"] for s in report["steps"]] == [True, True, True, False], report["steps"]
    assert "expected DTMF '99'" in report["scenario"]["failure"]
    assert "heard DTMF '27'" in report["scenario"]["failure"]


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng (Debian package espeak-ng)")
@pytest.mark.skipif(words.available() is not None, reason="needs pocketsphinx (callbot[voice])")
async def test_words_heard_through_the_call(call_pair) -> None:
    """espeak-ng says a prompt into the call; the far side echoes it; the expected words are
    spotted and a word the prompt does not have fails, with what was heard."""
    caller, callee = call_pair
    await echo(callee)
    steps = ["say 'press two for the operator'", "expect speech 'operator' within 4s"]
    scenario = from_strings([*steps, "expect speech 'billing' within 2s"])
    report = await run_scenario(caller, scenario)
    assert [s["ok"] for s in report["steps"]] == [True, True, False], report["steps"]
    failure = report["scenario"]["failure"]
    assert "expected 'billing'" in failure and "heard '" in failure, failure
    assert "operator" in report["steps"][1]["measured"]["heard"]


async def test_hold_mute_and_looped_play(call_pair, tmp_path: Path) -> None:
    """A looped tone comes back through the echo; on hold nothing comes back; after resume it
    does again; muted, silence; `stop` ends the loop."""
    caller, callee = call_pair
    await echo(callee)
    generate.write_tone(tmp_path / "a.wav", 440.0, 0.5)
    steps = ["play a.wav loop", "expect tone 440 within 3s", "hold", "wait 0.3s",
             "expect silence for 1s", "resume", "expect tone 440 within 3s", "mute audio",
             "wait 0.3s", "expect silence for 1s", "unmute audio", "stop", "hangup"]  # fmt: skip
    report = await run_scenario(caller, from_strings(steps, tmp_path))
    assert report["scenario"]["ok"], report["scenario"]["failure"]
    assert caller.state == "ended"


async def test_video_frames_and_freezes(connect_pair, tmp_path: Path) -> None:
    caller, callee = await connect_pair(video=True)
    await echo(callee)
    await callee.set_video_source(callee.remote_track("video"))
    generate.write_video(tmp_path / "clip.webm", 3.0, (320, 240), 15, 440.0)
    steps = ["play-video clip.webm", "expect video-frames 20 within 3s",
             "expect video-frames 1000 within 0.5s"]  # fmt: skip
    report = await run_scenario(caller, from_strings(steps, tmp_path))
    assert [s["ok"] for s in report["steps"]] == [True, True, False], report["steps"]
    assert "expected 1000 video frames within 0.5 s; got" in report["scenario"]["failure"]
    video = report["grades"]["video"]
    assert video["frames"] >= 20 and video["longest_gap_ms"] is not None, video
