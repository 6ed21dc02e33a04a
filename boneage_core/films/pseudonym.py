"""The pseudonymous key of a film: a salted hash of the patient identity, never the identity itself.

16 hex characters of a sha256 of ``$BONEAGE_PSEUDONYM_SALT`` + PatientID + PatientName, or, when the film
names no patient, of the pixel content.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

_DEFAULT_SALT = "boneage-core/pseudonym/v1"


def pseudonym(patient_id: str | None, patient_name: str | None, pixels: np.ndarray) -> str:
    """Salted hash of the patient identity, or of the pixel content when there is none."""
    salt = os.environ.get("BONEAGE_PSEUDONYM_SALT", _DEFAULT_SALT)
    if patient_id or patient_name:
        material = f"{salt}\x1fid={patient_id or ''}\x1fname={patient_name or ''}"
    else:
        content = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
        material = f"{salt}\x1fpixels={content}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]
