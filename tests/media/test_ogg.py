"""callbot's Ogg Opus writer (callbot/media/ogg.py) against independent readers: FFmpeg's Ogg
demuxer and Opus decoder (through PyAV), and a bit-by-bit CRC written from RFC 3533."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import av
import numpy as np

from callbot.media import ogg, opus
from callbot.media.decoder import AudioFramer
from callbot.media.writers import OpusItem, open_writer


def rfc3533_crc(page: bytes) -> int:
    """CRC-32, polynomial 0x04C11DB7, initial 0, MSB first, no final XOR (RFC 3533 section 6)."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def pages(path: Path) -> list[tuple[int, int, int, list[bytes]]]:
    """(flags, granule, sequence, packets) of every page, each page's CRC checked."""
    data, at, found = path.read_bytes(), 0, []
    while at < len(data):
        assert data[at : at + 4] == b"OggS"
        flags, granule, _serial, sequence, crc, count = struct.unpack(
            "<xBqIIIB", data[at + 4 : at + 27]
        )
        table = data[at + 27 : at + 27 + count]
        end = at + 27 + count + sum(table)
        unsigned = data[at : at + 22] + bytes(4) + data[at + 26 : end]  # the CRC field zeroed
        assert rfc3533_crc(unsigned) == crc == ogg.page_crc(unsigned)
        packets, body, size = [], at + 27 + count, 0
        for lacing in table:
            size += lacing
            if lacing < 255:
                packets.append(data[body : body + size])
                body, size = body + size, 0
        found.append((flags, granule, sequence, packets))
        at = end
    return found


def tone_packets(seconds: float) -> list[bytes]:
    t = np.arange(int(48000 * seconds)) / 48000
    mono = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16",
                                       layout="stereo")  # fmt: skip
    frame.sample_rate, frame.pts = 48000, 0
    encoder = opus.OpusEncoder()
    return [p for chunk in AudioFramer().push(frame) for p in encoder.encode(chunk)]


def test_page_crc_is_rfc3533s() -> None:
    generator = random.Random(5)
    for size in (0, 1, 27, 300, 5000):
        page = bytes(generator.randrange(256) for _ in range(size))
        assert ogg.page_crc(page) == rfc3533_crc(page)


def test_received_packets_come_back_as_written(tmp_path: Path) -> None:
    packets = tone_packets(2.0)
    packets[7] = bytes(range(256)) * 2 + b"\x01"  # 513 bytes: three lacing values (255,255,3)
    path = tmp_path / "r.ogg"
    writer = open_writer(path, "audio", (0, 0))
    assert isinstance(writer, ogg.OggOpusWriter)
    samples = [opus.packet_samples(p) or opus.FRAME_SAMPLES for p in packets]
    for index, payload in enumerate(packets):
        writer.write(OpusItem(payload, index * 960, samples[index]))
    writer.close()

    found = pages(path)
    head, tags, audio = found[0], found[1], found[2:]
    assert head[0] == 0x02 and head[3][0][:8] == b"OpusHead" and tags[3][0][:8] == b"OpusTags"
    assert [p[2] for p in found] == list(range(len(found)))
    assert [p for page in audio for p in page[3]] == packets
    assert all(len(page[3]) == ogg.PAGE_PACKETS for page in audio[:-1])
    ends = np.cumsum(samples)[np.cumsum([len(page[3]) for page in audio]) - 1] + ogg.PRE_SKIP
    assert [page[1] for page in audio] == list(ends)
    assert [page[0] for page in audio] == [0] * (len(audio) - 1) + [0x04]  # end of stream

    with av.open(str(path)) as container:  # FFmpeg reads the same packets back
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus" and stream.channels == 2
        assert [bytes(p) for p in container.demux(stream) if p.size] == packets
    with av.open(str(path)) as container:
        decoded = sum(f.samples for f in container.decode(audio=0) if f.samples)
    assert decoded == sum(samples) - ogg.PRE_SKIP


def test_a_recording_cut_short_keeps_its_whole_pages(tmp_path: Path) -> None:
    """No close (the process was killed): every page written so far is whole and readable."""
    packets = tone_packets(1.0)
    path = tmp_path / "killed.ogg"
    writer = ogg.OggOpusWriter(path)
    for index, payload in enumerate(packets[:25]):
        writer.write(OpusItem(payload, index * 960, 960))
    with av.open(str(path)) as container:  # 25 packets: two pages out, five still pending
        assert [bytes(p) for p in container.demux(audio=0) if p.size] == packets[:20]
    writer.close()


def test_a_recording_with_no_audio_is_an_ogg_opus_stream_with_no_packets(tmp_path: Path) -> None:
    """Headers and an end-of-stream page whose granule says no packet ends there (RFC 3533);
    FFmpeg opens no Ogg Opus without audio (FFmpeg's own writer left 0 bytes here)."""
    path = tmp_path / "empty.opus"
    open_writer(path, "audio", (0, 0)).close()
    assert [(flags, granule, packets) for flags, granule, _, packets in pages(path)][2:] == [
        (0x04, -1, [])
    ]
