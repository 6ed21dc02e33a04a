"""A simulated hospital archive built from real films: what a PACS export looks like to ``boneage import``.

    archive = build_archive(tmp / "site", train_films, fullres_films)
    archive.root                  # tmp/site/archive: the export itself
    archive.truth_csv             # tmp/site/truth.csv, beside the archive (never inside it)
    archive.expected["FERNANDEZ^PABLO_2231907/20190312_BONE_AGE/SER001_LHAND/IMG00001"]   # "imported"
    archive.hand[path]            # HandFilm(rsna_id, boneage_months, male, sha256, ...) of each RSNA film
    archive.identifiers           # names, IDs, birth dates, UIDs, folder names: none may reach the log

Layout (paths relative to ``archive.root``; folders and files named the way PACS exports name them):

* ``EXPORT/DICOMDIR`` and ``EXPORT/PT000000/ST000000/SE000000/IM00000n``, written by pydicom's
  :class:`~pydicom.fileset.FileSet`: three CR films (explicit and implicit VR little endian, JPEG 2000
  lossless), files without extensions; a fourth referenced file is deleted (``failed:missing``);
* ``FERNANDEZ^PABLO_2231907/.../SER001_LHAND/IMG0000n``: another scanner's look, DX: MONOCHROME1 with
  12-bit stored values and a window, and a full-resolution film stored 16-bit in JPEG 2000; beside them
  a dose report (SR) and a junk file;
* ``NGUYEN^BAOANH_5518820/...``: a CR film without BodyPartExamined, one with ``WRIST``, a CT series of
  the hand (skipped by modality) and a truncated file (``failed:unreadable``);
* ``OKAFOR^CHIDINMA_7730012/...``: a full-resolution DX film, 12-bit JPEG Lossless (GDCM), and a CR
  film whose header says CHEST (skipped by body part);
* ``PETROVA^IRINA_6604418/...``: two scanned films as Secondary Capture (OT), and a scanned request form
  (a rendered page, SC) that is imported but flagged ``not_hand`` by the quality gate;
* ``DOEMANN^ALEXANDER_0099123/...``: a film whose header gives no sex (``skipped:no-sex``);
* ``ZZ_RESEND/...``: the first EXPORT film sent again in JPEG-LS (same SOPInstanceUID, other bytes);
  ``ZZ_COPY/...``: a byte-for-byte copy of a FERNANDEZ film;
* with ``special_files``: a named pipe and a symbolic link (``skipped:not-regular``).

Expected outcomes are ``imported``, ``skipped:<code>`` or ``failed:<code>`` (the codes of
:data:`boneage_core.hospital.summary.REASONS`), for the importer's order (sorted paths: originals sort
before their ``ZZ_`` duplicates). ``truth.csv`` has one row per file: ``path, expected, flag, rsna_id,
boneage_months, male, sex_in_header, sha256`` (``sha256`` of the file's bytes is the imported case's
``Case.sha256``; ``flag`` is ``not_hand`` for the request form).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from dicom_fixtures import gdcm_transcode, make_dicom
from PIL import Image
from pydicom.fileset import FileSet
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

#: Training copies and full-resolution films build_archive needs.
N_TRAIN, N_FULLRES = 10, 2


@dataclass(frozen=True)
class HandFilm:
    """The truth about one archive file that holds an RSNA film."""

    path: str
    rsna_id: str
    boneage_months: float
    male: bool
    #: "M", "F" or None (the no-sex file).
    sex_in_header: str | None
    #: sha256 of the file's bytes: the imported case's ``Case.sha256``.
    sha256: str
    expected: str


@dataclass
class Archive:
    root: Path
    truth_csv: Path
    #: relative path -> "imported" | "skipped:<code>" | "failed:<code>", for every entry the importer meets.
    expected: dict[str, str]
    #: relative path -> truth, for every file holding an RSNA film (imported or not).
    hand: dict[str, HandFilm]
    #: Paths expected imported with the gate's ``not_hand`` flag.
    flagged: set[str]
    #: Strings that identify a patient or a study: none may be stored by an import.
    identifiers: list[str] = field(default_factory=list)

    @property
    def imported(self) -> list[str]:
        return [p for p, e in self.expected.items() if e == "imported"]


@dataclass(frozen=True)
class _Patient:
    name: str
    pid: str
    folder: str
    study_date: dt.date


_PATIENTS = {
    "export": _Patient("MARTINELLI^LEONORA", "MRN-104233", "EXPORT", dt.date(2021, 9, 1)),
    "fernandez": _Patient("FERNANDEZ^PABLO", "2231907", "FERNANDEZ^PABLO_2231907", dt.date(2019, 3, 12)),
    "nguyen": _Patient("NGUYEN^BAOANH", "5518820", "NGUYEN^BAOANH_5518820", dt.date(2020, 7, 4)),
    "okafor": _Patient("OKAFOR^CHIDINMA", "7730012", "OKAFOR^CHIDINMA_7730012", dt.date(2022, 1, 18)),
    "petrova": _Patient("PETROVA^IRINA", "6604418", "PETROVA^IRINA_6604418", dt.date(2018, 11, 30)),
    "doemann": _Patient("DOEMANN^ALEXANDER", "0099123", "DOEMANN^ALEXANDER_0099123", dt.date(2023, 5, 2)),
}


def _labels(film: Path) -> dict[str, dict[str, str]]:
    for folder in (film.parent, film.parent.parent):
        if (folder / "labels.csv").is_file():
            with open(folder / "labels.csv", newline="") as fh:
                return {row["id"]: row for row in csv.DictReader(fh)}
    raise FileNotFoundError(f"no labels.csv beside {film}")


class _Builder:
    def __init__(self, root: Path, seed: int):
        self.root = root
        self.rng = np.random.default_rng(seed)
        self.expected: dict[str, str] = {}
        self.truth: dict[str, tuple[str, dict[str, str], str | None]] = {}  # path -> (id, label row, sex)
        self.flagged: set[str] = set()
        self.identifiers: set[str] = set()
        self.study_uids: dict[str, str] = {}

    def dicom(self, patient: str, pixels: np.ndarray, label: dict | None, *, sex="from-label", **kw) -> bytes:
        """DICOM bytes of ``pixels`` for ``patient``, with a birth date that makes the chronological age
        near the bone age (``label``'s) and the identifiers of a real header."""
        p = _PATIENTS[patient]
        months = float(label["boneage"]) if label else 120.0
        birth = p.study_date - dt.timedelta(days=int(months * 30.4375 + self.rng.integers(-200, 200)))
        if sex == "from-label":
            sex = ("M" if label["male"].strip().lower() == "true" else "F") if label else "F"
        study = self.study_uids.setdefault(patient, generate_uid())
        extra = {
            "StudyInstanceUID": study,
            "SeriesInstanceUID": kw.pop("series_uid", None) or generate_uid(),
            "StudyTime": "101500",
            "StudyID": "1",
            "SeriesNumber": kw.pop("series_number", 1),
            "InstanceNumber": kw.pop("instance", 1),
            "AccessionNumber": f"ACC{p.pid[-5:]}77",
            "InstitutionName": "ST ELSEWHERE CHILDRENS HOSPITAL",
            "ReferringPhysicianName": "WESTPHALL^DONALD",
            **kw.pop("extra", {}),
        }
        data = make_dicom(
            pixels,
            patient_name=p.name,
            patient_id=p.pid,
            sex=sex,
            birth_date=birth,
            study_date=p.study_date,
            extra=extra,
            **kw,
        )
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        sop = str(ds.SOPInstanceUID)
        family, given = p.name.split("^")
        self.identifiers |= {p.name, family, given, p.pid, birth.strftime("%Y%m%d"), sop, study}
        self.identifiers |= {str(ds.SeriesInstanceUID), extra["AccessionNumber"], extra["InstitutionName"]}
        self.identifiers |= {"WESTPHALL", p.study_date.strftime("%Y%m%d")}
        if p.folder != "EXPORT":
            self.identifiers.add(p.folder)
        return data

    def write(self, rel: str, data: bytes, expected: str, truth=None) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.expected[rel] = expected
        if truth is not None:
            self.truth[rel] = truth


def _gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def build_archive(
    root: Path,
    films: Sequence[Path],
    fullres: Sequence[Path],
    *,
    special_files: bool = False,
    seed: int = 0,
) -> Archive:
    """Write the simulated archive (see the module docstring) to ``root / "archive"`` and its truth to
    ``root / "truth.csv"``. ``films``: at least :data:`N_TRAIN` RSNA training copies (299 px), ``fullres``
    at least :data:`N_FULLRES` full-resolution RSNA films, each with its ``labels.csv`` in its folder or
    the one above (``id,boneage,male``)."""
    if len(films) < N_TRAIN or len(fullres) < N_FULLRES:
        raise ValueError(f"build_archive needs {N_TRAIN} training films and {N_FULLRES} full-resolution ones")
    root = Path(root)
    archive = root / "archive"
    if archive.exists():
        shutil.rmtree(archive)
    archive.mkdir(parents=True)
    b = _Builder(archive, seed)
    train = [(f.stem, _labels(f)[f.stem], _gray(f)) for f in films[:N_TRAIN]]
    full = [(f.stem, _labels(f)[f.stem], _gray(f)) for f in fullres[:N_FULLRES]]

    def hand(rel: str, item, data: bytes, expected: str = "imported", sex="from-label") -> None:
        rsna_id, label, _ = item
        if sex == "from-label":
            sex = "M" if label["male"].strip().lower() == "true" else "F"
        b.write(rel, data, expected, (rsna_id, label, sex))

    # EXPORT/: a DICOMDIR file set, three CR films and one referenced file that is then lost
    export = [
        b.dicom("export", train[0][2], train[0][1], instance=1),
        b.dicom("export", train[1][2], train[1][1], instance=2, transfer_syntax=ImplicitVRLittleEndian),
        b.dicom("export", train[2][2], train[2][1], instance=3, transfer_syntax=JPEG2000Lossless),
        b.dicom("export", train[0][2], train[0][1], instance=4),
    ]
    fs = FileSet()
    for data in export:
        fs.add(pydicom.dcmread(io.BytesIO(data)))
    fs.write(archive / "EXPORT")
    by_sop = {}
    for path in sorted((archive / "EXPORT").rglob("IM*")):
        by_sop[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    export_paths = [
        by_sop[str(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).SOPInstanceUID)] for d in export
    ]
    for item, path in zip(train[:3], export_paths[:3], strict=True):
        rel = path.relative_to(archive).as_posix()
        b.expected[rel] = "imported"
        rsna_id, label, _ = item
        b.truth[rel] = (rsna_id, label, "M" if label["male"].strip().lower() == "true" else "F")
    export_paths[3].unlink()
    b.expected[export_paths[3].relative_to(archive).as_posix()] = "failed:missing"
    b.expected["EXPORT/DICOMDIR"] = "skipped:dicomdir"

    # FERNANDEZ: another scanner: DX, MONOCHROME1 12-bit with a window; full resolution 16-bit JPEG 2000
    fz = "FERNANDEZ^PABLO_2231907/20190312_BONE_AGE/SER001_LHAND"
    twelve = train[3][2].astype(np.uint16) * 16 + (train[3][2] >> 4)
    mono1 = b.dicom(
        "fernandez",
        (4095 - twelve).astype(np.uint16),
        train[3][1],
        photometric="MONOCHROME1",
        bits_stored=12,
        window=(2048.0, 4096.0),
        modality="DX",
        body_part="LHAND",
        sop_class=DigitalXRayImageStorageForPresentation,
    )
    hand(f"{fz}/IMG00001", train[3], mono1)
    sixteen = full[0][2].astype(np.uint16) * 257
    hand(
        f"{fz}/IMG00002",
        full[0],
        b.dicom(
            "fernandez",
            sixteen,
            full[0][1],
            bits_stored=16,
            window=(32768.0, 65535.0),
            modality="DX",
            body_part="L HAND",
            laterality="L",
            sop_class=DigitalXRayImageStorageForPresentation,
            transfer_syntax=JPEG2000Lossless,
            instance=2,
        ),
    )
    b.write(
        "FERNANDEZ^PABLO_2231907/20190312_BONE_AGE/SER900_DOSE/SR00001",
        b.dicom("fernandez", None, None),
        "skipped:not-hand-modality",
    )
    b.write("FERNANDEZ^PABLO_2231907/VIEWER/DATA0001", b"JUNK" + b.rng.bytes(4092), "skipped:not-dicom")

    # NGUYEN: CR without body part, CR WRIST, a CT of the hand, a truncated file
    ng = "NGUYEN^BAOANH_5518820/STUDY_20200704"
    hand(f"{ng}/SERIES_1/IMG0001.dcm", train[4], b.dicom("nguyen", train[4][2], train[4][1], body_part=None))
    hand(
        f"{ng}/SERIES_1/IMG0002.dcm",
        train[5],
        b.dicom("nguyen", train[5][2], train[5][1], body_part="WRIST", instance=2),
    )
    b.write(
        f"{ng}/SERIES_2_CT/CT000001.dcm",
        b.dicom(
            "nguyen",
            train[4][2].astype(np.uint16) * 8,
            train[4][1],
            modality="CT",
            sop_class=CTImageStorage,
            rescale=(1.0, -1024.0),
        ),
        "skipped:not-hand-modality",
    )
    whole = b.dicom("nguyen", train[6][2], train[6][1], instance=3)
    b.write(f"{ng}/SERIES_1/IMG0003.dcm", whole[: len(whole) * 6 // 10], "failed:unreadable")

    # OKAFOR: full resolution DX, 12-bit JPEG Lossless; a CR whose header says CHEST
    ok = "OKAFOR^CHIDINMA_7730012/20220118"
    twelve_full = full[1][2].astype(np.uint16) * 16
    lossless = b.dicom(
        "okafor",
        twelve_full,
        full[1][1],
        bits_stored=12,
        modality="DX",
        sop_class=DigitalXRayImageStorageForPresentation,
        transfer_syntax=JPEGLosslessSV1,
    )
    hand(f"{ok}/HAND_PA/IM0001", full[1], lossless)
    b.write(
        f"{ok}/CHEST_PA/IM0001",
        b.dicom("okafor", train[7][2], train[7][1], body_part="CHEST"),
        "skipped:not-hand-body-part",
    )

    # PETROVA: scanned films (Secondary Capture, OT) and a scanned request form
    pv = "PETROVA^IRINA_6604418/SCANNED"
    for i, item in enumerate(train[7:9]):
        data = b.dicom(
            "petrova", item[2], item[1], modality="OT", sop_class=SecondaryCaptureImageStorage, body_part=None
        )
        hand(f"{pv}/FILM{i + 1:04d}", item, data)
    from boneage_core.training.nonhand import nonhand_images

    page = nonhand_images(n_per_kind=1, seed=seed + 5)["document"][0]
    form = b.dicom(
        "petrova", page, None, modality="OT", sop_class=SecondaryCaptureImageStorage, body_part=None
    )
    b.write(f"{pv}/REQUEST0001", form, "imported")
    b.flagged.add(f"{pv}/REQUEST0001")

    # DOEMANN: no sex in the header
    hand(
        "DOEMANN^ALEXANDER_0099123/20230502/IM0001",
        train[9],
        b.dicom("doemann", train[9][2], train[9][1], sex=None),
        "skipped:no-sex",
        sex=None,
    )

    # duplicates: the same image in JPEG-LS (same SOPInstanceUID), and the same bytes
    resend = gdcm_transcode(export_paths[0].read_bytes(), JPEGLSLossless)
    hand("ZZ_RESEND/MARTINELLI/IM0001", train[0], resend, "skipped:duplicate-sop")
    hand("ZZ_COPY/IMG00001", train[3], mono1, "skipped:duplicate-bytes")

    if special_files:
        os.mkfifo(archive / fz / "PIPE")
        b.expected[f"{fz}/PIPE"] = "skipped:not-regular"
        (archive / "ZZ_LINK").symlink_to(archive / fz / "IMG00001")
        b.expected["ZZ_LINK"] = "skipped:not-regular"

    hands = {}
    for rel, (rsna_id, label, sex) in b.truth.items():
        sha = hashlib.sha256((archive / rel).read_bytes()).hexdigest()
        hands[rel] = HandFilm(
            path=rel,
            rsna_id=rsna_id,
            boneage_months=float(label["boneage"]),
            male=label["male"].strip().lower() == "true",
            sex_in_header=sex,
            sha256=sha,
            expected=b.expected[rel],
        )
    truth_csv = root / "truth.csv"
    with open(truth_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["path", "expected", "flag", "rsna_id", "boneage_months", "male", "sex_in_header", "sha256"]
        )
        for rel in sorted(b.expected):
            h = hands.get(rel)
            sha = ""
            if (archive / rel).is_file() and not (archive / rel).is_symlink():
                sha = hashlib.sha256((archive / rel).read_bytes()).hexdigest()
            w.writerow(
                [
                    rel,
                    b.expected[rel],
                    "not_hand" if rel in b.flagged else "",
                    h.rsna_id if h else "",
                    h.boneage_months if h else "",
                    h.male if h else "",
                    (h.sex_in_header or "") if h else "",
                    sha,
                ]
            )
    return Archive(
        root=archive,
        truth_csv=truth_csv,
        expected=dict(sorted(b.expected.items())),
        hand=hands,
        flagged=b.flagged,
        identifiers=sorted(i for i in b.identifiers if i),
    )
