"""prompt: play a file to every call once it connects (its video too, on video calls)."""

from __future__ import annotations

from pathlib import Path

from callbot import Bot, Call
from callbot.media.decoder import FileDecoder


def setup(bot: Bot, file: Path, loop: bool = False) -> None:
    probe = FileDecoder(file)  # a missing or unplayable file fails here, at startup
    probe.close()
    with_video = _has_video(file)

    @bot.on("call")
    def attach(call: Call) -> None:
        @call.on("connected")
        def play() -> None:
            if with_video and call.has_video:
                call.send_video_file(file, loop=loop)
            else:
                call.send_audio_file(file, loop=loop)


def _has_video(file: Path) -> bool:
    try:
        FileDecoder(file, video_size=(16, 16)).close()
    except Exception:
        return False
    return True
