"""The relay's softphone in real Chromium, calling and called by callbot bots on 127.0.0.1.

Each test prints what it measured (shown with `pytest -s`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import aioice.ice
import numpy as np
from playwright.async_api import expect
from softphone_page import HZ_TOLERANCE, MIC_HZ, remote_peak, wait_until

from callbot import Bot, Call, CallConfig, Incoming
from callbot.media import analysis
from callbot.signaling.relay import Relay
from callbot.signaling.state import RelayState
from callbot.testing import generate

from helpers import collect_frames

PROMPT_HZ = 1000.0
#: The page's own limit for finding a media path (CONNECT_TIMEOUT_MS in callbot/web/call.js).
CONNECT_TIMEOUT_S = 15
#: The page's two level meters (0..1 for -60..0 dBFS).
LEVELS_JS = """() => ({mic: document.getElementById("mic-level").value,
                     peer: document.getElementById("peer-level").value})"""
#: Whether the element that plays the call (its audio too, on audio calls) is playing.
PLAYING_JS = """
async () => {
  const media = document.getElementById("remote-video");
  const start = media.currentTime;
  await new Promise((resolve) => setTimeout(resolve, 300));
  return {paused: media.paused, muted: media.muted, advancing: media.currentTime > start};
}
"""


def _answer_and_watch(bot: Bot, answered: list[tuple[Call, list[tuple[Any, ...]]]]) -> None:
    """The bot answers with video and notes the page's mediastatus, held and resumed."""

    @bot.on_incoming
    async def take(incoming: Incoming) -> None:
        call = await incoming.accept(video=True)
        events: list[tuple[Any, ...]] = []
        call.on("mediastatus", lambda audio, video: events.append(("mediastatus", audio, video)))
        call.on("held", lambda by: events.append(("held", by)))
        call.on("resumed", lambda: events.append(("resumed",)))
        answered.append((call, events))


async def _packets_from_page(call: Call) -> int:
    return (await call.stats())["received"]["audio"]["packets"]


async def test_page_calls_the_echo_bot_and_audio_flows_both_ways(
    softphone, make_bot, tmp_path: Path, relay_log
) -> None:
    prompt = generate.write_tone(tmp_path / "prompt.wav", PROMPT_HZ, seconds=2.0)
    heard = tmp_path / "heard-by-bot.wav"
    bot = make_bot("echo")
    answered: list[Call] = []

    @bot.on_incoming
    async def echo(incoming: Incoming) -> None:
        call = await incoming.accept()
        call.record_incoming(audio_path=heard)
        await call.set_audio_source(call.remote_track("audio"))
        answered.append(call)

    await bot.start()
    phone = await softphone("you")
    await phone.dial("echo")
    await phone.wait_status("Connected")
    (call,) = answered

    packets = await phone.wait_stat_above("audio-packets", 100)  # 2 s of 20 ms packets
    playing = await phone.page.evaluate(PLAYING_JS)  # the page plays what arrives
    echoed = await remote_peak(phone, MIC_HZ)  # the page's tone, back from the bot
    call.send_audio_file(prompt, loop=True)
    prompted = await remote_peak(phone, PROMPT_HZ)  # the bot's own tone
    shown = {name: await phone.stat(name) for name in ("rtt", "jitter", "loss")}
    levels = await phone.page.evaluate(LEVELS_JS)
    await phone.page.get_by_role("button", name="Hang up").click()
    assert await call.wait_ended(10) == "remote_hangup"
    await expect(phone.page.get_by_role("log")).to_contain_text(
        re.compile(r"Call with echo ended: You hung up\. \((0:0[2-9]|0:[1-5]\d)\)")
    )  # with its duration: at least the 2 s of packets waited for

    clip = analysis.load_audio(heard)
    span = analysis.active_span(clip)
    assert span is not None, "the bot recorded only silence"
    tone = clip.slice(*span)
    bot_hz, bot_db = analysis.dominant_frequency(tone), analysis.tone_level_db(tone, MIC_HZ)
    print(f"\npage: {packets} audio packets in, {shown}, meters {levels}")
    print(f"page's analyser: echo peak {echoed}, prompt peak {prompted}")
    print(f"bot heard {tone.duration:.1f} s of the page: {bot_hz:.1f} Hz at {bot_db:.1f} dBFS")
    assert abs(bot_hz - MIC_HZ) <= 5
    assert bot_db > -15  # the tone is -9 dBFS; voice processing would cut it to about -23
    assert abs(echoed["hz"] - MIC_HZ) <= HZ_TOLERANCE and echoed["db"] > -70
    assert abs(prompted["hz"] - PROMPT_HZ) <= HZ_TOLERANCE and prompted["db"] > -70
    assert re.fullmatch(r"\d+ ms", shown["rtt"]) and re.fullmatch(r"\d+ ms", shown["jitter"])
    assert re.fullmatch(r"\d+\.\d %", shown["loss"])
    assert levels["mic"] > 0.5 and levels["peer"] > 0.3  # -9 dBFS tone: 0.85 on a -60..0 scale
    assert playing == {"paused": False, "muted": False, "advancing": True}

    hello = next(m for m in relay_log if m.get("client") == "callbot-softphone")
    assert hello["type"] == "hello" and hello["role"] == "user" and hello["calls"] == []
    ice = [m for m in relay_log if m["type"] == "ice"]  # bots never trickle: all the page's
    assert len(ice) >= 2 and ice[-1]["candidate"] is None
    for message in ice[:-1]:
        candidate = message["candidate"]
        assert message["to"] == "echo" and message["call_id"] == call.id
        assert candidate["candidate"].startswith("candidate:")
        assert {"sdpMid", "sdpMLineIndex"} <= candidate.keys()
        assert ".local" not in candidate["candidate"]  # real addresses, not mDNS names


