"""A recorder killed with SIGKILL leaves files that play up to about their last second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

CHILD = Path(__file__).with_name("record_until_killed.py")
RUN_SECONDS = 4.0


def _decoded_seconds(path: Path, kind: str) -> float:
    """Seconds of media that decode: audio by samples, video up to the end of its last frame.

    Video is timed by timestamps, not frame count: under load the recorder may write fewer than
    30 pictures a second, which is not what this test is about.
    """
    with av.open(str(path)) as container:
        if kind == "audio":
            stream = container.streams.audio[0]
            return sum(f.samples / f.sample_rate for f in container.decode(stream))
        times = [f.time for f in container.decode(container.streams.video[0]) if f.time is not None]
        assert len(times) >= 2, f"{path.name}: fewer than two decodable pictures"
        return times[-1] - times[0] + 1 / 30


@pytest.fixture(scope="module")
def killed_recordings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("killed")
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(out)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "RECORDING", f"child did not start recording: {line!r}"
        started = time.monotonic()
        time.sleep(RUN_SECONDS)
        os.kill(child.pid, signal.SIGKILL)
        sent = time.monotonic() - started
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    return out, sent


@pytest.mark.parametrize(
    "name", ["audio.wav", "audio.ogg", "audio.mp4", "audio.webm", "audio.mkv", "audio.mp3"]
)
def test_audio_survives_sigkill(killed_recordings: tuple[Path, float], name: str) -> None:
    out, sent = killed_recordings
    assert _decoded_seconds(out / name, "audio") >= 0.8 * sent


@pytest.mark.parametrize("name", ["video.mp4", "video.webm", "video.mkv"])
def test_video_survives_sigkill(killed_recordings: tuple[Path, float], name: str) -> None:
    out, sent = killed_recordings
    assert _decoded_seconds(out / name, "video") >= 0.8 * sent
