"""An IVR bot: the menu in ivr_menu.toml (press 1 for info, 2 for the operator, 3 to leave a
message, 9 to hang up; in info, 0 goes back and 9 hangs up). Its prompts say so.

    callbot run samples/ivr_bot.py
    callbot call desk --scenario samples/ivr.yaml

samples/ivr.yaml waits for the menu, presses 1, hears the info prompt, presses 9 and expects
the IVR to hang up. Without a scenario, keys in a file must come after the menu starts:

    callbot media dtmf keys.wav --digits 19 --lead 3s
    callbot call desk --play keys.wav
"""

from pathlib import Path

from callbot import Bot

bot = Bot("desk")
bot.use("ivr", menu=Path(__file__).with_name("ivr_menu.toml"), dir="recordings")
