"""The step language of scenarios: one line of text per step, parsed into a `Step`.

The same text is accepted from a YAML file (`callbot call PEER --scenario smoke.yaml`) and
inline (`--step "dtmf 1"`). Parsing checks everything that can be checked before dialling
(known step, durations, digits, frequencies, files), so a typo fails at once with the line.

    wait 2s
    wait-for speech within 5s
    dtmf 1
    expect speech 'sales' within 5s
    expect tone 1000 within 3s
    hangup
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..media.dtmf import check_digits

#: How long `within` waits when a step does not say (seconds).
DEFAULT_WITHIN = 5.0
#: How long `wait-for` waits when a step does not say (seconds).
DEFAULT_WAIT_FOR = 15.0
#: How long `expect silence` listens when it does not say `for D` (seconds).
DEFAULT_SILENCE = 1.0

#: Steps a SIP call cannot run, and why: its media is one audio stream (no video, no data
#: channel). `mute video` / `unmute video` are among them too (see `Step.webrtc_only`).
WEBRTC_ONLY = {
    "send-data": "SIP calls have no data channel",
    "expect-data": "SIP calls have no data channel",
    "play-video": "SIP calls are audio-only",
    "expect video-frames": "SIP calls are audio-only",
}

_DURATION = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


class ScenarioError(ValueError):
    """A scenario that cannot run: the message names the line (or `--step`) and the problem."""


@dataclass(frozen=True)
class Step:
    """One parsed step: its `kind` ("wait", "expect tone", ...), arguments, and where it came
    from (`text` as written, `line` in the file or `--step` number)."""

    kind: str
    text: str
    where: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def within(self) -> float:
        """How long an expectation or wait-for listens before failing (seconds)."""
        return float(self.args.get("within", DEFAULT_WITHIN))

    @property
    def is_check(self) -> bool:
        """Expectations and waits listen to what came in since the last action; they do not
        move that anchor (so `dtmf 1` then two `expect` steps both listen from the key)."""
        return self.kind.startswith(("expect", "wait-for"))

    @property
    def webrtc_only(self) -> str | None:
        """Why a SIP call cannot run this step (None: it can)."""
        if self.kind in ("mute", "unmute") and self.args["media"] == "video":
            return "SIP calls are audio-only"
        return WEBRTC_ONLY.get(self.kind)

    def describe(self) -> str:
        return f"{self.where} `{self.text}`"


def parse_duration(text: str) -> float:
    """`2s`, `500ms`, `1.5m` or a bare number of seconds; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 2s, 500ms, 1.5m)")
    return float(match[1]) * _UNITS[match[2]]


def parse_step(text: str, where: str, base: Path | None = None) -> Step:
    """Parse one step; `base` is the directory relative paths are read from (the scenario
    file's, or the working directory for `--step`). ScenarioError naming `where` on a problem."""
    try:
        words = shlex.split(text, comments=False)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc} in {text!r}") from None
    if not words:
        raise ScenarioError(f"{where}: empty step")
    verb, rest = words[0].lower(), words[1:]
    parser = _PARSERS.get(verb)
    if parser is None:
        known = ", ".join(sorted(_PARSERS))
        raise ScenarioError(f"{where}: unknown step {verb!r} (known: {known})")
    try:
        kind, args = parser(rest, base or Path.cwd())
    except (ValueError, IndexError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "missing argument"
        raise ScenarioError(f"{where}: {message} in {text!r}") from None
    return Step(kind, text.strip(), where, args)


# -- the parsers, one per verb ----------------------------------------------------------------


def _options(rest: list[str], allowed: tuple[str, ...]) -> tuple[list[str], dict[str, Any]]:
    """Split trailing `within D` / `for D` / `max-wer P%` options from positional words."""
    positional: list[str] = []
    options: dict[str, Any] = {}
    index = 0
    while index < len(rest):
        word = rest[index].lower()
        if word in allowed and index + 1 < len(rest):
            value = rest[index + 1]
            if word == "max-wer":
                options["max_wer"] = _percent(value)
            else:
                options[word] = parse_duration(value)
            index += 2
            continue
        if word in allowed:
            raise ValueError(f"{word!r} needs a value")
        positional.append(rest[index])
        index += 1
    return positional, options


def _percent(text: str) -> float:
    value = float(text.rstrip("%"))
    if text.endswith("%"):
        value /= 100
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} is not a share between 0% and 100%")
    return value


def _hz(text: str) -> float:
    try:
        value = float(text.lower().removesuffix("hz"))
    except ValueError:
        raise ValueError(f"{text!r} is not a frequency in Hz") from None
    if not 20 <= value <= 20000:
        raise ValueError(f"{value:g} Hz is outside 20-20000 Hz")
    return value


