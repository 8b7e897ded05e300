"""voicemail: greet the caller, beep, record a message until silence or a maximum length, then
save it as `<dir>/<name>.wav` plus `<dir>/<name>.json` (call id, caller, time, length, how it
ended). The bot chooses `<name>` (`recording_name`) and never replaces a file; its default beep
lives in a private temporary directory, out of the callers' reach.

`take_message()` is the recording part on its own; the ivr plugin uses it for its `record`
action.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from callbot import Bot, Call, Incoming, recording_name
from callbot.media import analysis
from callbot.testing import generate

#: Level (dBFS over 100 ms) above which the caller counts as speaking.
SPEECH_DB = -40.0
WINDOW = 0.1


@dataclass
class Message:
    """One message left by a caller."""

    call_id: str
    caller: str
    bot: str
    received_at: str
    seconds: float
    ended_by: str  # "silence", "max_length", "no_speech" or "hangup"
    audio: str


async def take_message(
    call: Call,
    directory: Path,
    *,
    max_seconds: float = 60.0,
    silence_seconds: float = 3.0,
    no_speech_seconds: float = 10.0,
    bot: str = "",
) -> Message:
    """Record the caller until `silence_seconds` of silence after speech, `max_seconds` in all,
    `no_speech_seconds` without a word, or the hangup; save the audio and its JSON."""
    directory.mkdir(parents=True, exist_ok=True)
    name = recording_name(call.id)
    path = directory / f"{name}.wav"
    received_at = datetime.now(UTC).isoformat()
    frames = call.audio_frames()
    recording = call.record_incoming(audio_path=path)
    started = time.monotonic()
    ended_by = await _listen(frames, max_seconds, silence_seconds, no_speech_seconds)
    await frames.aclose()
    await recording.stop()
    message = Message(
        call_id=call.id,
        caller=call.peer,
        bot=bot,
        received_at=received_at,
        seconds=round(time.monotonic() - started, 2),
        ended_by=ended_by if call.state != "ended" else "hangup",
        audio=path.name,
    )
    with (directory / f"{name}.json").open("x") as out:  # new, like the recording
        json.dump(asdict(message), out, indent=2)
    return message


async def _listen(frames, max_seconds: float, silence_seconds: float, no_speech: float) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    heard = False
    quiet_since = loop.time()
    window: list = []
    while (left := deadline - loop.time()) > 0:
        try:
            frame = await asyncio.wait_for(frames.__anext__(), left)
        except StopAsyncIteration:
            return "hangup"
        except TimeoutError:
            return "max_length"
        window.append(frame)
        if sum(f.samples for f in window) < WINDOW * frame.sample_rate:
            continue
        if analysis.level_dbfs(window) > SPEECH_DB:
            heard, quiet_since = True, loop.time()
        window = []
        quiet = loop.time() - quiet_since
        if heard and quiet >= silence_seconds:
            return "silence"
        if not heard and quiet >= no_speech:
            return "no_speech"
    return "max_length"


def _private_dir() -> Path:
    """A directory only this process writes (mode 0700), removed at exit: for the bot's own
    generated prompts, which must not sit where recordings named after calls go."""
    path = Path(tempfile.mkdtemp(prefix="callbot-voicemail-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def setup(
    bot: Bot,
    dir: Path = Path("voicemail"),
    greeting: Path | None = None,
    beep: Path | None = None,
    max_seconds: float = 60.0,
    silence_seconds: float = 3.0,
    accept: bool = True,
) -> None:
    dir.mkdir(parents=True, exist_ok=True)
    if beep is None:
        beep = generate.write_tone(_private_dir() / "beep.wav", 1000.0, seconds=0.4, amplitude=0.4)
    for prompt in (greeting, beep):
        if prompt is not None and not prompt.is_file():
            raise FileNotFoundError(f"voicemail: {prompt} not found")

    if accept:

        @bot.on_incoming
        async def answer(incoming: Incoming) -> None:
            await incoming.accept()

    @bot.on("call")
    def attach(call: Call) -> None:
        @call.on("connected")
        async def leave_a_message() -> None:
            if greeting is not None:
                await call.send_audio_file(greeting)
            await call.send_audio_file(beep)
            await take_message(call, dir, max_seconds=max_seconds,
                               silence_seconds=silence_seconds, bot=bot.user_id)  # fmt: skip
            if call.state != "ended":
                await call.hangup()
