"""The review log's revisions, oldest first: ``0001_baseline`` creates the schema of the first versioned
release. A revision is frozen once released; a change to :mod:`boneage_core.review.schema` is a new one.

May import: ``alembic`` and ``sqlalchemy`` only (a revision spells out its tables: it must not change
when the schema module does).
"""
