"""Scenarios on SIP calls against an independent peer (Debian baresip answering with G.711, a
440 Hz tone, then silence until it hangs up): tones, keys and the far side's hangup are heard,
graded from the SIP stack's RTCP (not before its first report); mute, hold and resume reach it;
and steps a SIP call cannot run fail before anything is dialled.
The IVR sample over SIP is the documented job (tests/scenario/test_scenarios_doc.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from baresip_peer import BaresipPeer

from callbot.media import analysis
from callbot.scenario import ScenarioError
from callbot.testing import Caller

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("baresip") is None, reason="pip install 'callbot[sip]'"
)

ROOT = Path(__file__).resolve().parents[2]


async def callbot_call(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run `callbot call ARGS`: (exit code, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "call", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_scenario_on_a_baresip_peer_hears_its_tone_sends_keys_and_sees_it_hang_up(
    baresip_peer: Callable[..., Awaitable[BaresipPeer]], pcm_tone: Any, caller: Caller,
    cli_env: dict[str, str],
) -> None:  # fmt: skip
    peer = await baresip_peer(user="desk", play=pcm_tone(440.0, 2), call_seconds=7)
    # first, what a SIP call cannot do: refused before dialling, with the step's line
    code, err = await callbot_call(cli_env, peer.uri, "--step", "dtmf 1", "--step", "send-data hi")
    assert code == 2, err
    assert err.splitlines()[-1] == (
        "Error: --step 2: `send-data hi` cannot run on a SIP call: SIP calls have no data channel"
    )
    code, err = await callbot_call(cli_env, peer.uri, "--step", "dtmf 1", "--impair", "loss=5%")
    assert code == 2 and "Error: --impair applies to WebRTC calls only" in err, err
    with pytest.raises(ScenarioError, match="--step 1: `expect video-frames 5` cannot run"):
        await caller.run_scenario(peer.uri, ["expect video-frames 5"])
    assert not [e for e in peer.events if str(e.get("type")).startswith("CALL_")], peer.events

    steps = ["expect tone 440 within 5s", "dtmf 42", "wait-for silence within 5s",
             "expect-ended within 10s"]  # fmt: skip
    result = await caller.run_scenario(peer.uri, steps, record=None)
    result.assert_ok()
    assert [s["ok"] for s in result.report["steps"]] == [True] * 4
    assert result.report["steps"][1]["measured"] == {"digits": "42", "mode": "rfc4733"}
    assert result.report["end_reason"] == "remote_hangup"
    assert peer.received_digits() == "42"
    grades = result.report["grades"]
    # baresip sends RTCP every 5 s from the start of media: 7 s of call bring one report
    assert grades["rtcp_reports"] >= 1, grades
    received, sent = grades["received"], grades["sent"]
    assert received["codec"] == "g711" and received["codec_values"]["bpl"] == 25.1, grades
    assert received["packets"] > 200 and received["lost"] == 0 and sent["lost"] == 0, grades
    assert grades["mos"] == min(received["mos"], sent["mos"]) > 4.0, grades
    assert "dropouts" not in received and "impaired_packets" not in grades

    early = await caller.run_scenario(peer.uri, ["expect mos >= 3"], record=None)
    assert early.reason == (  # the first RTCP report comes 5 s into the call
        "step 1 (--step 1) `expect mos >= 3` failed: expected a MOS; the SIP stack has no RTCP "
        "report from the far side yet"
    ), early.reason


async def test_mute_hold_and_resume_steps_reach_a_baresip_peer(
    baresip_peer: Callable[..., Awaitable[BaresipPeer]], pcm_tone: Any,
    tone_file: Callable[..., Path], caller: Caller,
) -> None:  # fmt: skip
    """What baresip records of the scenario's 1 kHz tone: silence while muted, the tone again
    after, nothing from the hold on; and baresip's 440 Hz is heard again after `resume` (it
    resumed sending). baresip 1.0 decodes nothing more after answering the hold `recvonly`,
    even once resumed, though our RTP flows again (same SSRC, sequence and timestamps
    continuing, seen on the wire while writing this test): that half is the peer's."""
    peer = await baresip_peer(user="desk", play=pcm_tone(440.0, 25), call_seconds=25)
    tone = tone_file(frequency=1000, seconds=5)
    steps = [f"play {tone} loop", "expect tone 440 within 5s", "wait 1s", "mute audio",
             "wait 2s", "unmute audio", "wait 2s", "hold", "wait 2s", "resume",
             "expect tone 440 within 3s", "hangup"]  # fmt: skip
    result = await caller.run_scenario(peer.uri, steps, record=None)
    result.assert_ok()
    await peer.wait_closed()
    (recording,) = peer.recordings()
    clip = analysis.load_audio(recording)
    seconds = len(clip.samples) / clip.rate
    at = {step["text"].split()[0]: step["at"] for step in result.report["steps"]}
    muted = at["unmute"] - at["mute"]
    # the mute is the one long silence; the recording ends at the hold (see the docstring)
    (quiet,) = analysis.silent_spans(clip, min_duration=1.0)
    assert muted - 0.5 < quiet[1] - quiet[0] < muted + 0.5, (quiet, at)
    assert analysis.has_tone(clip.slice(0, quiet[0]), 1000)
    assert analysis.has_tone(clip.slice(quiet[1], seconds), 1000)
    assert quiet[1] + (at["hold"] - at["unmute"]) - 0.5 < seconds, (seconds, quiet, at)
    assert seconds < quiet[1] + (at["hold"] - at["unmute"]) + 0.5, (seconds, quiet, at)
