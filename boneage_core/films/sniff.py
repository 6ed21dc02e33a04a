"""The film format sniffed from the leading bytes (never from the name), and what to say when it is none.

:func:`sniff_format` returns "dicom" (with or without the 128-byte preamble), "png", "jpeg", "tiff" or
None; :func:`describe_unknown` words the refusal of anything else (another image format, a PDF, an
archive, an HTML page...) for the person who uploaded it.
"""

from __future__ import annotations

_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)

_OTHER_IMAGES = (
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)
_NOT_IMAGES = (
    (b"%PDF", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive: extract the film first"),
    (b"\x1f\x8b", "a gzip archive: extract the film first"),
    (b"Rar!", "a RAR archive: extract the film first"),
    (b"7z\xbc\xaf", "a 7-Zip archive: extract the film first"),
    (b"\xd0\xcf\x11\xe0", "an Office document"),
)


def sniff_format(data: bytes) -> str | None:
    """The film format sniffed from the leading bytes: "dicom", "png", "jpeg", "tiff", or None."""
    head = bytes(data[:132])
    if head[128:132] == b"DICM" or head[:4] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if _looks_like_bare_dicom(head):
        return "dicom"
    return None


def _looks_like_bare_dicom(head: bytes) -> bool:
    """A DICOM dataset without preamble: starts with a group 0002/0008 element (explicit or implicit VR)."""
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    if head[4:6] in _VRS:
        return True
    return int.from_bytes(head[4:8], "little") < 1024  # implicit VR: a short first value


def describe_unknown(data: bytes) -> str:
    if not data:
        return "Empty file: no bytes were received"
    for magic, kind in _OTHER_IMAGES:
        if data.startswith(magic):
            return f"Unsupported image format ({kind}): export the film as DICOM, PNG, JPEG or TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "Unsupported image format (WebP): export the film as DICOM, PNG, JPEG or TIFF"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "Unsupported image format (HEIC): export the film as DICOM, PNG, JPEG or TIFF"
    what = next((kind for magic, kind in _NOT_IMAGES if data.startswith(magic)), None)
    if what is None:
        what = _describe_text(data[:1024]) or "unrecognised binary content"
    return f"Not an image or DICOM file (first bytes look like {what})"


def _describe_text(head: bytes) -> str | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a multi-byte character cut at the end
            return None
        text = head[: exc.start].decode("utf-8")
    if not text.strip() or any(not (c.isprintable() or c in "\r\n\t") for c in text):
        return None
    stripped = text.lstrip().lower()
    if stripped.startswith(("<!doctype html", "<html")):
        return "an HTML page"
    if stripped.startswith("<"):
        return "XML"
    if stripped.startswith(("{", "[")):
        return "JSON"
    return "plain text"
