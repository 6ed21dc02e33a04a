"""Read a hand film (DICOM, PNG, JPEG or TIFF) into a display-ready grayscale image plus metadata.

Conventions: ``Film.pixels`` is an (H, W) ``uint8`` array indexed ``[row, col]`` (row 0 at the top), with
0 black and 255 white and bone bright on a dark background, i.e. after every DICOM LUT (modality, VOI,
MONOCHROME1 / Presentation LUT inversion). The file type is sniffed from the bytes, never from the name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin, TiffImagePlugin
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_voi_lut, apply_windowing
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import ImageSizeError, NotARadiographError, UnreadableFilmError
from .settings import Settings, get_settings

__all__ = ["Film", "FilmMetadata", "read_film", "sniff_format"]

#: Mean month length used for ages (365.25 / 12 days).
DAYS_PER_MONTH = 30.4375
#: Percentiles of the fallback window used when a film carries no window of its own.
PERCENTILE_WINDOW = (0.5, 99.5)

_DEFAULT_SALT = "boneage-core/pseudonym/v1"
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
_OPENERS = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.jpeg_factory,
    "tiff": TiffImagePlugin.TiffImageFile,
}
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


@dataclass(frozen=True)
class FilmMetadata:
    """What is known about a film besides its pixels. Never holds patient identifiers."""

    #: "M", "F" or None (unknown / other).
    sex: str | None
    birth_date: dt.date | None
    study_date: dt.date | None
    #: Age at the study in months (30.4375-day months), from the two dates, else from DICOM PatientAge.
    chronological_age_months: float | None
    #: 16 hex chars of a salted sha256 of PatientID + PatientName, else of the pixel content.
    pseudonym: str
    #: "dicom", "png", "jpeg" or "tiff".
    source_format: str
    photometric: str | None = None
    bits_stored: int | None = None
    #: Transfer syntax UID of a DICOM file (e.g. "1.2.840.10008.1.2.4.90").
    transfer_syntax: str | None = None
    modality: str | None = None
    body_part: str | None = None
    laterality: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO strings)."""
        out = dataclasses.asdict(self)
        for key in ("birth_date", "study_date"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


@dataclass(frozen=True, eq=False)
class Film:
    """A decoded hand film.

    ``pixels``: (H, W) uint8, C-contiguous, ``[row, col]``, bone bright on dark background (display
    image after all LUTs). The array is owned by this Film and writable, but treat it as read-only: copy
    before drawing on it, since the Film may be cached and shared.
    ``sha256``: hex sha256 of the input bytes as received.
    """

    pixels: np.ndarray
    meta: FilmMetadata
    sha256: str

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of ``pixels``."""
        return self.pixels.shape[0], self.pixels.shape[1]


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


def read_film(source: str | os.PathLike[str] | bytes | BinaryIO, *, name: str | None = None) -> Film:
    """Decode a hand film from a path, bytes or a binary file object.

    ``name`` (e.g. the uploaded file name) only prefixes error messages; it never decides the type.
    Raises :class:`UnreadableFilmError` (or its subclass :class:`ImageSizeError`) with a plain-language
    message; a missing path raises ``FileNotFoundError``.
    """
    settings = get_settings()
    label = name or _source_name(source)
    try:
        data = _read_source(source, settings.max_bytes)
        fmt = sniff_format(data)
        if fmt is None:
            raise UnreadableFilmError(_describe_unknown(data))
        ds = None
        if fmt == "dicom":
            pixels, ds = _read_dicom(data, settings)
        else:
            pixels = _read_raster(data, fmt, settings)
    except UnreadableFilmError as exc:
        if label:
            raise type(exc)(f"{label}: {exc}") from exc
        raise
    pixels = np.require(pixels, np.uint8, ["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])
    meta = _dicom_metadata(ds, pixels) if ds is not None else _raster_metadata(fmt, pixels)
    return Film(pixels=pixels, meta=meta, sha256=hashlib.sha256(data).hexdigest())


# --------------------------------------------------------------------------------------------- input


def _source_name(source: Any) -> str | None:
    if isinstance(source, str | os.PathLike):
        return Path(source).name
    name = getattr(source, "name", None)
    return Path(name).name if isinstance(name, str) and name else None


def _read_source(source: Any, limit: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        size = path.stat().st_size
        if size > limit:
            raise ImageSizeError(f"File is too large ({_mb(size)}); the limit is {_mb(limit)}")
        data = path.read_bytes()
    elif hasattr(source, "read"):
        data = source.read(limit + 1)
        if not isinstance(data, bytes | bytearray):
            raise TypeError("read_film needs a binary file object (open the file with 'rb')")
        data = bytes(data)
    else:
        raise TypeError(f"read_film cannot read a {type(source).__name__}")
    if len(data) > limit:
        raise ImageSizeError(f"File is too large (more than {_mb(limit)}); the limit is {_mb(limit)}")
    return data


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n:,} bytes"


def _check_size(width: int, height: int, settings: Settings) -> None:
    if min(width, height) < settings.min_side:
        raise ImageSizeError(
            f"Image is too small ({width} x {height} pixels); "
            f"each side must be at least {settings.min_side} pixels"
        )
    if max(width, height) > settings.max_side:
        raise ImageSizeError(
            f"Image is too large ({width} x {height} pixels); "
            f"each side must be at most {settings.max_side} pixels"
        )


def _looks_like_bare_dicom(head: bytes) -> bool:
    """A DICOM dataset without preamble: starts with a group 0002/0008 element (explicit or implicit VR)."""
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    if head[4:6] in _VRS:
        return True
    return int.from_bytes(head[4:8], "little") < 1024  # implicit VR: a short first value


def _describe_unknown(data: bytes) -> str:
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


# -------------------------------------------------------------------------------------------- raster


def _read_raster(data: bytes, fmt: str, settings: Settings) -> np.ndarray:
    # The format plugin is called directly so the size is known before PIL's decompression-bomb check
    # (which would refuse large films with a traceback-style message) and before any pixel is decoded.
    try:
        im = _OPENERS[fmt](io.BytesIO(data))
    except Exception as exc:
        raise UnreadableFilmError(f"Damaged {fmt.upper()} file ({exc})") from exc
    _check_size(im.width, im.height, settings)
    if fmt == "tiff" and getattr(im, "n_frames", 1) > 1:
        raise UnreadableFilmError(f"Multi-page TIFF ({im.n_frames} pages) is not supported: export one film")
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:
        raise ImageSizeError(f"Image is too large for the decoder ({exc})") from exc
    except Exception as exc:
        raise UnreadableFilmError(f"Truncated or damaged {fmt.upper()} file ({exc})") from exc
    return _pil_to_gray(im)


#: A colour image is refused as "not a radiograph" when its pixels differ between channels by more than
#: COLOUR_CHROMA grey levels on average (a film saved as RGB, or photographed on a light box, stays far below).
COLOUR_CHROMA = 24.0


def colourfulness(rgb: np.ndarray) -> float:
    """Mean (max - min over the channels) of an HWC uint8 image, on a subsample: 0 for a grey image."""
    sub = rgb[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256), :3].astype(np.int16)
    return float((sub.max(axis=2) - sub.min(axis=2)).mean())


def _pil_to_gray(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return _percentile_window(np.asarray(im))
    if im.mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        # Transparent parts become black (the film background).
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), rgba)
    if im.mode not in ("L", "LA", "1"):
        chroma = colourfulness(np.asarray(im.convert("RGB")))
        if chroma > COLOUR_CHROMA:
            raise NotARadiographError(
                f"This is a colour picture (mean channel spread {chroma:.0f} grey levels), not a radiograph: "
                "upload the hand film itself (DICOM, or a grayscale PNG/JPEG export)."
            )
    return np.asarray(im if im.mode == "L" else im.convert("L"))


# --------------------------------------------------------------------------------------------- DICOM


def _read_dicom(data: bytes, settings: Settings) -> tuple[np.ndarray, Dataset]:
    if data[:4] == b"DICM":  # "DICM" without its 128-byte preamble
        data = bytes(128) + data
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise UnreadableFilmError(f"Damaged DICOM header ({exc})") from exc
    _ensure_transfer_syntax(ds)

    frames = _int(ds.get("NumberOfFrames")) or 1
    if frames > 1:
        raise UnreadableFilmError(
            f"Multi-frame DICOM ({frames} frames) is not supported: export the single hand film"
        )
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if _PIXEL_DATA_TAG in data or "Rows" in ds:
            raise UnreadableFilmError("Truncated DICOM: the file ends before the end of the pixel data")
        raise UnreadableFilmError(f"DICOM object has no pixel data (SOP class: {_sop_class_name(ds)})")
    rows, cols = _int(ds.get("Rows")), _int(ds.get("Columns"))
    if not rows or not cols:
        raise UnreadableFilmError("Damaged DICOM header: the image size (Rows/Columns) is missing")
    _check_size(cols, rows, settings)

    tsyntax = ds.file_meta.TransferSyntaxUID
    if "PixelData" in ds and not tsyntax.is_encapsulated:
        spp, bits = _int(ds.get("SamplesPerPixel")) or 1, _int(ds.get("BitsAllocated")) or 16
        expected = (rows * cols * spp * bits + 7) // 8
        if len(ds.PixelData) < expected:
            raise UnreadableFilmError("Truncated DICOM: pixel data is shorter than the header says")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        # pydicom lists one line per decoder plugin that failed; keep those lines
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = "; ".join(lines[1:] if len(lines) > 1 else lines) or type(exc).__name__
        raise UnreadableFilmError(
            f"Could not decode the DICOM pixel data ({tsyntax.name}, "
            f"{ds.get('BitsStored', '?')} bits stored): {reason}. "
            "Re-export the film uncompressed or with a lossless compression"
        ) from exc
    return _dicom_display(arr, ds), ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Preamble-less datasets have no file meta: take the transfer syntax from how the file was read."""
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _dicom_display(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> uint8 display image with bright bone."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:  # RGB (pydicom already converted YBR to RGB)
        gray = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        return np.rint(gray).astype(np.uint8) if arr.dtype == np.uint8 else _percentile_window(gray)

    arr = apply_modality_lut(arr, ds)
    voi = _apply_first_voi(arr, ds)
    if voi is not None:
        img = _to_uint8(*voi)
    elif (_int(ds.get("BitsStored")) or 16) <= 8 and 0 <= arr.min() <= arr.max() <= 255:
        img = np.rint(arr).astype(np.uint8)  # 8-bit data without a window is already display-ready
    else:
        img = _percentile_window(arr)
    # DX/CR: MONOCHROME1 comes with Presentation LUT Shape INVERSE, both meaning one single inversion.
    if photometric == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE":
        img = 255 - img
    return img


def _apply_first_voi(arr: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float] | None:
    """The first VOI LUT (preferred) or window, with its output range as (shown black, shown white).

    None when the dataset has no usable VOI transform (the caller then uses a percentile window).
    """
    item = (ds.get("VOILUTSequence") or [None])[0]
    try:
        if item is not None and item.get("LUTDescriptor") is not None and item.get("LUTData") is not None:
            n_entries, first = item.LUTDescriptor[0] or 2**16, item.LUTDescriptor[1]
            entries = apply_voi(np.arange(first, first + n_entries), ds)
            lo, hi = float(entries.min()), float(entries.max())
        elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            # Pydicom maps values below the window to y_min and above it to y_max.
            with np.errstate(over="ignore"):
                lo, hi = (float(v) for v in apply_windowing(np.array([-1e30, 1e30]), ds))
        else:
            return None
        out = apply_voi_lut(arr, ds, index=0, prefer_lut=True)
    except (ValueError, TypeError, NotImplementedError, AttributeError, IndexError, KeyError):
        return None  # malformed VOI: fall back to the percentile window
    return (out, lo, hi) if hi != lo else None


# -------------------------------------------------------------------------------------------- pixels


def _to_uint8(arr: np.ndarray, black: float, white: float) -> np.ndarray:
    """Linear map ``black -> 0``, ``white -> 255``, clipped and rounded."""
    scaled = (arr.astype(np.float64) - black) * (255.0 / (white - black))
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def _percentile_window(arr: np.ndarray) -> np.ndarray:
    """Robust window of high-bit-depth data: the 0.5-99.5 percentiles map to 0-255."""
    lo, hi = (float(v) for v in np.percentile(arr, PERCENTILE_WINDOW))
    return _to_uint8(arr, lo, hi if hi > lo else lo + 1)


# ------------------------------------------------------------------------------------------ metadata


def _raster_metadata(fmt: str, pixels: np.ndarray) -> FilmMetadata:
    return FilmMetadata(
        sex=None,
        birth_date=None,
        study_date=None,
        chronological_age_months=None,
        pseudonym=_pseudonym(None, None, pixels),
        source_format=fmt,
    )


def _dicom_metadata(ds: Dataset, pixels: np.ndarray) -> FilmMetadata:
    birth = _date(ds.get("PatientBirthDate"))
    study = next(
        (d for k in ("StudyDate", "AcquisitionDate", "ContentDate") if (d := _date(ds.get(k)))), None
    )
    age = None
    if birth and study and study >= birth:
        age = (study - birth).days / DAYS_PER_MONTH
    elif birth is None:
        age = _age_string_months(ds.get("PatientAge"))
    sex = _text(ds.get("PatientSex"))
    sex = sex.upper() if sex and sex.upper() in ("M", "F") else None
    return FilmMetadata(
        sex=sex,
        birth_date=birth,
        study_date=study,
        chronological_age_months=age,
        pseudonym=_pseudonym(_text(ds.get("PatientID")), _text(ds.get("PatientName")), pixels),
        source_format="dicom",
        photometric=_text(ds.get("PhotometricInterpretation")),
        bits_stored=_int(ds.get("BitsStored")),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        modality=_text(ds.get("Modality")),
        body_part=_text(ds.get("BodyPartExamined")),
        laterality=_text(ds.get("ImageLaterality")) or _text(ds.get("Laterality")),
    )


def _pseudonym(patient_id: str | None, patient_name: str | None, pixels: np.ndarray) -> str:
    """Salted hash of the patient identity, or of the pixel content when there is none."""
    salt = os.environ.get("BONEAGE_PSEUDONYM_SALT", _DEFAULT_SALT)
    if patient_id or patient_name:
        material = f"{salt}\x1fid={patient_id or ''}\x1fname={patient_name or ''}"
    else:
        content = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
        material = f"{salt}\x1fpixels={content}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _date(value: Any) -> dt.date | None:
    text = _text(value)
    if not text:
        return None
    try:
        return dt.datetime.strptime(text.replace(".", "")[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _age_string_months(value: Any) -> float | None:
    """DICOM AS ("011Y", "007M", "010W", "020D") in months."""
    match = re.fullmatch(r"(\d{1,3})\s*([DWMY])", _text(value) or "")
    if not match:
        return None
    n, unit = int(match.group(1)), match.group(2)
    return {"Y": n * 12.0, "M": float(n), "W": n * 7 / DAYS_PER_MONTH, "D": n / DAYS_PER_MONTH}[unit]


def _sop_class_name(ds: Dataset) -> str:
    uid = _text(ds.get("SOPClassUID")) or _text(ds.file_meta.get("MediaStorageSOPClassUID"))
    if not uid:
        return "unknown"
    name = UID(uid).name
    return name.removesuffix(" Storage") if name != uid else uid
