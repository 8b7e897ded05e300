"""What a recorder storing VP8 as received needs to know of a frame: is it a keyframe, and the
picture size a keyframe declares.

RFC 6386 §9.1 (https://www.rfc-editor.org/rfc/rfc6386#section-9.1): every frame starts with a
3-byte tag whose lowest bit is 0 for a keyframe; a keyframe follows it with the start code
9d 01 2a and two little-endian 16-bit fields, width and height in their low 14 bits (the top 2
are an upscaling hint). Those 10 bytes are all that is read here.
"""

from __future__ import annotations

_START_CODE = b"\x9d\x01\x2a"


def is_keyframe(frame: bytes) -> bool:
    """Whether `frame` (a whole VP8 frame, payload descriptor removed) is a keyframe."""
    return len(frame) >= 10 and not frame[0] & 0x01 and frame[3:6] == _START_CODE


def keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) a keyframe declares, or None for an interframe or a malformed one."""
    if not is_keyframe(frame):
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None
