"""`callbot call`: place one call, play and record, and report what happened (CI smoke tests).

The report is a plain dict (printed as JSON by `--json`): whether the call connected, how it
ended, whether the peer's signature verified (`peer_verified`), packets and frames each way,
and for each recording its length, level and dominant frequency (audio) or frame count and
size (video). With a scenario (`--scenario`, `--step`) it also has `scenario` (verdict and
the one-line failure), `steps` (each step's timing, verdict and measures) and `grades`
(estimated MOS per direction, dropouts, freezes, echo delay): see callbot.scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

from ..bot import Bot
from ..call import Call
from ..config import CallConfig
from ..errors import CallbotError, MediaError
from ..media import analysis
from ..media.playback import Playback
from ..settings import Settings
from ..signaling.client import SignalingError
from ..sip import is_sip_uri
from .expectations import Expectation, evaluate

if TYPE_CHECKING:
    from ..scenario import Scenario

NORMAL_ENDS = frozenset({"hangup", "remote_hangup"})
#: Kept connected after a playback ends, so its last packets arrive before hanging up.
TAIL = 1.0
DEFAULT_DURATION = 10.0


@dataclass
class CallPlan:
    """What `callbot call` was asked to do."""

    peer: str
    server: str | list[str]  # one relay, or the nodes of a cluster in the order to try them
    token: str | None
    user: str = "caller"
    play: Path | None = None
    play_video: Path | None = None
    loop: bool = False
    record: Path | None = None
    record_video: Path | None = None
    duration: float | None = None
    timeout: float = 30.0
    video: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    config: CallConfig = field(default_factory=CallConfig)
    #: Trust, ICE addresses and relay-only mode (`callbot call` resolves them from its flags).
    settings: Settings = field(default_factory=Settings)
    state_dir: Path | None = None
    #: Checks on the recordings after the call (`callbot call --expect-*`); an expectation
    #: without its recording (--record / --record-video) records to a temporary file.
    expect: list[Expectation] = field(default_factory=list)
    #: Fail unless the peer's answer was signed by its pinned key (`--require-verified`).
    require_verified: bool = False
    #: Steps to run once connected, instead of playing a file (`--scenario`, `--step`).
    scenario: Scenario | None = None

    @property
    def wants_video(self) -> bool:
        scripted = self.scenario is not None and self.scenario.wants_video
        asked = self.play_video is not None or self.record_video is not None
        return scripted or self.video or asked

    def with_scratch_recordings(self, directory: Path) -> CallPlan:
        """This plan, recording into `directory` what its expectations need and nothing
        else records."""
        needs = {e.needs for e in self.expect}
        record, record_video = self.record, self.record_video
        if "audio" in needs and record is None:
            record = directory / "audio.wav"
        if "video" in needs and record_video is None:
            record_video = directory / "video.webm"
        return replace(self, record=record, record_video=record_video)


async def place_call(plan: CallPlan, progress: Any = None) -> dict[str, Any]:
    """Run the plan; never raises for a call that fails, the report says how it failed.

    With `plan.expect`, the report has `expectations` (name, ok, message, measured each) and
    `ok` is true only if the call went well and every expectation holds. Recordings made only
    for the expectations go to a temporary directory, deleted unless something failed.
    """
    if plan.scenario is not None:
        from ..scenario import check_ready

        check_ready(plan.scenario, sip=is_sip_uri(plan.peer))  # ScenarioError before dialling
    scratch = None
    given = plan
    missing = {e.needs for e in plan.expect} - {
        kind for kind, path in (("audio", plan.record), ("video", plan.record_video)) if path
    }
    if missing:
        scratch = Path(tempfile.mkdtemp(prefix="callbot-call-"))
        plan = plan.with_scratch_recordings(scratch)
    try:
        report = await _place_call(plan, progress)
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    if plan.expect:
        temporary = {plan.record, plan.record_video} - {given.record, given.record_video}
        for kind, entry in list(report["recordings"].items()):
            if Path(entry["path"]) in temporary:
                entry["temporary"] = True
                if not report["connected"]:  # nothing was recorded: nothing to describe
                    del report["recordings"][kind]
        if report["connected"]:
            report["expectations"] = evaluate(
                plan.expect, {"audio": plan.record, "video": plan.record_video}
            )
        else:
            reason = f"the call did not connect ({report.get('error') or report.get('end_reason')})"
            report["expectations"] = [e.not_checked(reason).as_dict() for e in plan.expect]
        report["ok"] = report["ok"] and all(e["ok"] for e in report["expectations"])
    if scratch is not None and (report["ok"] or not any(scratch.iterdir())):
        shutil.rmtree(scratch, ignore_errors=True)
    return report


async def _place_call(plan: CallPlan, progress: Any = None) -> dict[str, Any]:
    config = replace(plan.config, ring_timeout=plan.timeout, connect_timeout=plan.timeout)
    bot = Bot(
        plan.user,
        server=plan.server,
        token=plan.token,
        role="user",
        config=config,
        state_dir=plan.state_dir,
        settings=plan.settings,
    )
    report: dict[str, Any] = {"ok": False, "connected": False, "peer": plan.peer}
    began = time.monotonic()  # plan.timeout bounds the whole wait: relay, ringing, media
    try:
        if not is_sip_uri(plan.peer):  # a SIP call needs no relay
            await asyncio.wait_for(bot.start(), plan.timeout)
    except TimeoutError:
        raise SignalingError(
            "unreachable", f"no welcome from {bot.server} in {plan.timeout:g}s (--timeout)"
        ) from None
    try:
        started = time.monotonic()
        call = await bot.call(plan.peer, video=plan.wants_video, metadata=plan.metadata)
        report["call_id"] = call.id
        errors: list[str] = []
        call.on("error", lambda error: errors.append(str(error)))
        call.on("ringing", lambda: _tell(progress, f"{plan.peer} is ringing…"))
        try:
            await call.wait_connected(max(0.1, plan.timeout - (time.monotonic() - began)))
        except TimeoutError:
            await call.hangup("no_answer")
        except CallbotError as exc:
            report["error"] = str(exc)
        if errors:
            report["errors"] = errors
        if call.state in ("connected", "held"):
            report["connected"] = True
            report["setup_ms"] = round((time.monotonic() - started) * 1000, 1)
            _tell(progress, f"connected to {plan.peer}")
            await _media(call, plan, report, progress)
        if call.state != "ended":
            await call.hangup()
        report["end_reason"] = call.end_reason
        report["remote_end_reason"] = call.remote_end_reason
        report["peer_verified"] = call.peer_verified
        report["seconds"] = round(call.duration, 2)
        stats = await call.stats()
        report["sent"], report["received"] = stats["sent"], stats["received"]
    finally:
        await bot.stop()
    report["recordings"] = _describe_recordings(plan)
    report["ok"] = report["connected"] and report.get("end_reason") in NORMAL_ENDS
    if plan.scenario is not None:
        _scenario_verdict(plan.scenario, report)
    if plan.require_verified and report["ok"] and not report.get("peer_verified"):
        report["ok"] = False  # a relay in the middle passes for the peer without signatures
        report["error"] = f"{plan.peer} is not verified: its answer was not signed by a pinned key"
    return report


async def _media(call: Call, plan: CallPlan, report: dict[str, Any], progress: Any = None) -> None:
    if plan.record or plan.record_video:
        for path in (plan.record, plan.record_video):  # named by the operator: a rerun replaces
            if path is not None:
                path.unlink(missing_ok=True)
        call.record_incoming(audio_path=plan.record, video_path=plan.record_video)
    if plan.scenario is not None:
        from ..scenario import run_scenario

        report.update(await run_scenario(call, plan.scenario, lambda m: _tell(progress, m)))
        return
    playback: Playback | None = None
    if plan.play_video is not None:
        playback = call.send_video_file(plan.play_video, loop=plan.loop)
    if plan.play is not None:
        playback = call.send_audio_file(plan.play, loop=plan.loop)
    duration = plan.duration
    if duration is None and playback is not None and not plan.loop:
        ended = asyncio.ensure_future(call.wait_ended())
        await asyncio.wait(
            [ended, asyncio.ensure_future(playback)], return_when=asyncio.FIRST_COMPLETED
        )
        ended.cancel()
        duration = TAIL
    report["played_seconds"] = None
    await call.wait_ended(duration if duration is not None else DEFAULT_DURATION)
    if playback is not None:
        report["played_seconds"] = round(playback.position, 2)
        playback.stop()


def _scenario_verdict(scenario: Scenario, report: dict[str, Any]) -> None:
    """Fold the scenario into `ok`; a call that never connected ran no step."""
    if "steps" not in report:
        why = f"the call did not connect ({report.get('error') or report.get('end_reason')})"
        report["scenario"] = {"name": scenario.name, "source": scenario.source, "ok": False,
                              "failure": why}  # fmt: skip
        report["steps"] = [
            {"step": n, "where": s.where, "text": s.text, "kind": s.kind, "ok": None, "at": 0.0,
             "seconds": 0.0, "message": f"not run: {why}", "measured": {}}
            for n, s in enumerate(scenario.steps, 1)
        ]  # fmt: skip
    report["ok"] = report["ok"] and report["scenario"]["ok"]


def _describe_recordings(plan: CallPlan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if plan.record is not None:
        out["audio"] = _describe_audio(plan.record)
    if plan.record_video is not None:
        out["video"] = _describe_video(plan.record_video)
    return out


def _describe_audio(path: Path) -> dict[str, Any]:
    try:
        clip = analysis.load_audio(path)
    except MediaError as exc:
        return {"path": str(path), "error": str(exc)}
    span = analysis.active_span(clip)
    silent = span is None
    return {
        "path": str(path),
        "seconds": round(clip.duration, 2),
        "active_seconds": 0.0 if span is None else round(span[1] - span[0], 2),
        "level_dbfs": None if silent else round(analysis.level_dbfs(clip), 1),
        "dominant_hz": None if silent else round(analysis.dominant_frequency(clip), 1),
    }


def _describe_video(path: Path) -> dict[str, Any]:
    try:
        with av.open(str(path)) as container:
            frames = list(container.decode(video=0))
    except (av.error.FFmpegError, OSError) as exc:
        return {"path": str(path), "error": str(exc)}
    first = frames[0] if frames else None
    return {
        "path": str(path),
        "frames": len(frames),
        "width": first.width if first else None,
        "height": first.height if first else None,
    }


def _tell(progress: Any, message: str) -> None:
    if progress is not None:
        with contextlib.suppress(Exception):
            progress(message)
