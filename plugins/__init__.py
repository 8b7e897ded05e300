"""callbot's built-in plugins (installed as `callbot_plugins`).

A plugin is a function `setup(bot, **options)` that adds behaviour to a bot. Load one by name
(`callbot run --plugin echo`), with options (`--plugin record:dir=recordings,video=false`), or by
file path (`--plugin ./my_plugin.py:greeting=hi`). Other packages ship plugins under the
entry-point group `callbot.plugins`.
"""
