"""Reading hand films: DICOM (built from real films, every supported transfer syntax), PNG/JPEG/TIFF, and
the clear errors given for everything else."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import LOSSLESS_SYNTAXES, make_dicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    RLELossless,
)

from boneage_core.errors import BoneAgeError, ImageSizeError, UnreadableFilmError
from boneage_core.films import read as film_io
from boneage_core.films.film import Film
from boneage_core.films.read import read_film
from boneage_core.films.sniff import sniff_format
from boneage_core.settings import get_settings

# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def film(fullres_films: list[Path]) -> np.ndarray:
    """The smallest real full-resolution film, (H, W) uint8 (keeps the DICOM tests fast)."""
    path = min(fullres_films, key=lambda p: np.prod(Image.open(p).size))
    return np.asarray(Image.open(path).convert("L"))


@pytest.fixture(scope="module")
def stored12(film: np.ndarray) -> np.ndarray:
    """The film expanded to 12-bit stored values (0..4095) in 16-bit words, as a CR/DX detector gives."""
    return film.astype(np.uint16) * 16 + film // 16


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 'LINEAR' window onto 0..255, written independently of the reader."""
    x = x.astype(np.float64)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    y[x <= center - 0.5 - (width - 1) / 2] = 0
    y[x > center - 0.5 + (width - 1) / 2] = 255
    return np.rint(y)


def percentile_window(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, (0.5, 99.5))
    return np.rint(np.clip((x.astype(np.float64) - lo) / (hi - lo) * 255, 0, 255))


def assert_close(actual: np.ndarray, expected: np.ndarray, *, max_diff: int = 1) -> None:
    assert actual.dtype == np.uint8 and actual.ndim == 2
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
    assert diff.max() <= max_diff, f"max difference {diff.max()} grey levels"
    assert diff.mean() < 0.01


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr, mode).save(out, format="PNG")
    return out.getvalue()


# ---------------------------------------------------------------------------------------- DICOM pixels


@pytest.mark.parametrize("which", ["smallest", "largest"])
@pytest.mark.parametrize("syntax", LOSSLESS_SYNTAXES, ids=lambda u: UID(u).keyword)
def test_lossless_12bit_windowed_roundtrip(syntax: str, which: str, fullres_films: list[Path]) -> None:
    sizes = {p: np.prod(Image.open(p).size) for p in fullres_films}
    path = (min if which == "smallest" else max)(sizes, key=sizes.__getitem__)
    film = np.asarray(Image.open(path).convert("L"))
    stored12 = film.astype(np.uint16) * 16 + film // 16
    data = make_dicom(stored12, bits_stored=12, window=(2000, 3000), transfer_syntax=syntax)
    result = read_film(data)
    assert_close(result.pixels, linear_window(stored12, 2000, 3000))
    assert result.meta.transfer_syntax == syntax
    assert result.meta.bits_stored == 12


def test_8bit_without_window_is_unchanged(film: np.ndarray) -> None:
    result = read_film(make_dicom(film, transfer_syntax=RLELossless))
    np.testing.assert_array_equal(result.pixels, film)


def test_16bit_without_window_gets_percentile_window(stored12: np.ndarray) -> None:
    stored16 = stored12 * 16  # full 16-bit range
    result = read_film(make_dicom(stored16, bits_stored=16))
    assert_close(result.pixels, percentile_window(stored16))


@pytest.mark.parametrize("window", [None, (2000, 3000)], ids=["percentile", "windowed"])
def test_monochrome1_is_inverted_to_bright_bone(window, film: np.ndarray, stored12: np.ndarray) -> None:
    inverted = 4095 - stored12  # MONOCHROME1 storage: bone has low values
    result = read_film(make_dicom(inverted, photometric="MONOCHROME1", bits_stored=12, window=window))
    expected = percentile_window(inverted) if window is None else linear_window(inverted, *window)
    assert_close(result.pixels, 255 - expected)
    assert np.corrcoef(result.pixels.ravel(), film.ravel())[0, 1] > 0.7  # bright bone (window clips)
    assert result.meta.photometric == "MONOCHROME1"


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [("MONOCHROME2", "INVERSE", True), ("MONOCHROME1", "INVERSE", True), ("MONOCHROME2", "IDENTITY", False)],
)
def test_presentation_lut_shape(photometric: str, shape: str, inverted: bool, film: np.ndarray) -> None:
    result = read_film(make_dicom(film, photometric=photometric, presentation_lut_shape=shape))
    np.testing.assert_array_equal(result.pixels, 255 - film if inverted else film)


