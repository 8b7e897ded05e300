"""An echo bot: answers every call and sends back what it hears (and sees, on video calls).

callbot run samples/echo_bot.py
callbot call echo --play samples/tone-440.wav --record back.wav --json
callbot call echo --scenario samples/echo.yaml
"""

from callbot import Bot

bot = Bot("echo")


@bot.on_incoming
async def answer(incoming):
    call = await incoming.accept(video=incoming.video)
    await call.set_audio_source(call.remote_track("audio"))
    if incoming.video:
        await call.set_video_source(call.remote_track("video"))
