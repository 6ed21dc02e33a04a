"""The node's Storage SCP: which associations and images it accepts, and the fast C-STORE handler.

Negotiation: the Verification class (C-ECHO) and the storage classes of
:data:`~boneage_core.hospital.header.HAND_SOP_CLASSES` (CR, DX for presentation, Secondary Capture and
its grayscale multi-frame classes), each in :data:`TRANSFER_SYNTAXES`; any other abstract syntax (CT,
MR, DX for processing, SR...) is refused at negotiation, so its C-STORE never starts. With
``require_called_ae`` an association calling another AE title is rejected; with ``allowed_calling_aes``
only those callers are accepted.

The C-STORE handler only checks and spools, then returns:

* the header, read bounded (:func:`~boneage_core.hospital.header.peek_header`): unparseable ->
  ``0xC000``; a SOP class other than the context's -> ``0xA900``; not a hand by the importer's rules
  (:func:`~boneage_core.hospital.header.not_a_hand`: modality, BodyPartExamined) -> ``0xC000``, with an
  ErrorComment worded here;
* the dataset as received, encrypted into the spool (:meth:`~.vault.Vault.put_incoming`), then put on the
  bounded queue; a full queue -> ``0xA700`` (out of resources) and the spooled file is dropped.

Every refusal appends a ``skipped`` :class:`~boneage_core.review.schema.TransferRow` (the received row
is written by the worker once the film is analysed). Nothing of the header is logged but its keyed SOP
key; the peer is named by its AE title and address.
"""

from __future__ import annotations

import json
import logging
import queue
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from ...review.log import ReviewLog
from ...review.schema import TransferRow
from ...secret import keyed_hash
from ...settings import get_settings
from ..header import HAND_SOP_CLASSES, not_a_hand, peek_header
from .config import NodeConfig
from .vault import Vault

log = logging.getLogger("boneage.dicom-node")

TRANSFER_SYNTAXES = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
#: C-STORE statuses (PS3.4 B.2.3): success, out of resources, data set does not match SOP class, cannot understand.
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
NOT_MATCHING = 0xA900
CANNOT_UNDERSTAND = 0xC000


def make_ae(cfg: NodeConfig) -> AE:
    """The SCP's application entity, its contexts and association rules set (see the module docstring)."""
    ae = AE(ae_title=cfg.ae_title)
    ae.add_supported_context(Verification)
    for uid in sorted(HAND_SOP_CLASSES):
        ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
    ae.require_called_aet = cfg.require_called_ae
    if cfg.allowed_calling_aes:
        ae.require_calling_aet = list(cfg.allowed_calling_aes)
    ae.maximum_associations = 16
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    return ae


class Receiver:
    """The event handlers of the SCP; spooled films go on ``inbox`` as ``Path``."""

    def __init__(self, cfg: NodeConfig, vault: Vault, review: ReviewLog, inbox: queue.Queue):
        self.cfg, self.vault, self.review, self.inbox = cfg, vault, review, inbox
        self.limit = get_settings().max_bytes

    def handlers(self) -> list:
        return [(evt.EVT_C_ECHO, self.on_echo), (evt.EVT_C_STORE, self.on_store)]

    @staticmethod
    def on_echo(event) -> int:
        return SUCCESS

    def on_store(self, event) -> int | Dataset:
        try:
            return self._store(event)
        except Exception as exc:  # never the association's end: a failure status
            log.error("dicom-node: a C-STORE could not be handled (%s)", type(exc).__name__)
            return _status(0xC001, "the node could not handle the image")

    def _store(self, event) -> int | Dataset:
        who = event.assoc.requestor
        peer = f"{who.ae_title}@{who.address}:{who.port}"
        data = event.encoded_dataset(include_meta=True)
        if len(data) > self.limit:
            return self._refuse(
                peer, None, OUT_OF_RESOURCES, "too-large", "the image is larger than the limit"
            )
        header = peek_header(data, self.limit)
        if header is None:
            return self._refuse(
                peer, None, CANNOT_UNDERSTAND, "unreadable-header", "the header cannot be parsed"
            )
        uid = header.sop_instance_uid or ""
        sop_key = keyed_hash("dicom-sop", uid.encode("utf-8", "replace")) if uid else None
        if header.sop_class_uid and header.sop_class_uid != event.context.abstract_syntax:
            return self._refuse(
                peer, sop_key, NOT_MATCHING, "sop-class-mismatch", "the SOP class is not the context's"
            )
        refused = not_a_hand(header)
        if refused is not None:
            return self._refuse(peer, sop_key, CANNOT_UNDERSTAND, *refused)
        meta = json.dumps({"peer": peer, "sop_key": sop_key}).encode()
        path = self.vault.put_incoming(meta + b"\n" + data)
        try:
            self.inbox.put_nowait(path)
        except queue.Full:
            Path(path).unlink(missing_ok=True)
            log.warning("dicom-node: queue full (%d films), C-STORE answered 0xA700", self.cfg.queue_size)
            return self._refuse(
                peer, sop_key, OUT_OF_RESOURCES, "queue-full", "the node's queue is full, send later"
            )
        return SUCCESS

    def _refuse(self, peer: str, sop_key: str | None, code: int, reason: str, message: str) -> Dataset:
        log.info("dicom-node: C-STORE from %s refused: 0x%04X %s", peer, code, reason)
        try:
            with self.review.appending() as tx:
                tx.add(
                    TransferRow(
                        direction="received",
                        kind="image",
                        peer=peer[:200],
                        sop_key=sop_key,
                        status="skipped",
                        attempt=1,
                        reason=f"{reason}: 0x{code:04X} {message}",
                    )
                )
        except Exception as exc:
            log.error("dicom-node: the refusal could not be logged (%s)", type(exc).__name__)
        return _status(code, message)


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds
