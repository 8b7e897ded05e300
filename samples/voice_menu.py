"""A voice menu: asks whether you want sales or support (say it, or press 1 or 2), answers
with what it understood, and hangs up. Everything runs offline, with the `voice` and `tts`
extras installed (docs/howto/voice.md):

callbot run samples/voice_menu.py

then call `voice-desk` from the softphone link it prints and say "sales" or "support" (you
may talk over the question: it stops as soon as you speak).
"""

from callbot import Bot
from callbot.voice import prepare

bot = Bot("voice-desk")
DEPARTMENTS = {"1": "sales", "2": "support"}
QUESTION = "Welcome. Say sales or support, or press 1 or 2."
SORRY = "Sorry, I did not get that."


@bot.on("ready")
async def warm_up():
    """Load the recogniser and synthesise the fixed prompts now, not for the first caller."""
    await prepare([QUESTION, SORRY])


@bot.on_incoming
async def menu(incoming):
    call = await incoming.accept()
    await call.wait_connected(timeout=10)
    for _ in range(2):
        answer = await call.ask(
            QUESTION,
            grammar=list(DEPARTMENTS.values()),
            digits=1,
        )
        choice = answer.choice or DEPARTMENTS.get(answer.digits)
        if choice:
            await (await call.say(f"You chose {choice}. Goodbye."))
            break
        await (await call.say(SORRY))
    await call.hangup()
