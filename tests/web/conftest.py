"""Browser fixtures: the relay's softphone in Debian's chromium, driven by Playwright.

The browser's microphone is a generated tone (`MIC_HZ`) and its camera Chromium's fake device;
no browser is ever downloaded and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, async_playwright, expect
from softphone_page import CHROMIUM, MIC_HZ, PHONE_VIEWPORT, TIMEOUT_MS, Softphone, chromium_flags

from callbot.signaling.relay import Relay
from callbot.testing import generate

from helpers import missing_peer

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def fake_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The browser's microphone: a steady MIC_HZ tone (Chromium loops the file)."""
    path = tmp_path_factory.mktemp("fake-mic") / f"mic-{MIC_HZ:g}.wav"
    return generate.write_tone(path, MIC_HZ, seconds=4.0, amplitude=0.5)


@pytest.fixture
async def browser(tmp_path: Path, fake_mic: Path) -> AsyncIterator[BrowserContext]:
    """A fresh headless Chromium (own profile dir), closed after the test."""
    if not os.path.exists(CHROMIUM):
        missing_peer(
            f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        )
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=chromium_flags(fake_mic),
            viewport=PHONE_VIEWPORT,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def softphone(
    browser: BrowserContext, relay: Relay
) -> AsyncIterator[Callable[..., Awaitable[Softphone]]]:
    """Factory: a page of the relay's softphone signed in as `user` through a #token= link,
    with voice processing off (it would cut the test tone); without a user, the bare page.
    Fails the test if a page had an error."""
    phones: list[Softphone] = []

    async def open_page(user: str | None = None) -> Softphone:
        page = await browser.new_page()
        phone = Softphone(page)
        phones.append(phone)
        if user is None:
            await page.goto(relay.http_url)
            return phone
        await page.goto(f"{relay.http_url}/#token={relay.mint(user)}")
        await expect(page.locator("#presence")).to_have_text(f"Signed in as {user}")
        await page.get_by_label("Voice processing").uncheck()
        return phone

    yield open_page
    for phone in phones:
        assert phone.errors == [], f"errors in the page: {phone.errors}"


@pytest.fixture
def log_messages(monkeypatch: pytest.MonkeyPatch) -> Callable[[Relay], list[dict[str, Any]]]:
    """Factory: the list of every JSON message clients send to a relay, as it receives them."""

    def start(relay: Relay) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        received = relay.core.received

        def spy(conn: str, data: str | bytes, now: float) -> Any:
            with contextlib.suppress(TypeError, ValueError):
                messages.append(json.loads(data))
            return received(conn, data, now)

        monkeypatch.setattr(relay.core, "received", spy)
        return messages

    return start


@pytest.fixture
def relay_log(
    relay: Relay, log_messages: Callable[[Relay], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Every JSON message clients send to the test relay, in order."""
    return log_messages(relay)
