"""`callbot demo`: a call between two in-process bots that plays a clip one way and records it."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path

import av

from .config import CallConfig
from .media import analysis, generate
from .signaling.direct import connect_direct


@dataclass
class DemoSummary:
    """What the demo measured: what was sent, what arrived and what it sounded like."""

    connected: bool
    seconds_sent: float
    seconds_received: float
    dominant_hz: float | None
    level_dbfs: float | None
    video_frames_received: int
    audio_path: str
    video_path: str

    @property
    def ok(self) -> bool:
        return self.connected and self.seconds_received > 0 and self.video_frames_received > 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def run_demo(clip: Path | None, out_dir: Path, config: CallConfig) -> DemoSummary:
    """Connect two peers, play `clip` (video and its sound) one way, record it at the other.

    Without a clip, a 4 s 640x480 moving pattern with a 440 Hz tone is generated first.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if clip is None:
        clip = generate.write_video(out_dir / "demo-clip.webm", seconds=4.0, tone=440.0)
    audio_path, video_path = out_dir / "received.wav", out_dir / "received.webm"
    caller, callee = await connect_direct(video=True, caller_config=config, callee_config=config)
    try:
        recording = callee.record_incoming(audio_path=audio_path, video_path=video_path)
        with av.open(str(clip)) as probe:
            has_video = bool(probe.streams.video)
        send = caller.send_video_file if has_video else caller.send_audio_file
        playback = send(clip)
        await playback
        await asyncio.sleep(0.3)  # let the last packets land
        await recording.stop()
    finally:
        await caller.hangup()
    clip_audio = analysis.load_audio(audio_path)
    span = analysis.active_span(clip_audio)
    with av.open(str(video_path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return DemoSummary(
        connected=True,
        seconds_sent=round(playback.position, 2),
        seconds_received=round(span[1] - span[0], 2) if span else 0.0,
        dominant_hz=round(analysis.dominant_frequency(clip_audio), 1) if span else None,
        level_dbfs=round(analysis.level_dbfs(clip_audio), 1) if span else None,
        video_frames_received=frames,
        audio_path=str(audio_path),
        video_path=str(video_path),
    )
