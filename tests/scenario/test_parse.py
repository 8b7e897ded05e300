"""The step language: every documented step parses; mistakes fail before dialling with the
line (or --step number) and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from callbot.cli import main
from callbot.scenario import (
    Impairment,
    ScenarioError,
    check_sip,
    from_strings,
    load,
    parse_duration,
    words,
)
from callbot.scenario.words import word_error_rate


def test_durations() -> None:
    assert parse_duration("2s") == 2.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1.5m") == 90.0
    assert parse_duration("3") == 3.0
    for bad in ("soon", "-1s", "2h", "1,5s", ""):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_every_step_parses(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    texts = [
        "wait 2s", "wait-for silence", "wait-for speech within 5s", "wait-for tone 1000Hz",
        "play a.wav", "play a.wav loop", "play-video a.wav", "stop", "dtmf 19#",
        "dtmf 5 inband", "dtmf 5 rfc4733", "say 'press one'", "expect tone 440 within 2s",
        "expect dtmf 123", "expect speech", "expect speech 'sales' within 5s max-wer 50%",
        "expect silence", "expect silence for 2s", "expect video-frames 30 within 3s",
        "expect mos >= 4.0", "send-data hello", "expect-data 'ok done' within 2s", "hold",
        "resume", "mute audio", "unmute video", "hangup", "expect-ended",
        "expect-ended remote_hangup within 10s",
    ]  # fmt: skip
    scenario = from_strings(texts, base=tmp_path)
    kinds = [s.kind for s in scenario.steps]
    assert kinds[:4] == ["wait", "wait-for silence", "wait-for speech", "wait-for tone"]
    assert scenario.steps[9].args == {"digits": "5", "mode": "inband"}
    assert scenario.steps[15].args == {"words": "sales", "within": 5.0, "max_wer": 0.5}
    assert scenario.steps[19].args == {"min": 4.0}
    assert scenario.wants_video


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("jump 3", "unknown step 'jump'"),
        ("wait soon", "'soon' is not a duration"),
        ("expect tone 440 within forever", "'forever' is not a duration"),
        ("dtmf 1x", "x"),
        ("play missing.wav", "file 'missing.wav' not found"),
        ("expect tone loud", "'loud' is not a frequency"),
        ("expect mos > 4", "expect mos takes `>= X`"),
        ("say 'unclosed", "No closing quotation"),
        ("hold now", "hold takes no argument"),
    ],
)
def test_inline_mistakes_name_the_step(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as error:
        from_strings(["wait 1s", text], base=tmp_path)
    assert str(error.value).startswith("--step 2: "), error.value
    assert problem in str(error.value)


def test_file_mistakes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "smoke.yaml"
    path.write_text("impair: loss=5%\nsteps:\n  - wait 1s\n\n  - expect tone 440 withn 2s\n")
    with pytest.raises(ScenarioError, match=r"smoke.yaml:5: .*expect takes tone HZ"):
        load(path)
    path.write_text("steps:\n  - play prompt.wav\n")
    with pytest.raises(ScenarioError, match=r"smoke.yaml:2: file 'prompt.wav' not found"):
        load(path)
    path.write_text("impair: loss=150%\nsteps:\n  - wait 1s\n")
    with pytest.raises(ScenarioError, match=r"smoke.yaml:1: loss=150% is not between"):
        load(path)
    path.write_text("stpes:\n  - wait 1s\n")
    with pytest.raises(ScenarioError, match=r"smoke.yaml:1: unknown setting 'stpes'"):
        load(path)


def test_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "a.wav").write_bytes(b"")
    path = tmp_path / "fixtures" / "smoke.yaml"
    path.write_text("name: smoke\nimpair: loss=5%,burst=3,jitter=30ms,delay=80ms\n"
                    "steps:\n  - play a.wav\n")  # fmt: skip
    scenario = load(path)
    assert scenario.steps[0].args["path"] == tmp_path / "fixtures" / "a.wav"
    assert scenario.steps[0].where == f"{path}:4"
    assert scenario.impair == Impairment(loss=0.05, burst=3, jitter=0.03, delay=0.08)
    assert scenario.name == "smoke"


def test_impairment_spec() -> None:
    assert Impairment.parse("loss=5%") == Impairment(loss=0.05)
    assert Impairment.parse("delay=80ms, jitter=0.03") == Impairment(delay=0.08, jitter=0.03)
    for bad in ("loss=5", "burst=0.5", "speed=3", "", "delay=20s"):
        with pytest.raises(ValueError):
            Impairment.parse(bad)


def test_word_error_rate_spots_words_inside_a_prompt() -> None:
    heard = ["press", "two", "for", "the", "operator"]
    assert word_error_rate(["operator"], heard) == 0.0
    assert word_error_rate(["for", "the", "operator"], heard) == 0.0
    assert word_error_rate(["sales"], heard) == 1.0
    assert word_error_rate(["two", "to", "the", "operator"], heard) == 0.25


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("send-data hello", "SIP calls have no data channel"),
        ("expect-data ok", "SIP calls have no data channel"),
        ("play-video a.wav", "SIP calls are audio-only"),
        ("expect video-frames 10", "SIP calls are audio-only"),
        ("mute video", "SIP calls are audio-only"),
        ("unmute video", "SIP calls are audio-only"),
    ],
)
def test_steps_a_sip_call_cannot_run_name_the_step(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    scenario = from_strings(["dtmf 1", "mute audio", "hold", text], base=tmp_path)
    check_sip(from_strings(["dtmf 1", "mute audio", "hold", "resume", "expect mos >= 3"]))
    with pytest.raises(ScenarioError) as error:
        check_sip(scenario)
    assert str(error.value) == f"--step 4: `{text}` cannot run on a SIP call: {why}"


def test_a_sip_call_takes_no_video_setting_and_no_impairment(tmp_path: Path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text("video: true\nsteps:\n  - dtmf 1\n")
    with pytest.raises(ScenarioError, match=r"ivr.yaml: `video: true` cannot go with a SIP"):
        check_sip(load(path))
    path.write_text("impair: loss=5%\nsteps:\n  - dtmf 1\n")
    with pytest.raises(ScenarioError, match="--impair applies to WebRTC calls only"):
        check_sip(load(path))


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["sip:desk@127.0.0.1:9", "--step", "wait 1s", "--step", "send-data hi"],
         "--step 2: `send-data hi` cannot run on a SIP call: SIP calls have no data channel"),
        (["sip:desk@127.0.0.1:9", "--step", "dtmf 1", "--impair", "loss=5%"],
         "--impair applies to WebRTC calls only: a SIP call's RTP is sent and received inside "
         "the SIP stack (baresip), where callbot cannot delay or drop packets"),
        (["desk", "--step", "expect speech 'qwzxv'"],
         "--step 1: not in the recogniser's dictionary: qwzxv"),
    ],
)  # fmt: skip
def test_callbot_call_checks_the_scenario_for_the_peer_before_dialling(
    args: list[str], line: str, tmp_path: Path
) -> None:
    """Exit 2 with the one line, nothing dialled (no relay, no SIP peer listens there)."""
    if "expect speech" in args[-1] and words.available() is not None:
        pytest.skip("needs pocketsphinx (callbot[voice])")
    result = CliRunner().invoke(main, ["call", *args, "--state-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == f"Error: {line}"
    assert result.exception is None or isinstance(result.exception, SystemExit)
