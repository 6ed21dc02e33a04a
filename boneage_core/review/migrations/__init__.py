"""Alembic migrations of the review log (SQLite and PostgreSQL), run programmatically by
:mod:`boneage_core.review.migrate`; ``env.py`` and ``versions/`` ship in the package."""
