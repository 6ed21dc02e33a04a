"""Build real DICOM files (bytes) from real film pixels, for tests.

``make_dicom`` stores the given array exactly as it is (the caller decides the stored values, e.g. an
inverted film for MONOCHROME1) and encodes it with the requested transfer syntax:

- native: Explicit/Implicit VR Little Endian (pydicom);
- RLE Lossless (pydicom's own encoder) and JPEG 2000 (pydicom + pylibjpeg-openjpeg), via ``Dataset.compress``;
- JPEG Lossless SV1, JPEG-LS, JPEG Baseline/Extended: GDCM's ``ImageChangeTransferSyntax``
  (pydicom has no encoder for these), through temporary files.
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    UID,
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
PYDICOM_ENCODED = (RLELossless, JPEG2000Lossless, JPEG2000)
GDCM_ENCODED = (JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless, JPEGBaseline8Bit, JPEGExtended12Bit)
LOSSLESS_SYNTAXES = (*NATIVE_SYNTAXES, RLELossless, JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless)


def _da(value: dt.date | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.strftime("%Y%m%d")


def make_dicom(
    pixels: np.ndarray | None,
    *,
    photometric: str | None = None,
    bits_stored: int | None = None,
    window: tuple[float, float] | list[tuple[float, float]] | None = None,
    rescale: tuple[float, float] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    patient_name: str | None = "Doe^Jane",
    patient_id: str | None = "PID-0001",
    sex: str | None = "F",
    birth_date: dt.date | str | None = dt.date(2012, 3, 14),
    study_date: dt.date | str | None = dt.date(2021, 9, 1),
    patient_age: str | None = None,
    modality: str = "CR",
    body_part: str | None = "HAND",
    laterality: str | None = "L",
    presentation_lut_shape: str | None = None,
    sop_class: str = ComputedRadiographyImageStorage,
    preamble: bool = True,
    extra: dict[str, object] | None = None,
) -> bytes:
    """DICOM Part 10 bytes holding ``pixels`` as stored values.

    ``pixels``: (rows, cols) uint8/uint16 monochrome, (rows, cols, 3) uint8 RGB, or (frames, rows, cols)
    for a multi-frame object (``photometric`` must then be given); ``None`` builds an object without
    pixel data (a Basic Text SR unless ``sop_class`` says otherwise). ``window`` is (center, width) or a
    list of them (multi-valued), ``rescale`` is (slope, intercept). ``preamble=False`` writes a bare
    Implicit VR Little Endian dataset (no preamble, no "DICM", no file meta), as old PACS exports do.
    ``extra`` sets further attributes by keyword.
    """
    if pixels is None and sop_class == ComputedRadiographyImageStorage:
        sop_class = BasicTextSRStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality if pixels is not None else "SR"
    for keyword, value in {
        "PatientName": patient_name,
        "PatientID": patient_id,
        "PatientSex": sex,
        "PatientBirthDate": _da(birth_date),
        "StudyDate": _da(study_date),
        "PatientAge": patient_age,
        "BodyPartExamined": body_part,
        "ImageLaterality": laterality,
        "PresentationLUTShape": presentation_lut_shape,
    }.items():
        if value is not None:
            setattr(ds, keyword, value)

    colour = False
    if pixels is not None:
        _set_pixels(ds, np.asarray(pixels), photometric, bits_stored)
        colour = ds.SamplesPerPixel == 3
    if window is not None:
        pairs = window if isinstance(window, list) else [window]
        centers, widths = [p[0] for p in pairs], [p[1] for p in pairs]
        ds.WindowCenter = centers if len(centers) > 1 else centers[0]
        ds.WindowWidth = widths if len(widths) > 1 else widths[0]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)

    transfer_syntax = UID(transfer_syntax)
    if transfer_syntax == JPEG2000:
        ds.compress(transfer_syntax, j2k_cr=[20])  # lossy J2K needs a compression ratio
    elif transfer_syntax in PYDICOM_ENCODED:
        ds.compress(transfer_syntax)
    elif transfer_syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif transfer_syntax not in (ExplicitVRLittleEndian, *GDCM_ENCODED):
        raise ValueError(f"no encoder wired for {transfer_syntax.name}")

    if not preamble:
        del ds.file_meta
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
        return out.getvalue()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    if transfer_syntax in GDCM_ENCODED:
        data = gdcm_transcode(data, transfer_syntax)
        if colour and transfer_syntax in (JPEGBaseline8Bit, JPEGExtended12Bit):
            # GDCM's libjpeg writes YCbCr but keeps "RGB" in the header: label it as DICOM expects.
            encoded = pydicom.dcmread(io.BytesIO(data))
            encoded.PhotometricInterpretation = "YBR_FULL_422"
            out = io.BytesIO()
            encoded.save_as(out, enforce_file_format=True)
            data = out.getvalue()
    return data


def _set_pixels(ds: Dataset, arr: np.ndarray, photometric: str | None, bits_stored: int | None) -> None:
    if arr.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"pixels must be uint8 or uint16, got {arr.dtype}")
    colour = arr.ndim == 3 and arr.shape[-1] == 3 and photometric in (None, "RGB")
    if arr.ndim == 3 and not colour:
        ds.NumberOfFrames = arr.shape[0]
    ds.Rows, ds.Columns = arr.shape[1:3] if "NumberOfFrames" in ds else arr.shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if int(arr.max(initial=0)) >= 2**ds.BitsStored:
        raise ValueError(f"values exceed {ds.BitsStored} bits stored")
    ds.PixelData = np.ascontiguousarray(arr).tobytes()


def gdcm_transcode(data: bytes, transfer_syntax: str) -> bytes:
    """Re-encode DICOM bytes with GDCM (JPEG Lossless SV1, JPEG-LS, JPEG Baseline/Extended)."""
    import gdcm

    syntaxes = {
        JPEGLosslessSV1: gdcm.TransferSyntax.JPEGLosslessProcess14_1,
        JPEGLSLossless: gdcm.TransferSyntax.JPEGLSLossless,
        JPEGLSNearLossless: gdcm.TransferSyntax.JPEGLSNearLossless,
        JPEGBaseline8Bit: gdcm.TransferSyntax.JPEGBaselineProcess1,
        JPEGExtended12Bit: gdcm.TransferSyntax.JPEGExtendedProcess2_4,
    }
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        src.write_bytes(data)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        if not reader.Read():
            raise RuntimeError("GDCM could not read the uncompressed fixture")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(syntaxes[UID(transfer_syntax)]))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError(f"GDCM could not encode {UID(transfer_syntax).name}")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(dst))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("GDCM could not write the encoded fixture")
        return dst.read_bytes()
