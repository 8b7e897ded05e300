"""Kamailio (`/usr/sbin/kamailio`, Debian package kamailio) as the tests' registrar/PBX.

tests/sip/kamailio.cfg answers REGISTER with a digest challenge checked against a db_text
`subscriber` table written here (plain-text passwords), keeps bindings in memory only and
relays INVITEs to registered users. Each server listens on a free UDP port of 127.0.0.1 with
its own runtime dir; `restart()` stops it and starts it again on the same port with no
bindings, which is what "the registrar restarted" looks like to a registered client.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import time
from pathlib import Path

from sip_media import HOST, free_port

KAMAILIO = "/usr/sbin/kamailio"
CONFIG = Path(__file__).parent / "kamailio.cfg"
#: kamailio 5.6's db_text table versions (/usr/share/kamailio/dbtext/kamailio/version).
TABLES = "id(int,auto) table_name(string) table_version(int)\n0:subscriber:7\n0:location:9\n"
SUBSCRIBER = (
    "id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string)"
)


class KamailioError(RuntimeError):
    """Kamailio did not start, or did not answer on its port."""


def db_text_escape(value: str) -> str:
    """A db_text field: `:` and `\\` are escaped with a backslash (db_text's file format)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def md5(text: str) -> str:
    """The hex MD5 digest db_text's `ha1`/`ha1b` columns hold (RFC 2617 HA1; not null)."""
    return hashlib.md5(text.encode()).hexdigest()


def options_answered(port: int, timeout: float = 0.3) -> bool:
    """Whether a SIP server on 127.0.0.1:`port` answers an OPTIONS request (any response)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((HOST, 0))
        here = f"{HOST}:{sock.getsockname()[1]}"
        probe = (
            f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {here};rport;branch=z9hG4bK-probe{time.monotonic_ns()}\r\n"
            f"From: <sip:probe@{here}>;tag=probe\r\nTo: <sip:{HOST}:{port}>\r\n"
            f"Call-ID: probe-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(probe.encode(), (HOST, port))
        try:
            return sock.recv(4096).startswith(b"SIP/2.0 ")
        except OSError:
            return False


class Kamailio:
    """One Kamailio registrar on 127.0.0.1:`port` with the users (name -> password) given."""

    def __init__(self, directory: Path, users: dict[str, str], realm: str = "callbot.test") -> None:
        self.directory, self.users, self.realm = directory, users, realm
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def uri(self) -> str:
        """The registrar's URI, as `--sip-registrar` takes it."""
        return f"sip:{self.address}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"kamailio-{self.starts}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def write_db(self) -> Path:
        """The db_text directory: the `version` table and one subscriber row per user."""
        db = self.directory / "db"
        db.mkdir(parents=True, exist_ok=True)
        (db / "version").write_text(TABLES)
        rows = []
        for n, (user, password) in enumerate(self.users.items(), start=1):
            ha1 = md5(f"{user}:{self.realm}:{password}")
            ha1b = md5(f"{user}@{self.realm}:{self.realm}:{password}")
            fields = [str(n), user, self.realm, password, ha1, ha1b]
            rows.append(":".join(db_text_escape(field) for field in fields))
        (db / "subscriber").write_text("\n".join([SUBSCRIBER, *rows]) + "\n")
        return db

    async def start(self) -> None:
        """Start Kamailio in the foreground (-DD) and wait until it answers OPTIONS."""
        db = self.write_db()
        run = self.directory / "run"
        run.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                KAMAILIO, "-f", str(CONFIG), "-DD", "-E", "-l", f"udp:{self.address}",
                "-A", f'DBURL="text://{db}"', "-A", f'REALM="{self.realm}"',
                "-Y", str(run), "-P", str(run / "kamailio.pid"), "-w", str(self.directory),
                "-m", "32", "-M", "4",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: its children end with it
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while not await asyncio.to_thread(options_answered, self.port):
            if self.process.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                raise KamailioError(f"kamailio did not start:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop Kamailio by its PID: SIGTERM makes the main process end its children."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this server started
            await self.process.wait()

    async def restart(self, pause: float = 0.0) -> None:
        """Stop, wait `pause` seconds (the registrar is down), start again on the same port."""
        await self.stop()
        await asyncio.sleep(pause)
        await self.start()

    async def __aenter__(self) -> Kamailio:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
