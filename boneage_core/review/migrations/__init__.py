"""Alembic migrations of the review log (SQLite and PostgreSQL), run programmatically by
:mod:`boneage_core.review.migrate`: ``env.py`` here, the revisions in ``versions/``; they ship in the
package, so a clean clone or an installed wheel migrates without an ``alembic.ini``.

May import: ``boneage_core.review.schema`` (the tables, for Alembic's metadata), ``alembic`` and
``sqlalchemy``; nothing imports it (Alembic loads it from its path).
"""
