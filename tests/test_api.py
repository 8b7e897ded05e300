"""The public API: what `callbot` exports, `off()` on a real call, typed refusal reasons, and
the CLI console's styling (click, no rich)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import get_args

import pytest

import callbot
from callbot import Bot, Call, CallbotError, Incoming, console
from callbot.signaling.messages import REJECT_REASONS, ProtocolError


def test_every_exported_name_imports_and_errors_share_one_base() -> None:
    errors = []
    for name in callbot.__all__:
        value = getattr(callbot, name)
        assert value is not None, name
        if isinstance(value, type) and issubclass(value, Exception):
            errors.append(name)
            assert issubclass(value, CallbotError), name
    assert set(errors) >= {
        *("CallbotError", "CallError", "InvalidStateError", "MediaError", "AuthError"),
        *("IdentityError", "JanusError", "PluginError", "SignalingError"),
    }
    for name in ("MediaSource", "Recording", "IdentityKey", "KnownPeers", "RejectReason"):
        assert name in callbot.__all__
    assert issubclass(ProtocolError, CallbotError)  # the relay's, not exported
    assert sorted(callbot.__all__) == sorted(callbot._EXPORTS)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = callbot.Nope  # type: ignore[attr-defined]


def test_import_callbot_loads_no_media_stack() -> None:
    """`import callbot` and its pytest plugin (loaded by every pytest run where callbot is
    installed) do not pull aiortc, av or numpy in."""
    probe = "import sys, callbot.testing; print({'aiortc', 'av', 'numpy'} & set(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "set()"


def test_reject_reasons_are_the_protocols() -> None:
    assert set(get_args(callbot.RejectReason)) == REJECT_REASONS


async def test_off_removes_one_handler_then_every_application_handler(make_bot) -> None:
    bot = make_bot("listener")
    answered: asyncio.Queue[Call] = asyncio.Queue()

    @bot.on_incoming
    async def answer(incoming: Incoming) -> None:
        answered.put_nowait(await incoming.accept())

    alice = make_bot("alice", role="user")
    await bot.start()
    await alice.start()
    call = await alice.call("listener")
    await call.wait_connected(10)
    callee = await asyncio.wait_for(answered.get(), 10)
    removed: list[str] = []
    arrived: asyncio.Queue[str] = asyncio.Queue()
    callee.on("data", removed.append)
    callee.on("data", arrived.put_nowait)

    call.send_data("one")
    assert await asyncio.wait_for(arrived.get(), 10) == "one"
    callee.off("data", removed.append)
    callee.off("data", removed.append)  # not registered any more: a no-op
    call.send_data("two")
    assert await asyncio.wait_for(arrived.get(), 10) == "two"
    assert removed == ["one"]

    callee.off("data")
    assert callee.listeners("data") == []
    callee.off("ended")  # the bot's own bookkeeping of the call survives
    await call.hangup()
    assert await callee.wait_ended(5) == "remote_hangup"
    assert bot.get_call(callee.id) is None


async def test_bad_refusal_reasons_are_value_errors_and_busy_still_reaches_the_caller(
    make_bot,
) -> None:
    bot = make_bot("picky")
    refused: list[str] = []

    @bot.on_incoming
    async def refuse(incoming: Incoming) -> None:
        ringing = bot.get_call(incoming.call_id)
        assert ringing is not None
        for attempt in (incoming.decline("later"), ringing.reject("nope")):  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="one of 'busy', 'decline'") as error:
                await attempt
            refused.append(str(error.value))
        await incoming.decline("busy")

    alice = make_bot("alice", role="user")
    await bot.start()
    await alice.start()
    call = await alice.call("picky")
    assert await call.wait_ended(10) == "rejected:busy"
    assert refused == [
        "reject reason must be one of 'busy', 'decline', not 'later'",
        "reject reason must be one of 'busy', 'decline', not 'nope'",
    ]


def test_console_styles_only_on_a_terminal(monkeypatch, capsys) -> None:
    console.say("ready", "bold green")
    assert capsys.readouterr().err == "ready\n"
    monkeypatch.setattr(console, "_is_terminal", lambda: True)
    console.say("ready", "bold green")
    assert capsys.readouterr().err == "\x1b[32m\x1b[1mready\x1b[0m\n"
    with console.status("calling bob…") as progress:
        progress.update("bob is ringing…")
    assert capsys.readouterr().err == ("\r\x1b[Kcalling bob…\r\x1b[Kbob is ringing…\r\x1b[K")


def test_bot_is_exported_lazily_once() -> None:
    assert callbot.Bot is Bot and "Bot" in dir(callbot)
