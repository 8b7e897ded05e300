"""A greeter: plays a welcome prompt and a beep, then records the caller's reply.

callbot run samples/greeter.py
callbot call greeter --play samples/tone-440.wav --duration 8 --record heard.wav
"""

from pathlib import Path

from callbot import Bot

HERE = Path(__file__).parent
bot = Bot("greeter")


@bot.on_incoming
async def greet(incoming):
    call = await incoming.accept()
    await call.send_audio_file(HERE / "welcome.wav")
    await call.send_audio_file(HERE / "beep.wav")
    call.record_incoming(audio_path=f"recordings/{call.id}.wav")
    if await call.wait_ended(timeout=30) is None:
        await call.hangup()
