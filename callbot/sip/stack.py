"""The SIP user agent: the one module that imports baresip-python (libbaresip in process).

Everything else in callbot sees SIP through `SipStack`, `SipAgent` and `SipSession`, whose
events are plain strings: the stack (its SIP parsing, transactions, digest auth, RTP, codecs,
RFC 4733) stays swappable. The stack runs its own thread; every call here is non-blocking
or awaited on the event loop. One stack per process (libbaresip's rule): bots of a process
share it and its listening address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import SipError
from ..safe import get_logger

#: The binding, imported by `require()` when SIP is first used (an optional dependency that
#: loads libbaresip: WebRTC-only bots never pay for it).
baresip: Any = None

logger = get_logger(__name__)

#: The pinned binding (a pre-release: pip needs the exact version).
REQUIREMENT = "baresip-python==0.5.2a3"
#: Codecs offered, in order of preference (RFC 7587 Opus, G.711 mu-law and A-law).
AUDIO_CODECS = ("opus/48000/2", "pcmu", "pcma")
#: INVITE headers handed to the bot in `incoming.metadata` when present.
EXPOSED_HEADERS = ("From", "To", "P-Asserted-Identity", "Diversion")
#: Calls whose early events a user agent keeps until claimed (older ones are dropped).
MAX_UNCLAIMED = 64
_STATUS = re.compile(r"^\s*(\d{3})\b")

#: (event name, detail) for one call: "ringing", "progress", "established", "closed",
#: "hold", "resume", "dtmf" (detail: the key), "transfer" (detail: the target).
SessionListener = Callable[[str, str], None]


def require() -> Any:
    """The baresip module, or a `SipError` naming what to install."""
    global baresip
    if baresip is None:
        try:
            import baresip as binding
        except ImportError as exc:
            raise SipError(
                "missing_dependency",
                f"SIP needs the {REQUIREMENT} package: pip install 'callbot[sip]'",
            ) from exc
        baresip = binding
    return baresip


def status_of(text: str | None) -> int | None:
    """The SIP status code a close reason starts with ("486 Busy Here" -> 486)."""
    match = _STATUS.match(text or "")
    return int(match.group(1)) if match else None


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on `host` (the stack listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
            return port
    raise SipError("no_port", f"no free SIP port on {host}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class StackConfig:
    """Process-wide settings: where the stack listens and sends from."""

    host: str
    port: int
    #: Seconds without received RTP before a call ends `timeout` (0: never).
    rtp_timeout: int = 0


class SipSession:
    """One SIP call (a baresip `Call`), its events as strings and its PCM in and out."""

    def __init__(self, call: Any, earlier: list[Any] | None = None) -> None:
        self._call = call
        self._listener: SessionListener | None = None
        self._pending: list[tuple[str, str]] = []  # events before anyone listened
        self._rtcp: Any = None  # the stack's last live report (one per RTCP report received)
        self._reports = 0
        self.close_reason = ""
        for event in earlier or ():  # what the stack reported before this object existed
            self._on_event(event)
        call.on(self._on_event)
        call.on_dtmf(lambda event: self._emit("dtmf", str(event.digit)))
        call.on_rtcp(self._on_rtcp)

    @property
    def call_id(self) -> str:
        return str(self._call.call_id or "")

    @property
    def peer(self) -> str:
        return str(self._call.peer or "")

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._call.headers)

    def listen(self, listener: SessionListener) -> None:
        """Deliver this call's events to `listener`, those that came before first."""
        self._listener = listener
        pending, self._pending = self._pending, []
        for name, detail in pending:
            listener(name, detail)

    def _emit(self, name: str, detail: str = "") -> None:
        if self._listener is None:
            self._pending.append((name, detail))
        else:
            self._listener(name, detail)

    def _on_event(self, event: Any) -> None:
        kinds = baresip.Event
        names = {kinds.CALL_RINGING: "ringing", kinds.CALL_PROGRESS: "progress",
                 kinds.CALL_ESTABLISHED: "established", kinds.CALL_HOLD: "hold",
                 kinds.CALL_RESUME: "resume"}  # fmt: skip
        if event.event is kinds.CALL_TRANSFER:
            self._refuse_transfer()
        elif event.event is kinds.CALL_CLOSED:
            self.close_reason = str(event.text or "")
            self._emit("closed", self.close_reason)
        elif event.event in names:
            self._emit(names[event.event], str(event.text or ""))

    def _refuse_transfer(self) -> None:
        """A REFER from the peer: refused (603). Unauthenticated, it could steer the bot into
        calling anywhere (toll fraud); a bot that wants transfers places the call itself."""
        logger.info("SIP call %s: transfer request refused", self.call_id)
        task = asyncio.ensure_future(self._do("refuse_transfer", self._call.reject_transfer(603)))
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _do(self, action: str, step: Awaitable[Any]) -> None:
        """Await a stack request; its failure (the call is gone, the peer refused) becomes a
        `SipError` naming `action`."""
        try:
            await step
        except (baresip.BaresipError, ValueError) as exc:
            raise SipError(f"{action}_failed", f"SIP {action} failed: {exc}") from None

    async def answer(self) -> None:
        await self._do("answer", self._call.answer())

    async def reject(self, busy: bool) -> None:
        """Refuse with 486 Busy Here (the binding has no other status for an unanswered call,
        so a decline is a 486 too)."""
        with contextlib.suppress(baresip.StaleHandleError):
            await self._call.reject()

    async def hangup(self) -> None:
        """BYE (or CANCEL before the answer); nothing if the call is gone already."""
        with contextlib.suppress(baresip.StaleHandleError, baresip.BaresipError):
            await self._call.hangup()

    async def hold(self, hold: bool) -> None:
        await self._do("hold", self._call.hold() if hold else self._call.resume())

    async def transfer(self, target: str) -> None:
        await self._do("transfer", self._call.transfer(target))

    async def send_dtmf(self, digits: str, gap_ms: int) -> None:
        await self._do("dtmf", self._call.send_dtmf(digits, interdigit_ms=gap_ms))

    def audio_format(self) -> tuple[int, int, int, int] | None:
        """(tx rate, tx channels, rx rate, rx channels) once media is up, else None."""
        try:
            info = self._call.audio.info()
        except baresip.BaresipError:
            return None
        if not (info.tx_ready and info.rx_ready):
            return None
        return info.tx_sample_rate, info.tx_channels, info.rx_sample_rate, info.rx_channels

    def tx_buffered(self) -> int:
        """Bytes written and not sent yet (-1 when the media was just renegotiated)."""
        try:
            return int(self._call.audio.info().tx_buffered)
        except baresip.BaresipError:
            return -1

    def write(self, pcm: bytes) -> bool:
        """Queue PCM to send; False when the streams changed (read `audio_format` again)."""
        try:
            self._call.audio.write(pcm)
        except (baresip.AudioNotActive, baresip.AudioRestarted):
            return False
        return True

    def read(self) -> bytes | None:
        """PCM received since the last read; None when the streams changed or stopped."""
        try:
            return bytes(self._call.audio.read(65536))
        except (baresip.AudioNotActive, baresip.AudioRestarted):
            return None

    def _on_rtcp(self, stats: Any) -> None:
        self._rtcp = stats
        self._reports += 1

    def stats(self) -> dict[str, Any]:
        """The stack's RTP statistics as a dict: the final report after the end, before it
        the one made when the far side's last RTCP report came (RFC 3550 section 6.4), else
        {}; `rtcp_reports` counts those reports (loss, jitter and RTT stay 0 without one)."""
        report = self._call.final_stats or self._rtcp
        if report is None:
            return {}
        fields = {name: getattr(report, name) for name in report.__dataclass_fields__}
        return {**fields, "rtcp_reports": self._reports}