def test_rescale_then_window_in_rescaled_units(stored12: np.ndarray) -> None:
    slope, intercept, center, width = 0.5, -100.0, 900.0, 1800.0
    data = make_dicom(stored12, bits_stored=12, rescale=(slope, intercept), window=(center, width))
    result = read_film(data)
    assert_close(result.pixels, linear_window(stored12 * slope + intercept, center, width))


def test_first_of_several_windows_is_used(stored12: np.ndarray) -> None:
    result = read_film(make_dicom(stored12, bits_stored=12, window=[(1500, 2000), (3000, 500)]))
    assert_close(result.pixels, linear_window(stored12, 1500, 2000))


def test_voi_lut_sequence_is_preferred(stored12: np.ndarray) -> None:
    # A non-linear VOI LUT (square root) declared as 16-bit although its values stop at 4095.
    lut = np.rint(np.sqrt(np.arange(4096) / 4095) * 4095).astype(np.uint16)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    item.add_new("LUTData", "US", lut.tolist())
    data = make_dicom(stored12, bits_stored=12, window=(100, 50), extra={"VOILUTSequence": Sequence([item])})
    result = read_film(data)
    assert_close(result.pixels, np.rint(lut[stored12] / 4095 * 255))


@pytest.mark.parametrize(
    ("syntax", "bits", "max_mean_diff"), [(JPEGBaseline8Bit, 8, 1.0), (JPEG2000, 12, 3.0)]
)
def test_lossy_syntaxes_decode_close(syntax, bits, max_mean_diff, film, stored12) -> None:
    stored = film if bits == 8 else stored12
    window = None if bits == 8 else (2048, 4096)
    result = read_film(make_dicom(stored, bits_stored=bits, window=window, transfer_syntax=syntax))
    expected = film if bits == 8 else linear_window(stored12, 2048, 4096)
    assert np.abs(result.pixels.astype(float) - expected).mean() < max_mean_diff
    assert result.meta.transfer_syntax == syntax


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit], ids=["native", "rle", "jpeg-baseline"]
)
def test_rgb_dicom_becomes_gray(syntax: str, film: np.ndarray) -> None:
    rgb = np.stack([film] * 3, axis=-1)
    result = read_film(make_dicom(rgb, transfer_syntax=syntax))
    if syntax == JPEGBaseline8Bit:  # lossy, stored as YBR_FULL_422
        assert np.abs(result.pixels.astype(float) - film).mean() < 1.0
    else:
        np.testing.assert_array_equal(result.pixels, film)


def test_jpeg_extended_12bit_gives_clear_error(stored12: np.ndarray) -> None:
    """No permissive decoder handles 12-bit JPEG Extended (pylibjpeg-libjpeg is GPL): refuse clearly."""
    data = make_dicom(stored12, bits_stored=12, transfer_syntax=JPEGExtended12Bit)
    with pytest.raises(UnreadableFilmError, match=r"JPEG Extended.*12 bits stored.*Re-export"):
        read_film(data)


# -------------------------------------------------------------------------------------- DICOM metadata


def test_dicom_metadata(film: np.ndarray) -> None:
    data = make_dicom(
        film, sex="M", birth_date=dt.date(2010, 1, 31), study_date=dt.date(2019, 7, 15), modality="DX"
    )
    meta = read_film(data).meta
    assert meta.sex == "M"
    assert (meta.birth_date, meta.study_date) == (dt.date(2010, 1, 31), dt.date(2019, 7, 15))
    assert meta.chronological_age_months == pytest.approx(
        (dt.date(2019, 7, 15) - dt.date(2010, 1, 31)).days / 30.4375
    )
    assert (meta.modality, meta.body_part, meta.laterality) == ("DX", "HAND", "L")
    assert meta.source_format == "dicom" and meta.photometric == "MONOCHROME2"
    as_json = json.loads(json.dumps(meta.to_dict()))
    assert as_json["birth_date"] == "2010-01-31" and as_json["sex"] == "M"


@pytest.mark.parametrize(("age", "months"), [("011Y", 132.0), ("007M", 7.0), ("010W", 70 / 30.4375)])
def test_patient_age_used_without_birth_date(age: str, months: float, film: np.ndarray) -> None:
    meta = read_film(make_dicom(film, birth_date=None, patient_age=age)).meta
    assert meta.birth_date is None
    assert meta.chronological_age_months == pytest.approx(months)


