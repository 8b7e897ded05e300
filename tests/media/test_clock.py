"""Pacer: absolute deadlines (no drift) and no burst after a stall. Ticker: a little lag costs
no audio, a stall drops what it must and says so."""

from __future__ import annotations

import asyncio
import time

from callbot.media.clock import CATCH_UP, MAX_LAG, Pacer, Ticker


async def test_no_drift_despite_work_between_ticks() -> None:
    pacer = Pacer(0.01)
    await pacer.tick()
    start = time.monotonic()
    for _ in range(50):
        await pacer.tick()
        time.sleep(0.004)  # work that a sleep-per-tick loop would add to every period
    elapsed = time.monotonic() - start
    # 50 periods of 10 ms: a sleep-after-work loop would take >= 0.7 s
    assert 0.49 <= elapsed < 0.66
    assert abs(pacer.elapsed - 0.5) < 1e-9


async def test_stall_skips_ticks_instead_of_bursting() -> None:
    pacer = Pacer(0.02)
    await pacer.tick()
    await pacer.tick()
    time.sleep(0.3)  # the event loop is blocked
    skipped = await pacer.tick()
    assert skipped >= int((0.3 - MAX_LAG) / 0.02)
    after = time.monotonic()
    for _ in range(3):
        await pacer.tick()
    # the following ticks are paced again, not fired back to back
    assert time.monotonic() - after >= 0.04
    assert pacer.elapsed >= 0.3


async def test_period_change_keeps_media_time_continuous() -> None:
    pacer = Pacer(0.1)
    await pacer.tick()
    await pacer.tick()
    assert abs(pacer.elapsed - 0.1) < 1e-9
    pacer.set_period(0.02)
    await pacer.tick()
    assert abs(pacer.elapsed - 0.12) < 1e-9


async def test_ticker_catches_up_a_little_lag_and_drops_after_a_stall() -> None:
    ticker = Ticker(0.02)
    first = await ticker.next()
    time.sleep(0.03)  # work that overruns the next deadline by ~10 ms
    assert await ticker.next(first) == first + 1  # sent late, not dropped
    assert ticker.lag >= 0.005
    second = first + 1
    time.sleep(CATCH_UP + 0.1)  # a stall
    third = await ticker.next(second)
    assert third >= second + int((CATCH_UP + 0.1) / 0.02)  # the missed ticks are skipped
    assert ticker.lag_percentile(100) >= CATCH_UP + 0.05
    fourth = await ticker.next(third)
    assert fourth == third + 1  # then paced again


async def test_a_timer_that_fires_late_still_gives_its_tick() -> None:
    ticker = Ticker(0.02)
    await ticker.next()
    waiter = asyncio.ensure_future(ticker.next())
    await asyncio.sleep(0)  # the waiter sets its timer for the next tick
    due = ticker.now_index() + 1
    time.sleep(0.05)  # the loop is busy past that tick's deadline and the one after
    assert await waiter == due  # the late tick is handed out, not skipped
