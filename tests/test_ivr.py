"""The ivr and voicemail plugins, driven with real DTMF through a real relay.

Prompts are generated tones, so what the caller hears tells which menu node it is in.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from callbot_plugins.ivr import Menu, Node

from callbot import Bot, Call, Incoming
from callbot.media import analysis
from callbot.testing import generate

from helpers import eventually, wait_for_facts

PROMPTS = {"main": 440.0, "sales": 660.0, "support": 880.0, "invalid": 300.0}


@pytest.fixture
def menu_file(tmp_path: Path) -> Path:
    for name, hz in PROMPTS.items():
        generate.write_tone(tmp_path / f"{name}.wav", hz, seconds=0.6)
    path = tmp_path / "menu.toml"
    path.write_text(
        textwrap.dedent(
            """
            start = "main"
            timeout = 1.5
            retries = 1
            invalid = "invalid.wav"

            [nodes.main]
            prompt = "main.wav"

            [nodes.main.keys]
            "1" = "sales"
            "2" = "support"
            "4" = "transfer:operator"
            "5" = "record:8"
            "9" = "hangup"
            "*" = "repeat"

            [nodes.sales]
            prompt = "sales.wav"
            keys = { "0" = "main", "#" = "hangup" }

            [nodes.support]
            prompt = "support.wav"
            keys = { "0" = "main" }
            """
        )
    )
    return path


async def _hear(frames, hz: float, timeout: float = 6.0) -> None:
    """Wait until the caller hears a tone at `hz` (100 ms at a time)."""
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


async def _caller(make_bot, bot_id: str = "desk") -> tuple[Call, object]:
    alice = make_bot("alice", role="user")
    await alice.start()
    call = await alice.call(bot_id)
    frames = call.audio_frames()
    await call.wait_connected(10)
    return call, frames


async def _ivr_bot(make_bot, menu: Path | Menu, tmp_path: Path) -> tuple[Bot, list[list[str]]]:
    desk = make_bot("desk")
    desk.use("ivr", menu=menu, dir=str(tmp_path / "messages"))
    paths: list[list[str]] = []

    @desk.on("call")
    def track(call: Call) -> None:
        path: list[str] = []
        paths.append(path)
        call.on("ivr_node", path.append)

    await desk.start()
    return desk, paths


async def test_menu_navigation_and_hangup(make_bot, menu_file: Path, tmp_path: Path) -> None:
    _, paths = await _ivr_bot(make_bot, menu_file, tmp_path)
    call, frames = await _caller(make_bot)
    await _hear(frames, PROMPTS["main"])
    await call.send_dtmf("1")
    await _hear(frames, PROMPTS["sales"])
    await call.send_dtmf("0")
    await _hear(frames, PROMPTS["main"])
    await call.send_dtmf("2")
    await _hear(frames, PROMPTS["support"])
    await call.send_dtmf("0")
    await _hear(frames, PROMPTS["main"])
    await call.send_dtmf("9")
    assert await call.wait_ended(5) == "remote_hangup"
    assert paths == [["main", "sales", "main", "support", "main"]]


async def test_wrong_key_then_timeouts_end_the_call(
    make_bot, menu_file: Path, tmp_path: Path
) -> None:
    _, paths = await _ivr_bot(make_bot, menu_file, tmp_path)
    call, frames = await _caller(make_bot)
    await _hear(frames, PROMPTS["main"])
    await call.send_dtmf("7")  # not in the menu
    await _hear(frames, PROMPTS["invalid"])
    await _hear(frames, PROMPTS["main"])  # the node again
    # then nothing: one more miss than `retries` allows ends the call
    assert await call.wait_ended(10) == "remote_hangup"
    assert paths == [["main", "main"]]


async def test_barge_in_and_type_ahead(make_bot, menu_file: Path, tmp_path: Path) -> None:
    _, paths = await _ivr_bot(make_bot, menu_file, tmp_path)
    call, _ = await _caller(make_bot)
    await call.send_dtmf("1#", duration_ms=60, gap_ms=50)  # before the prompt could end
    assert await call.wait_ended(5) == "remote_hangup"
    assert paths == [["main", "sales"]]


async def test_keys_played_as_audio_drive_the_menu(
    make_bot, menu_file: Path, tmp_path: Path
) -> None:
    """`callbot call desk --play keys.wav` (samples/ivr_bot.py): the keys are tones in the
    audio although both ends negotiated telephone-events, and the menu follows them."""
    _, paths = await _ivr_bot(make_bot, menu_file, tmp_path)
    call, _ = await _caller(make_bot)
    assert call.dtmf_mode == "rfc4733"
    keys = generate.write_dtmf(tmp_path / "keys.wav", "1#", duration=0.12, gap=0.3)
    call.send_audio_file(keys)
    assert await call.wait_ended(10) == "remote_hangup"
    assert paths == [["main", "sales"]]


async def test_transfer_action(make_bot, menu_file: Path, tmp_path: Path) -> None:
    operator = make_bot("operator")
    answered: list[Call] = []

    @operator.on_incoming
    async def take(incoming: Incoming) -> None:
        answered.append(await incoming.accept())

    await operator.start()
    await _ivr_bot(make_bot, menu_file, tmp_path)
    call, frames = await _caller(make_bot)
    transferred: list[Call] = []
    call.on("transferred", transferred.append)
    await _hear(frames, PROMPTS["main"])
    await call.send_dtmf("4")
    assert await call.wait_ended(5) == "transferred"
    await eventually(lambda: transferred and answered, "the transferred call")
    await transferred[0].wait_connected(10)
    assert answered[0].metadata["transferred_by"] == "desk"
    await transferred[0].hangup()


async def test_record_action_saves_the_message(make_bot, menu_file: Path, tmp_path: Path) -> None:
    speech = generate.write_tone(tmp_path / "speech.wav", 523.0, seconds=1.5)
    await _ivr_bot(make_bot, menu_file, tmp_path)
    call, frames = await _caller(make_bot)
    await _hear(frames, PROMPTS["main"])
    await call.send_dtmf("5")
    await asyncio.sleep(0.3)
    await call.send_audio_file(speech)
    assert await call.wait_ended(10) == "remote_hangup"  # 3 s of silence ended the message
    (facts,) = await wait_for_facts(tmp_path / "messages", call.id)
    assert facts["ended_by"] == "silence" and facts["caller"] == "alice"
    audio = tmp_path / "messages" / facts["audio"]
    assert abs(analysis.dominant_frequency(audio) - 523.0) <= 5
    assert abs(analysis.active_seconds(audio) - 1.5) < 0.15


async def test_menu_in_python_and_broken_menus(make_bot, tmp_path: Path) -> None:
    prompt = generate.write_tone(tmp_path / "p.wav", 440.0, seconds=0.5)
    menu = Menu(nodes={"main": Node(prompt, {"9": "hangup"})}, timeout=1.0)
    await _ivr_bot(make_bot, menu, tmp_path)
    call, frames = await _caller(make_bot)
    await _hear(frames, 440.0)
    await call.send_dtmf("9")
    assert await call.wait_ended(5) == "remote_hangup"
    with pytest.raises(ValueError, match="leads to 'nowhere'"):
        Menu(nodes={"main": Node(prompt, {"1": "nowhere"})})
    with pytest.raises(ValueError, match="start node 'lobby'"):
        Menu(nodes={"main": Node(prompt)}, start="lobby")
    with pytest.raises(ValueError, match="not found"):
        Menu(nodes={"main": Node(tmp_path / "missing.wav")})


@pytest.mark.parametrize(
    ("talk", "expected_end"),
    [(1.5, "silence"), (None, "hangup")],
)
async def test_voicemail(make_bot, tmp_path: Path, talk: float | None, expected_end: str) -> None:
    greeting = generate.write_tone(tmp_path / "greeting.wav", 700.0, seconds=0.5)
    box = make_bot("voicemail")
    box.use("voicemail", dir=str(tmp_path / "box"), greeting=str(greeting),
            silence_seconds=1.5, max_seconds=8)  # fmt: skip
    await box.start()
    speech = generate.write_tone(tmp_path / "speech.wav", 523.0, seconds=talk or 3.0)
    call, frames = await _caller(make_bot, "voicemail")
    await _hear(frames, 700.0)  # the greeting
    await _hear(frames, 1000.0)  # the beep
    await asyncio.sleep(0.6)  # the message starts once the beep is over
    if talk is not None:
        await call.send_audio_file(speech)
        assert await call.wait_ended(8) == "remote_hangup"
    else:
        playback = call.send_audio_file(speech)
        await asyncio.sleep(1.5)
        playback.stop()
        await call.hangup()  # the caller hangs up mid-message
    (facts,) = await wait_for_facts(tmp_path / "box", call.id)
    assert facts["ended_by"] == expected_end and facts["caller"] == "alice"
    audio = tmp_path / "box" / facts["audio"]
    assert abs(analysis.dominant_frequency(audio) - 523.0) <= 5
    assert abs(analysis.active_seconds(audio) - 1.5) < 0.2


def test_the_samples_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from callbot.cli.runner import load_bots

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)  # the samples write their recordings relative to the cwd
    (ivr,) = load_bots(root / "samples" / "ivr_bot.py", None)
    (box,) = load_bots(root / "samples" / "voicemail_bot.py", None)
    assert (ivr.user_id, box.user_id) == ("desk", "voicemail")
    assert len(ivr._handlers) == len(box._handlers) == 1
