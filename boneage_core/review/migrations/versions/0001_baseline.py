"""Baseline: the review log's schema as of the first versioned release (every table of
:mod:`boneage_core.review.schema` at that time, ``dicom_transfers`` included). Frozen: later changes
are later revisions. The append-only triggers are not part of it: the log installs and checks them
after every upgrade (:mod:`boneage_core.review.triggers`).

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create each table of the baseline that is not there yet: a new log gets all of them; a log written
    before migrations existed (no ``alembic_version``) has its tables already and gets only those its
    release lacked (say ``dicom_transfers``), then is at this revision like a new one."""
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "account_events" not in existing:
        op.create_table(
            "account_events",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("action", sa.String(length=16), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=True),
            sa.Column("password_hash", sa.Text(), nullable=True),
            sa.Column("actor", sa.String(length=100), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("account_events", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_account_events_name"), ["name"], unique=False)
    if "films" not in existing:
        op.create_table(
            "films",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("sha256", sa.String(length=64), nullable=False),
            sa.Column("pseudonym", sa.String(length=32), nullable=False),
            sa.Column("source_format", sa.String(length=16), nullable=False),
            sa.Column("width", sa.Integer(), nullable=False),
            sa.Column("height", sa.Integer(), nullable=False),
            sa.Column("sex", sa.String(length=1), nullable=True),
            sa.Column("chronological_age_months", sa.Float(), nullable=True),
            sa.Column("origin", sa.String(length=300), nullable=False),
            sa.Column("source_id", sa.String(length=300), nullable=True),
            sa.Column("source_path", sa.Text(), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("films", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_films_pseudonym"), ["pseudonym"], unique=False)
            batch_op.create_index(batch_op.f("ix_films_sha256"), ["sha256"], unique=True)
            batch_op.create_index(batch_op.f("ix_films_source_id"), ["source_id"], unique=False)
    if "log_chain" not in existing:
        op.create_table(
            "log_chain",
            sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("table_name", sa.String(length=32), nullable=False),
            sa.Column("row_id", sa.Integer(), nullable=False),
            sa.Column("prev_mac", sa.String(length=64), nullable=False),
            sa.Column("mac", sa.String(length=64), nullable=False),
            sa.PrimaryKeyConstraint("seq"),
            sa.UniqueConstraint("table_name", "row_id"),
        )
    if "log_events" not in existing:
        op.create_table(
            "log_events",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=32), nullable=False),
            sa.Column("detail", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if "imports" not in existing:
        op.create_table(
            "imports",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("batch", sa.String(length=40), nullable=False),
            sa.Column("source_key", sa.String(length=64), nullable=False),
            sa.Column("sop_key", sa.String(length=64), nullable=True),
            sa.Column("sha256", sa.String(length=64), nullable=True),
            sa.Column("film_id", sa.Integer(), nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["film_id"],
                ["films.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("imports", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_imports_batch"), ["batch"], unique=False)
            batch_op.create_index(batch_op.f("ix_imports_film_id"), ["film_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_imports_sha256"), ["sha256"], unique=False)
            batch_op.create_index(batch_op.f("ix_imports_sop_key"), ["sop_key"], unique=False)
            batch_op.create_index(batch_op.f("ix_imports_source_key"), ["source_key"], unique=False)
    if "predictions" not in existing:
        op.create_table(
            "predictions",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("film_id", sa.Integer(), nullable=False),
            sa.Column("months", sa.Float(), nullable=False),
            sa.Column("sex", sa.String(length=1), nullable=False),
            sa.Column("sex_source", sa.String(length=16), nullable=False),
            sa.Column("model_version", sa.String(length=100), nullable=False),
            sa.Column("weights_sha256", sa.String(length=64), nullable=False),
            sa.Column("preprocess", sa.String(length=200), nullable=False),
            sa.Column("loa_halfwidth_months", sa.Float(), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["film_id"],
                ["films.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("predictions", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_predictions_film_id"), ["film_id"], unique=False)
    if "segmentations" not in existing:
        op.create_table(
            "segmentations",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("film_id", sa.Integer(), nullable=False),
            sa.Column("segmenter", sa.String(length=32), nullable=False),
            sa.Column("sam_sha256", sa.String(length=64), nullable=True),
            sa.Column("box", sa.Text(), nullable=False),
            sa.Column("score", sa.Float(), nullable=False),
            sa.Column("flagged", sa.Boolean(), nullable=False),
            sa.Column("prompts", sa.Text(), nullable=False),
            sa.Column("mask_png", sa.LargeBinary(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["film_id"],
                ["films.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("segmentations", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_segmentations_film_id"), ["film_id"], unique=False)
    if "mask_decisions" not in existing:
        op.create_table(
            "mask_decisions",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("segmentation_id", sa.Integer(), nullable=False),
            sa.Column("decision", sa.String(length=16), nullable=False),
            sa.Column("reader", sa.String(length=100), nullable=False),
            sa.Column("note", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["segmentation_id"],
                ["segmentations.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("mask_decisions", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_mask_decisions_segmentation_id"), ["segmentation_id"], unique=False
            )
    if "prediction_details" not in existing:
        op.create_table(
            "prediction_details",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("prediction_id", sa.Integer(), nullable=False),
            sa.Column("interval_low_months", sa.Float(), nullable=True),
            sa.Column("interval_high_months", sa.Float(), nullable=True),
            sa.Column("interval_level", sa.Float(), nullable=True),
            sa.Column("quality_flags", sa.Text(), nullable=True),
            sa.Column("gate_sha256", sa.String(length=64), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["prediction_id"],
                ["predictions.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("prediction_details", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_prediction_details_prediction_id"), ["prediction_id"], unique=True
            )
    if "readings" not in existing:
        op.create_table(
            "readings",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("film_id", sa.Integer(), nullable=False),
            sa.Column("prediction_id", sa.Integer(), nullable=False),
            sa.Column("reader", sa.String(length=100), nullable=False),
            sa.Column("action", sa.String(length=16), nullable=False),
            sa.Column("months", sa.Float(), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["film_id"],
                ["films.id"],
            ),
            sa.ForeignKeyConstraint(
                ["prediction_id"],
                ["predictions.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("readings", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_readings_created_at"), ["created_at"], unique=False)
            batch_op.create_index(batch_op.f("ix_readings_film_id"), ["film_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_readings_reader"), ["reader"], unique=False)
    if "dicom_transfers" not in existing:
        op.create_table(
            "dicom_transfers",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("film_id", sa.Integer(), nullable=True),
            sa.Column("reading_id", sa.Integer(), nullable=True),
            sa.Column("direction", sa.String(length=16), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("peer", sa.String(length=200), nullable=False),
            sa.Column("sop_key", sa.String(length=64), nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["film_id"],
                ["films.id"],
            ),
            sa.ForeignKeyConstraint(
                ["reading_id"],
                ["readings.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("dicom_transfers", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_dicom_transfers_film_id"), ["film_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_dicom_transfers_reading_id"), ["reading_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_dicom_transfers_sop_key"), ["sop_key"], unique=False)
    if "reading_details" not in existing:
        op.create_table(
            "reading_details",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("reading_id", sa.Integer(), nullable=False),
            sa.Column("study", sa.String(length=100), nullable=False),
            sa.Column("blinded", sa.Boolean(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(
                ["reading_id"],
                ["readings.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("reading_details", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_reading_details_reading_id"), ["reading_id"], unique=True)
            batch_op.create_index(batch_op.f("ix_reading_details_study"), ["study"], unique=False)


def downgrade() -> None:
    raise NotImplementedError("the review log is append-only: it is never downgraded")
