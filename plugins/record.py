"""record: record every call into a directory, one file per call id, plus a JSON of its facts.

`<dir>/<call id>.<audio_format>` holds what the peer said, `<dir>/<call id>.webm` what it showed
(on video calls, unless `video=false`), and `<dir>/<call id>.json` who, when, how long and how
the call ended.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from callbot import Bot, Call, Recording


def setup(
    bot: Bot, dir: Path = Path("recordings"), video: bool = True, audio_format: str = "wav"
) -> None:
    dir.mkdir(parents=True, exist_ok=True)

    @bot.on("call")
    def attach(call: Call) -> None:
        recording: list[Recording] = []
        started = time.time()

        @call.on("connected")
        def start() -> None:
            audio_path = dir / f"{call.id}.{audio_format.lstrip('.')}"
            video_path = dir / f"{call.id}.webm" if video and call.receives_video else None
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
            (dir / f"{call.id}.json").write_text(json.dumps(facts, indent=2, default=str))
