"""Which films of a preprocess manifest may be used (e.g. trained on): the one place where the manifest's
verdicts and the readers' decisions in the review log are joined.

A film is usable when its manifest row says ``ok`` or ``flagged`` (:data:`boneage_core.segment.manifest.DONE`)
and, when a review log is given, the reader's latest decision on the film's latest mask is not "rejected".
Films are matched by the sha256 of their bytes (``input_sha256`` in the manifest).
"""

from __future__ import annotations

from pathlib import Path

from ..segment.manifest import DONE, read_manifest


def usable_ids(manifest: Path, review_db: Path | None = None) -> list[str]:
    """Ids of a manifest whose mask may be used: status ``ok`` or ``flagged``, and, when a review log
    is given, not rejected there (the reader's latest decision on the film's latest mask)."""
    rows = read_manifest(Path(manifest))
    rejected: set[str] = set()
    if review_db is not None:
        from .log import ReviewLog  # SQLAlchemy only when there is a log to read

        rejected = ReviewLog(review_db).rejected_inputs()
    return [i for i, r in rows.items() if r["status"] in DONE and r["input_sha256"] not in rejected]