def _file(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ValueError(f"file {text!r} not found (looked for {path})")
    return path


def _none(rest: list[str], kind: str) -> dict[str, Any]:
    if rest:
        raise ValueError(f"{kind} takes no argument, got {' '.join(rest)!r}")
    return {}


def _wait(rest: list[str], _base: Path) -> tuple[str, dict[str, Any]]:
    if len(rest) != 1:
        raise ValueError("wait takes one duration, e.g. `wait 2s`")
    return "wait", {"seconds": parse_duration(rest[0])}


def _wait_for(rest: list[str], _base: Path) -> tuple[str, dict[str, Any]]:
    positional, options = _options(rest, ("within",))
    options.setdefault("within", DEFAULT_WAIT_FOR)
    what = positional[0].lower() if positional else ""
    if what in ("silence", "speech") and len(positional) == 1:
        return f"wait-for {what}", options
    if what == "tone" and len(positional) == 2:
        return "wait-for tone", {**options, "hz": _hz(positional[1])}
    raise ValueError("wait-for takes silence, speech or tone HZ (then `within D`)")


def _play(rest: list[str], base: Path, kind: str = "play") -> tuple[str, dict[str, Any]]:
    if not rest or len(rest) > 2 or (len(rest) == 2 and rest[1].lower() != "loop"):
        raise ValueError(f"{kind} takes a file, then optionally `loop`")
    return kind, {"path": _file(rest[0], base), "loop": len(rest) == 2}


def _play_video(rest: list[str], base: Path) -> tuple[str, dict[str, Any]]:
    return _play(rest, base, "play-video")


def _dtmf(rest: list[str], _base: Path) -> tuple[str, dict[str, Any]]:
    if not 1 <= len(rest) <= 2:
        raise ValueError("dtmf takes keys, then optionally inband or rfc4733")
    mode = rest[1].lower() if len(rest) == 2 else "auto"
    if mode not in ("auto", "inband", "rfc4733"):
        raise ValueError(f"{rest[1]!r} is neither inband nor rfc4733")
    return "dtmf", {"digits": check_digits(rest[0]), "mode": mode}


def _say(rest: list[str], _base: Path) -> tuple[str, dict[str, Any]]:
    if not rest:
        raise ValueError("say takes the text to speak")
    return "say", {"text": " ".join(rest)}


def _expect(rest: list[str], _base: Path) -> tuple[str, dict[str, Any]]:
    what = rest[0].lower() if rest else ""
    if what == "mos":
        return _expect_mos(rest[1:])
    allowed = ("within", "max-wer") if what == "speech" else ("within", "for")
    positional, options = _options(rest[1:], allowed)
    if what == "tone" and len(positional) == 1:
        return "expect tone", {**options, "hz": _hz(positional[0])}
    if what == "dtmf" and len(positional) == 1:
        return "expect dtmf", {**options, "digits": check_digits(positional[0])}
    if what == "speech":
        return "expect speech", {**options, "words": " ".join(positional)}
    if what == "silence" and not positional:
        return "expect silence", {"for": options.get("for", DEFAULT_SILENCE)}
    if what == "video-frames" and len(positional) == 1 and positional[0].isdigit():
        return "expect video-frames", {**options, "count": int(positional[0])}
    raise ValueError(
        "expect takes tone HZ, dtmf DIGITS, speech [WORDS], silence, video-frames N or mos >= X"
    )


def _expect_mos(rest: list[str]) -> tuple[str, dict[str, Any]]:
    if len(rest) != 2 or rest[0] != ">=":
        raise ValueError("expect mos takes `>= X`, e.g. `expect mos >= 4.0`")
    value = float(rest[1])
    if not 1 <= value <= 4.5:
        raise ValueError(f"a MOS is between 1 and 4.5, not {value:g}")
    return "expect mos", {"min": value}


def _text(kind: str) -> Any:
    def parse(rest: list[str], _base: Path) -> tuple[str, dict[str, Any]]:
        positional, options = _options(rest, ("within",) if kind == "expect-data" else ())
        if not positional:
            raise ValueError(f"{kind} takes the text")
        return kind, {**options, "text": " ".join(positional)}

    return parse


def _media_kind(verb: str) -> Any:
    def parse(rest: list[str], _base: Path) -> tuple[str, dict[str, Any]]:
        kind = rest[0].lower() if rest else "audio"
        if kind not in ("audio", "video") or len(rest) > 1:
            raise ValueError(f"{verb} takes audio or video")
        return verb, {"media": kind}

    return parse


def _bare(verb: str) -> Any:
    def parse(rest: list[str], _base: Path) -> tuple[str, dict[str, Any]]:
        return verb, _none(rest, verb)

    return parse


def _expect_ended(rest: list[str], _base: Path) -> tuple[str, dict[str, Any]]:
    positional, options = _options(rest, ("within",))
    if len(positional) > 1:
        raise ValueError("expect-ended takes at most a reason, then `within D`")
    return "expect-ended", {**options, "reason": positional[0] if positional else None}


_PARSERS: dict[str, Any] = {
    "wait": _wait,
    "wait-for": _wait_for,
    "play": _play,
    "play-video": _play_video,
    "stop": _bare("stop"),
    "dtmf": _dtmf,
    "say": _say,
    "expect": _expect,
    "send-data": _text("send-data"),
    "expect-data": _text("expect-data"),
    "hold": _bare("hold"),
    "resume": _bare("resume"),
    "mute": _media_kind("mute"),
    "unmute": _media_kind("unmute"),
    "hangup": _bare("hangup"),
    "expect-ended": _expect_ended,
}
