"""A hostile corpus built from a real film: each file is one way an input can try to crash, hang or
exhaust the reader (the findings of issue 11 and more). :func:`build_corpus` writes them to a folder and
returns ``{file name: expected}``, where expected is "refused" (a clear UnreadableFilmError) or "film"
(read, because the damage is recoverable, e.g. a broken VOI LUT falls back to a percentile window).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from dicom_fixtures import make_dicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

DEFLATED = "1.2.840.10008.1.2.1.99"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_header_only(width: int, height: int, bit_depth: int = 16) -> bytes:
    """A PNG whose header claims ``width x height`` grey pixels, with almost no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    idat = zlib.compress(bytes(1 + width * bit_depth // 8) * 8)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def j2k_codestream(width: int, height: int, tail: bytes) -> bytes:
    """SOC + a SIZ marker segment for one 16-bit component of ``width x height``, then ``tail``."""
    siz = struct.pack(">HHHIIIIIIIIH", 0xFF51, 41, 0, width, height, 0, 0, width, height, 0, 0, 1)
    return b"\xff\x4f" + siz + struct.pack(">BBB", 15, 1, 1) + tail


def _encapsulated(
    pixels: np.ndarray, syntax: str, fragment: bytes, rows: int, cols: int, bits: int = 16
) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels.astype(np.uint16) if bits == 16 else pixels)))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = encapsulate([fragment + (b"\x00" if len(fragment) % 2 else b"")])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _edited(pixels: np.ndarray, **attrs) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels)))
    for key, value in attrs.items():
        setattr(ds, key, value)
    _resolve_ambiguous_vrs(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _resolve_ambiguous_vrs(ds: pydicom.Dataset) -> None:
    """'US or SS' -> US, 'US or OW' -> OW..., in sequences too (explicit VR files need one)."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _resolve_ambiguous_vrs(item)
        elif " or " in elem.VR:
            elem.VR = "OW" if "OW" in elem.VR and isinstance(elem.value, bytes) else elem.VR.split(" or ")[0]


def deflate_bomb(inflated_mb: int) -> bytes:
    """A Deflated Explicit VR Little Endian file whose dataset inflates to ``inflated_mb`` MB of zeros."""
    meta = io.BytesIO()
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DEFLATED
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    pydicom.filewriter.write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    size = inflated_mb * 2**20
    body = struct.pack("<HH2sHI", 0x0009, 0x0010, b"OB", 0, size)  # a private OB element of zeros
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = bytes(2**22)
    parts = [comp.compress(body)] + [comp.compress(chunk) for _ in range(size // len(chunk))]
    return b"\x00" * 128 + b"DICM" + meta.getvalue() + b"".join(parts) + comp.flush()


def build_corpus(folder: Path, film: np.ndarray) -> dict[str, str]:
    """Write the corpus into ``folder`` from ``film`` (HW uint8, a real radiograph); returns expectations."""
    folder.mkdir(parents=True, exist_ok=True)
    small = np.asarray(Image.fromarray(film).resize((512, 512)))
    wide = small.astype(np.uint16) * 16  # 12-bit stored values
    files: dict[str, tuple[bytes, str]] = {}

    def add(name: str, data: bytes, expected: str = "refused") -> None:
        files[name] = (data, expected)

    # 1: GDCM/OpenJPEG on a JPEG 2000 fragment: SOC + SIZ, then garbage (84 bytes in all)
    add(
        "j2k_fragment.dcm",
        _encapsulated(wide, JPEG2000Lossless, j2k_codestream(512, 512, b"\x13" * 36), 512, 512),
    )
    # 2: small files, huge decodes
    add("deflate_bomb.dcm", deflate_bomb(512))
    add(
        "j2k_claims_60000.dcm",
        _encapsulated(wide, JPEG2000Lossless, j2k_codestream(60000, 60000, b"\0" * 64), 512, 512),
    )
    rle = struct.pack("<16I", 2, 64, 96, *([0] * 13)) + b"\x81\x00" * 16 + b"\x81\x00" * 16
    add("rle_16384.dcm", _encapsulated(wide, RLELossless, rle, 16384, 16384))
    add("png16_16384.png", png_header_only(16384, 16384))
    jpeg = io.BytesIO()
    Image.fromarray(small).save(jpeg, format="JPEG")
    sof = jpeg.getvalue().find(b"\xff\xc0")
    big = bytearray(jpeg.getvalue())
    big[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    add("jpeg_claims_60000.jpg", bytes(big))
    add(
        "jpeg_in_dicom_mismatch.dcm",
        _encapsulated(small, JPEGBaseline8Bit, jpeg.getvalue(), 1024, 1024, bits=8),
    )
    add("dicom_65535_square.dcm", _edited(small, Rows=65535, Columns=65535))
    # 6: broken LUTs and palettes
    lut = pydicom.Dataset()
    lut.LUTDescriptor, lut.ModalityLUTType, lut.LUTData = [4096, 0, 16], "US", b"\x01\x02\x03"
    add("bad_modality_lut.dcm", _edited(wide.astype(np.uint16), ModalityLUTSequence=[lut]))
    voi = pydicom.Dataset()
    voi.LUTDescriptor, voi.LUTData = [4096, 0, 16], b"\x01\x02\x03"
    add("bad_voi_lut.dcm", _edited(wide.astype(np.uint16), VOILUTSequence=[voi]), "film")
    add(
        "bad_palette.dcm",
        _edited(
            small,
            PhotometricInterpretation="PALETTE COLOR",
            RedPaletteColorLookupTableDescriptor=[256, 0, 16],
            GreenPaletteColorLookupTableDescriptor=[256, 0, 16],
            BluePaletteColorLookupTableDescriptor=[16, 0, 8],
            RedPaletteColorLookupTableData=b"\x00\x01",
            GreenPaletteColorLookupTableData=b"\x00",
            BluePaletteColorLookupTableData=b"",
        ),
    )
    # 8: garbage in must not give a confident estimate out
    add("blank.png", _png(np.zeros((512, 512), np.uint8)))
    add("all_white.png", _png(np.full((512, 512), 255, np.uint8)))
    noise = (2000 + np.random.default_rng(0).integers(-2, 3, (512, 512))).astype(np.uint16)
    add("near_uniform_12bit.dcm", make_dicom(noise, bits_stored=12))
    add("nan_window.dcm", _edited(wide.astype(np.uint16), WindowCenter="NaN", WindowWidth="NaN"), "film")
    add("huge_rescale.dcm", _edited(wide.astype(np.uint16), RescaleSlope="1e308", RescaleIntercept="1e308"))
    add("extra_pixel_data.dcm", _extra_pixels(small))
    add("claims_100000_frames.dcm", _edited(small, NumberOfFrames=100000))
    add("truncated_pixels.dcm", make_dicom(small)[:-50000])
    # damaged or not films at all
    add("truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 3])
    add("empty.dcm", b"")
    add("random.dcm", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    add("page.jpg", b"<!doctype html><html><body>not a film</body></html>")
    add("archive.dcm", b"PK\x03\x04" + bytes(200))
    tiff = io.BytesIO()
    Image.fromarray(small).save(
        tiff, format="TIFF", save_all=True, append_images=[Image.fromarray(small)] * 3
    )
    add("multipage.tiff", tiff.getvalue())
    # readable films: the control, a large 16-bit film near the pixel limit, a name that is not UTF-8
    add("control.png", _png(small), "film")
    large = np.asarray(Image.fromarray(film).resize((5000, 6000))).astype(np.uint16) * 16
    add("large_16bit.dcm", make_dicom(large, bits_stored=12), "film")
    expected = {}
    for name, (data, outcome) in files.items():
        (folder / name).write_bytes(data)
        expected[name] = outcome
    with open(os.fsencode(folder) + b"/caf\xe9_\xff.png", "wb") as fh:
        fh.write(_png(small))
    expected[os.fsdecode(b"caf\xe9_\xff.png")] = "film"
    # 10: not regular files
    os.mkfifo(folder / "fifo.dcm")
    (folder / "folder.jpg").mkdir()
    (folder / "loop.png").symlink_to(folder / "loop.png")
    expected.update({"fifo.dcm": "refused", "folder.jpg": "refused", "loop.png": "refused"})
    return expected


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _extra_pixels(pixels: np.ndarray) -> bytes:
    """One 512x512 header, three images' worth of pixel data (pydicom would read them as 3 frames)."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels)))
    ds.PixelData = np.vstack([pixels] * 3).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
