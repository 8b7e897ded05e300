"""record: record every call into a directory, plus a JSON of its facts.

Each call gets a new name chosen by the bot (`recording_name`: time, call id made safe, random
tag), never an existing file: `<dir>/<name>.<audio_format>` holds what the peer said,
`<dir>/<name>.webm` what it showed (on video calls, unless `video=false`), and
`<dir>/<name>.json` who, when, how long and how the call ended (its `call_id` included).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from callbot import Bot, Call, Recording, recording_name


def setup(
    bot: Bot, dir: Path = Path("recordings"), video: bool = True, audio_format: str = "wav"
) -> None:
    dir.mkdir(parents=True, exist_ok=True)

    @bot.on("call")
    def attach(call: Call) -> None:
        recording: list[Recording] = []
        started = time.time()
        name = recording_name(call.id)

        @call.on("connected")
        def start() -> None:
            audio_path = dir / f"{name}.{audio_format.lstrip('.')}"
            video_path = dir / f"{name}.webm" if video and call.receives_video else None
            recording.append(call.record_incoming(audio_path=audio_path, video_path=video_path))

        @call.on("ended")
        def finish(reason: str, duration: float) -> None:
            rec = recording[0] if recording else None
            facts = {
                "call_id": call.id,
                "bot": bot.user_id,
                "peer": call.peer,
                "direction": call.direction,
                "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
                "ended_at": datetime.now(UTC).isoformat(),
                "duration": round(duration, 3),
                "end_reason": reason,
                "metadata": call.metadata,
                "audio": rec.audio.path.name if rec and rec.audio else None,
                "video": rec.video.path.name if rec and rec.video else None,
                "frames": {
                    "audio": rec.audio.frames if rec and rec.audio else 0,
                    "video": rec.video.frames if rec and rec.video else 0,
                },
            }
            with (dir / f"{name}.json").open("x") as out:  # new, like the recordings
                json.dump(facts, out, indent=2, default=str)