class SipAgent:
    """A SIP identity of a bot (a baresip `UserAgent`): takes INVITEs, dials, registers."""

    def __init__(self, ua: Any, registrar: bool) -> None:
        self._ua = ua
        self._registrar = registrar
        self._registered = False
        self._retry: asyncio.Task[None] | None = None
        #: Call events the stack reported before `dial()` returned the call (a 183 or a
        #: refusal can beat the dial command's reply), by call handle, for `SipSession`.
        self._unclaimed: OrderedDict[int, list[Any]] = OrderedDict()
        self._claimed: set[int] = set()
        ua.on(self._on_event)

    def on_incoming(self, handler: Callable[[SipSession], None]) -> None:
        """`handler(session)` for each INVITE (its headers in `session.headers`)."""
        self._ua.on_incoming(lambda call: handler(self._session(call)))

    def _session(self, call: Any) -> SipSession:
        self._claimed.add(call.handle)
        return SipSession(call, self._unclaimed.pop(call.handle, None))

    def _on_event(self, event: Any) -> None:
        if event.call and event.call not in self._claimed:
            self._unclaimed.setdefault(event.call, []).append(event)
            while len(self._unclaimed) > MAX_UNCLAIMED:
                self._unclaimed.popitem(last=False)
        elif event.event is baresip.Event.CALL_CLOSED:
            self._claimed.discard(event.call)
        if event.event is baresip.Event.REGISTER_FAIL and self._registered and self._retry is None:
            self._retry = asyncio.ensure_future(self._register_again(event.text or ""))

    async def dial(self, uri: str) -> SipSession:
        try:
            return self._session(await self._ua.dial(uri))
        except ValueError as exc:
            raise SipError("bad_uri", f"cannot call {uri!r}: {exc}") from None
        except baresip.BaresipError as exc:
            raise SipError("dial_failed", f"cannot call {uri}: {exc}") from None

    async def register(self, timeout: float = 10.0) -> None:
        """REGISTER with digest auth; a refusal (wrong password...) raises `SipError` once:
        the stack then backs off (30 s, doubling), never retrying in a storm."""
        try:
            await self._ua.register(timeout=timeout)
        except baresip.RegistrationError as exc:
            if exc.status in (401, 403, 407):
                raise SipError(
                    "registration_refused",
                    f"the registrar refused our credentials ({exc.status} {exc.reason}): "
                    "check the user and the password file",
                ) from None
            raise SipError("registration_failed", f"registration failed: {exc}") from None
        self._registered = True

    async def _register_again(self, text: str) -> None:
        """A refresh failed (the registrar restarted or is down): register again, backing
        off from 1 s to 30 s, until it takes; a refusal of our credentials stops trying."""
        logger.info("SIP registration lost (%s); registering again", text)
        delay = 1.0
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._ua.register(timeout=5.0)
                    logger.info("SIP registration restored")
                    return
                except baresip.RegistrationError as exc:
                    if exc.status in (401, 403, 407):
                        logger.error("SIP registration refused: %s", exc)
                        return
                    delay = min(30.0, delay * 2)
        finally:
            self._retry = None

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._registrar:
            with contextlib.suppress(baresip.BaresipError):
                await self._ua.unregister(timeout=2.0)