async def test_bot_calls_the_page_which_answers_and_video_flows_both_ways(
    softphone, make_bot, tmp_path: Path
) -> None:
    clip = generate.write_video(tmp_path / "pattern.webm", seconds=2.0, tone=None)
    bot = make_bot("caller")
    await bot.start()
    phone = await softphone("you")
    page = phone.page

    call = await bot.call("you", video=True)
    dialog = page.get_by_role("alertdialog")
    await expect(dialog).to_contain_text("caller is calling you with video.")
    answer = dialog.get_by_role("button", name="Answer", exact=True)
    await expect(answer).to_be_focused()
    await answer.click()
    await call.wait_connected(20)
    call.send_video_file(clip, loop=True)

    frames = await collect_frames(call.video_frames(), 3.0)
    decoded = await phone.wait_stat_above("video-frames", 30)
    width = await page.evaluate("() => document.getElementById('remote-video').videoWidth")
    playing = await page.evaluate(PLAYING_JS)
    shot = tmp_path / "softphone-in-call.png"
    await page.screenshot(path=shot, full_page=True)
    await page.get_by_role("button", name="Hang up").click()
    assert await call.wait_ended(10) == "remote_hangup"

    sizes = {(f.width, f.height) for f in frames}
    detail = float(np.std(frames[-1].to_ndarray(format="gray")))
    print(f"\nbot got {len(frames)} frames in 3 s, sizes {sizes}, last frame std {detail:.1f}")
    print(f"page decoded {decoded} frames, {width} px wide; screenshot {shot}")
    assert len(frames) >= 20  # the fake camera sends about 30 per second
    assert all(w >= 160 and h >= 120 for w, h in sizes)
    assert detail > 5  # a picture, not a flat black frame
    assert width == 640  # the bot's 640x480 video
    assert playing == {"paused": False, "muted": False, "advancing": True}


