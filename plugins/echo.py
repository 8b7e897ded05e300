"""echo: send every caller back what it sends (audio, and video on video calls)."""

from __future__ import annotations

from callbot import Bot, Call, Incoming


def setup(bot: Bot, accept: bool = True, video: bool = True) -> None:
    if accept:

        @bot.on_incoming
        async def answer(incoming: Incoming) -> None:
            await incoming.accept(video=video and incoming.video)

    @bot.on("call")
    def attach(call: Call) -> None:
        @call.on("connected")
        async def loop_back() -> None:
            await call.set_audio_source(call.remote_track("audio"))
            if video and call.has_video and call.receives_video:
                await call.set_video_source(call.remote_track("video"))
