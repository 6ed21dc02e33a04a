"""The pseudonymous key of a film: a keyed hash of the patient identity, never the identity itself.

16 hex characters of an HMAC-SHA256, under the site secret (:mod:`boneage_core.secret`), of PatientID +
PatientName, or, when the film names no patient, of the pixel content. Without the secret a key cannot
be reversed by trying every patient ID; with it, the same child gets the same key on every film.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..secret import keyed_hash

#: Domain of the keyed hash: a new version gives every child a new key.
PURPOSE = "boneage/pseudonym/v2"


def pseudonym(patient_id: str | None, patient_name: str | None, pixels: np.ndarray) -> str:
    """Keyed hash of the patient identity, or of the pixel content when there is none."""
    if patient_id or patient_name:
        material = f"id={patient_id or ''}\x1fname={patient_name or ''}"
    else:
        content = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
        material = f"pixels={content}"
    return keyed_hash(PURPOSE, material.encode("utf-8"))[:16]
