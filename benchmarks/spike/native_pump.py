"""Spike (issue 18 point 5): what a packet pump that leaves Python per batch would save.

Compares, per 20 ms audio packet (a 12-byte RTP header and 160 bytes of payload, SRTP
AES-CM/HMAC-SHA1-80), process CPU time (getrusage) of:

- python: callbot's per-packet floor in Python: a header filled with struct, pylibsrtp
  protect, `sendto` on the call's own socket; then `recvfrom` and pylibsrtp unprotect.
  (No asyncio, no RTP statistics: less than callbot's real path, see packet_cost.py.)
- native: pump.c, one call per tick for all calls: header fields, libsrtp (the copy
  pylibsrtp links, reached through its cffi binding) and one `sendmmsg` on one socket; one
  `recvmmsg` per batch and libsrtp unprotect. Python only calls it once per tick.

Needs a C compiler (gcc) to build pump.c: this is a measurement, not shipped code.

    python benchmarks/spike/native_pump.py --calls 200 --ticks 250
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import pylibsrtp
from pylibsrtp._binding import ffi, lib  # the spike reaches pylibsrtp's own libsrtp

HERE = Path(__file__).resolve().parent
SLOT = 1500
PAYLOAD = 160
KEY = bytes(range(30))


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sessions(count: int) -> tuple[list[pylibsrtp.Session], list[pylibsrtp.Session]]:
    tx = [pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
          for _ in range(count)]  # fmt: skip
    rx = [pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
          for _ in range(count)]  # fmt: skip
    return tx, rx


def python_path(calls: int, ticks: int) -> float:
    """µs of CPU per packet (sent and received) for the per-packet Python floor."""
    tx, rx = sessions(calls)
    senders, receivers = [], []
    for _ in range(calls):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))
        r.setblocking(False)
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        senders.append((s, r.getsockname()))
        receivers.append(r)
    header = struct.Struct("!BBHII")
    payload = os.urandom(PAYLOAD)
    start = cpu()
    received = 0
    for tick in range(ticks):
        for ssrc, ((sock, dest), session) in enumerate(zip(senders, tx, strict=True)):
            packet = header.pack(0x80, 111, tick & 0xFFFF, tick * 960, ssrc) + payload
            sock.sendto(session.protect(packet), dest)
        for sock, session in zip(receivers, rx, strict=True):
            plain = session.unprotect(sock.recvfrom(SLOT)[0])
            received += len(plain) > 12
    used = cpu() - start
    for sock, _ in senders:
        sock.close()
    for sock in receivers:
        sock.close()
    assert received == calls * ticks, received
    return used / (calls * ticks) * 1e6


def build() -> ctypes.CDLL:
    target = Path(tempfile.gettempdir()) / "callbot-spike-pump.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(target), str(HERE / "pump.c")],
                   check=True)  # fmt: skip
    pump = ctypes.CDLL(str(target))
    pump.send_batch.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    pump.recv_batch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                ctypes.c_int, ctypes.POINTER(ctypes.c_long)]  # fmt: skip
    return pump


def address(pointer: object) -> int:
    return int(ffi.cast("uintptr_t", pointer))


class SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16),
                ("addr", ctypes.c_uint32), ("zero", ctypes.c_char * 8)]  # fmt: skip


def native_path(calls: int, ticks: int) -> float:
    """µs of CPU per packet (sent and received) through pump.c, a call per tick."""
    pump = build()
    tx, rx = sessions(calls)
    tx_ctx = (ctypes.c_void_p * calls)(*[address(s._srtp[0]) for s in tx])
    rx_ctx = (ctypes.c_void_p * calls)(*[address(s._srtp[0]) for s in rx])
    protect = address(ffi.addressof(lib, "srtp_protect"))
    unprotect = address(ffi.addressof(lib, "srtp_unprotect"))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    dest = SockaddrIn(socket.AF_INET, socket.htons(port),
                      struct.unpack("=I", socket.inet_aton("127.0.0.1"))[0])  # fmt: skip
    dests = (SockaddrIn * calls)(*([dest] * calls))
    buffer = ctypes.create_string_buffer(calls * SLOT)
    payload = os.urandom(PAYLOAD)
    for ssrc in range(calls):
        packet = struct.pack("!BBHII", 0x80, 111, 0, 0, ssrc) + payload
        ctypes.memmove(ctypes.addressof(buffer) + ssrc * SLOT, packet, len(packet))
    lengths = (ctypes.c_int * calls)(*([12 + PAYLOAD] * calls))
    payload_bytes = ctypes.c_long(0)
    start = cpu()
    received = 0
    for _ in range(ticks):
        sent = pump.send_batch(protect, tx_ctx, sender.fileno(), buffer, lengths, dests, calls, 960)
        assert sent == calls, sent
        got = 0
        while got < calls:
            got += max(0, pump.recv_batch(unprotect, rx_ctx, calls, receiver.fileno(), calls,
                                          ctypes.byref(payload_bytes)))  # fmt: skip
        received += got
    used = cpu() - start
    sender.close()
    receiver.close()
    assert received == calls * ticks and payload_bytes.value == received * PAYLOAD
    return used / (calls * ticks) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=250, help="20 ms ticks (250: 5 s of audio)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for name, run in (("python per packet", python_path), ("native per batch", native_path)):
        figures = sorted(run(args.calls, args.ticks) for _ in range(args.repeat))
        per_call = figures[0] * 50 / 1e6 * 100  # one packet each way per 20 ms
        print(f"{name}: {figures[0]:.2f} µs per packet sent+received (best of {args.repeat}; "
              f"all {', '.join(f'{f:.2f}' for f in figures)}): {per_call:.4f} % of a core "
              f"per call, one direction each way", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
