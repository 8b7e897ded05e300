"""The file side of the media API, shared by 1:1 calls and group rooms.

`Call` and `callbot.group.Room` both play files into their outgoing tracks and record what
arrives through `IncomingMedia`; these functions are that behaviour in one place, so both
check arguments, report errors and attach playbacks the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import MediaError
from .feeds import open_feed
from .incoming import IncomingMedia
from .playback import Playback
from .recorder import Recording, TrackRecorder
from .tracks import OutgoingAudioTrack, OutgoingVideoTrack

ErrorHandler = Callable[[MediaError], None]


def play_audio_file(
    path: str | Path, audio_out: OutgoingAudioTrack, *, loop: bool, on_error: ErrorHandler
) -> Playback:
    """Play a file's audio on `audio_out`, replacing what it played. Raises `MediaError`
    before anything is sent if the file is missing, empty, corrupt or has no audio."""
    playback = Playback(open_feed(path, loop=loop, encoded=audio_out.opus), on_error=on_error)
    audio_out.play(playback)
    return playback


def play_video_file(
    path: str | Path,
    audio_out: OutgoingAudioTrack,
    video_out: OutgoingVideoTrack,
    *,
    video_size: tuple[int, int],
    loop: bool,
    on_error: ErrorHandler,
    video_codec: str = "vp8",
) -> Playback:
    """Play a file's video (scaled to `video_size`) on `video_out` and its soundtrack, if
    it has one, on `audio_out`. Uses the shared encoding when the call sends VP8 and Opus."""
    encoded = audio_out.opus and video_codec == "vp8"
    feed = open_feed(path, video_size=video_size, loop=loop, encoded=encoded)
    playback = Playback(feed, on_error=on_error)
    video_out.play(playback)
    if feed.has_audio:
        audio_out.play(playback)
    return playback


def record(
    sources: Mapping[str, IncomingMedia],
    audio_path: str | Path | None,
    video_path: str | Path | None,
    *,
    video_size: tuple[int, int],
    on_error: ErrorHandler,
) -> Recording:
    """Record `sources["audio"]` to `audio_path` and `sources["video"]` to `video_path`
    (either may be None), written as frames arrive; formats from the suffixes. Raises
    `MediaError` at once for an unwritable path or an unsupported suffix."""
    if audio_path is None and video_path is None:
        raise ValueError("give audio_path, video_path or both")
    if (
        audio_path is not None
        and video_path is not None
        and Path(audio_path).resolve() == Path(video_path).resolve()
    ):
        raise MediaError(audio_path, "record audio and video to two different files")
    recorders = [
        TrackRecorder(path, sources[kind], video_size=video_size, on_error=on_error)
        if path is not None
        else None
        for kind, path in (("audio", audio_path), ("video", video_path))
    ]
    return Recording(*recorders)
