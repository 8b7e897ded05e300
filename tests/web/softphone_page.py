"""The softphone page as the browser tests see it, and how they run Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from helpers import eventually

CHROMIUM = "/usr/bin/chromium"
MIC_HZ = 660.0
#: Generous: a noisy 2-core machine runs Chromium, a relay and aiortc peers at once.
TIMEOUT_MS = 20_000
PHONE_VIEWPORT = {"width": 420, "height": 860}
#: One FFT bin of the page's analyser is 48000 / 8192 ≈ 5.9 Hz.
HZ_TOLERANCE = 15.0


def chromium_flags(fake_mic: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_mic}",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
    ]


#: The only error a page may log: the relay is down (the restart test stops it on purpose).
EXPECTED_CONSOLE_ERROR = "net::ERR_CONNECTION_REFUSED"


class Softphone:
    """One softphone page and what went wrong in it: uncaught errors, logged errors (CSP
    violations and failed loads included)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and EXPECTED_CONSOLE_ERROR not in message.text:
            self.errors.append(f"console: {message.text}")

    async def dial(self, peer: str, kind: str = "Audio call") -> None:
        await self.page.get_by_label("User id").fill(peer)
        await self.page.get_by_role("button", name=kind).click()

    async def wait_status(self, text: str) -> None:
        await expect(self.page.locator("#call-status")).to_have_text(text)

    async def stat(self, name: str) -> str:
        return await self.page.locator(f"#stat-{name}").inner_text()

    async def wait_stat_above(self, name: str, minimum: float) -> int:
        """Wait until the stats panel's counter `name` exceeds `minimum`; returns it."""
        await self.page.wait_for_function(
            "([id, minimum]) => Number(document.getElementById(id).textContent) > minimum",
            arg=[f"stat-{name}", minimum],
        )
        return int(await self.stat(name))


#: A WebAudio analyser in the page, on the remote media the softphone plays: the strongest
#: frequency (Hz) and its level (dB) over `seconds`.
REMOTE_PEAK_JS = """
async (seconds) => {
  const stream = document.getElementById("remote-video").srcObject;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 8192;
  analyser.smoothingTimeConstant = 0;
  context.createMediaStreamSource(stream).connect(analyser);
  const frame = new Float32Array(analyser.frequencyBinCount);
  const power = new Float64Array(frame.length);
  const reads = Math.round(seconds * 10);
  for (let i = 0; i < reads; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    analyser.getFloatFrequencyData(frame);
    frame.forEach((db, bin) => { power[bin] += 10 ** (db / 10); });
  }
  await context.close();
  let peak = 1;
  for (let bin = 2; bin < power.length; bin++) if (power[bin] > power[peak]) peak = bin;
  return {hz: peak * context.sampleRate / analyser.fftSize,
          db: 10 * Math.log10(power[peak] / reads)};
}
"""


async def remote_peak(phone: Softphone, target: float, timeout: float = 15.0) -> dict[str, Any]:
    """The page's remote audio peak, measured until it is at `target` or `timeout` passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        peak = await phone.page.evaluate(REMOTE_PEAK_JS, 0.6)
        if abs(peak["hz"] - target) <= HZ_TOLERANCE or loop.time() > deadline:
            return peak


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """`eventually()` with the browser tests' generous timeout."""
    await eventually(condition, what, timeout=timeout)
