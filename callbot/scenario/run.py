"""Run a scenario's steps on a connected call, one after the other, and report each.

A step that fails stops the run: the report's `failure` is one line naming the step (its file
line or `--step` number), what was expected and what was heard. Expectations and `wait-for`
listen to what came in since the last action step began (the "anchor": connecting, `play`,
`dtmf`, `say`, `wait`, ...), polling until they hold or their `within` runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _compat
from ..call import Call
from ..errors import CallbotError
from ..media import analysis
from ..safe import get_logger, printable
from ..sip.call import SipCall
from ..testing.expectations import CheckResult, check_silence, check_speech_like, check_tone
from ..testing.generate import dtmf_samples, write_audio
from . import grades, words
from .impair import Direction, Impairment
from .listen import RATE, Ear
from .load import Scenario
from .steps import ScenarioError, Step

logger = get_logger(__name__)

#: How often a listening step looks again at what came in (seconds).
POLL = 0.25
#: `wait-for silence`: this long under the silence level counts as the far side being quiet.
QUIET_FOR = 0.8
#: `wait-for speech`: this long of sound counts as the far side speaking.
SOUND_FOR = 0.3
#: A played file counts as echoed when it correlates this well with what came back.
ECHO_MATCH = 0.5
#: Why `--impair` cannot apply to a SIP call.
IMPAIR_SIP = (
    "--impair applies to WebRTC calls only: a SIP call's RTP is sent and received inside the "
    "SIP stack (baresip), where callbot cannot delay or drop packets"
)


@dataclass
class Outcome:
    """A step's verdict: ok, a one-line message, what was measured."""

    ok: bool
    message: str
    measured: dict[str, Any] = field(default_factory=dict)


def _result(check: CheckResult) -> Outcome:
    return Outcome(check.ok, check.message, dict(check.measured))


