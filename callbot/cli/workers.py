"""A bot pool in one machine: `callbot run --workers N` starts N worker processes under a
supervisor that hosts the relay; each worker dies with its supervisor (Linux `prctl`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..console import say
from ..embedded import start_relay
from ..errors import CallbotError
from ..settings import Settings
from ..signaling.turn import RelayIceServers
from .options import run_sync, say_relay_ice, say_softphone_link


def run_workers(
    bot_file: Path | None,
    as_id: str | None,
    plugin_specs: tuple[str, ...],
    workers: int,
    max_calls: int | None,
    host: str,
    port: int,
    softphone_user: str,
    settings: Settings,
    relay_ice: RelayIceServers,
) -> None:
    """N worker processes in one pool; this process hosts the relay unless --server."""

    async def supervise() -> None:
        relay = None
        url = settings.server
        if url is None:
            relay = await start_relay(host, port, settings.state_dir, relay_ice)
            url = relay.url
            say(f"relay listening on {url}", "bold")
            say_relay_ice(relay_ice)
            say_softphone_link(relay, softphone_user)
        command = [sys.executable, "-m", "callbot", "run", "--server", url, "--workers", "1",
                   "--worker-of", str(os.getpid())]  # fmt: skip
        if bot_file is not None:
            command.insert(4, str(bot_file))
        command += _worker_flags(as_id, max_calls, settings)
        for spec in plugin_specs:
            command += ["--plugin", spec]
        children = [subprocess.Popen(command) for _ in range(workers)]
        say(f"started {workers} workers: pids {[c.pid for c in children]}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            while not stop.is_set() and all(c.poll() is None for c in children):
                await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=0.5)
        finally:
            for child in children:  # only the processes started here, by PID
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            # wait without blocking the loop: the relay here must see the workers say goodbye
            deadline = loop.time() + 10
            while any(c.poll() is None for c in children) and loop.time() < deadline:
                await asyncio.sleep(0.05)
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            if relay is not None:
                await relay.stop()
        failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM)]
        if failed and not stop.is_set():
            raise CallbotError(f"a worker exited with status {failed[0]}")

    run_sync(supervise())


def end_with_supervisor(supervisor: int) -> None:
    """A pool worker gets SIGTERM when its supervisor dies, even by SIGKILL (Linux), so no
    orphaned worker goes on answering calls; elsewhere it only checks once at start."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above took effect
        raise SystemExit(1)


def _worker_flags(as_id: str | None, max_calls: int | None, settings: Settings) -> list[str]:
    """The command line that hands this command's settings to a worker process."""
    flags: list[str] = []
    for flag, value in (
        ("--as", as_id),
        ("--token", settings.token),
        ("--max-calls", max_calls),
        ("--state-dir", settings.state_dir),
        ("--identity", settings.identity),
        ("--known-peers", settings.known_peers),
    ):
        if value is not None:
            flags += [flag, str(value)]
    for address in settings.ice_addresses or ():
        flags += ["--ice-address", address]
    for flag, on in (
        ("--require-signatures", settings.require_signatures),
        ("--trust-on-first-use", settings.trust_on_first_use),
        ("--always-relay", settings.always_relay),
    ):
        if on:
            flags.append(flag)
    return flags
