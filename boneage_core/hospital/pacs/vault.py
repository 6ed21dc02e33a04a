"""The node's spool on disk: everything that holds an identifier is encrypted at rest.

Layout under ``spool_dir`` (folders mode 0700, files 0600, written atomically)::

    incoming/<random>.enc          a film as received (Part 10 bytes), until the worker has read it
    headers/<key>.enc              the film's return header (below), ``key = keyed_hash("dicom-return", sha256)``
    outbox/<job>.json              a send still to be made: kind, peer, film and reading ids, attempt, due time
    outbox/<job>.enc               the object to send (an SR or SC, which carries the patient module)

The ``.json`` files hold no identifier (ids of the review log, keyed hashes, peer names). The ``.enc``
files are AES-256-GCM (``cryptography``) under a key derived from the site secret with a purpose of its
own (``keyed_hash("dicom-node/spool-key/v1", b"")``), a random 96-bit nonce per file, and the file's role
as associated data (a header cannot be swapped for an outbox payload). A file that fails to decrypt
(tampered, another site's secret) raises :class:`SpoolError`.

The **return header** is the minimal subset of the film's header the PACS needs to file what comes back
(:data:`RETURN_TAGS`: patient, study, accession, referring physician, the source's series and SOP UIDs),
plus the UIDs of the last report sent for the film (the predecessor of an amended one). It is kept
``retention_days`` (:meth:`Vault.purge`), then no amended report can be sent for the film.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path

from pydicom.dataset import Dataset

from ...errors import BoneAgeError
from ...secret import keyed_hash

#: The header attributes kept to build the objects sent back (PS3.3 patient, general study, the source).
RETURN_TAGS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "SeriesInstanceUID",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "Laterality",
    "ImageLaterality",
    "BodyPartExamined",
)


class SpoolError(BoneAgeError):
    """A spool file that cannot be read back (missing, tampered, another site's secret)."""


def _key() -> bytes:
    return bytes.fromhex(keyed_hash("dicom-node/spool-key/v1", b""))


def seal(data: bytes, role: str) -> bytes:
    """``nonce || AES-256-GCM(data)`` with ``role`` as associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_key()).encrypt(nonce, data, role.encode())


def unseal(blob: bytes, role: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(_key()).decrypt(blob[:12], blob[12:], role.encode())
    except (InvalidTag, ValueError) as exc:
        raise SpoolError(f"a spool file ({role}) does not decrypt under this site's secret") from exc


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def return_header(ds: Dataset) -> Dataset:
    """The :data:`RETURN_TAGS` of ``ds`` (a received film's dataset), nothing else."""
    out = Dataset()
    for keyword in RETURN_TAGS:
        if keyword in ds:
            out[keyword] = ds[keyword]
    return out


class Vault:
    """The spool at ``root`` (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        for sub in ("incoming", "headers", "outbox"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.root / sub, 0o700)

    # ---- films as received
    def put_incoming(self, data: bytes) -> Path:
        path = self.root / "incoming" / f"{time.time_ns():020d}-{secrets.token_hex(4)}.enc"
        write_private(path, seal(data, "incoming"))
        return path

    def incoming(self) -> list[Path]:
        """The films received and not yet analysed, oldest first (a restart queues them again)."""
        return sorted((self.root / "incoming").glob("*.enc"))

    @staticmethod
    def read_incoming(path: Path) -> bytes:
        return unseal(path.read_bytes(), "incoming")

    # ---- return headers
    def header_path(self, film_sha256: str) -> Path:
        return self.root / "headers" / f"{keyed_hash('dicom-return', film_sha256.encode())}.enc"

    def put_header(self, film_sha256: str, header: Dataset, last_report: dict | None = None) -> None:
        """Keep the film's return header (and the UIDs of the last report sent for it)."""
        record = {"header": header.to_json_dict(), "last_report": last_report, "saved": time.time()}
        write_private(self.header_path(film_sha256), seal(json.dumps(record).encode(), "header"))

    def get_header(self, film_sha256: str) -> tuple[Dataset, dict | None] | None:
        """``(return header, last report's UIDs)``, or None when the node has none (or it was purged)."""
        path = self.header_path(film_sha256)
        if not path.is_file():
            return None
        record = json.loads(unseal(path.read_bytes(), "header"))
        return Dataset.from_json(record["header"]), record.get("last_report")

    def purge(self, retention_days: float, now: float | None = None) -> int:
        """Delete the return headers older than ``retention_days`` (by modification time): how many."""
        limit = (now if now is not None else time.time()) - retention_days * 86400
        n = 0
        for path in (self.root / "headers").glob("*.enc"):
            if path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)
                n += 1
        return n

    # ---- the outbox
    def put_job(self, job: dict, payload: bytes) -> str:
        """Queue one send: the payload (encrypted) first, then its job file (the job exists once both do)."""
        job_id = job.setdefault("id", f"{time.time_ns():020d}-{secrets.token_hex(4)}")
        write_private(self.root / "outbox" / f"{job_id}.enc", seal(payload, "outbox"))
        self.update_job(job)
        return job_id

    def update_job(self, job: dict) -> None:
        write_private(self.root / "outbox" / f"{job['id']}.json", json.dumps(job, sort_keys=True).encode())

    def jobs(self) -> list[dict]:
        """Every queued send, oldest first (jobs whose files are unreadable are left for a look by hand)."""
        out = []
        for path in sorted((self.root / "outbox").glob("*.json")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return out

    def payload(self, job: dict) -> bytes:
        path = self.root / "outbox" / f"{job['id']}.enc"
        if not path.is_file():
            raise SpoolError("an outbox job has lost its payload")
        return unseal(path.read_bytes(), "outbox")

    def drop_job(self, job: dict) -> None:
        for ext in (".json", ".enc"):
            (self.root / "outbox" / f"{job['id']}{ext}").unlink(missing_ok=True)
