"""An IVR bot: the menu in ivr_menu.toml (press 1 for info, 2 for the operator, 3 to leave a
message, 9 to hang up).

    callbot run samples/ivr_bot.py
    callbot media dtmf keys.wav --digits 19
    callbot call desk --play keys.wav
"""

from pathlib import Path

from callbot import Bot

bot = Bot("desk")
bot.use("ivr", menu=Path(__file__).with_name("ivr_menu.toml"), dir="recordings")