def test_missing_or_odd_values(film: np.ndarray) -> None:
    data = make_dicom(
        film,
        sex="O",
        birth_date=None,
        study_date=None,
        extra={"AcquisitionDate": "20200102"},
        laterality=None,
    )
    meta = read_film(data).meta
    assert meta.sex is None and meta.birth_date is None and meta.chronological_age_months is None
    assert meta.study_date == dt.date(2020, 1, 2)  # AcquisitionDate fallback
    assert meta.laterality is None


def test_pseudonym_is_a_keyed_hash(film: np.ndarray) -> None:
    name, pid = "Smith^Alice", "MRN123456"
    meta = read_film(make_dicom(film, patient_name=name, patient_id=pid)).meta
    assert len(meta.pseudonym) == 16 and int(meta.pseudonym, 16) >= 0
    dumped = json.dumps(meta.to_dict())
    for secret in (name, pid, "Smith", "Alice", "123456"):
        assert secret not in dumped
    again = read_film(make_dicom(film[::-1], patient_name=name, patient_id=pid)).meta
    other = read_film(make_dicom(film, patient_name=name, patient_id="MRN999")).meta
    anonymous = read_film(make_dicom(film, patient_name=None, patient_id=None)).meta
    assert again.pseudonym == meta.pseudonym  # same patient, other film
    assert other.pseudonym != meta.pseudonym
    assert anonymous.pseudonym not in (meta.pseudonym, other.pseudonym)
    assert anonymous.pseudonym == read_film(png_bytes(film)).meta.pseudonym  # from the pixel content


# ------------------------------------------------------------------------------------- sources, sniffing


def test_extensionless_and_misnamed_paths(tmp_path: Path, film: np.ndarray) -> None:
    data = make_dicom(film)
    (tmp_path / "IM000001").write_bytes(data)
    (tmp_path / "hand.jpg").write_bytes(data)  # the name lies; the bytes decide
    for path in (tmp_path / "IM000001", str(tmp_path / "hand.jpg")):
        result = read_film(path)
        assert result.meta.source_format == "dicom"
        np.testing.assert_array_equal(result.pixels, film)


def test_preamble_less_dicom_and_file_object(film: np.ndarray) -> None:
    bare = make_dicom(film, preamble=False)
    assert bare[128:132] != b"DICM"
    assert sniff_format(bare) == "dicom"
    result = read_film(io.BytesIO(bare))
    np.testing.assert_array_equal(result.pixels, film)
    assert result.sha256 == hashlib.sha256(bare).hexdigest()


def test_real_jpeg_films_read_as_is(fullres_films: list[Path]) -> None:
    for path in fullres_films[:8]:
        result = read_film(path)
        assert isinstance(result, Film) and result.meta.source_format == "jpeg"
        np.testing.assert_array_equal(result.pixels, np.asarray(Image.open(path).convert("L")))
        assert result.pixels.flags.c_contiguous and result.pixels.flags.owndata
        assert result.meta.sex is None and result.meta.chronological_age_months is None


def test_png_16bit(film: np.ndarray, stored12: np.ndarray) -> None:
    stored16 = stored12 * 16
    result = read_film(png_bytes(stored16))
    assert result.meta.source_format == "png"
    assert_close(result.pixels, percentile_window(stored16))


