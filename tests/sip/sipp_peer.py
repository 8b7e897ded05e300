"""SIPp (`/usr/bin/sipp`, Debian package sip-tester) runs a scenario as a test's SIP peer.

The scenarios live in tests/sip/scenarios/ as `string.Template` texts: `${name}` fields (the
tone file, digits, response code, credentials) are filled in per test, while SIPp's own
`[keywords]` stay for SIPp. One `Sipp` runs one scenario, as a caller (with a target) or as a
callee/registrar (listening on its own free port), for `calls` calls; it is ended by its PID.
SIPp exits 0 when every call followed the scenario (https://sipp.sourceforge.net/doc/
reference.html#Exit+codes), so `await sipp.wait()` is the test's verdict on the SIP exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import string
from pathlib import Path
from typing import Any

from sip_media import HOST, free_port, free_port_pair

SIPP = "/usr/bin/sipp"
SCENARIOS = Path(__file__).parent / "scenarios"
#: RTP captures of one RFC 4733 telephone-event each (payload type 101), shipped by sip-tester.
DTMF_PCAPS = Path("/usr/share/sip-tester")
PCAP_NAMES = {"*": "star", "#": "pound", **{str(d): str(d) for d in range(10)}}


class SippFailed(AssertionError):
    """SIPp ended with calls that did not follow the scenario (or did not end in time)."""


def render(name: str, destination: Path, **fields: object) -> Path:
    """Scenario `name` from tests/sip/scenarios with its `${fields}` filled in, written to
    `destination` (a missing field is an error, so no `${...}` reaches SIPp)."""
    text = string.Template((SCENARIOS / name).read_text()).substitute(
        {k: str(v) for k, v in fields.items()}
    )
    destination.write_text(text)
    return destination


def rfc4733_digits(digits: str, gap_ms: int = 400) -> str:
    """SIPp steps sending each digit as RFC 4733 events (sip-tester's `dtmf_2833_*.pcap`).

    The tone `rtp_stream` is paused meanwhile and resumed after: SIPp replays the captures
    with an SSRC of their own, and a receiver that resets its jitter buffer on every SSRC
    change (Debian's baresip 1.0 does) loses events interleaved with the tone. (SIPp 3.6.1's
    own `play_dtmf` sends a single packet per call, which no receiver reports.)
    """
    steps = ['<nop><action><exec rtp_stream="pause"/></action></nop>']
    for digit in digits:
        pcap = DTMF_PCAPS / f"dtmf_2833_{PCAP_NAMES[digit]}.pcap"
        steps.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
        steps.append(f'<pause milliseconds="{gap_ms}"/>')
    steps.append('<nop><action><exec rtp_stream="resume"/></action></nop>')
    return "\n  ".join(steps)


def info_digits(digits: str, gap_ms: int = 300) -> str:
    """SIPp steps sending each digit as a SIP INFO `application/dtmf-relay` (the de facto
    format Cisco and Asterisk use; no RFC) and expecting its 200, `gap_ms` apart."""
    step = string.Template((SCENARIOS / "info_digit.part").read_text())
    return "".join(
        step.substitute(digit=digit, cseq=10 + index, gap_ms=gap_ms)
        for index, digit in enumerate(digits)
    )


class Sipp:
    """One SIPp process on 127.0.0.1 running a rendered scenario file."""

    def __init__(
        self,
        directory: Path,
        scenario: Path,
        target: str | None = None,
        service: str = "bot",
        calls: int = 1,
        timeout: float = 30.0,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.directory, self.scenario, self.target = directory, scenario, target
        self.service, self.calls, self.timeout = service, calls, timeout
        #: More SIPp options, e.g. ("-r", "10", "-l", "100") for a load: rate and limit.
        self.extra = extra
        self.port, self.media_port = free_port(), free_port_pair()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def uri(self) -> str:
        """Where to send INVITEs or REGISTERs to reach this SIPp (as callee or registrar)."""
        return f"sip:{self.service}@{HOST}:{self.port}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def args(self) -> list[str]:
        """SIPp's command line: UDP on 127.0.0.1, no terminal UI, errors and messages traced."""
        stem = self.directory / self.scenario.stem
        args = [
            SIPP, "-sf", str(self.scenario), "-i", HOST, "-p", str(self.port),
            "-mi", HOST, "-mp", str(self.media_port), "-s", self.service,
            "-m", str(self.calls), "-timeout", f"{self.timeout:g}s", "-timeout_error",
            "-nostdin", "-trace_err", "-error_file", f"{stem}.errors.log",
            "-trace_msg", "-message_file", f"{stem}.messages.log",
            "-trace_logs", "-log_file", f"{stem}.actions.log",
        ]  # fmt: skip
        args.extend(self.extra)
        if self.target is not None:
            args.append(self.target)
        return args

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / f"{self.scenario.stem}.screen.log").open("wb") as screen:
            self.process = await asyncio.create_subprocess_exec(
                *self.args(), stdin=asyncio.subprocess.DEVNULL, stdout=screen,
                stderr=asyncio.subprocess.STDOUT, cwd=self.directory,
            )  # fmt: skip
        if self.target is None:
            await asyncio.sleep(0.2)  # a listening SIPp binds its port at once; let it

    async def wait(self, timeout: float | None = None) -> None:
        """Wait for SIPp to end; raise SippFailed with its traces unless every call passed."""
        if self.process is None:
            raise SippFailed("sipp was not started")
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout or self.timeout + 5)
        except TimeoutError:
            await self.stop()
            raise SippFailed(f"sipp did not end in time\n{self.traces()}") from None
        if code != 0:
            raise SippFailed(f"sipp exited {code}\n{self.traces()}")

    def traces(self, limit: int = 4000) -> str:
        """The tail of SIPp's error, action and message logs (for assertion messages)."""
        parts = []
        for kind in ("errors", "actions", "messages"):
            path = self.directory / f"{self.scenario.stem}.{kind}.log"
            if path.exists():
                parts.append(f"--- {kind}\n" + path.read_text(errors="replace")[-limit:])
        return "\n".join(parts)

    def messages(self) -> str:
        """Every SIP message SIPp sent and received (its -trace_msg file)."""
        path = self.directory / f"{self.scenario.stem}.messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def stop(self) -> None:
        """End SIPp by its PID if it still runs (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    async def __aenter__(self) -> Sipp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def split_uri(uri: str) -> tuple[str, str]:
    """`sip:user@host:port` as SIPp's (service, target) arguments: ("user", "host:port")."""
    user, _, hostport = uri.removeprefix("sip:").partition("@")
    if not hostport:
        raise ValueError(f"{uri!r} is not sip:user@host:port")
    return user, hostport.split(";")[0]


