"""`callbot demo`: a caller plays a clip to a bot through an embedded relay; the bot records it."""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import click

from ..bot import Bot, Incoming
from ..config import CallConfig
from ..media import analysis
from ..media.recorder import Recording
from ..signaling.relay import Relay
from ..testing import generate
from .options import call_config, cli_settings, ice_option, run_sync


@dataclass
class DemoSummary:
    """What the demo measured: what was sent, what arrived and what it sounded like."""

    connected: bool
    setup_ms: float
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
    """Relay, a recording bot and a caller in this process; the caller plays `clip`.

    Without a clip, a 4 s 640x480 moving pattern with a 440 Hz tone is generated first.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if clip is None:
        clip = generate.write_video(out_dir / "demo-clip.webm", seconds=4.0, tone=440.0)
    with av.open(str(clip)) as probe:
        has_video = bool(probe.streams.video)
    audio_path, video_path = out_dir / "received.wav", out_dir / "received.webm"
    for path in (audio_path, video_path):  # this demo's own output: a rerun replaces it
        path.unlink(missing_ok=True)
    recordings: list[Recording] = []

    async with Relay(port=0, state_dir=out_dir / "relay-state") as relay:
        bot = Bot(
            "demo-bot", server=relay.url, token=relay.mint("demo-bot", role="bot"), config=config
        )

        @bot.on_incoming
        async def record(incoming: Incoming) -> None:
            call = await incoming.accept(video=True)
            recordings.append(call.record_incoming(audio_path=audio_path, video_path=video_path))

        caller = Bot(
            "demo-caller",
            server=relay.url,
            token=relay.mint("demo-caller"),
            role="user",
            config=config,
        )
        async with bot, caller:
            started = asyncio.get_running_loop().time()
            call = await caller.call("demo-bot", video=True)
            await call.wait_connected(20)
            setup = asyncio.get_running_loop().time() - started
            playback = (call.send_video_file if has_video else call.send_audio_file)(clip)
            await playback
            await asyncio.sleep(0.3)  # let the last packets land
            await call.hangup()
            await asyncio.gather(*(r.stop() for r in recordings))

    received = analysis.load_audio(audio_path)
    span = analysis.active_span(received)
    with av.open(str(video_path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return DemoSummary(
        connected=True,
        setup_ms=round(setup * 1000, 1),
        seconds_sent=round(playback.position, 2),
        seconds_received=round(span[1] - span[0], 2) if span else 0.0,
        dominant_hz=round(analysis.dominant_frequency(received), 1) if span else None,
        level_dbfs=round(analysis.level_dbfs(received), 1) if span else None,
        video_frames_received=frames,
        audio_path=str(audio_path),
        video_path=str(video_path),
    )


@click.command()
@click.option(
    "--clip",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Media file to play (default: a generated 4 s 640x480 clip, 440 Hz tone).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the recordings (default: a new temporary directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@ice_option
def demo(
    clip: Path | None, out_dir: Path | None, as_json: bool, ice_addresses: tuple[str, ...]
) -> None:
    """A caller plays a clip to a bot through an embedded relay; print what the bot got.

    \b
    Example:
      callbot demo
      callbot demo --clip samples/welcome.wav --out recordings --json
    """
    out = out_dir or Path(tempfile.mkdtemp(prefix="callbot-demo-"))
    summary = run_sync(run_demo(clip, out, call_config(cli_settings(ice_addresses=ice_addresses))))
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        for key, value in summary.as_dict().items():
            click.echo(f"{key.replace('_', ' ') + ':':<24}{value}")
    if not summary.ok:
        raise SystemExit(1)
