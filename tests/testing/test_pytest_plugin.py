"""The pytest plugin (`pytest11: callbot`) as a user's test suite sees it: fixtures that start a
relay, bots and calls, and assertions whose failures say what was found. Each case runs a small
test file in a fresh pytest process (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(pytester: pytest.Pytester):
    def run(source: str, *args: str) -> pytest.RunResult:
        pytester.makepyfile(test_user=source.replace("<ROOT>", str(ROOT)))
        return pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function", *args
        )

    return run


def test_fixtures_run_bots_and_calls_that_pass(run) -> None:
    result = run(
        """
import pytest
from callbot.testing import generate
from callbot.testing import Expectation, assert_speech_like, assert_tone


def test_relay(callbot_relay):
    assert callbot_relay.url.startswith("ws://127.0.0.1:")
    assert callbot_relay.mint("alice").count(".") == 2


def test_bot_file_in_process(bot_factory, caller, tmp_path):
    bot = bot_factory("<ROOT>/samples/echo_bot.py")
    assert bot.user_id == "echo" and bot.bot.connected
    tone = generate.write_tone(tmp_path / "a.wav", 440, 1.2)
    result = caller("echo", play=tone, expect=[Expectation.tone(440)])
    result.assert_ok()
    assert result.report["expectations"][0]["ok"] and result.end_reason == "hangup"
    assert result.audio == tmp_path / "call-1.wav"
    assert_tone(result.audio, 440)


def test_plugins_in_a_subprocess(bot_factory, caller):
    bot = bot_factory(as_id="desk", subprocess=True,
                      plugins=["autoaccept", "prompt:file=<ROOT>/samples/welcome.wav"])
    assert bot.process.poll() is None and bot.user_id == "desk"
    result = caller("desk", duration=5.5)
    assert result.ok, result.reason
    assert_speech_like(result.audio)
    assert "bot desk ready" in bot.output()
"""
    )
    result.assert_outcomes(passed=3)


def test_failures_say_what_was_found(run) -> None:
    result = run(
        """
from callbot.testing import generate
from callbot.testing import Expectation, assert_tone


def test_wrong_tone(bot_factory, caller, tmp_path):
    bot_factory(as_id="echo", plugins=["echo"])
    tone = generate.write_tone(tmp_path / "a.wav", 440, 1.2)
    result = caller("echo", play=tone, expect=[Expectation.dtmf("12")])
    assert result.connected and not result.ok
    try:
        result.assert_ok()
    finally:
        assert_tone(result.audio, 1000)


def test_nobody_answers(caller):
    caller("nobody", timeout=5).assert_ok()


def test_bot_file_that_breaks(bot_factory, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit('no config')")
    bot_factory(broken, subprocess=True)
"""
    )
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            # the expectation, as `callbot call` prints it
            "E*AssertionError: expectation failed: DTMF 12: */call-1.wav: expected DTMF '12',"
            " heard no DTMF",
            # the assertion, shown on the test's own line
            ">*assert_tone(result.audio, 1000)",
            "E*AssertionError: */call-1.wav: no 1000 Hz tone (strongest 4[34]?.? Hz at -*.* dBFS;"
            " 1000 Hz at -*.* dBFS, need -40)",
            '>*caller("nobody", timeout=5).assert_ok()',
            "E*AssertionError: call to nobody failed: user_offline*",
            ">*bot_factory(broken, subprocess=True)",
            "E*RuntimeError: `callbot run */broken.py --server ws://127.0.0.1:*` exited with "
            "status 1; its output:",
            "E*no config",
        ],
        consecutive=False,
    )
    assert "callbot/testing/" not in result.stdout.str()  # the plugin's frames are hidden


def test_async_tests_and_the_suites_own_relay_fixture(run, pytester: pytest.Pytester) -> None:
    """`await caller.acall()` keeps the test's loop free (an in-process bot on *that* loop
    answers), and a user's own `relay` fixture is not shadowed by the plugin."""
    pytester.makeconftest(
        """
import pytest

@pytest.fixture
def relay():
    return "the user's relay"
"""
    )
    result = run(
        """
import pytest
from callbot import Bot


def test_own_fixture_wins(relay, callbot_relay):
    assert relay == "the user's relay" and callbot_relay.url


@pytest.mark.asyncio
async def test_acall(callbot_relay, caller):
    bot = Bot("local", server=callbot_relay.url, token=callbot_relay.mint("local", role="bot"),
              ice_addresses=["127.0.0.1"])

    @bot.on_incoming
    async def answer(incoming):
        await incoming.accept()

    async with bot:
        result = await caller.acall("local", duration=0.5)
    assert result.ok, result.reason
""",
        "-p",
        "asyncio",
    )
    result.assert_outcomes(passed=2)
