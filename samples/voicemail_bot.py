"""A voicemail box: greets, beeps, records until 3 s of silence (at most 60 s) and saves the
message in voicemail/ with a JSON of who called, when and for how long. A caller speaks after
the beep: samples/message.ogg is 7 s of silence (the greeting and the beep), then 3 s of
(synthetic) speech.

    callbot run samples/voicemail_bot.py
    callbot call voicemail --play samples/message.ogg --duration 15
    callbot call voicemail --scenario samples/voicemail.yaml
"""

from pathlib import Path

from callbot import Bot

HERE = Path(__file__).parent
bot = Bot("voicemail")
bot.use("voicemail", dir="voicemail", greeting=HERE / "welcome.wav", beep=HERE / "beep.wav")