class Runner:
    """One run of a scenario on one call (see `run_scenario`)."""

    def __init__(self, call: Call, scenario: Scenario, progress: Callable[[str], Any] | None):
        self.call = call
        self.scenario = scenario
        self.progress = progress
        self.ear = Ear(call, video=scenario.wants_video)
        self.anchor = 0
        self.playbacks: list[Any] = []
        self.played: list[tuple[int, Path]] = []  # (anchor, file) of each audio play
        self.probe: grades.PacketProbe | None = None
        self.remote: dict[str, float] = {}
        #: A SIP call's RTP statistics (from the SIP stack: see `SipCall.stats`).
        self.sip: dict[str, Any] | None = {} if isinstance(call, SipCall) else None
        self.impairment: dict[str, Direction] = {}
        self._scratch = Path(tempfile.mkdtemp(prefix="callbot-scenario-"))
        self._connected_at = time.monotonic()

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self.ear.start()
        self._tap_packets()
        results: list[dict[str, Any]] = []
        failure = None
        for number, step in enumerate(self.scenario.steps, 1):
            if failure is not None:
                results.append(self._entry(number, step, None, 0.0, 0.0, "not run"))
                continue
            began = time.monotonic()
            if not step.is_check:
                self.anchor = self.ear.samples
            outcome = await self._step(step)
            took = time.monotonic() - began
            results.append(
                self._entry(
                    number,
                    step,
                    outcome.ok,
                    began - self._connected_at,
                    took,
                    outcome.message,
                    outcome.measured,
                )
            )
            self._tell(f"{'ok' if outcome.ok else 'FAILED'}: {step.describe()}: {outcome.message}")
            if not outcome.ok:
                failure = f"step {number} ({step.where}) `{step.text}` failed: {outcome.message}"
            await self._refresh_remote()
        await self._finish()
        if self.sip is not None:
            await self._refresh_sip()  # after the end: the stack's final report
        return {
            "scenario": {
                "name": self.scenario.name,
                "source": self.scenario.source,
                "impair": None if self.scenario.impair is None else self.scenario.impair.as_dict(),
                "ok": failure is None,
                "failure": failure and printable(failure),
            },
            "steps": results,
            "grades": self.grades(),
        }

    async def _step(self, step: Step) -> Outcome:
        handler = getattr(self, "_" + step.kind.replace("-", "_").replace(" ", "_"))
        try:
            outcome: Outcome = await handler(step)
        except (CallbotError, ValueError, OSError) as exc:
            return Outcome(False, printable(str(exc)))
        return outcome

    def _entry(
        self,
        number: int,
        step: Step,
        ok: bool | None,
        at: float,
        took: float,
        message: str,
        measured: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "step": number,
            "where": step.where,
            "text": step.text,
            "kind": step.kind,
            "ok": ok,
            "at": round(at, 2),
            "seconds": round(took, 2),
            "message": printable(message),
            "measured": measured or {},
        }

    async def _finish(self) -> None:
        for playback in self.playbacks:
            playback.stop()
        await self.ear.stop()
        for path in self._scratch.iterdir():
            path.unlink()
        self._scratch.rmdir()

    def _tell(self, message: str) -> None:
        if self.progress is not None:
            with contextlib.suppress(Exception):
                self.progress(message)

    # -- packets: probe and impairment -------------------------------------------------------

    def _tap_packets(self) -> None:
        """Tap the call's datagrams: the probe always, the impairment when one is set."""
        if self.sip is not None:
            if self.scenario.impair is not None:
                raise CallbotError(IMPAIR_SIP)
            return  # the SIP stack sends and receives the RTP: its own statistics grade it
        pc = self.call.peer_connection
        if pc is None or pc.remoteDescription is None or not _compat.available("impair"):
            if self.scenario.impair is not None:
                raise CallbotError("--impair needs aiortc internals this version lacks")
            return
        self.probe = probe = grades.PacketProbe(
            grades.audio_payload_types(pc.remoteDescription.sdp)
        )
        impair = self.scenario.impair
        send = Direction(impair) if impair else None
        receive = Direction(impair) if impair else None
        if send and receive:
            self.impairment = {"sent": send, "received": receive}

        def outgoing(data: bytes, deliver: Callable[[], None]) -> None:
            probe.outgoing(data)
            send(data, deliver) if send else deliver()

        def incoming(data: bytes, deliver: Callable[[], None]) -> None:
            def arrive() -> None:
                probe.incoming(data)
                deliver()

            receive(data, arrive) if receive else arrive()

        dtls = pc.getTransceivers()[0].sender.transport
        _compat.ice.tap_datagrams(_compat.rtp.ice_connection(dtls), outgoing, incoming)

    async def _refresh_remote(self) -> None:
        if self.sip is not None:
            await self._refresh_sip()
        elif self.call.state in ("connected", "held"):
            with contextlib.suppress(Exception):  # a closing peer connection has no stats
                self.remote = await grades.remote_reports(self.call.peer_connection) or self.remote

    async def _refresh_sip(self) -> None:
        """The SIP stack's latest RTP report, and the codec (told by the audio rate)."""
        stats = await self.call.stats()
        audio = stats["received"].get("audio", {})
        if "rtcp_reports" in stats.get("sip", {}) and audio:
            self.sip = {**stats["sip"], "codec": "opus" if audio["rate"] == 48000 else "g711"}

    def grades(self) -> dict[str, Any]:
        """Grades so far (see `grades.grades`); mouth-to-ear from the echoed plays."""
        if self.sip is not None:
            return grades.sip_grades(self.sip, self._echo_ms())
        video = (
            grades.video_freezes(self.ear.video_times, self.ear.frozen_runs)
            if self.scenario.wants_video
            else {}
        )
        probe = self.probe or grades.PacketProbe({})
        out = grades.grades(probe, self.remote, self._echo_ms(), video)
        if self.impairment:
            out["impaired_packets"] = {
                direction: {"passed": d.passed, "dropped": d.dropped}
                for direction, d in self.impairment.items()
            }
        return out

    def _echo_ms(self) -> float | None:
        delays = []
        for anchor, path in self.played:
            try:
                sent = analysis.load_audio(path)
            except CallbotError:
                continue
            if sent.rate != RATE:
                count = round(sent.samples.size * RATE / sent.rate)
                samples = np.interp(
                    np.linspace(0, sent.samples.size, count, endpoint=False),
                    np.arange(sent.samples.size),
                    sent.samples,
                )
            else:
                samples = sent.samples
            samples = samples[: 5 * RATE]  # the first 5 s are plenty to find it
            heard = self.ear.clip(anchor, anchor + samples.size + 2 * RATE).samples
            found = grades.echo_delay(np.asarray(samples, np.float64), heard, RATE)
            if found is not None and found[1] >= ECHO_MATCH:
                delays.append(found[0] * 1000)
        return statistics.median(delays) if delays else None

    # -- listening helpers -----------------------------------------------------------------

    async def _poll(
        self, within: float, look: Callable[[], Awaitable[Outcome] | Outcome]
    ) -> Outcome:
        """Look every POLL seconds until `look()` holds or `within` seconds have passed (the
        last look's verdict is the step's) or the call ends."""
        deadline = time.monotonic() + within
        while True:
            outcome = look()
            if not isinstance(outcome, Outcome):
                outcome = await outcome
            if outcome.ok or time.monotonic() >= deadline:
                return outcome
            if self.call.state == "ended":
                outcome.message += f" (the call ended: {self.call.end_reason})"
                return outcome
            await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    def _heard(self) -> analysis.AudioClip:
        return self.ear.clip(self.anchor)

    def _summary(self, clip: analysis.AudioClip | None = None) -> str:
        """What came in, in a few words: level and strongest frequency, or silence."""
        clip = self._heard() if clip is None else clip
        level = analysis.level_dbfs(clip) if clip.samples.size else -np.inf
        if clip.samples.size == 0 or level < analysis.SILENCE_DB:
            return f"heard silence for {clip.duration:.1f} s"
        hz = analysis.dominant_frequency(clip)
        return f"heard {clip.duration:.1f} s of sound at {level:.1f} dBFS, strongest {hz:.0f} Hz"

    # -- actions -------------------------------------------------------------------------

    async def _wait(self, step: Step) -> Outcome:
        ended = await self.call.wait_ended(step.args["seconds"])
        if ended is not None:
            return Outcome(False, f"the call ended ({ended}) during the wait")
        return Outcome(True, f"waited {step.args['seconds']:g} s; {self._summary()}")

    async def _play(self, step: Step) -> Outcome:
        path: Path = step.args["path"]
        playback = self.call.send_audio_file(path, loop=step.args["loop"])
        self.playbacks.append(playback)
        self.played.append((self.anchor, path))
        return await self._await_playback(playback, step)

    async def _play_video(self, step: Step) -> Outcome:
        playback = self.call.send_video_file(step.args["path"], loop=step.args["loop"])
        self.playbacks.append(playback)
        return await self._await_playback(playback, step)

    async def _await_playback(self, playback: Any, step: Step) -> Outcome:
        if step.args.get("loop"):
            return Outcome(True, "playing in a loop (until `stop`)")
        ended = asyncio.ensure_future(self.call.wait_ended())
        await asyncio.wait([ended, asyncio.ensure_future(playback)],
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        ended.cancel()
        return Outcome(True, f"played {playback.position:.1f} s", {"played": playback.position})

    async def _stop(self, _step: Step) -> Outcome:
        for playback in self.playbacks:
            playback.stop()
        stopped, self.playbacks = len(self.playbacks), []
        return Outcome(True, f"stopped {stopped} playback{'s' * (stopped != 1)}")

    async def _dtmf(self, step: Step) -> Outcome:
        digits, mode = step.args["digits"], step.args["mode"]
        negotiated = self.call.dtmf_mode
        if mode == "rfc4733" and negotiated != "rfc4733":
            return Outcome(False, "the peer did not negotiate RFC 4733 telephone-events")
        if mode == "inband" and negotiated == "rfc4733":
            path = self._scratch / f"dtmf-{digits.replace('#', 'hash').replace('*', 'star')}.wav"
            write_audio(path, dtmf_samples(digits, RATE, 0.1, 0.07), RATE)
            await self.call.send_audio_file(path)
        else:
            await self.call.send_dtmf(digits)
        used = "inband" if mode == "inband" else negotiated
        return Outcome(True, f"sent {digits} ({used})", {"digits": digits, "mode": used})

    async def _say(self, step: Step) -> Outcome:
        from ..testing.generate import write_speech

        path = self._scratch / f"say-{len(list(self._scratch.iterdir()))}.wav"
        await asyncio.to_thread(write_speech, path, None, text=step.args["text"],
                                engine="espeak", voice="en-us")  # fmt: skip
        playback = self.call.send_audio_file(path)
        self.played.append((self.anchor, path))
        return await self._await_playback(playback, step)

    async def _send_data(self, step: Step) -> Outcome:
        self.call.send_data(step.args["text"])
        return Outcome(True, f"sent {len(step.args['text'])} characters")

    async def _hold(self, _step: Step) -> Outcome:
        await self.call.hold()
        return Outcome(True, "on hold")

    async def _resume(self, _step: Step) -> Outcome:
        await self.call.resume()
        return Outcome(True, "resumed")

    async def _mute(self, step: Step) -> Outcome:
        await self.call.mute(step.args["media"])
        return Outcome(True, f"{step.args['media']} muted")

    async def _unmute(self, step: Step) -> Outcome:
        await self.call.unmute(step.args["media"])
        return Outcome(True, f"{step.args['media']} unmuted")

    async def _hangup(self, _step: Step) -> Outcome:
        await self._refresh_remote()
        await self.call.hangup()
        return Outcome(True, "hung up")

    # -- expectations and waits ------------------------------------------------------------

    async def _wait_for_silence(self, step: Step) -> Outcome:
        need = round(QUIET_FOR * RATE)

        def look() -> Outcome:
            clip = self._heard()
            tail = analysis.AudioClip(clip.samples[-need:], RATE)
            if clip.samples.size >= need and analysis.level_dbfs(tail) < analysis.SILENCE_DB:
                return Outcome(True, f"quiet after {clip.duration:.1f} s")
            heard = self._summary(tail)
            return Outcome(
                False, f"expected {QUIET_FOR:g} s of silence within {step.within:g} s; {heard}"
            )

        return await self._poll(step.within, look)

    async def _wait_for_speech(self, step: Step) -> Outcome:
        def look() -> Outcome:
            clip = self._heard()
            active = analysis.active_seconds(clip, threshold_db=analysis.SILENCE_DB + 10)
            if active >= SOUND_FOR:
                return Outcome(True, f"sound after {clip.duration - active:.1f} s")
            return Outcome(False, f"expected speech within {step.within:g} s; "
                                  f"{self._summary(clip)}")  # fmt: skip

        return await self._poll(step.within, look)

    async def _wait_for_tone(self, step: Step) -> Outcome:
        return await self._expect_tone(step)

    async def _expect_tone(self, step: Step) -> Outcome:
        hz = step.args["hz"]

        def look() -> Outcome:
            check = check_tone(self._heard(), hz, label="heard")
            if check.ok:
                return _result(check)
            return Outcome(False, f"expected a {hz:g} Hz tone within {step.within:g} s; "
                                  f"{check.message}", dict(check.measured))  # fmt: skip

        return await self._poll(step.within, look)

    async def _expect_silence(self, step: Step) -> Outcome:
        """Silence from this step on, for `for` seconds (not since the anchor: after `mute`
        or `hold` the last packets in flight are still arriving)."""
        since = self.ear.samples
        ended = await self.call.wait_ended(step.args["for"])
        check = check_silence(self.ear.clip(since), label="heard")
        if ended is not None and not check.ok:
            return Outcome(False, f"the call ended ({ended}); {check.message}")
        message = check.message if check.ok else f"expected silence; {check.message}"
        return Outcome(check.ok, message, dict(check.measured))

    async def _expect_dtmf(self, step: Step) -> Outcome:
        digits = step.args["digits"]

        def look() -> Outcome:
            heard = "".join(d for d, at in self.ear.keys if at >= self.anchor)
            measured = {"heard": heard, "expected": digits}
            if digits in heard:
                return Outcome(True, f"heard DTMF {heard!r}", measured)
            got = f"heard DTMF {heard!r}" if heard else "heard no DTMF"
            return Outcome(False, f"expected DTMF {digits!r} within {step.within:g} s; {got} "
                                  f"({self._summary()})", measured)  # fmt: skip

        return await self._poll(step.within, look)

    async def _expect_speech(self, step: Step) -> Outcome:
        expected: str = step.args["words"]
        if not expected:
            return await self._poll(step.within, lambda: self._speech_like(step))
        state: dict[str, Any] = {"tried": -1, "last": None}
        deadline = time.monotonic() + step.within

        async def look() -> Outcome:
            clip = self._heard()
            final = time.monotonic() + POLL >= deadline or self.call.state == "ended"
            if not final and not _utterance_ended(clip):
                return state["last"] or Outcome(False, f"expected {expected!r}; heard nothing")
            if clip.samples.size == state["tried"]:
                return state["last"]  # type: ignore[no-any-return]
            state["tried"] = clip.samples.size
            state["last"] = await self._match_words(step, clip)
            return state["last"]  # type: ignore[no-any-return]

        return await self._poll(step.within, look)

    def _speech_like(self, step: Step) -> Outcome:
        check = check_speech_like(self._heard(), label="heard")
        if check.ok:
            return _result(check)
        return Outcome(False, f"expected speech within {step.within:g} s; {check.message}",
                       dict(check.measured))  # fmt: skip

    async def _match_words(self, step: Step, clip: analysis.AudioClip) -> Outcome:
        expected = step.args["words"]
        limit = float(step.args.get("max_wer", 0.0))
        if analysis.level_dbfs(clip) < analysis.SILENCE_DB:
            return Outcome(False, f"expected {expected!r}; {self._summary(clip)}")
        transcript = await words.Spotter.shared().transcribe(clip, expected)
        wer = words.word_error_rate(words.normalise(expected), transcript.words)
        measured = {
            "heard": transcript.text,
            "wer": round(wer, 2),
            "max_wer": limit,
        }
        if wer <= limit:
            return Outcome(True, f"heard {transcript.text!r} (WER {wer:.0%})", measured)
        return Outcome(
            False,
            f"expected {expected!r} (WER <= {limit:.0%}); heard {transcript.text!r} "
            f"(WER {wer:.0%}, {self._summary(clip)})",
            measured,
        )

    async def _expect_video_frames(self, step: Step) -> Outcome:
        count = step.args["count"]
        since = time.monotonic()
        start = len(self.ear.video_times)

        def look() -> Outcome:
            got = len(self.ear.video_times) - start
            measured = {"frames": got, "expected": count}
            if got >= count:
                return Outcome(True, f"{got} video frames in {time.monotonic() - since:.1f} s",
                               measured)  # fmt: skip
            return Outcome(False, f"expected {count} video frames within {step.within:g} s; "
                                  f"got {got}", measured)  # fmt: skip

        return await self._poll(step.within, look)

    async def _expect_data(self, step: Step) -> Outcome:
        text = step.args["text"]

        def look() -> Outcome:
            got = [m for m, at in self.ear.messages if at >= self.anchor]
            if any(text in m for m in got):
                return Outcome(True, f"received {text!r}")
            seen = "; ".join(repr(m[:60]) for m in got[-3:]) or "nothing"
            return Outcome(False, f"expected data {text!r} within {step.within:g} s; "
                                  f"received {seen}")  # fmt: skip

        return await self._poll(step.within, look)

    async def _expect_ended(self, step: Step) -> Outcome:
        wanted = step.args["reason"]
        reason = await self.call.wait_ended(step.within)
        if reason is None:
            return Outcome(False, f"expected the call to end within {step.within:g} s; "
                                  f"still {self.call.state}, {self._summary()}")  # fmt: skip
        reasons = {reason, self.call.end_reason, self.call.remote_end_reason}
        measured = {"end_reason": self.call.end_reason, "remote": self.call.remote_end_reason}
        if wanted is None or wanted in reasons:
            return Outcome(True, f"ended: {reason}", measured)
        return Outcome(False, f"expected the call to end {wanted}; it ended {reason}", measured)

    async def _expect_mos(self, step: Step) -> Outcome:
        await self._refresh_remote()
        graded = self.grades()
        low = step.args["min"]
        parts = {k: graded[k]["mos"] for k in ("sent", "received") if k in graded}
        measured = {"mos": parts, "min": low}
        if not parts and self.sip is not None:
            why = "the SIP stack has no RTCP report from the far side yet"
            return Outcome(False, f"expected a MOS; {why}", measured)
        if not parts:
            return Outcome(False, "expected a MOS; no audio packets were measured", measured)
        worst = min(parts, key=lambda k: parts[k])
        entry = graded[worst]
        shown = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
        why = (
            f"loss {entry['loss_percent']:.1f} %, jitter {entry['jitter_ms']:.1f} ms, "
            f"delay {entry['delay_ms']:.0f} ms"
        )
        if parts[worst] >= low:
            return Outcome(True, f"MOS {shown} ({why})", measured)
        return Outcome(False, f"expected MOS >= {low:g}; {worst} MOS {parts[worst]:.2f} ({why})",
                       measured)  # fmt: skip


def _utterance_ended(clip: analysis.AudioClip) -> bool:
    """Sound followed by QUIET_FOR seconds of quiet: a prompt has been said."""
    need = round(QUIET_FOR * RATE)
    if clip.samples.size <= need:
        return False
    tail = analysis.AudioClip(clip.samples[-need:], RATE)
    head = analysis.AudioClip(clip.samples[:-need], RATE)
    return (
        analysis.level_dbfs(tail) < analysis.SILENCE_DB
        and analysis.active_seconds(head, threshold_db=analysis.SILENCE_DB + 10) >= SOUND_FOR
    )


async def run_scenario(
    call: Call, scenario: Scenario, progress: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """Run `scenario` on a connected `call`; returns `scenario`, `steps` and `grades` for the
    call's report. Never raises for a failing step: `scenario.failure` says which failed."""
    return await Runner(call, scenario, progress).run()


def check_ready(scenario: Scenario, sip: bool = False) -> None:
    """What can only be checked on this machine or for this peer, before dialling: speech
    recognition for `expect speech WORDS`, packet taps for an impairment, and on a `sip` call
    no step it cannot run (ScenarioError otherwise)."""
    if sip:
        check_sip(scenario)
    for step in scenario.steps:
        if step.kind == "expect speech" and step.args["words"]:
            missing = words.available()
            if missing:
                raise ScenarioError(f"{step.where}: {missing}")
            unknown = words.Spotter.shared().unknown_words(step.args["words"])
            if unknown:
                raise ScenarioError(
                    f"{step.where}: not in the recogniser's dictionary: {', '.join(unknown)}"
                )
    if scenario.impair is not None and not _compat.available("impair"):
        raise ScenarioError("--impair needs aiortc internals this version lacks (see WARNING)")


def check_sip(scenario: Scenario) -> None:
    """A SIP call is one audio stream with no data channel, its RTP out of callbot's reach:
    ScenarioError naming the first step (or setting) that needs a WebRTC call."""
    for step in scenario.steps:
        why = step.webrtc_only
        if why is not None:
            raise ScenarioError(f"{step.where}: `{step.text}` cannot run on a SIP call: {why}")
    if scenario.video:
        raise ScenarioError(f"{scenario.source}: `video: true` cannot go with a SIP call: "
                            "SIP calls are audio-only")  # fmt: skip
    if scenario.impair is not None:
        raise ScenarioError(IMPAIR_SIP)


__all__ = ["Impairment", "Runner", "check_ready", "check_sip", "run_scenario"]
