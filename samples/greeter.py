"""A greeter: plays a welcome prompt and a beep, and records the caller from the moment it
answers (a caller who talks over the greeting is recorded too) into recordings/.

callbot run samples/greeter.py
callbot call greeter --play samples/tone-440.wav --duration 8 --record heard.wav
callbot call greeter --scenario samples/greeter.yaml
"""

from pathlib import Path

from callbot import Bot, recording_name

HERE = Path(__file__).parent
bot = Bot("greeter")


@bot.on_incoming
async def greet(incoming):
    call = await incoming.accept()
    call.record_incoming(audio_path=f"recordings/{recording_name(call.id)}.wav")
    await call.send_audio_file(HERE / "welcome.wav")
    await call.send_audio_file(HERE / "beep.wav")
    if await call.wait_ended(timeout=30) is None:
        await call.hangup()
