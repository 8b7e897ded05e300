"""Smoke tests of two calling apps with callbot's pytest plugin (see README.md here).

Run from the repository root:  python -m pytest samples/ci
"""

from pathlib import Path

from callbot.testing import Expectation, assert_dtmf, assert_speech_like, assert_tone, generate

SAMPLES = Path(__file__).resolve().parents[1]


def test_greeter_speaks_then_beeps(bot_factory, caller, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the greeter keeps its recordings in ./recordings
    bot_factory(SAMPLES / "greeter.py")  # in this process, on the test relay
    result = caller("greeter", duration=6)  # what the greeter says is recorded in tmp_path
    result.assert_ok()  # connected and ended normally
    assert_speech_like(result.audio)  # the welcome prompt
    assert_tone(result.audio, 1000)  # then the beep


def test_echo_sends_back_the_keys(bot_factory, caller, tmp_path):
    bot = bot_factory(SAMPLES / "echo_bot.py", subprocess=True)  # as `callbot run` runs it
    keys = generate.write_dtmf(tmp_path / "keys.wav", "159#")
    result = caller(bot.user_id, play=keys, expect=[Expectation.dtmf("159#")])
    result.assert_ok()  # the call went well and the expectation held
    assert_dtmf(result.audio, "159#")
