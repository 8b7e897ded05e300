"""A real Janus for the group-call tests: its network address, its configuration, its process.

Janus gathers ICE candidates only on interfaces that are not flagged loopback, so in a
loopback-only namespace its offers fail (490 "Error setting ICE locally"). The tests give it an
interface of its own, `cbjanus0` with JANUS_ADDRESS, created only inside a network namespace
that has nothing but loopback (the namespace `unshare -n` makes for the test run), never on a
host's real network. Janus and the bots then talk over that address; nothing leaves the
namespace.

The configuration is generated per run: WebSocket transport on 127.0.0.1 only, the VideoRoom
and AudioBridge plugins only, no STUN server, mDNS candidates ignored, IPv6 off, a fixed RTP
port range and ICE restricted to JANUS_ADDRESS.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

JANUS = "/usr/bin/janus"
JANUS_LIBS = Path("/usr/lib/x86_64-linux-gnu/janus")
INTERFACE = "cbjanus0"
JANUS_ADDRESS = "10.77.0.1"
RTP_PORTS = "40000-40999"
PLUGINS = ("libjanus_videoroom.so", "libjanus_audiobridge.so")
TRANSPORTS = ("libjanus_websockets.so",)
START_TIMEOUT = 20.0

JANUS_JCFG = """\
general: {{
    configs_folder = "{conf}"
    plugins_folder = "{plugins}"
    transports_folder = "{transports}"
    events_folder = "{nothing}"
    loggers_folder = "{nothing}"
    log_to_stdout = true
    debug_level = 4
    debug_timestamps = true
    server_name = "callbot-tests"
    interface = "{address}"
    session_timeout = {session_timeout}
}}
media: {{
    ipv6 = false
    rtp_port_range = "{rtp_ports}"
}}
nat: {{
    ignore_mdns = true
    ice_enforce_list = "{address}"
}}
"""

WEBSOCKETS_JCFG = """\
general: {{
    json = "plain"
    ws = true
    ws_ip = "127.0.0.1"
    ws_port = {port}
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
"""


class Unavailable(Exception):
    """Janus cannot run here; the message says why (the tests skip with it)."""


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise Unavailable(f"`{' '.join(command)}` failed: {result.stderr.strip()}")


def _has_address(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def ensure_janus_address() -> str:
    """Give this namespace JANUS_ADDRESS on an interface of its own, if it has not already.

    Refuses (raises `Unavailable`) when the namespace has interfaces other than loopback:
    tests never change a real host's network.
    """
    if _has_address(JANUS_ADDRESS):
        return JANUS_ADDRESS
    others = [name for _, name in socket.if_nameindex() if name != "lo"]
    if others:
        raise Unavailable(
            f"{JANUS_ADDRESS} is not configured and this network namespace has interfaces "
            f"{others}: run tests/group in a loopback-only namespace (unshare -n, as .ci/run "
            "does), where they add the interface themselves"
        )
    if shutil.which("ip") is None:
        raise Unavailable("the `ip` command (iproute2) is needed to add Janus's interface")
    try:
        # A dummy device where the kernel has the module, else a veth pair (both ends here).
        try:
            _run("ip", "link", "add", INTERFACE, "type", "dummy")
        except Unavailable:
            _run("ip", "link", "add", INTERFACE, "type", "veth", "peer", "name", "cbjanus1")
            _run("ip", "link", "set", "cbjanus1", "up")
        _run("ip", "addr", "add", f"{JANUS_ADDRESS}/24", "dev", INTERFACE)
        _run("ip", "link", "set", INTERFACE, "up")
    except Unavailable as exc:
        raise Unavailable(
            f"cannot give Janus an interface ({exc}); that needs CAP_NET_ADMIN in the test's "
            "namespace: run as root under `unshare -n`, or under `unshare -rn`"
        ) from None
    return JANUS_ADDRESS


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_prctl = ctypes.CDLL(None, use_errno=True).prctl
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: Janus gets SIGTERM if the test process dies, even by kill -9
    (looked up beforehand: the child only makes one C call)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class JanusServer:
    """One Janus process with a generated configuration in `workdir`; it drops sessions
    silent for `session_timeout` seconds."""

    def __init__(self, workdir: Path, session_timeout: int = 60) -> None:
        self.workdir = workdir
        self.session_timeout = session_timeout
        self.port = _free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.log = workdir / "janus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        """The configuration folder: janus.jcfg, the transport's and the plugins' files, and
        folders holding links to only the plugins and transport wanted."""
        conf = self.workdir / "conf"
        folders = {name: self.workdir / name for name in ("plugins", "transports", "nothing")}
        for folder in (conf, *folders.values()):
            folder.mkdir(parents=True, exist_ok=True)
        for folder, names in ((folders["plugins"], PLUGINS), (folders["transports"], TRANSPORTS)):
            for name in names:
                library = JANUS_LIBS / folder.name / name
                if not library.exists():
                    raise Unavailable(f"Janus's {library} is missing")
                (folder / name).unlink(missing_ok=True)
                (folder / name).symlink_to(library)
        (conf / "janus.jcfg").write_text(
            JANUS_JCFG.format(
                conf=conf, rtp_ports=RTP_PORTS, address=JANUS_ADDRESS,
                session_timeout=self.session_timeout,
                **{name: str(path) for name, path in folders.items()},
            )
        )  # fmt: skip
        (conf / "janus.transport.websockets.jcfg").write_text(
            WEBSOCKETS_JCFG.format(port=self.port)
        )
        for plugin in ("videoroom", "audiobridge"):
            (conf / f"janus.plugin.{plugin}.jcfg").write_text("general: {\n}\n")
        return conf

    def start(self) -> None:
        """Start Janus and wait until its WebSocket port accepts connections."""
        if not os.access(JANUS, os.X_OK):
            raise Unavailable(f"Janus is not installed at {JANUS} (Debian: apt-get install janus)")
        conf = self.write_config()
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [JANUS, "--configs-folder", str(conf), "--disable-colors"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Janus exited ({self._process.returncode}):\n{self.log_tail()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Janus did not listen within {START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop our Janus process (by its own handle: SIGTERM, then SIGKILL)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
