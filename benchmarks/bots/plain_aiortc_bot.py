"""The baseline of density.py: the same bot written with plain aiortc, as its docs show.

Each call gets a `MediaPlayer` looping the prompt and a `MediaRecorder` writing what arrives
to .ogg: a decode and encode per call, two threads per call. Only signalling (callbot's relay
client) and the loopback-only ICE filter are callbot's; the media path is aiortc's own.

With BENCH_VIDEO set (a silent video clip), a second player sends that clip's video too, and
the recorder writes both received tracks to one .webm (decoded and encoded again, as aiortc
does).

Usage: plain_aiortc_bot.py RELAY_URL TOKEN (BENCH_* variables as for callbot_bot.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _botstats import StatsWriter
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer, MediaRecorder

from callbot.ice import IceConfig, gather_within
from callbot.signaling.client import RelayClient

ICE = IceConfig(addresses=("127.0.0.1",))
VIDEO = os.environ.get("BENCH_VIDEO")


class PlainBot:
    def __init__(self, url: str, token: str) -> None:
        self.calls: dict[str, tuple[RTCPeerConnection, list[MediaPlayer], MediaRecorder]] = {}
        self.stats = StatsWriter(lambda: {"dropped": None, "calls": len(self.calls)})
        self.client = RelayClient(url, token, on_message=self.on_message, role="bot")
        self._tasks: set[asyncio.Future[None]] = set()

    def on_message(self, message: dict[str, Any]) -> None:
        kind, call_id = message.get("type"), message.get("call_id")
        if kind == "call_offer":
            self._spawn(self.answer(call_id, message["sdp"]))
        elif kind == "hangup" and call_id in self.calls:
            self._spawn(self.close(call_id))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def answer(self, call_id: str, offer: str) -> None:
        await self.client.send({"type": "call_ringing", "call_id": call_id})
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # never a public STUN server
        players = [MediaPlayer(str(self.stats.prompt), loop=True)]
        if VIDEO:
            players.append(MediaPlayer(VIDEO, loop=True))
        suffix = ".webm" if VIDEO else ".ogg"
        recorder = MediaRecorder(str(self.stats.recordings / f"{call_id}{suffix}"))
        self.calls[call_id] = (pc, players, recorder)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" or VIDEO:
                recorder.addTrack(track)

        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        pc.addTrack(players[0].audio)
        if VIDEO:
            pc.addTrack(players[1].video)
        await gather_within(ICE, pc.setLocalDescription(await pc.createAnswer()))
        await recorder.start()
        await self.client.send(
            {"type": "call_answer", "call_id": call_id, "sdp": pc.localDescription.sdp}
        )

    async def close(self, call_id: str) -> None:
        pc, players, recorder = self.calls.pop(call_id)
        await recorder.stop()
        for player in players:
            for track in (player.audio, player.video):
                if track is not None:
                    track.stop()
        await pc.close()

    async def run(self) -> None:
        self.stats.ensure_started()
        await self.client.connect()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        for call_id in list(self.calls):
            await self.close(call_id)
        await self.client.close()


if __name__ == "__main__":
    asyncio.run(PlainBot(sys.argv[1], sys.argv[2]).run())
