"""`callbot media`: write fixture files with known content for smoke tests.

Each command writes one file (format from the suffix: .wav .ogg .opus .mp3 .m4a .flac for
audio, .webm .mkv .mp4 for video) whose content `callbot call --expect-*` and the pytest
assertions in `callbot.testing` can verify.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..console import say
from ..errors import CallbotError

_OUT = click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
_RATE = click.option(
    "--rate", default=48000, show_default=True, type=click.IntRange(8000, 192000), help="Hz."
)


def _duration(default: float | None) -> Callable[[Any], Any]:
    return click.option(
        "--duration",
        type=click.FloatRange(0.01, 3600),
        default=default,
        show_default=default is not None,
        metavar="S",
        help="Length in seconds.",
    )


def _write(out: Path, action: Callable[[], Any]) -> Any:
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return action()
    except (ValueError, CallbotError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("media")
def media() -> None:
    """Write fixture media for smoke tests: tone, dtmf, speech, video, silence.

    \b
    Examples:
      callbot media tone fixtures/a440.wav --freq 440 --duration 3
      callbot media dtmf fixtures/keys.wav --digits 123#
      callbot media speech fixtures/hello.wav --duration 4
      callbot media video fixtures/clip.webm --size 320x240 --fps 15 --tone 1000
    """


@media.command("tone")
@_OUT
@click.option(
    "--freq",
    "freqs",
    multiple=True,
    type=click.FloatRange(1, 24000),
    default=(440.0,),
    show_default=True,
    metavar="HZ",
    help="Frequency; repeat for a chord.",
)
@_duration(2.0)
@click.option(
    "--amplitude",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Peak level, 0-1 (0.5 is a -9 dBFS tone).",
)
@_RATE
def tone(out: Path, freqs: tuple[float, ...], duration: float, amplitude: float, rate: int) -> None:
    """Write a tone (or a chord) to OUT.

    \b
    Example:
      callbot media tone a440.wav --freq 440 --duration 3
      callbot call echo --play a440.wav --expect-tone 440
    """
    from ..testing import generate

    _write(out, lambda: generate.write_tone(out, list(freqs), duration, rate, 1, amplitude))
    say(f"wrote {out}: {duration:g} s tone at {' + '.join(f'{f:g}' for f in freqs)} Hz")


@media.command("dtmf")
@_OUT
@click.option("--digits", required=True, help="Keys to dial: 0-9, *, #, A-D.")
@_duration(None)
@click.option("--key-ms", default=100, show_default=True, type=click.IntRange(40, 2000))
@click.option("--gap-ms", default=70, show_default=True, type=click.IntRange(20, 2000))
@_RATE
def dtmf(
    out: Path, digits: str, duration: float | None, key_ms: int, gap_ms: int, rate: int
) -> None:
    """Write in-band DTMF keys to OUT (after 0.2 s of silence; --duration pads with silence).

    \b
    Example:
      callbot media dtmf keys.wav --digits 123#
      callbot call ivr --play keys.wav --expect-dtmf 123#
    """
    from ..testing import generate

    def write() -> Path:
        keys = generate.dtmf_samples(digits, rate, key_ms / 1000, gap_ms / 1000)
        samples = np.concatenate([np.zeros(round(0.2 * rate), np.float32), keys])
        if duration is not None:
            total = round(duration * rate)
            if total < samples.size:
                need = samples.size / rate
                raise ValueError(
                    f"{len(digits)} keys need {need:.2f} s; --duration is {duration:g}"
                )
            samples = np.concatenate([samples, np.zeros(total - samples.size, np.float32)])
        return generate.write_audio(out, samples, rate)

    _write(out, write)
    say(f"wrote {out}: DTMF {digits.upper()}")


@media.command("speech")
@_OUT
@_duration(None)
@click.option("--text", help="What espeak-ng says (default: a short test sentence).")
@click.option(
    "--engine",
    type=click.Choice(["auto", "espeak", "synthetic"]),
    default="auto",
    show_default=True,
    help="espeak-ng (real words) when installed, else a synthetic speech-like voice.",
)
@click.option("--voice", help="espeak-ng voice, e.g. en-us.")
@click.option("--seed", default=0, show_default=True, help="Synthetic voice variation.")
@_RATE
def speech(
    out: Path,
    duration: float | None,
    text: str | None,
    engine: str,
    voice: str | None,
    seed: int,
    rate: int,
) -> None:
    """Write speech to OUT: espeak-ng if installed, otherwise a synthetic voice (no words,
    but speech's rhythm, pauses and spectrum). Without --duration: the text's length with
    espeak-ng, 4 s synthetic.

    \b
    Example:
      callbot media speech hello.wav --text "Hello, I would like to book a table"
      callbot call greeter --play hello.wav --expect-speech
    """
    from ..testing import generate

    _, used = _write(
        out,
        lambda: generate.write_speech(
            out, duration, text=text, engine=engine, voice=voice, rate=rate, seed=seed
        ),
    )
    if used == "synthetic" and text:
        say("espeak-ng is not installed: --text ignored, wrote a synthetic voice", "yellow")
    say(f"wrote {out}: speech ({'espeak-ng' if used == 'espeak' else 'synthetic voice'})")


def _size(_ctx: Any, _param: Any, value: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", value.strip().lower())
    if (
        not match
        or int(match[1]) < 16
        or int(match[2]) < 16
        or int(match[1]) % 2
        or int(match[2]) % 2
    ):
        raise click.BadParameter(f"{value!r} is not an even WIDTHxHEIGHT such as 640x480")
    return int(match[1]), int(match[2])


def _tone_or_none(_ctx: Any, _param: Any, value: str) -> float | None:
    if value.strip().lower() in ("none", "off", "0", ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a frequency in Hz or 'none'") from None


@media.command("video")
@_OUT
@_duration(2.0)
@click.option("--size", default="640x480", show_default=True, callback=_size, help="WxH.")
@click.option("--fps", default=30, show_default=True, type=click.IntRange(1, 60))
@click.option(
    "--tone",
    default="440",
    show_default=True,
    callback=_tone_or_none,
    metavar="HZ|none",
    help="Soundtrack tone, or none for a silent clip.",
)
def video(out: Path, duration: float, size: tuple[int, int], fps: int, tone: float | None) -> None:
    """Write a moving test pattern (with a tone soundtrack) to OUT (.webm .mkv .mp4).

    \b
    Example:
      callbot media video clip.webm --size 320x240 --fps 15 --tone 1000
      callbot call echo --play-video clip.webm --expect-video-frames 30 --expect-tone 1000
    """
    from ..testing import generate

    _write(out, lambda: generate.write_video(out, duration, size, fps, tone))
    sound = f"{tone:g} Hz tone" if tone is not None else "no sound"
    say(f"wrote {out}: {duration:g} s of {size[0]}x{size[1]} video at {fps} fps, {sound}")


@media.command("silence")
@_OUT
@_duration(2.0)
@_RATE
def silence(out: Path, duration: float, rate: int) -> None:
    """Write digital silence to OUT.

    \b
    Example:
      callbot media silence quiet.wav --duration 3
    """
    from ..testing import generate

    _write(out, lambda: generate.write_silence(out, duration, rate))
    say(f"wrote {out}: {duration:g} s of silence")