def uac(
    directory: Path, uri: str, tone: Path, digits: str = "", dtmf: str = "rfc4733",
    digits_after_ms: int = 1000, hold_ms: int = 1500, reinvite_ms: int = 1000,
) -> Sipp:  # fmt: skip
    """A SIPp caller to `uri` that streams `tone` (8 kHz u-law WAV), then sends `digits` as
    RFC 4733 events (`dtmf="rfc4733"`) or SIP INFO (`dtmf="info"`) and hangs up."""
    steps = rfc4733_digits(digits) if dtmf == "rfc4733" else info_digits(digits)
    scenario = render(
        "uac.xml", directory / "uac.xml", tone=tone, digit_steps=steps if digits else "",
        digits_after_ms=digits_after_ms, hold_ms=hold_ms, reinvite_ms=reinvite_ms,
    )  # fmt: skip
    service, target = split_uri(uri)
    return Sipp(directory, scenario, target=target, service=service)


def uas(directory: Path, tone: Path, early: bool = False, ring_ms: int = 200) -> Sipp:
    """A SIPp callee that rings (or sends 183 with early media: the tone from then on) for
    `ring_ms`, answers with PCMU, streams `tone` and waits for the caller's BYE."""
    part = "early_media.part" if early else "ringing.part"
    progress = string.Template((SCENARIOS / part).read_text()).substitute(
        tone=tone, ring_ms=ring_ms
    )
    media = "" if early else f'<nop><action><exec rtp_stream="{tone},-1,0"/></action></nop>'
    scenario = render("uas.xml", directory / "uas.xml", progress=progress, media=media)
    return Sipp(directory, scenario)


def uas_reject(
    directory: Path, code: int = 486, reason: str = "Busy Here", ring_ms: int = 200
) -> Sipp:
    """A SIPp callee that rings for `ring_ms`, then refuses with `code` `reason`."""
    scenario = render(
        "uas_reject.xml", directory / "uas_reject.xml", code=code, reason=reason, ring_ms=ring_ms
    )
    return Sipp(directory, scenario)


def registrar(
    directory: Path, user: str, password: str, realm: str = "callbot.test", expires: int = 3600
) -> Sipp:
    """A SIPp registrar for one REGISTER: 401 digest challenge, then 200 (right password) or
    403 (wrong one; SIPp then exits non-zero)."""
    scenario = render(
        "registrar.xml", directory / "registrar.xml", user=user, password=password,
        realm=realm, expires=expires,
    )  # fmt: skip
    return Sipp(directory, scenario, service=user)


class SippFactory:
    """Makes SIPp peers in their own directories (see sipp_peer.py for what each does); a
    test starts them (`await s.start()` or `async with`); all are stopped at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.made: list[Sipp] = []

    def _where(self, kind: str) -> Path:
        path = self.directory / f"sipp-{len(self.made)}-{kind}"
        path.mkdir(parents=True)
        return path

    def _keep(self, sipp: Sipp) -> Sipp:
        self.made.append(sipp)
        return sipp

    def uac(self, uri: str, tone: Path, **kwargs: Any) -> Sipp:
        """A caller to `uri` with RTP `tone` and optional `digits` (`dtmf="rfc4733"|"info"`)."""
        return self._keep(uac(self._where("uac"), uri, tone, **kwargs))

    def uas(self, tone: Path, **kwargs: Any) -> Sipp:
        """A callee that answers (`early=True`: 183 with early media first) and streams `tone`."""
        return self._keep(uas(self._where("uas"), tone, **kwargs))

    def uas_reject(self, code: int = 486, reason: str = "Busy Here", **kwargs: Any) -> Sipp:
        """A callee that rings, then refuses with `code` (486, 603, 480, ...)."""
        return self._keep(uas_reject(self._where("reject"), code, reason, **kwargs))

    def registrar(self, user: str, password: str, **kwargs: Any) -> Sipp:
        """A registrar taking one REGISTER of `user` with digest auth (401, then 200 or 403)."""
        return self._keep(registrar(self._where("registrar"), user, password, **kwargs))
