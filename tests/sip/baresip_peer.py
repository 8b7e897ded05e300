"""A Debian baresip (`/usr/bin/baresip`, package baresip-core) as an independent SIP peer.

Each peer runs in its own config dir on free 127.0.0.1 ports and is driven through baresip's
`ctrl_tcp` module: JSON commands and events framed as netstrings (https://cr.yp.to/proto/
netstrings.txt). It answers by itself (`answermode=auto`), plays a WAV with `aufile`, records
what it decodes with `sndfile` (one `dump-*-dec.wav` per call in `recordings`), dials, sends
RFC 4733 digits (`sndcode`) and hangs up. Events arrive as dicts, e.g. `{"type":
"CALL_ESTABLISHED", "peeruri": ..., "param": ...}`; a digit received is `CALL_DTMF_START`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sip_media import HOST, free_port, free_port_pair, source_wav

BARESIP = "/usr/bin/baresip"
MODULES = "/usr/lib/baresip/modules"


class PeerError(RuntimeError):
    """The baresip peer refused a command, died, or an event did not come in time."""


def netstring(payload: bytes) -> bytes:
    """`payload` framed as a netstring: `<length>:<payload>,`."""
    return str(len(payload)).encode() + b":" + payload + b","


async def read_netstring(reader: asyncio.StreamReader) -> bytes:
    """The next netstring's payload from `reader` (IncompleteReadError at end of stream)."""
    length = int((await reader.readuntil(b":"))[:-1])
    payload = await reader.readexactly(length + 1)
    if payload[-1:] != b",":
        raise PeerError("ctrl_tcp sent a malformed netstring")
    return payload[:-1]


@dataclass
class PeerConfig:
    """What one baresip peer does: its account, the file it plays, its codecs."""

    user: str = "peer"
    #: The AOR's host:port; None = the peer's own SIP address (direct calls, no registrar).
    domain: str | None = None
    password: str | None = None
    #: Seconds between REGISTERs; 0 = never register.
    reg_interval: int = 0
    answermode: str = "auto"
    codecs: tuple[str, ...] = ("PCMU",)
    dtmfmode: str = "rtpevent"
    #: A mono s16 WAV the peer sends at the start of every call (None: silence).
    play: Path | None = None
    play_rate: int = 8000
    #: The source is padded with silence to this length: baresip hangs up when it ends.
    call_seconds: float = 30.0
    #: Extra `;name=value` account parameters (e.g. "mediaenc=srtp").
    extra: tuple[str, ...] = field(default_factory=tuple)


