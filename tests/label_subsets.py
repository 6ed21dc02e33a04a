"""The first films of the RSNA training labels as a small labels file, for tests that tune or validate."""

from __future__ import annotations

import csv
from pathlib import Path


def first_labels(rsna_train: Path, out: Path, n: int) -> list[dict]:
    """Write the first ``n`` rows of ``rsna_train/labels.csv`` (``id,boneage,male``) to ``out``; returns them."""
    with open(rsna_train / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    with open(out, "w", newline="") as g:
        w = csv.DictWriter(g, fieldnames=["id", "boneage", "male"])
        w.writeheader()
        w.writerows(rows)
    return rows
