"""DICOM films: pydicom decoding to a display-ready ``(H, W) uint8`` image with bright bone.

Stored values go through the palette, modality LUT and first VOI LUT or window (a percentile window when
there is none), then MONOCHROME1 / Presentation LUT INVERSE inversion. Multi-frame, truncated and
pixel-less objects, pixel data longer than the header says, and compressed images whose own header
disagrees with Rows/Columns are refused with a plain message before any large decode; a Deflate dataset
is inflated only up to a bound (:mod:`boneage_core.films.codestream`). Damaged LUTs and non-finite or
near-uniform values are refused too. Run it on untrusted bytes only inside the decoder sandbox.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_voi_lut, apply_windowing
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import UnreadableFilmError
from ..settings import Settings
from .codestream import check_inflation, codestream_size, first_fragment
from .metadata import tag_int, tag_text
from .pixels import check_finite, check_size, check_stored_range, percentile_window, to_uint8

_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_dicom(data: bytes, settings: Settings) -> tuple[np.ndarray, Dataset]:
    if data[:4] == b"DICM":  # "DICM" without its 128-byte preamble
        data = bytes(128) + data
    check_inflation(data, settings.max_bytes)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise UnreadableFilmError(f"Damaged DICOM header ({exc})") from exc
    _ensure_transfer_syntax(ds)

    frames = tag_int(ds.get("NumberOfFrames")) or 1
    if frames > 1:
        raise UnreadableFilmError(
            f"Multi-frame DICOM ({frames} frames) is not supported: export the single hand film"
        )
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if _PIXEL_DATA_TAG in data or "Rows" in ds:
            raise UnreadableFilmError("Truncated DICOM: the file ends before the end of the pixel data")
        raise UnreadableFilmError(f"DICOM object has no pixel data (SOP class: {_sop_class_name(ds)})")
    rows, cols = tag_int(ds.get("Rows")), tag_int(ds.get("Columns"))
    if not rows or not cols:
        raise UnreadableFilmError("Damaged DICOM header: the image size (Rows/Columns) is missing")
    check_size(cols, rows, settings)

    tsyntax = ds.file_meta.TransferSyntaxUID
    _check_pixel_data(ds, rows, cols, settings)
    try:
        arr = ds.pixel_array
    except MemoryError as exc:
        raise UnreadableFilmError("Decoding this DICOM needs more memory than the limit: refused") from exc
    except Exception as exc:
        # pydicom lists one line per decoder plugin that failed; keep those lines
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = "; ".join(lines[1:] if len(lines) > 1 else lines) or type(exc).__name__
        raise UnreadableFilmError(
            f"Could not decode the DICOM pixel data ({tsyntax.name}, "
            f"{ds.get('BitsStored', '?')} bits stored): {reason}. "
            "Re-export the film uncompressed or with a lossless compression"
        ) from exc
    if arr.ndim not in (2, 3) or arr.shape[:2] != (rows, cols):
        raise UnreadableFilmError(
            f"The decoded image ({' x '.join(map(str, arr.shape))}) does not match the header ({rows} x {cols})"
        )
    try:
        return _dicom_display(arr, ds), ds
    except (UnreadableFilmError, MemoryError):
        raise
    except Exception as exc:  # struct.error, ValueError, IndexError... from a damaged LUT or palette
        raise UnreadableFilmError(
            "The DICOM's grey-level tables (modality LUT, VOI LUT or palette) are damaged "
            f"({type(exc).__module__}.{type(exc).__name__})".replace("builtins.", "")
        ) from exc


def _check_pixel_data(ds: Dataset, rows: int, cols: int, settings: Settings) -> None:
    """The pixel data's length (native) or its codestream's own size (encapsulated) must match the header."""
    if "PixelData" not in ds:
        return
    data = ds.PixelData
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        spp, bits = tag_int(ds.get("SamplesPerPixel")) or 1, tag_int(ds.get("BitsAllocated")) or 16
        expected = (rows * cols * spp * bits + 7) // 8
        if len(data) < expected:
            raise UnreadableFilmError("Truncated DICOM: pixel data is shorter than the header says")
        if len(data) > expected + (expected % 2) + 1:
            raise UnreadableFilmError(
                f"The pixel data is longer than the header says ({len(data):,} bytes for one "
                f"{cols} x {rows} image of {bits} bits): the header and the pixels disagree"
            )
        return
    fragment = first_fragment(data)
    size = codestream_size(fragment) if fragment else None
    if size is not None and size != (cols, rows):
        check_size(*size, settings)
        raise UnreadableFilmError(
            f"The compressed image says {size[0]} x {size[1]} pixels but the DICOM header says "
            f"{cols} x {rows}: the header and the pixels disagree"
        )


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
        return np.rint(gray).astype(np.uint8) if arr.dtype == np.uint8 else percentile_window(gray)

    check_stored_range(arr, tag_int(ds.get("BitsStored")))
    with np.errstate(over="ignore", invalid="ignore"):
        arr = apply_modality_lut(arr, ds)
    check_finite(arr)
    voi = _apply_first_voi(arr, ds)
    if voi is not None:
        img = to_uint8(*voi)
    elif (tag_int(ds.get("BitsStored")) or 16) <= 8 and 0 <= arr.min() <= arr.max() <= 255:
        img = np.rint(arr).astype(np.uint8)  # 8-bit data without a window is already display-ready
    else:
        img = percentile_window(arr)
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
        with np.errstate(over="ignore", invalid="ignore"):
            out = apply_voi_lut(arr, ds, index=0, prefer_lut=True)
    except MemoryError:
        raise
    except Exception:
        return None  # malformed VOI: fall back to the percentile window
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi == lo:
        return None  # a NaN or infinite window: fall back to the percentile window
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        return None
    return out, lo, hi


def _sop_class_name(ds: Dataset) -> str:
    uid = tag_text(ds.get("SOPClassUID")) or tag_text(ds.file_meta.get("MediaStorageSOPClassUID"))
    if not uid:
        return "unknown"
    name = UID(uid).name
    return name.removesuffix(" Storage") if name != uid else uid