def test_rgb_jpeg_and_rgba_png_become_gray(film: np.ndarray) -> None:
    rgb = np.stack([film, film, film], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    jpeg = read_film(buf.getvalue()).pixels
    assert np.abs(jpeg.astype(float) - film).mean() < 1.5
    rgba = np.dstack([rgb, np.full_like(film, 255)])
    np.testing.assert_array_equal(read_film(png_bytes(rgba)).pixels, film)


def test_tiff_16bit(stored12: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(stored12).save(buf, format="TIFF")
    result = read_film(buf.getvalue())
    assert result.meta.source_format == "tiff"
    assert_close(result.pixels, percentile_window(stored12))


def test_jpeg_exif_orientation_is_applied(film: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(film).save(buf, format="JPEG", quality=95, exif=exif)
    result = read_film(buf.getvalue()).pixels
    assert result.shape == film.shape[::-1]
    assert np.abs(result.astype(float) - np.rot90(film, k=-1)).mean() < 1.5


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x00" * 128 + b"DICM", "dicom"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (b"II*\x00", "tiff"),
        (b"MM\x00*", "tiff"),
        (b"\x08\x00\x05\x00CS\x0a\x00", "dicom"),  # bare dataset, explicit VR
        (b"\x08\x00\x16\x00\x1a\x00\x00\x00", "dicom"),  # bare dataset, implicit VR
        (b"%PDF-1.7", None),
        (b"", None),
    ],
)
def test_sniff_format(head: bytes, expected: str | None) -> None:
    assert sniff_format(head + b"\x00" * 16) == expected
    assert sniff_format(head[:3]) in (None, "jpeg")  # short inputs never crash


# ------------------------------------------------------------------------------------------ bad inputs


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("IM000001", b"\x00" * 200)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` (8-bit gray) but holds no pixel data at all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


BAD_INPUTS = {
    "empty": (lambda f, s: b"", UnreadableFilmError, r"Empty file"),
    "random": (
        lambda f, s: np.random.default_rng(7).bytes(4096),
        UnreadableFilmError,
        r"Not an image or DICOM file \(first bytes look like unrecognised binary content\)",
    ),
    "pdf": (lambda f, s: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", UnreadableFilmError, r"look like a PDF"),
    "text": (lambda f, s: b"Patient: hand film\nAge: 7\n", UnreadableFilmError, r"look like plain text"),
    "zip": (lambda f, s: _zip_bytes(), UnreadableFilmError, r"ZIP archive: extract the film first"),
    "gif": (lambda f, s: b"GIF89a" + b"\x00" * 64, UnreadableFilmError, r"Unsupported image format \(GIF\)"),
    "truncated-jpeg": (
        lambda f, s: (d := jpeg_bytes(f))[: len(d) // 2],
        UnreadableFilmError,
        r"Truncated or damaged JPEG file",
    ),
    "truncated-native": (
        lambda f, s: (d := make_dicom(s, bits_stored=12))[: len(d) // 2],
        UnreadableFilmError,
        r"Truncated DICOM: pixel data is shorter than the header says",
    ),
    "truncated-jpegls": (
        lambda f, s: (d := make_dicom(s, bits_stored=12, transfer_syntax=JPEGLSLossless))[: len(d) // 2],
        UnreadableFilmError,
        r"Truncated DICOM",
    ),
    "multi-frame": (
        lambda f, s: make_dicom(np.stack([f[:128, :128]] * 12), photometric="MONOCHROME2"),
        UnreadableFilmError,
        r"Multi-frame DICOM \(12 frames\) is not supported: export the single hand film",
    ),
    "no-pixel-data": (
        lambda f, s: make_dicom(None),
        UnreadableFilmError,
        r"DICOM object has no pixel data \(SOP class: Basic Text SR\)",
    ),
    "1x1-png": (
        lambda f, s: png_bytes(np.zeros((1, 1), np.uint8)),
        ImageSizeError,
        r"too small \(1 x 1 pixels\)",
    ),
    "tiny-dicom": (
        lambda f, s: make_dicom(f[:32, :48]),
        ImageSizeError,
        r"too small \(48 x 32 pixels\); each side must be at least 64",
    ),
    "30000x30000-png": (
        lambda f, s: _png_header_only(30000, 30000),
        ImageSizeError,
        r"too large \(30000 x 30000 pixels\); each side must be at most 16384",
    ),
}


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")  # pydicom, truncated files
@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_inputs_give_clear_errors(case: str, film: np.ndarray, stored12: np.ndarray) -> None:
    make, error, message = BAD_INPUTS[case]
    data = make(film, stored12)
    tracemalloc.start()
    try:
        with pytest.raises(error, match=message) as info:
            read_film(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(info.value, BoneAgeError) and isinstance(info.value, ValueError)
    if case == "30000x30000-png":
        assert peak < 5 * 2**20, "the size must be refused from the header, before decoding"


def test_error_message_names_the_upload(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFilmError, match=r"^scan\.pdf: Not an image or DICOM file"):
        read_film(b"%PDF-1.4\n", name="scan.pdf")
    path = tmp_path / "IM000002"
    path.write_bytes(b"")
    with pytest.raises(UnreadableFilmError, match=r"^IM000002: Empty file"):
        read_film(path)


def test_too_many_bytes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, film: np.ndarray) -> None:
    data = png_bytes(film)
    small = dataclasses.replace(get_settings(), max_bytes=len(data) - 1)
    monkeypatch.setattr(film_io, "get_settings", lambda: small)
    path = tmp_path / "film.png"
    path.write_bytes(data)
    for source in (data, io.BytesIO(data), path):
        with pytest.raises(ImageSizeError, match=r"too large .*the limit is"):
            read_film(source)
    monkeypatch.setattr(film_io, "get_settings", lambda: dataclasses.replace(small, max_bytes=len(data)))
    assert read_film(data).pixels.shape == film.shape
