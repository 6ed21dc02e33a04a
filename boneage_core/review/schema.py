"""The review log's tables and row types: films, segmentations, mask decisions, predictions, readings,
the log's own events, the reader accounts' history, and the hash chain over all of them.

Every table only grows (:data:`APPEND_ONLY`; :mod:`boneage_core.review.chain` holds the triggers that
refuse UPDATE, DELETE, REPLACE and upserts). Every row of a :data:`CHAINED` table has one entry in
``log_chain`` (:class:`ChainRow`): the previous entry's MAC and an HMAC over the row's content and that
MAC, keyed by the site secret. Times are naive UTC. A film is known by the sha256 of its bytes and its
pseudonymous key; no names, patient IDs or dates of birth. Masks are stored at film size as 1-bit PNGs
(:func:`mask_to_png`, :func:`png_to_mask`: HW bool in and out). :class:`Case` is one film with the
latest of everything recorded about it.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..errors import BoneAgeError

#: The tables of the reading itself (films, masks, decisions, estimates, readings).
LOG_TABLES = (
    "films",
    "segmentations",
    "mask_decisions",
    "predictions",
    "readings",
    "prediction_details",
    "reading_details",
    "imports",
    "dicom_transfers",
)
#: Tables whose every row is in the hash chain, in the order a migration chains them.
CHAINED = (*LOG_TABLES, "log_events", "account_events")
#: Tables that only ever grow: every chained table and the chain itself.
APPEND_ONLY = (*CHAINED, "log_chain")
MASK_DECISIONS = ("accepted", "rejected")
READING_ACTIONS = ("confirmed", "corrected")
#: Plausible bone ages, months (0 to 20 years).
MONTHS_RANGE = (0.0, 240.0)


class ReviewLogError(BoneAgeError, ValueError):
    """A log entry that cannot be recorded as given (unknown film, bad value, missing reader...)."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class FilmRow(Base):
    __tablename__ = "films"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    pseudonym: Mapped[str] = mapped_column(String(32), index=True)
    source_format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sex: Mapped[str | None] = mapped_column(String(1))
    chronological_age_months: Mapped[float | None] = mapped_column(Float)
    #: "upload" or "manifest:<path>".
    origin: Mapped[str] = mapped_column(String(300))
    #: The film's id in its manifest (file name without extension); None for uploads.
    source_id: Mapped[str | None] = mapped_column(String(300), index=True)
    #: Where a manifest film's file is (to show it in the mask queue); None for uploads.
    source_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class SegmentationRow(Base):
    __tablename__ = "segmentations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id"), index=True)
    segmenter: Mapped[str] = mapped_column(String(32))
    sam_sha256: Mapped[str | None] = mapped_column(String(64))
    #: XYXY in film pixels, JSON.
    box: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean)
    #: Prompt points (film pixels) and labels, JSON; empty for automatic prompts.
    prompts: Mapped[str] = mapped_column(Text, default="{}")
    #: The mask at film size as a 1-bit PNG.
    mask_png: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class MaskDecisionRow(Base):
    __tablename__ = "mask_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    segmentation_id: Mapped[int] = mapped_column(ForeignKey("segmentations.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    reader: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class PredictionRow(Base):
    __tablename__ = "predictions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id"), index=True)
    months: Mapped[float] = mapped_column(Float)
    sex: Mapped[str] = mapped_column(String(1))
    sex_source: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(100))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    preprocess: Mapped[str] = mapped_column(String(200))
    loa_halfwidth_months: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class PredictionDetailRow(Base):
    """What came with an estimate besides the number: its interval and the quality gate's flags.

    A table of its own (one row per prediction) so that the rows of ``predictions`` written before it
    existed keep the content their chain links were computed on.
    """

    __tablename__ = "prediction_details"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"), unique=True, index=True)
    interval_low_months: Mapped[float | None] = mapped_column(Float)
    interval_high_months: Mapped[float | None] = mapped_column(Float)
    interval_level: Mapped[float | None] = mapped_column(Float)
    #: The gate's flags, ";"-separated ("" when fit to read); None when no gate was run.
    quality_flags: Mapped[str | None] = mapped_column(Text)
    gate_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class ReadingRow(Base):
    __tablename__ = "readings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id"), index=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"))
    reader: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(16))
    months: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now, index=True)


