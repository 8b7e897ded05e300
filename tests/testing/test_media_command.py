"""`callbot media tone|dtmf|speech|video|silence`: the files hold what was asked for, as the
assertions of `callbot.testing` measure it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from callbot.cli import main
from callbot.testing import (
    assert_dtmf,
    assert_duration,
    assert_silence,
    assert_speech_like,
    assert_tone,
    assert_video,
)

ROOT = Path(__file__).resolve().parents[2]


def media(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, ["media", *args])
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def no_espeak(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH without espeak-ng (whatever this machine has installed)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_tone_and_chord(tmp_path: Path) -> None:
    out = tmp_path / "a.wav"
    assert "wrote" in media("tone", str(out), "--freq", "1000", "--duration", "1.5")
    assert_tone(out, 1000, min_db=-10)  # amplitude 0.5: -9 dBFS
    assert_duration(out, 1.5, 0.02)
    with pytest.raises(AssertionError, match="no 440 Hz tone"):
        assert_tone(out, 440)
    chord = tmp_path / "chord.ogg"
    media("tone", str(chord), "--freq", "350", "--freq", "440", "--duration", "1")
    assert_tone(chord, 350)
    assert_tone(chord, 440)
    assert_duration(chord, 1.0, 0.05)


def test_dtmf_keys_and_padding(tmp_path: Path) -> None:
    out = tmp_path / "keys.wav"
    media("dtmf", str(out), "--digits", "159#*0")
    assert_dtmf(out, "159#*0")
    assert_duration(out, 0.2 + 6 * 0.17, 0.02)
    padded = tmp_path / "padded.ogg"
    media("dtmf", str(padded), "--digits", "42", "--duration", "3", "--key-ms", "200")
    assert_dtmf(padded, "42")
    assert_duration(padded, 3.0, 0.05)
    assert "2 keys need 0.74 s" in media("dtmf", str(out), "--digits", "42", "--key-ms", "200",
                                         "--duration", "0.5", code=1)  # fmt: skip
    assert "not a DTMF key" in media("dtmf", str(out), "--digits", "12x", code=1)


def test_synthetic_speech(tmp_path: Path, no_espeak: None) -> None:
    out = tmp_path / "hello.wav"
    assert "synthetic voice" in media("speech", str(out), "--duration", "3")
    assert_speech_like(out)
    assert_duration(out, 3.0, 0.02)
    assert "--text ignored" in media("speech", str(tmp_path / "b.opus"), "--text", "hi")
    assert_speech_like(tmp_path / "b.opus")
    assert_duration(tmp_path / "b.opus", 4.0, 0.05)  # the default length
    assert "espeak-ng is not installed" in media(
        "speech", str(tmp_path / "c.wav"), "--engine", "espeak", code=1
    )


def test_speech_through_espeak_when_installed(tmp_path: Path, monkeypatch) -> None:
    """A stand-in espeak-ng (writes samples/welcome.wav, an espeak recording, where -w says)
    shows the call: the text is passed, the output resampled, repeated to --duration."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "espeak-ng"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\n"
        "args = sys.argv[1:]\n"
        f"open({str(tmp_path / 'args.txt')!r}, 'w').write('\\n'.join(args))\n"
        f"shutil.copy({str(ROOT / 'samples' / 'welcome.wav')!r}, args[args.index('-w') + 1])\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "said.wav"
    output = media("speech", str(out), "--text", "Book a table", "--voice", "en-gb",
                   "--duration", "10")  # fmt: skip
    assert "speech (espeak-ng)" in output
    args = (tmp_path / "args.txt").read_text().split("\n")
    assert args[-1] == "Book a table" and args[2:4] == ["-v", "en-gb"]
    with av.open(str(out)) as container:
        assert container.streams.audio[0].rate == 48000
    assert_duration(out, 10.0, 0.02)  # 4.47 s said twice, 0.4 s apart, then silence
    assert_speech_like(out)


def test_video_with_and_without_sound(tmp_path: Path) -> None:
    out = tmp_path / "clip.webm"
    output = media("video", str(out), "--duration", "1.5", "--size", "320x240", "--fps", "20",
                   "--tone", "1000")  # fmt: skip
    assert "320x240 video at 20 fps, 1000 Hz tone" in output
    assert assert_video(out, 30, (320, 240)).measured["frames"] == 30
    assert_tone(out, 1000)
    assert_duration(out, 1.5, 0.05)
    mute = tmp_path / "mute.mp4"
    media("video", str(mute), "--duration", "1", "--fps", "10", "--tone", "none")
    assert_video(mute, 10, (640, 480))
    with av.open(str(mute)) as container:
        assert not container.streams.audio
    assert "not an even WIDTHxHEIGHT" in media("video", str(out), "--size", "321x240", code=2)


def test_silence(tmp_path: Path) -> None:
    out = tmp_path / "quiet.wav"
    media("silence", str(out), "--duration", "2.5")
    assert_silence(out)
    assert_duration(out, 2.5, 0.01)
    assert "no audio codec for '.xyz'" in media("silence", str(tmp_path / "q.xyz"), code=1)


def test_media_as_a_user_runs_it(tmp_path: Path) -> None:
    helps = subprocess.run([sys.executable, "-m", "callbot", "media", "--help"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert helps.returncode == 0
    for command in ("tone", "dtmf", "speech", "video", "silence"):
        assert command in helps.stdout
        assert "Example" in media(command, "--help")
    out = tmp_path / "t.wav"
    done = subprocess.run([sys.executable, "-m", "callbot", "media", "tone", str(out),
                           "--freq", "600", "--duration", "1"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: 1 s tone at 600 Hz" in done.stderr
    assert_tone(out, 600)
