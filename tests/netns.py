"""Each pytest-xdist worker in a loopback-only network namespace of its own.

Documented commands use default ports (the relay's 8765, SIP's 5060), so two workers running
such tests at once would collide. A network namespace per worker gives each its own 127.0.0.1
(and nothing else: the host's interfaces stay out of reach). Needs CAP_SYS_ADMIN, i.e. root or
`unshare -rn` as `.ci/run` does; without it `-n auto` runs the tests in one process instead.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

CLONE_NEWNET = 0x40000000  # <sched.h>, unshare(2)


def can_isolate() -> bool:
    """Whether a new network namespace can be made here (tried in a throwaway process)."""
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("ip") is None:
        return False
    done = subprocess.run([unshare, "-n", "true"], capture_output=True, check=False)
    return done.returncode == 0


def enter_own() -> None:
    """Move this process (its main thread, and every thread and child it starts from now on)
    into a new network namespace with only `lo`, up. Call before any test opens a socket."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare(CLONE_NEWNET) failed: {os.strerror(error)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
