"""The step language: every documented step parses; mistakes fail before dialling with the
line (or --step number) and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbot.scenario import Impairment, ScenarioError, from_strings, load, parse_duration
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
