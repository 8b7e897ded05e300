"""A voicemail box: greets, beeps, records until 3 s of silence (at most 60 s) and saves the
message with a JSON of who called, when and for how long.

    callbot run samples/voicemail_bot.py
    callbot call voicemail --play samples/welcome.wav --duration 10
"""

from pathlib import Path

from callbot import Bot

HERE = Path(__file__).parent
bot = Bot("voicemail")
bot.use("voicemail", dir="voicemail", greeting=HERE / "welcome.wav", beep=HERE / "beep.wav")
