"""samples/voice_menu.py and the ivr plugin's speech menus, driven end to end through a real
relay by a caller that speaks (piper, offline) and recognises what the bot answers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from callbot_plugins.ivr import Menu, Node

from callbot import Call
from callbot.signaling.relay import Relay

from helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
REPLIES = ["you chose sales goodbye", "you chose support goodbye", "sorry i did not get that"]


@pytest.fixture(autouse=True)
def _voices(recognizer, speak) -> None:
    """The caller speaks and listens: the recogniser and voice load once per session."""


async def _call(make_bot, bot_id: str) -> Call:
    alice = make_bot("alice", role="user")
    await alice.start()
    call = await alice.call(bot_id)
    await call.wait_connected(30)
    return call


async def _answer_menu(call: Call, word: str) -> str:
    """Wait for the bot's question, say `word` over it, wait until the question stops (its
    barge-in is timed in tests/voice/test_call_speech.py), return the reply (transcribed)."""
    heard = call.voice_activity()
    started = await asyncio.wait_for(anext(heard), 30)  # the bot started asking
    assert started.speaking
    await (await call.say(word, "piper"))
    while (await asyncio.wait_for(anext(heard), 30)).speaking:
        pass  # the question's words, until it falls silent
    await heard.aclose()
    reply = await call.listen(timeout=20, grammar=REPLIES)
    assert reply is not None, "the bot did not answer"
    return reply.text


async def test_voice_menu_sample_understands_the_caller(
    relay: Relay, make_bot, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`callbot run samples/voice_menu.py` (joining the test's relay): saying "support"
    gets "you chose support" back, then the bot hangs up."""
    token = relay.mint("voice-desk", role="bot")
    command = [sys.executable, "-m", "callbot", "run", "samples/voice_menu.py",
               "--server", relay.url, "--token", token]  # fmt: skip
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=cli_env, stdout=out, stderr=out)
    try:
        await eventually(lambda: "bot voice-desk ready" in log.read_text(), timeout=60)
        call = await _call(make_bot, "voice-desk")
        reply = await _answer_menu(call, "support")
        ended = await call.wait_ended(20)
        assert (reply, ended) == ("you chose support goodbye", "remote_hangup"), log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)  # the process started here, by PID
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_ivr_speech_menu_follows_words_and_keys(make_bot, tmp_path: Path) -> None:
    menu = tmp_path / "menu.toml"
    menu.write_text(
        textwrap.dedent(
            """
            start = "main"
            timeout = 3
            [nodes.main]
            say = "Say sales or support, or press 1 or 2."
            keys = { "1" = "sales", "2" = "support" }
            words = { "Sales" = "sales", "support" = "support" }
            [nodes.sales]
            say = "You chose sales. Goodbye."
            keys = { "0" = "main", "#" = "hangup" }
            [nodes.support]
            say = "You chose support. Goodbye."
            keys = { "0" = "main", "#" = "hangup" }
            """
        )
    )
    desk = make_bot("desk")
    desk.use("ivr", menu=menu)
    path: list[str] = []
    desk.on("call", lambda call: call.on("ivr_node", path.append))
    await desk.start()
    call = await _call(make_bot, "desk")
    assert await _answer_menu(call, "sales") == "you chose sales goodbye"
    await call.send_dtmf("0")  # back to the menu, then a key instead of a word
    await eventually(lambda: path == ["main", "sales", "main"])
    await call.send_dtmf("2")
    await eventually(lambda: path == ["main", "sales", "main", "support"])
    await call.send_dtmf("#")
    assert await call.wait_ended(10) == "remote_hangup"


def test_a_speech_menu_word_needs_letters() -> None:
    with pytest.raises(ValueError, match="a word must have letters"):
        Menu(nodes={"main": Node(say="Say something.", words={"?!": "hangup"})})
