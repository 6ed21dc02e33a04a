"""Sending back: a C-STORE SCU over the outbox of the spool, with retries and a row per attempt.

    sender = Sender(cfg, vault, review)
    sender.queue("sr", sent, peer, film_id=7)     # the object is in the outbox (encrypted), due now
    sender.run_due()                              # one pass: every due job tried once

Each job is tried when due; every attempt appends a :class:`~boneage_core.review.schema.TransferRow`
(direction ``sent``, kind ``sr``/``sc``/``sr-amended``): ``failed`` with the DICOM status
(``0xA700: ...``) or the network error's type, and the job is due again after ``backoff_s * 2**(n-1)``
seconds (at most ``backoff_max_s``); ``sent`` (success or a warning status), and the job is dropped; or,
after ``max_attempts`` failures, ``abandoned``. The job files (:class:`~.vault.Vault`) persist the attempt
count and due time, so a restarted node resumes where it stopped; nothing else is persisted, and the
rows are the record (what was sent, what never will be). An association that cannot be made, a payload
that does not decrypt, a peer that aborts: each is that job's failed attempt, never the node's end.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time

import pydicom
from pynetdicom import AE

from ...review.log import ReviewLog
from ...review.schema import TransferRow
from ...secret import keyed_hash
from .config import NodeConfig, Peer
from .objects import Sent
from .vault import SpoolError, Vault

log = logging.getLogger("boneage.dicom-node")

#: Transfer syntaxes offered for what is sent (the objects are written Explicit VR Little Endian).
_OFFER = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


class Sender:
    """The outbox's sending side (see the module docstring); thread-safe ``queue``, one ``run_due`` at a time."""

    def __init__(self, cfg: NodeConfig, vault: Vault, review: ReviewLog):
        self.cfg, self.vault, self.review = cfg, vault, review
        self._lock = threading.Lock()
        self.wake = threading.Event()

    def queue(
        self, kind: str, sent: Sent, peer: Peer, *, film_id: int | None, reading_id: int | None = None
    ) -> str:
        """Put ``sent`` in the outbox for ``peer``, due now; the job's id."""
        job = {
            "kind": kind,
            "peer": peer.name,
            "address": peer.address,
            "ae_title": peer.ae_title,
            "host": peer.host,
            "port": peer.port,
            "film_id": film_id,
            "reading_id": reading_id,
            "sop_key": keyed_hash("dicom-sop", sent.sop_instance_uid.encode()),
            "sop_class_uid": sent.sop_class_uid,
            "attempt": 0,
            "due": 0.0,
        }
        job_id = self.vault.put_job(job, sent.data)
        self.wake.set()
        return job_id

    def pending_readings(self) -> set[int]:
        """The reading ids of the amended reports still in the outbox."""
        return {j["reading_id"] for j in self.vault.jobs() if j.get("reading_id") is not None}

    def run_due(self, now: float | None = None) -> int:
        """Try every due job once; how many were tried."""
        with self._lock:
            tried = 0
            for job in self.vault.jobs():
                if job.get("due", 0.0) > (now if now is not None else time.time()):
                    continue
                tried += 1
                try:
                    self._attempt(job)
                except Exception as exc:  # the node never stops on one job
                    log.error("dicom-node: an outbox job could not be handled (%s)", type(exc).__name__)
            return tried

    def next_due(self) -> float | None:
        dues = [j.get("due", 0.0) for j in self.vault.jobs()]
        return min(dues) if dues else None

    def _attempt(self, job: dict) -> None:
        attempt = int(job.get("attempt", 0)) + 1
        try:
            data = self.vault.payload(job)
        except SpoolError as exc:
            self._row(job, attempt, "abandoned", f"spool: {exc}")
            self.vault.drop_job(job)
            return
        ok, reason = store(data, job["ae_title"], job["host"], int(job["port"]), self.cfg.ae_title)
        if ok:
            self._row(job, attempt, "sent", reason)
            self.vault.drop_job(job)
            log.info(
                "dicom-node: %s of film %s sent to %s (attempt %d)",
                job["kind"],
                job["film_id"],
                job["peer"],
                attempt,
            )
            return
        if attempt >= self.cfg.max_attempts:
            self._row(job, attempt, "failed", reason)
            self._row(job, attempt, "abandoned", f"abandoned: no success in {attempt} attempts")
            self.vault.drop_job(job)
            log.error(
                "dicom-node: %s of film %s abandoned after %d attempts (%s)",
                job["kind"],
                job["film_id"],
                attempt,
                reason,
            )
            return
        self._row(job, attempt, "failed", reason)
        delay = min(self.cfg.backoff_s * 2 ** (attempt - 1), self.cfg.backoff_max_s)
        job.update(attempt=attempt, due=time.time() + delay)
        self.vault.update_job(job)
        log.warning(
            "dicom-node: %s of film %s to %s failed (%s); retry in %.0f s",
            job["kind"],
            job["film_id"],
            job["peer"],
            reason,
            delay,
        )

    def _row(self, job: dict, attempt: int, status: str, reason: str) -> None:
        with self.review.appending() as tx:
            tx.add(
                TransferRow(
                    film_id=job.get("film_id"),
                    reading_id=job.get("reading_id"),
                    direction="sent",
                    kind=job["kind"],
                    peer=job["address"],
                    sop_key=job.get("sop_key"),
                    status=status,
                    attempt=attempt,
                    reason=reason,
                )
            )


def store(
    data: bytes, ae_title: str, host: str, port: int, calling: str, timeout: float = 30.0
) -> tuple[bool, str]:
    """C-STORE the Part 10 ``data`` to ``ae_title@host:port``: ``(done, reason)``; ``reason`` is a DICOM
    status (``0x0000: success``) or the network problem, worded here (never dataset content)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(ds.SOPClassUID, list(_OFFER))
    try:
        assoc = ae.associate(host, port, ae_title=ae_title)
    except Exception as exc:
        return False, f"network: {type(exc).__name__}"
    if not assoc.is_established:
        what = (
            "rejected"
            if assoc.is_rejected
            else "aborted or unreachable"
            if assoc.is_aborted
            else "not established"
        )
        return False, f"association: {what}"
    try:
        status = assoc.send_c_store(ds)
    except Exception as exc:
        return False, f"network: {type(exc).__name__}"
    finally:
        with contextlib.suppress(Exception):
            assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        return False, "network: no response (timeout or abort)"
    if code == 0x0000:
        return True, "0x0000: success"
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return True, f"0x{code:04X}: warning"
    return False, f"0x{code:04X}: refused by the peer"
