"""Alembic environment of the review log: runs on the connection :mod:`boneage_core.review.migrate`
passes in ``config.attributes["connection"]`` (inside the log's write transaction, lock held), or on
``sqlalchemy.url`` when run by hand. ``alembic_version`` is Alembic's: not append-only, not chained."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from boneage_core.review.schema import Base

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