class ReadingDetailRow(Base):
    """How a reading was made: within a study, and blinded (the model's estimate hidden until the reading
    was saved) or not. A reading without a detail row was made outside any study, unblinded.

    A table of its own (one row per reading) so that the readings written before it existed keep the
    content their chain links were computed on.
    """

    __tablename__ = "reading_details"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reading_id: Mapped[int] = mapped_column(ForeignKey("readings.id"), unique=True, index=True)
    #: The study's name (free text chosen by whoever runs it, e.g. "hospital-2026"; no patient data).
    study: Mapped[str] = mapped_column(String(100), index=True)
    blinded: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class ImportRow(Base):
    """One file met by ``boneage import``: imported as film ``film_id``, or skipped with its reason.

    Nothing identifying: the file is known by keyed hashes (site secret) of its path within the archive
    and of its SOPInstanceUID, and by the sha256 of its bytes; ``reason`` is a short code and a message
    written by the importer, never a file name or header text.
    """

    __tablename__ = "imports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: One ``boneage import`` run (random id), so that its summary can be told from a resumed one's.
    batch: Mapped[str] = mapped_column(String(40), index=True)
    #: ``keyed_hash("import-path", path relative to the archive root)``.
    source_key: Mapped[str] = mapped_column(String(64), index=True)
    #: ``keyed_hash("import-sop", SOPInstanceUID)``; None for files without one.
    sop_key: Mapped[str | None] = mapped_column(String(64), index=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    film_id: Mapped[int | None] = mapped_column(ForeignKey("films.id"), index=True)
    #: ``imported``, ``skipped`` (a duplicate, not a hand, ...) or ``failed`` (unreadable).
    status: Mapped[str] = mapped_column(String(16))
    #: ``code: message``, e.g. ``duplicate-sop: the same image was imported before``.
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class TransferRow(Base):
    """One DICOM exchange of the node (``boneage dicom-node``): a film received, or one attempt to send
    something back (the structured report, the secondary capture, an amended report), with its outcome.

    Each attempt is a row of its own (the table only grows): a send retried three times is three rows,
    ``failed``, ``failed``, ``sent``. Nothing identifying: the instance is known by a keyed hash of its
    SOPInstanceUID, the peer by its AE title and address (a machine, not a person).
    """

    __tablename__ = "dicom_transfers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    film_id: Mapped[int | None] = mapped_column(ForeignKey("films.id"), index=True)
    #: The reading an amended report carries; None otherwise.
    reading_id: Mapped[int | None] = mapped_column(ForeignKey("readings.id"), index=True)
    #: ``received`` or ``sent``.
    direction: Mapped[str] = mapped_column(String(16))
    #: ``image`` (received), ``sr``, ``sr-amended`` or ``sc`` (sent).
    kind: Mapped[str] = mapped_column(String(16))
    #: ``AET@host:port`` of the other end.
    peer: Mapped[str] = mapped_column(String(200))
    #: ``keyed_hash("dicom-sop", SOPInstanceUID)`` of the instance received or sent.
    sop_key: Mapped[str | None] = mapped_column(String(64), index=True)
    #: ``received``, ``skipped``, ``failed``, ``sent`` or ``abandoned`` (no more retries).
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    #: ``code: message`` (a DICOM status, a refusal reason), never header text.
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class LogEventRow(Base):
    """Something that happened to the log itself: a migration to the chain, triggers found missing."""

    __tablename__ = "log_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: "chain-migration" or "triggers-restored".
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class AccountEventRow(Base):
    """One change to a reader account; an account's state is the fold of its events, oldest first."""

    __tablename__ = "account_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    #: "created", "password", "role", "disabled" or "enabled".
    action: Mapped[str] = mapped_column(String(16))
    role: Mapped[str | None] = mapped_column(String(16))
    #: ``scrypt$...`` (:mod:`boneage_core.review.passwords`); never the password itself.
    password_hash: Mapped[str | None] = mapped_column(Text)
    #: Who made the change: an admin account, ``cli:<os user>`` or ``first-run``.
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utc_now)


class ChainRow(Base):
    """One link of the hash chain: row ``row_id`` of ``table_name`` is the ``seq``-th row appended."""

    __tablename__ = "log_chain"
    __table_args__ = (UniqueConstraint("table_name", "row_id"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    table_name: Mapped[str] = mapped_column(String(32))
    row_id: Mapped[int] = mapped_column(Integer)
    #: The previous link's ``mac`` (64 zeros for the first).
    prev_mac: Mapped[str] = mapped_column(String(64))
    #: ``keyed_hash`` over seq, table, id, the row's canonical content and ``prev_mac``.
    mac: Mapped[str] = mapped_column(String(64))


def mask_to_png(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(bool)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_to_mask(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("1"), dtype=bool)


@dataclass(frozen=True)
class Case:
    """One film with the latest of everything recorded about it (None where nothing is)."""

    film_id: int
    sha256: str
    pseudonym: str
    sex: str | None
    chronological_age_months: float | None
    segmentation_id: int | None
    mask_decision: str | None
    mask_reader: str | None
    prediction_id: int | None
    predicted_months: float | None
    model_version: str | None
    weights_sha256: str | None
    preprocess: str | None
    reading_action: str | None
    reference_months: float | None
    reader: str | None
    reason: str | None
    film_created_at: dt.datetime
    read_at: dt.datetime | None
    interval_low_months: float | None = None
    interval_high_months: float | None = None
    interval_level: float | None = None
    #: The quality gate's flags for the estimate; None when no gate was run (older entries).
    quality_flags: tuple[str, ...] | None = None
    #: The latest reading's study (None: made outside any study) and whether it was blinded.
    reading_study: str | None = None
    reading_blinded: bool = False
