"""Received Opus packets into an Ogg Opus file as they are, a page at a time.

Ogg framing is RFC 3533 (https://www.rfc-editor.org/rfc/rfc3533) and the Opus mapping RFC 7845
(https://www.rfc-editor.org/rfc/rfc7845): an identification header page, a comment header page,
then audio pages whose granule position counts 48 kHz samples (plus the pre-skip) up to their
last packet. This writer exists for speed: muxing through FFmpeg costs an `av.Packet` and a
mux call per 20 ms packet, about as much as receiving the packet; here a packet is appended to
a list, and every `PAGE_PACKETS` packets (200 ms, as FFmpeg's `page_duration` was set) one
page is built and written with a single system call. A recording killed with SIGKILL keeps
every whole page: all but its last ~200 ms, each page checked by its CRC.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .writers import OpusItem

#: Packets per audio page: 200 ms of 20 ms packets (a killed recording loses at most that).
PAGE_PACKETS = 10
#: Samples a decoder drops from the start (RFC 7845 section 5.1; what FFmpeg's libopus writes).
PRE_SKIP = 312
VENDOR = b"callbot"

_PAGE_HEADER = struct.Struct("<4sBBqIII")  # capture, version, flags, granule, serial, seq, CRC
_CONTINUED, _FIRST, _LAST = 0x01, 0x02, 0x04
_MAX_SEGMENTS = 255
#: Each byte with its bits in reverse order: Ogg's CRC is zlib's with the bits mirrored.
_MIRROR = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


def page_crc(page: bytes | bytearray) -> int:
    """The Ogg CRC-32 of `page` (RFC 3533 section 6: polynomial 0x04C11DB7, initial value 0,
    no reflection, no final XOR; taken with the CRC field zeroed). zlib's CRC-32 is the same
    polynomial reflected, so it runs in C on the bit-mirrored bytes and the result is mirrored
    back (as mutagen computes it)."""
    reflected = ~zlib.crc32(page.translate(_MIRROR), 0xFFFFFFFF) & 0xFFFFFFFF
    return int.from_bytes(reflected.to_bytes(4, "big").translate(_MIRROR), "little")


def _lacing(size: int) -> bytes:
    """A packet's segment table entries: 255 for each full 255 bytes, then the rest (0-254)."""
    return b"\xff" * (size // 255) + bytes((size % 255,))


class OggOpusWriter:
    """An Ogg Opus file of received packets (48 kHz, stereo as WebRTC negotiates Opus)."""

    def __init__(self, path: Path, channels: int = 2) -> None:
        self._file = path.open("xb", buffering=0)
        self._serial = secrets.randbits(32)
        self._sequence = 0
        self._granule = PRE_SKIP  # the end of the packets written so far, in 48 kHz samples
        self._payloads: list[bytes] = []
        self._segments = 0
        head = struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, PRE_SKIP, 48000, 0, 0)
        tags = struct.pack("<8sI", b"OpusTags", len(VENDOR)) + VENDOR + struct.pack("<I", 0)
        self._write_page([head], 0, _FIRST)
        self._write_page([tags], 0, 0)

    def write(self, item: OpusItem) -> None:
        """Add one Opus packet (its pts is not needed: the recorder sends silent packets for
        gaps, so counting samples keeps the granule positions on wall-clock time)."""
        payload = item.payload
        segments = len(payload) // 255 + 1
        if self._payloads and (
            len(self._payloads) >= PAGE_PACKETS or self._segments + segments > _MAX_SEGMENTS
        ):
            self._flush(0)
        self._payloads.append(payload)
        self._segments += segments
        self._granule += item.samples

    def close(self) -> None:
        """Write the last page (marked end of stream) and close the file."""
        try:
            self._flush(_LAST)
        finally:
            self._file.close()

    def _flush(self, flags: int) -> None:
        # the page ends where its last packet ends; -1 on a page where none does (RFC 3533)
        self._write_page(self._payloads, self._granule if self._payloads else -1, flags)
        self._payloads = []
        self._segments = 0

    def _write_page(self, payloads: list[bytes], granule: int, flags: int) -> None:
        table = b"".join(_lacing(len(p)) for p in payloads)
        header = _PAGE_HEADER.pack(b"OggS", 0, flags, granule, self._serial, self._sequence, 0)
        page = bytearray(header + bytes((len(table),)) + table + b"".join(payloads))
        page[22:26] = page_crc(page).to_bytes(4, "little")  # taken with the field still zero
        self._file.write(page)
        self._sequence += 1
