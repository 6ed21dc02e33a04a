"""Checks on a DICOM file's bytes before pydicom decodes them: bounded inflation, codestream sizes.

Both guard against small files with huge decodes: a Deflate-compressed dataset is inflated in bounded
chunks first (refused when it would grow beyond the limit), and the first fragment of an encapsulated
JPEG / JPEG-LS / JPEG 2000 image must declare the size that Rows and Columns say, so a decoder never
allocates for a size the header checks did not see.
"""

from __future__ import annotations

import zlib

from ..errors import ImageSizeError, UnreadableFilmError

DEFLATED_UID = b"1.2.840.10008.1.2.1.99"
#: Explicit-VR value representations with a 4-byte length (after 2 reserved bytes).
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
#: JPEG start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC) and JPEG-LS's SOF55.
_SOF_MARKERS = frozenset(set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}) | {0xF7}
_CHUNK = 1 << 20


def file_meta_end(data: bytes) -> int | None:
    """Offset of the first byte after the (explicit VR little endian) group 0002, or None if there is none."""
    pos = 132 if data[128:132] == b"DICM" else None
    if pos is None:
        return None
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        if data[pos + 4 : pos + 6] in _LONG_VRS:
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        else:
            pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
    return min(pos, len(data))


def check_inflation(data: bytes, limit: int) -> None:
    """Refuse a Deflated Explicit VR file whose dataset inflates to more than ``limit`` bytes.

    Inflates in 1 MiB pieces and keeps none of them; pydicom then inflates it again, now known bounded.
    """
    end = file_meta_end(data)
    if end is None or DEFLATED_UID not in data[:end]:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, pending = 0, data[end:]
    try:
        while pending:
            total += len(inflater.decompress(pending, _CHUNK))
            pending = inflater.unconsumed_tail
            if total > limit:
                raise ImageSizeError(
                    f"The compressed DICOM dataset inflates to more than {limit / 2**20:.0f} MB: refused"
                )
    except zlib.error as exc:
        raise UnreadableFilmError(f"Damaged Deflate-compressed DICOM ({exc})") from exc


def codestream_size(fragment: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a JPEG, JPEG-LS or JPEG 2000 codestream's header, or None if not found."""
    if fragment[:2] == b"\xff\xd8":
        return _jpeg_size(fragment)
    at = fragment.find(b"\xff\x4f\xff\x51", 0, 4096)  # J2K SOC + SIZ (possibly after JP2 boxes)
    if at >= 0 and len(fragment) >= at + 24:
        x, y, x0, y0 = (int.from_bytes(fragment[at + 8 + 4 * i : at + 12 + 4 * i], "big") for i in range(4))
        return x - x0, y - y0
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def first_fragment(pixel_data: bytes) -> bytes | None:
    """The first fragment after the Basic Offset Table of encapsulated pixel data (None when malformed)."""
    if len(pixel_data) < 16 or pixel_data[:4] != b"\xfe\xff\x00\xe0":
        return None
    bot = int.from_bytes(pixel_data[4:8], "little")
    at = 8 + bot
    if pixel_data[at : at + 4] != b"\xfe\xff\x00\xe0":
        return None
    length = int.from_bytes(pixel_data[at + 4 : at + 8], "little")
    return bytes(pixel_data[at + 8 : at + 8 + min(length, 65536)])