class SipStack:
    """The process's one SIP stack, shared by its bots (started by the first, closed by the
    last); all of them use the listening address the first one asked for."""

    _instance: SipStack | None = None

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._runtime: Any = None
        self._users = 0
        self._lock = asyncio.Lock()

    @classmethod
    async def acquire(cls, config: StackConfig | None) -> SipStack:
        """The running stack (started with `config`, or on a free loopback port if None)."""
        require()
        stack = cls._instance
        if stack is None:
            if config is None:
                config = StackConfig("127.0.0.1", free_port("127.0.0.1"))
            stack = cls._instance = SipStack(config)
        elif config is not None and (config.host, config.port) != (
            stack.config.host, stack.config.port,
        ):  # fmt: skip
            raise SipError(
                "one_listener",
                f"this process already listens for SIP on {stack.config.host}:"
                f"{stack.config.port}; one SIP address per process",
            )
        async with stack._lock:
            if stack._runtime is None:
                await stack._start()
            stack._users += 1
        return stack

    async def release(self) -> None:
        """One user is done; the last closes the stack (new calls can start it again)."""
        async with self._lock:
            self._users -= 1
            if self._users > 0 or self._runtime is None:
                return
            runtime, self._runtime = self._runtime, None
            SipStack._instance = None
            await runtime.close()

    async def _start(self) -> None:
        host, port = self.config.host, self.config.port
        runtime = baresip.Runtime()
        config = baresip.Config(
            net_interface=host if _is_ip(host) and host != "0.0.0.0" else None,
            max_concurrent_calls=None,
            expose_headers=EXPOSED_HEADERS,
            rtp_timeout=self.config.rtp_timeout,
            extra_config_text=f"sip_listen {host}:{port}\n",
        )
        try:
            await runtime.start(config)
        except baresip.BaresipError as exc:
            raise SipError("stack_failed", f"the SIP stack did not start: {exc}") from None
        self._runtime = runtime

    async def agent(
        self,
        user: str,
        domain: str,
        *,
        password: str = "",
        reg_interval: int = 0,
        registrar: str | None = None,
        early_media: bool = False,
    ) -> SipAgent:
        """A user agent for `user@domain`: with `reg_interval` > 0 it registers there.

        `early_media` answers every INVITE at once with 183 Session Progress and SDP (the
        binding's typed account pins manual answering, so that one is a raw address).
        """
        params = [f"regint={reg_interval}", "dtmfmode=rtpevent", "mediaenc=srtp",
                  "audio_codecs=" + ",".join(AUDIO_CODECS),
                  f"answermode={'early' if early_media else 'manual'}"]  # fmt: skip
        if password:
            if any(c in password for c in '"\\\r\n'):
                raise SipError("bad_password", "the SIP password cannot hold quotes, \\ or lines")
            params.insert(0, f'auth_pass="{password}"')
        if registrar:
            params.append(f'outbound="{registrar}"')
        aor = f"<sip:{user}@{domain}>;" + ";".join(params)
        try:
            ua = await baresip.UserAgent.create(self._runtime, aor)
        except baresip.BaresipError as exc:
            raise SipError("bad_account", f"the SIP stack refused {user}@{domain}: {exc}") from None
        return SipAgent(ua, registrar=reg_interval > 0)