async def test_mute_hold_and_data_reach_the_bot(softphone, make_bot) -> None:
    bot = make_bot("desk")
    answered: list[tuple[Call, list[tuple[Any, ...]]]] = []
    _answer_and_watch(bot, answered)
    await bot.start()
    phone = await softphone("you")
    page = phone.page
    await phone.dial("desk", "Video call")
    await phone.wait_status("Connected")
    ((call, events),) = answered

    mute = page.get_by_role("button", name="Mute microphone")
    await mute.click()
    await expect(mute).to_have_attribute("aria-pressed", "true")
    await wait_until(lambda: ("mediastatus", True, False) in events, "audio mute at the bot")
    muted = await collect_frames(call.audio_frames(), 1.5)
    await page.get_by_role("button", name="Camera off").click()
    await wait_until(lambda: ("mediastatus", True, True) in events, "camera off at the bot")

    hold = page.get_by_role("button", name="Hold")
    await hold.click()
    await phone.wait_status("On hold")
    await wait_until(lambda: ("held", "remote") in events, "held at the bot")
    await collect_frames(call.audio_frames(), 0.5)  # let what was in flight arrive
    before = await _packets_from_page(call)
    await collect_frames(call.audio_frames(), 1.5)  # a window of time in which nothing comes
    during_hold = await _packets_from_page(call) - before
    await hold.click()
    await phone.wait_status("Connected")
    await wait_until(lambda: ("resumed",) in events, "resumed at the bot")
    resumed_at = await _packets_from_page(call)
    await collect_frames(call.audio_frames(), 1.0)
    after_resume = await _packets_from_page(call) - resumed_at

    await call.hold()  # the bot holds, then resumes: the page follows
    await phone.wait_status("On hold: desk put the call on hold")
    await call.resume()
    await phone.wait_status("Connected")
    call.send_data("hello from desk")
    await expect(page.locator("#peer-note")).to_have_text("desk sent: hello from desk")
    await call.mute("audio")
    await expect(page.locator("#peer-note")).to_have_text("desk turned off their microphone.")

    muted_db = analysis.level_dbfs(muted[len(muted) // 3 :])  # skip what was in flight
    print(f"\nbot events {events}; muted level {muted_db:.1f} dBFS; packets on hold "
          f"{during_hold} in 1.5 s, after resume {after_resume} in 1 s")  # fmt: skip
    assert muted_db < -50
    assert during_hold <= 2  # held means no media at all (normally 75 packets in 1.5 s)
    assert after_resume >= 20
    await call.hangup()
    await expect(page.get_by_role("log")).to_contain_text("Call with desk ended: desk hung up.")


async def test_calls_between_two_pages_trickle_ice_both_ways(softphone, relay_log) -> None:
    ann = await softphone("ann")
    ben = await softphone("ben")
    await ann.dial("ben")
    await expect(ben.page.get_by_role("alertdialog")).to_contain_text("ann is calling you.")
    await expect(ann.page.locator("#call-status")).to_have_text("Ringing at ben…")
    await ben.page.get_by_role("button", name="Answer", exact=True).click()
    await ann.wait_status("Connected")
    await ben.wait_status("Connected")
    await ann.wait_stat_above("audio-packets", 50)
    await ben.wait_stat_above("audio-packets", 50)
    peak = await remote_peak(ben, MIC_HZ)
    await ben.page.get_by_role("button", name="Hang up").click()
    await expect(ann.page.get_by_role("log")).to_contain_text("Call with ben ended: ben hung up.")

    by_peer = {peer: [m for m in relay_log if m["type"] == "ice" and m["to"] == peer]
               for peer in ("ann", "ben")}  # fmt: skip
    print(f"\nben hears ann at {peak}; ICE messages to each: "
          f"{ {peer: len(sent) for peer, sent in by_peer.items()} }")  # fmt: skip
    assert abs(peak["hz"] - MIC_HZ) <= HZ_TOLERANCE
    for sent in by_peer.values():  # each side trickled its candidates, then the end of them
        assert len(sent) >= 2 and sent[-1]["candidate"] is None
        assert all(m["candidate"]["candidate"] for m in sent[:-1])


async def test_declines_and_busy(softphone, make_bot) -> None:
    bot = make_bot("picky")

    @bot.on_incoming
    async def refuse(incoming: Incoming) -> None:
        await incoming.decline("busy")

    await bot.start()
    phone = await softphone("you")
    log = phone.page.get_by_role("log")
    await phone.dial("picky")
    await expect(log).to_contain_text("Call with picky ended: picky is busy.")

    call = await bot.call("you")
    await phone.page.get_by_role("button", name="Decline").click()
    assert await call.wait_ended(10) == "rejected:decline"
    await expect(log).to_contain_text("You did not take the call from picky.")
    await expect(phone.page.get_by_label("User id")).to_be_focused()


async def test_protocol_errors_are_shown_in_words(softphone, relay: Relay) -> None:
    phone = await softphone()  # signed out; from here on only the keyboard is used
    page, keyboard = phone.page, phone.page.keyboard
    log = page.get_by_role("log")
    await expect(page.get_by_label("Token")).to_be_focused()
    await keyboard.type("not-a-token")
    await keyboard.press("Enter")
    await expect(log).to_contain_text("The relay refused the token. Check that it was pasted")
    await expect(log).to_contain_text("(auth_failed: ")
    await expect(page.get_by_label("Token")).to_be_focused()

    await keyboard.type(relay.mint("you"))
    await keyboard.press("Enter")
    await expect(page.locator("#presence")).to_have_text("Signed in as you")
    await expect(page.get_by_label("User id")).to_be_focused()
    await keyboard.type("nobody")
    await keyboard.press("Enter")
    await expect(log).to_contain_text("nobody is not online. (user_offline: ")
    await expect(page.get_by_label("User id")).to_be_focused()

    revocations = RelayState(relay.state.directory)  # as `callbot token revoke` does
    revocations.revoke("you")  # the relay cuts the open session within about 0.5 s
    revocations.close()
    await expect(log).to_contain_text("The token was revoked. ")
    await expect(log).to_contain_text("(session_revoked: ")
    await expect(page.get_by_label("Token")).to_be_focused()
    await page.goto(f"{relay.http_url}/#token={relay.mint('you')}")  # a new link, same page
    await expect(page.locator("#presence")).to_have_text("Signed in as you")


async def test_page_reclaims_its_call_after_a_relay_restart(
    softphone, make_bot, relay: Relay, log_messages
) -> None:
    bot = make_bot("desk")
    answered: list[tuple[Call, list[tuple[Any, ...]]]] = []
    _answer_and_watch(bot, answered)
    await bot.start()
    phone = await softphone("you")
    await phone.dial("desk")
    await phone.wait_status("Connected")
    ((call, events),) = answered
    presence = phone.page.locator("#presence")

    await relay.stop()
    await expect(presence).to_contain_text("Connection to the relay lost: retrying in")
    packets = await phone.wait_stat_above("audio-packets", 0)
    await phone.wait_stat_above("audio-packets", packets + 50)  # media goes on peer to peer
    async with Relay(port=relay.port, state_dir=relay.state.directory) as restarted:
        log = log_messages(restarted)
        await expect(presence).to_have_text("Signed in as you")
        await wait_until(lambda: bot.connected, "the bot to reconnect")
        await phone.page.get_by_role("button", name="Mute microphone").click()
        await wait_until(lambda: ("mediastatus", True, False) in events, "mute after restart")
        await phone.page.get_by_role("button", name="Hang up").click()
        assert await call.wait_ended(10) == "remote_hangup"
    hello = next(m for m in log if m.get("client") == "callbot-softphone")
    assert hello["calls"] == [{"call_id": call.id, "peer": "desk"}]  # it re-claimed its call


#: Keeps every RTCPeerConnection the page makes, so a test can drive its DTMF sender directly.
CAPTURE_PEER_CONNECTIONS = """
(() => {
  const Original = window.RTCPeerConnection;
  window.__peerConnections = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.__peerConnections.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
})();
"""
INSERT_DTMF_JS = """
(tones) => {
  const pc = window.__peerConnections.at(-1);
  const sender = pc.getSenders().find((s) => s.track && s.track.kind === "audio");
  sender.dtmf.insertDTMF(tones, 100, 70);
  return sender.dtmf.canInsertDTMF;
}
"""


async def test_chromium_insert_dtmf_reaches_the_bot_as_digits(browser, softphone, make_bot) -> None:
    bot = make_bot("keys")
    answered: list[Call] = []

    @bot.on_incoming
    async def take(incoming: Incoming) -> None:
        answered.append(await incoming.accept())

    await bot.start()
    await browser.add_init_script(CAPTURE_PEER_CONNECTIONS)
    phone = await softphone("you")
    await phone.dial("keys")
    await phone.wait_status("Connected")
    await wait_until(lambda: bool(answered), "the bot's call")
    (call,) = answered
    events: list[str] = []
    call.on("dtmf", events.append)
    assert call.dtmf_mode == "rfc4733"  # Chromium offers telephone-event

    assert await phone.page.evaluate(INSERT_DTMF_JS, "159#")
    await wait_until(lambda: len(events) >= 4, "four DTMF keys at the bot")
    assert events == ["1", "5", "9", "#"]
    # the keypad sends the same way, one key per press; audio keeps flowing afterwards
    await phone.page.get_by_role("button", name="Keypad").click()
    await phone.page.get_by_role("button", name="0", exact=True).click()
    await wait_until(lambda: call.received_dtmf == "159#0", "the keypad's 0")
    frames = call.audio_frames()
    heard = await collect_frames(frames, 1.0)
    assert analysis.has_tone(heard, MIC_HZ, min_db=-30)


async def test_no_media_path_is_said_within_bounds_and_cleared_by_the_next_call(
    softphone, make_bot, monkeypatch
) -> None:
    """Bots behind a firewall that drops every datagram reaching their ICE sockets: no media
    path exists. The page says so on its own, well before the bot's 30 s connect timeout, or
    when a bot gives up first; the next call starts without those stale notices."""
    bot = make_bot("walled")
    impatient = make_bot("quick", config=CallConfig(connect_timeout=3.0))
    answered: list[Call] = []

    async def take(incoming: Incoming) -> None:
        answered.append(await incoming.accept())

    for each in (bot, impatient):
        each.on_incoming(take)
        await each.start()
    receive = aioice.ice.StunProtocol.datagram_received
    firewall = {"up": True}

    def maybe_drop(protocol: Any, data: bytes, addr: Any) -> None:
        if not firewall["up"]:
            receive(protocol, data, addr)

    monkeypatch.setattr(aioice.ice.StunProtocol, "datagram_received", maybe_drop)
    phone = await softphone("you")
    log = phone.page.get_by_role("log")
    started = time.monotonic()
    await phone.dial("walled")
    await phone.wait_status("Connecting…")
    await expect(log).to_contain_text(
        re.compile(r"Call with walled ended: No media path to walled: .*\(ICE\)"),
        timeout=CONNECT_TIMEOUT_S * 1000 + 8_000,
    )
    waited = time.monotonic() - started
    print(f"\nno media path shown after {waited:.1f} s: {await log.inner_text()}")
    assert waited < 25
    assert await answered[0].wait_ended(10) == "remote_hangup"
    assert answered[0].remote_end_reason == "failed"

    await phone.dial("quick")  # the bot gives up after 3 s and says "failed"
    await expect(log).to_have_text(
        "Call with quick ended: No media path to quick: their network checks (ICE) failed."
    )  # the first call's notice is gone
    assert await answered[1].wait_ended(5) == "failed"

    firewall["up"] = False
    await phone.dial("walled")
    await phone.wait_status("Connected")
    assert "No media path" not in await log.inner_text()
    await phone.page.get_by_role("button", name="Hang up").click()
    assert await answered[2].wait_ended(10) == "remote_hangup"
