"""Helpers for the DICOM node's tests: a free port, a destination Storage SCP (pynetdicom) that keeps what
it receives, hand films as DICOM bytes with a real header's identifiers (:mod:`hospital_fixtures`), the
node built on the fast model, and the checks that no identifier leaked."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from hospital_fixtures import _Builder
from PIL import Image
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], object], timeout: float = 120.0, step: float = 0.2):
    """``check()``'s first truthy value within ``timeout`` seconds (AssertionError otherwise)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {timeout:.0f} s")


class Destination:
    """A pynetdicom Storage SCP (the PACS of the tests): ``received`` holds every dataset stored."""

    def __init__(self, ae_title: str = "DEST"):
        self.ae = AE(ae_title=ae_title)
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.received: list[pydicom.Dataset] = []
        self._lock = threading.Lock()
        self._server = None

    def start(self, port: int) -> Destination:
        self._server = self.ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        return self

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            self.received.append(ds)
        return 0x0000

    def of(self, modality: str) -> list[pydicom.Dataset]:
        with self._lock:
            return [d for d in self.received if d.Modality == modality]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def hand_films(rsna_train: Path, root: Path, n: int = 3, patient: str = "export"):
    """``(builder, [(dicom bytes, label row)])``: ``n`` real films with a real header (``builder.identifiers``
        holds every name, ID, date and UID they carry). Children of 5 to 16 years: the quality gate takes some
    infants' films for something else than a hand."""
    import csv

    with open(rsna_train / "labels.csv", newline="") as fh:
        labels = [r for r in csv.DictReader(fh) if 60 <= float(r["boneage"]) <= 200][:n]  # no infants
    builder = _Builder(root, seed=11)
    out = []
    for row in labels:
        pixels = np.asarray(Image.open(rsna_train / "images" / f"{row['id']}.jpg").convert("L"))
        out.append((builder.dicom(patient, pixels, row), row))
    return builder, out


def dataset(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def sr_items(ds: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    """The SR's content items by concept code value (``37362-1``, ``MODEL-VERSION``, ``121112``...)."""
    return {item.ConceptNameCodeSequence[0].CodeValue: item for item in ds.ContentSequence}


def sr_number(ds: pydicom.Dataset, code: str) -> float:
    return float(sr_items(ds)[code].MeasuredValueSequence[0].NumericValue)


def sr_text(ds: pydicom.Dataset, code: str) -> str:
    return str(sr_items(ds)[code].TextValue)


def leaks(identifiers: set[str], blobs: dict[str, bytes]) -> list[str]:
    """``where: identifier`` for every identifier found in one of ``blobs`` (raw bytes, case-insensitive)."""
    found = []
    for where, blob in blobs.items():
        low = blob.lower()
        found += [f"{where}: {i}" for i in sorted(identifiers) if len(i) >= 4 and i.lower().encode() in low]
    return found


def log_files(db: Path) -> dict[str, bytes]:
    """The review log's files (database, WAL, anchor) as bytes."""
    return {p.name: p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file()}


def log_contents(review) -> dict[str, bytes]:
    """Everything the review log holds: its files (SQLite: database, WAL, anchor), or on PostgreSQL every
    row of every table as text, and the anchor."""
    from sqlalchemy import text

    from boneage_core.review.schema import Base

    if review.path is not None:
        return log_files(review.path)
    out = {}
    with review.engine.connect() as conn:
        for table in Base.metadata.tables:
            rows = conn.execute(text(f"SELECT * FROM {table}")).fetchall()
            out[table] = "\n".join(repr(tuple(r)) for r in rows).encode()
    if review.anchor.is_file():
        out["anchor"] = review.anchor.read_bytes()
    return out


def node_traces(review, spool: Path, capfd, caplog) -> dict[str, bytes]:
    """Everything a node run leaves behind outside what goes to the PACS: the log's content, the spool's
    plain files, stdout, stderr and the logging records (``capfd`` is read, so call it once, at the end)."""
    out, err = capfd.readouterr()
    return {
        **log_contents(review),
        **plain_spool_files(spool),
        "stdout": out.encode(),
        "stderr": err.encode(),
        "logging": caplog.text.encode(),
    }


def plain_spool_files(spool: Path) -> dict[str, bytes]:
    """The spool's files that are not encrypted (everything but ``*.enc``)."""
    return {
        str(p.relative_to(spool)): p.read_bytes()
        for p in spool.rglob("*")
        if p.is_file() and p.suffix != ".enc"
    }
