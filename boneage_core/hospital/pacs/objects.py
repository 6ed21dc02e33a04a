"""The objects the node sends back to the PACS, built with highdicom in the film's own study.

* :func:`build_sr`: a Comprehensive SR (new series, same patient and study modules as the film, taken
  from its return header by highdicom). Its root container (LOINC 18748-4 "Diagnostic imaging report")
  holds, as CONTAINS children:

  - NUM LOINC 37362-1 "Bone age", months (UCUM ``mo``): the model's estimate; in an amended report, the
    reader's bone age, and the model's estimate as NUM ``99BONEAGE MODEL-BA``;
  - NUM ``99BONEAGE BA-LOW`` / ``BA-HIGH`` (months) and ``BA-LEVEL`` (UCUM ``%``): the interval;
  - NUM LOINC 30525-0 "Age" (months): the chronological age; NUM ``GP-SD`` (months), ``Z`` (UCUM ``1``)
    and TEXT ``CATEGORY``: the Greulich-Pyle interpretation (:mod:`boneage_core.clinical.greulich_pyle`);
  - TEXT ``QUALITY-FLAGS`` (``;``-separated, ``none`` when fit to read), ``MODEL-VERSION``,
    ``WEIGHTS-SHA256``, ``PREPROCESS``, ``NOTICE`` ("research use, not for diagnosis");
  - IMAGE DCM 121112 "Source of Measurement": the film's SOP class and instance UIDs;
  - amended only: PNAME DCM 121008 "Person Observer Name" (the reader's account), DATETIME DCM 111526
    "DateTime Started" (the reading's time, UTC), TEXT ``READER-ACTION`` (confirmed/corrected); the
    document is VERIFIED with the reader as verifying observer, and its PredecessorDocumentsSequence
    names the report it amends.

  Figures missing from the log (no interval, no chronological age) are left out, never invented.
* :func:`build_sc`: a Secondary Capture (:func:`burn.burned_picture`, RGB), BurnedInAnnotation YES,
  SeriesDescription "boneage overlay - research use, not for diagnosis".

Both are returned as Part 10 bytes (Explicit VR Little Endian) with their :class:`Sent` UIDs.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ...clinical.greulich_pyle import interpret
from ...review.schema import Case
from .burn import NOTICE, burned_picture

SCHEME = "99BONEAGE"
BONE_AGE = Code("37362-1", "LN", "Bone age")
_MONTHS = Code("mo", "UCUM", "month")
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
SC_DESCRIPTION = f"boneage overlay - {NOTICE}"
SR_DESCRIPTION = f"boneage report - {NOTICE}"
AMENDED_DESCRIPTION = f"boneage reading - {NOTICE}"


def _code(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


@dataclass(frozen=True)
class Sent:
    """One object built: its bytes and UIDs (the UIDs identify the study: never logged, only keyed)."""

    data: bytes
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str

    def reference(self) -> dict:
        return {
            "sop_class_uid": self.sop_class_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "study_instance_uid": self.study_instance_uid,
        }


@dataclass(frozen=True)
class Amendment:
    """A reader's reading of the case (from the log's ``readings`` row)."""

    reader: str
    months: float
    action: str
    at: dt.datetime


def build_sr(
    header: Dataset,
    case: Case,
    *,
    manufacturer: str,
    amendment: Amendment | None = None,
    predecessor: dict | None = None,
    instance_number: int = 1,
) -> Sent:
    """The report (see the module docstring) for ``case`` in the study of ``header``."""
    import highdicom as hd

    def num(name, value, unit=_MONTHS):
        return hd.sr.NumContentItem(name=name, value=float(value), unit=unit, relationship_type="CONTAINS")

    def text(name, value):
        return hd.sr.TextContentItem(name=name, value=str(value), relationship_type="CONTAINS")

    months = case.predicted_months
    items = []
    if amendment is None:
        items.append(num(BONE_AGE, months))
    else:
        items += [num(BONE_AGE, amendment.months), num(_code("MODEL-BA", "Bone age, model estimate"), months)]
    if case.interval_low_months is not None and case.interval_high_months is not None:
        items += [
            num(_code("BA-LOW", "Bone age interval, lower limit"), case.interval_low_months),
            num(_code("BA-HIGH", "Bone age interval, upper limit"), case.interval_high_months),
        ]
        if case.interval_level is not None:
            items.append(
                num(
                    _code("BA-LEVEL", "Bone age interval, level"),
                    100 * case.interval_level,
                    Code("%", "UCUM", "%"),
                )
            )
    gp = interpret(amendment.months if amendment else months, case.chronological_age_months, case.sex)
    if case.chronological_age_months is not None:
        items.append(num(Code("30525-0", "LN", "Age"), case.chronological_age_months))
    if gp.gp_sd_months is not None:
        items.append(num(_code("GP-SD", "Greulich-Pyle SD at the chronological age"), gp.gp_sd_months))
    if gp.z_score is not None:
        items.append(num(_code("Z", "Bone age z-score"), gp.z_score, Code("1", "UCUM", "no units")))
    items += [
        text(_code("CATEGORY", "Bone age category"), gp.category),
        text(_code("QUALITY-FLAGS", "Quality flags"), ";".join(case.quality_flags or ()) or "none"),
        text(_code("MODEL-VERSION", "Model version"), case.model_version or "unknown"),
        text(_code("WEIGHTS-SHA256", "Model weights sha256"), case.weights_sha256 or "unknown"),
        text(_code("PREPROCESS", "Preprocessing"), case.preprocess or "unknown"),
        text(_code("NOTICE", "Notice"), NOTICE),
        hd.sr.ImageContentItem(
            name=Code("121112", "DCM", "Source of Measurement"),
            referenced_sop_class_uid=header.SOPClassUID,
            referenced_sop_instance_uid=header.SOPInstanceUID,
            relationship_type="CONTAINS",
        ),
    ]
    if amendment is not None:
        items += [
            hd.sr.PnameContentItem(
                name=Code("121008", "DCM", "Person Observer Name"),
                value=_person(amendment.reader),
                relationship_type="CONTAINS",
            ),
            hd.sr.DateTimeContentItem(
                name=Code("111526", "DCM", "DateTime Started"),
                value=amendment.at,
                relationship_type="CONTAINS",
            ),
            text(_code("READER-ACTION", "Reader's action"), amendment.action),
        ]
    root = hd.sr.ContainerContentItem(name=Code("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = items
    series = generate_uid()
    previous = None
    if predecessor is not None:
        prev = Dataset()
        prev.StudyInstanceUID = predecessor["study_instance_uid"]
        prev.SeriesInstanceUID = predecessor["series_instance_uid"]
        prev.SOPClassUID = predecessor["sop_class_uid"]
        prev.SOPInstanceUID = predecessor["sop_instance_uid"]
        previous = [prev]
    sr = hd.sr.ComprehensiveSR(
        evidence=[_evidence(header)],
        content=root,
        series_instance_uid=series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=amendment is not None,
        is_verified=amendment is not None,
        verifying_observer_name=_person(amendment.reader) if amendment else None,
        verifying_organization=manufacturer if amendment else None,
        previous_versions=previous,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    sr.SeriesDescription = AMENDED_DESCRIPTION if amendment else SR_DESCRIPTION
    return _sent(sr)


def build_sc(
    header: Dataset,
    pixels: np.ndarray,
    mask: np.ndarray | None,
    heat: np.ndarray | None,
    *,
    label: str,
    manufacturer: str,
) -> Sent:
    """The secondary capture of the film (see the module docstring)."""
    import highdicom as hd

    picture = burned_picture(pixels, mask, heat, label=label)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=_evidence(header),
        pixel_array=picture,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=generate_uid(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        patient_orientation=("A", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = SC_DESCRIPTION
    sc.ImageComments = NOTICE
    return _sent(sc)


def _person(account: str) -> str:
    """An account name as a one-component person name (``alice^``): the family-name group, nothing more."""
    return account.replace("^", " ").replace("=", " ")[:60] + "^"


def _evidence(header: Dataset) -> Dataset:
    """The return header with the attributes highdicom expects of a study's instance, empty when absent."""
    ds = Dataset()
    ds.update(header)
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
    ):
        if keyword not in ds:
            setattr(ds, keyword, None)
    if "SeriesInstanceUID" not in ds:
        ds.SeriesInstanceUID = generate_uid()
    return ds


def _sent(ds) -> Sent:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return Sent(
        data=buf.getvalue(),
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
    )