class BaresipPeer:
    """One baresip process on 127.0.0.1 with a ctrl_tcp connection; use as `async with`."""

    def __init__(self, directory: Path, config: PeerConfig | None = None) -> None:
        self.directory, self.config = directory, config or PeerConfig()
        self.sip_port, self.ctrl_port, self.rtp_port = free_port(), free_port(), free_port_pair()
        self.events: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._responses: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self._tokens = 0

    @property
    def uri(self) -> str:
        """Where to send INVITEs to reach this peer directly."""
        return f"sip:{self.config.user}@{HOST}:{self.sip_port}"

    @property
    def snd_path(self) -> Path:
        return self.directory / "snd"

    @property
    def log_path(self) -> Path:
        return self.directory / "baresip.log"

    def recordings(self) -> list[Path]:
        """What the peer decoded, one WAV per call, oldest first (sndfile's `-dec` dumps; they
        are named by the second the call started, so calls a second apart or more)."""
        return sorted(self.snd_path.glob("dump-*-dec.wav"))

    def log(self) -> str:
        """baresip's own output so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- process ---------------------------------------------------------------------------

    def write_config(self) -> None:
        """The peer's `config` and `accounts` files, with no path outside its directory."""
        cfg = self.config
        self.snd_path.mkdir(parents=True, exist_ok=True)
        play = source_wav(self.directory / "source.wav", cfg.play, cfg.call_seconds, cfg.play_rate)
        lines = {
            "poll_method": "epoll",
            "sip_listen": f"{HOST}:{self.sip_port}",
            "net_interface": HOST,
            "rtp_ports": f"{self.rtp_port}-{self.rtp_port + 1}",
            "audio_player": "aufile,/dev/null",
            "audio_source": f"aufile,{play}",
            "audio_alert": "aufile,/dev/null",
            "ausrc_srate": str(cfg.play_rate),
            "ausrc_channels": "1",
            "module_path": MODULES,
            "snd_path": str(self.snd_path),
            "ctrl_tcp_listen": f"{HOST}:{self.ctrl_port}",
        }
        modules = ["g711.so", "opus.so", "aufile.so", "srtp.so", "sndfile.so"]
        text = "".join(f"{k}\t{v}\n" for k, v in lines.items())
        text += "".join(f"module\t{m}\n" for m in modules)
        text += "".join(f"module_app\t{m}\n" for m in ("account.so", "menu.so", "ctrl_tcp.so"))
        (self.directory / "config").write_text(text)
        # No account yet: `start()` adds it once the control connection can see its events.
        (self.directory / "accounts").write_text("")
        (self.directory / "contacts").write_text("")

    def account_line(self) -> str:
        """The one account: `<sip:user@domain>;param=value;...` (baresip's accounts syntax)."""
        cfg = self.config
        params = [f"regint={cfg.reg_interval}", f"answermode={cfg.answermode}",
                  f"audio_codecs={','.join(cfg.codecs)}", f"dtmfmode={cfg.dtmfmode}"]  # fmt: skip
        if cfg.password is not None:
            params += [f"auth_user={cfg.user}", f"auth_pass={cfg.password}"]
        domain = cfg.domain or f"{HOST}:{self.sip_port}"
        return f"<sip:{cfg.user}@{domain}>;" + ";".join([*params, *cfg.extra])

    async def start(self) -> None:
        """Start baresip and connect to its ctrl_tcp port (retrying while it comes up)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                BARESIP, "-f", str(self.directory), stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                reader, self._writer = await asyncio.open_connection(HOST, self.ctrl_port)
                break
            except OSError:
                if self.process.returncode is not None or time.monotonic() > deadline:
                    raise PeerError(f"baresip did not start:\n{self.log()[-2000:]}") from None
                await asyncio.sleep(0.05)
        self._reader_task = asyncio.create_task(self._read(reader))
        await self.command("uanew", self.account_line())

    async def stop(self) -> None:
        """Close the control connection and end the process by its PID (SIGTERM, then KILL)."""
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def __aenter__(self) -> BaresipPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- control ---------------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Sort what ctrl_tcp sends into command responses (by token) and events."""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                message = json.loads(await read_netstring(reader))
                if message.get("response"):
                    future = self._responses.pop(str(message.get("token")), None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif message.get("event"):
                    self.events.append(message)
                    self._changed.set()
        for future in self._responses.values():
            if not future.done():
                future.set_exception(PeerError("baresip closed its control connection"))

    async def command(self, name: str, params: str = "", timeout: float = 5.0) -> str:
        """Run a baresip command (a menu command name); return its text reply."""
        if self._writer is None:
            raise PeerError("the peer is not started")
        self._tokens += 1
        token = str(self._tokens)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = future
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._writer.write(netstring(body))
        await self._writer.drain()
        reply = await asyncio.wait_for(future, timeout)
        if not reply.get("ok", False):
            raise PeerError(f"baresip refused {name} {params!r}: {reply.get('data')!r}")
        return str(reply.get("data", ""))

    async def wait_event(
        self, kind: str | tuple[str, ...], timeout: float = 10.0, after: int = 0
    ) -> dict[str, Any]:
        """The first event of type `kind` (e.g. "CALL_ESTABLISHED", or any of several) from
        index `after` on."""
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[after:]:
                if event.get("type") in kinds:
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e.get("type") for e in self.events]
                raise PeerError(f"no {kind} from baresip in {timeout}s (saw {seen})")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def register_again(self) -> None:
        """REGISTER again now, as on a refresh (the account is deleted and created anew, as
        baresip 1.0 has no command to re-register); a REGISTER_OK or _FAIL event follows."""
        aor = self.account_line().split(">")[0].removeprefix("<")
        await self.command("uadel", aor)
        await self.command("uanew", self.account_line())

    async def dial(self, uri: str) -> None:
        """Place a call to `uri` (returns once baresip took the command, not when answered)."""
        await self.command("dial", uri)

    async def answer(self) -> None:
        """Answer the ringing call (for `answermode=manual`)."""
        await self.command("accept")

    async def hangup(self) -> None:
        """Hang up the current call (BYE, or CANCEL while it rings)."""
        await self.command("hangup")

    async def send_dtmf(self, digits: str, gap: float = 0.3) -> None:
        """Send `digits` as RFC 4733 telephone-events, one key at a time, `gap` s apart."""
        for digit in digits:
            await self.command("sndcode", digit)
            await asyncio.sleep(gap)

    async def wait_established(self, timeout: float = 10.0) -> dict[str, Any]:
        return await self.wait_event("CALL_ESTABLISHED", timeout)

    async def wait_closed(self, timeout: float = 10.0) -> dict[str, Any]:
        return await self.wait_event("CALL_CLOSED", timeout)

    def received_digits(self) -> str:
        """The digits received so far, in order (RFC 4733 or SIP INFO, as baresip reports)."""
        return "".join(
            str(e.get("param", "")) for e in self.events if e.get("type") == "CALL_DTMF_START"
        )
