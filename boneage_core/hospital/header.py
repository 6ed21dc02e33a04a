"""What the importer reads from a DICOM header before decoding anything, and whether it may be a hand film.

:func:`peek_header` parses the header of an archive file in this process, bounded: a Deflate dataset is
first checked to inflate within ``settings.max_bytes`` (:func:`boneage_core.films.codestream.check_inflation`),
parsing stops before the pixel data, only the few attributes below are kept, and any failure gives None
(the film's own reading, in the decoder sandbox, then decides). pydicom is pure Python: a hostile header
can make it raise, not crash.

:func:`not_a_hand` is the importer's filter on that header: DICOMDIRs, other SOP classes and modalities
(CT, MR, US, SR, PR, KO, ...), and a BodyPartExamined that names another part of the body. An absent or
uninformative value never excludes a film; the quality gate reads the pixels afterwards.

The :class:`Header` holds the SOPInstanceUID, an identifier: it is only ever keyed
(``keyed_hash("import-sop", uid)``), never stored or printed. Reasons are worded here, never copied
from the header (a modality is named only when it is one of :data:`KNOWN_MODALITIES`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import pydicom

from ..errors import UnreadableFilmError
from ..films.codestream import check_inflation
from ..films.metadata import tag_text

#: The DICOMDIR's SOP class (Media Storage Directory Storage).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: DX Image for processing: the detector's raw values, sent beside the image for presentation.
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
#: Radiography: CR Image, DX Image for presentation, and Secondary Capture (single-frame, and the grayscale
#: multi-frame classes, which a scanned film may use with one frame).
HAND_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
    }
)
#: Modalities a hand radiograph may come with: CR, DX, RG (digitised film/screen), OT (secondary
#: captures), and the non-standard DR, XR and SC that some systems write.
HAND_MODALITIES = frozenset({"CR", "DX", "RG", "OT", "DR", "XR", "SC"})
#: Modality defined terms (PS3.3 C.7.3.1.1.1) a reason may name, because they come from this list.
_MODALITY_TERMS = (
    "AR ASMT AU BDUS BI BMD CT CTPROTOCOL DG DOC ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS MG "
    "MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS PLAN PR PT PX REG RESP RF RT RTDOSE RTIMAGE RTPLAN "
    "RTRECORD RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XC"
)
KNOWN_MODALITIES = frozenset(_MODALITY_TERMS.split())
#: BodyPartExamined values (letters only, upper case) that may be a bone-age film: the DICOM defined terms
#: HAND, WRIST, FINGER, THUMB as substrings, so that LHAND, HAND LT, HANDS, BONE AGE or HAND_WRIST pass,
#: and the same words in French, Spanish, Italian and German (HANDGELENK has HAND).
_HAND_WORDS = (
    "HAND",
    "WRIST",
    "FINGER",
    "THUMB",
    "CARP",
    "PHALAN",
    "BONEAGE",
    "MAIN",
    "POIGNET",
    "MANO",
    "MUNECA",
    "POLSO",
)
#: The whole upper limb (not a lower one): such a film may show the hand.
_UPPER_LIMB = frozenset({"EXTREMITY", "EXTREMITIES", "UPPEREXTREMITY", "UPREXTREMITY", "UPPERLIMB"})
#: Values that say nothing about the body part: treated as absent.
_UNINFORMATIVE = frozenset({"", "OTHER", "UNKNOWN", "NONE", "NA", "ANY", "BODY", "XRAY", "DEFAULT"})


@dataclass(frozen=True)
class Header:
    """The attributes the importer decides on (None when absent). ``sop_instance_uid`` identifies the
    image: only its keyed hash leaves this object."""

    sop_instance_uid: str | None
    sop_class_uid: str | None
    modality: str | None
    body_part: str | None
    #: "M", "F" or None.
    sex: str | None


_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "BodyPartExamined",
    "PatientSex",
]


def peek_header(data: bytes, limit: int) -> Header | None:
    """The :class:`Header` of DICOM bytes, or None when it cannot be parsed (see the module docstring)."""
    if data[:4] == b"DICM":  # "DICM" without its 128-byte preamble
        data = bytes(128) + data
    try:
        check_inflation(data, limit)
        ds = pydicom.dcmread(
            io.BytesIO(data),
            force=True,
            stop_before_pixels=True,
            specific_tags=[*_TAGS, "SpecificCharacterSet"],
        )
        meta = getattr(ds, "file_meta", None)
        sop_class = tag_text(ds.get("SOPClassUID")) or (
            tag_text(meta.get("MediaStorageSOPClassUID")) if meta is not None else None
        )
        sop_uid = tag_text(ds.get("SOPInstanceUID")) or (
            tag_text(meta.get("MediaStorageSOPInstanceUID")) if meta is not None else None
        )
        sex = (tag_text(ds.get("PatientSex")) or "").upper()
        return Header(
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            modality=(tag_text(ds.get("Modality")) or "").upper() or None,
            body_part=tag_text(ds.get("BodyPartExamined")),
            sex=sex if sex in ("M", "F") else None,
        )
    except (UnreadableFilmError, RecursionError, MemoryError):
        return None
    except Exception:  # whatever pydicom raises on a damaged header
        return None


def not_a_hand(header: Header) -> tuple[str, str] | None:
    """``(code, message)`` when the header says this is not a hand radiograph, else None.

    Codes: ``dicomdir``, ``not-hand-modality`` (a SOP class or modality that is not radiography),
    ``not-hand-body-part`` (a BodyPartExamined naming another part of the body).
    """
    if header.sop_class_uid == DICOMDIR_SOP_CLASS:
        return "dicomdir", "a DICOMDIR (the archive's index), not an image"
    modality = header.modality
    if modality and modality not in HAND_MODALITIES:
        what = f"modality {modality}" if modality in KNOWN_MODALITIES else "another modality"
        return "not-hand-modality", f"{what}, not a radiograph"
    if header.sop_class_uid == DX_FOR_PROCESSING:
        return "not-hand-modality", "a DX image for processing (raw detector values), not for presentation"
    if header.sop_class_uid and header.sop_class_uid not in HAND_SOP_CLASSES:
        return "not-hand-modality", "a SOP class other than CR, DX or Secondary Capture images"
    if not is_hand_body_part(header.body_part):
        return "not-hand-body-part", "the header's BodyPartExamined names another part than the hand or wrist"
    return None


def is_hand_body_part(value: str | None) -> bool:
    """True unless ``value`` names a body part other than the hand or wrist (absent or vague: True)."""
    letters = re.sub(r"[^A-Z]", "", (value or "").upper())
    if letters in _UNINFORMATIVE or letters in _UPPER_LIMB:
        return True
    return any(word in letters for word in _HAND_WORDS)
