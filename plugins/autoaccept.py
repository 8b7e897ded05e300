"""autoaccept: answer every incoming call (with video when `video` and the caller offers it)."""

from __future__ import annotations

from callbot import Bot, Incoming


def setup(bot: Bot, video: bool = False) -> None:
    @bot.on_incoming
    async def autoaccept(incoming: Incoming) -> None:
        await incoming.accept(video=video and incoming.video)
