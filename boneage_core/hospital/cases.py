"""The cases a site adapts the model on, and the base model's estimate of each, computed once per film.

A :class:`SiteCase` is a film (its sha256 and a way to read its pixels), the patient's sex and the site's
reference age. They come from a folder of films with a labels table (:func:`cases_from_labels`, any
format :func:`boneage_core.films.labels.read_label_table` reads) or from the review log
(:func:`cases_from_log`: the consensus of a study's blinded readings, :mod:`boneage_core.review.study`,
the pixels from the film store beside the log).

:func:`base_estimates` runs the base model on each film once; with a cache file (CSV keyed by the base
model's weights sha256, its test-time augmentation, the film's sha256 and the sex) a film estimated
before, by any earlier ``boneage adapt`` run sharing the cache, is not estimated again.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BoneAgeError
from ..films.folder import film_id, list_films
from ..films.labels import read_label_table
from ..films.read import read_film

CACHE_FIELDS = ["weights_sha256", "tta", "sha256", "male", "months", "spread"]


@dataclass
class SiteCase:
    id: str
    sha256: str
    #: 1.0 male, 0.0 female.
    male: float
    #: The site's reference bone age in months.
    reference: float
    #: Reads the film's pixels (HW uint8).
    load: Callable[[], np.ndarray] = field(repr=False)


@dataclass
class CaseSet:
    cases: list[SiteCase]
    #: Where the reference comes from (written into the adapted model's metadata).
    source: dict
    #: Cases left out, with why: ``{"id", "reason"}``.
    skipped: list[dict] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(reference, male), both ``(N,) float64``."""
        return (
            np.array([c.reference for c in self.cases], dtype=np.float64),
            np.array([c.male for c in self.cases], dtype=np.float64),
        )

    def n_by_sex(self) -> dict[str, int]:
        m = sum(1 for c in self.cases if c.male >= 0.5)
        return {"F": len(self.cases) - m, "M": m}


def cases_from_labels(images: Path, labels: Path) -> CaseSet:
    """The labelled films of ``images`` (named ``<id>.<ext>``) with a sex in ``labels``."""
    rows = {r.id: r for r in read_label_table(labels)}
    paths = {film_id(p): p for p in list_films(images, rows)}
    cases, skipped = [], []
    for i, row in rows.items():
        if i not in paths:
            skipped.append({"id": i, "reason": f"no film in {images}"})
        elif row.male is None:
            skipped.append({"id": i, "reason": "no sex in the labels"})
        else:
            path = paths[i]
            sha = hashlib.sha256(path.read_bytes()).hexdigest()  # what read_film calls the film's sha256
            cases.append(
                SiteCase(i, sha, float(row.male), float(row.boneage), lambda p=path: read_film(p).pixels)
            )
    return CaseSet(cases, {"kind": "labels", "images": str(images), "labels": str(labels)}, skipped)


def cases_from_log(db: Path, study: str | None, predictor) -> CaseSet:
    """The cases of ``study`` in the review log ``db``, the reference being the consensus (mean) of each
    case's readers' latest blinded readings. ``study`` may be None when the log has exactly one study.
    ``predictor`` is the base model (the reading service that finds the pixels needs one)."""
    from ..review.log import ReviewLog
    from ..review.reading import ReadingService
    from ..review.study import consensus, study_table

    if not Path(db).is_file():
        raise BoneAgeError(f"no review log at {db}")
    log = ReviewLog(db)
    studies = log.studies()
    if study is None:
        if len(studies) != 1:
            raise BoneAgeError(
                f"give --study: the log has {len(studies)} studies"
                + (f" ({', '.join(studies)})" if studies else "")
            )
        study = studies[0]
    if study not in studies:
        raise BoneAgeError(f"no study {study!r} in {db}; its studies: {', '.join(studies) or 'none'}")
    table = study_table(log, study)
    ref = consensus(table, log)
    service = ReadingService(log, predictor)
    cases, skipped = [], []
    for r in ref.itertuples():
        fid = int(r.film_id)
        if r.sex not in ("M", "F"):
            skipped.append({"id": str(fid), "reason": "no sex in the log"})
            continue
        cases.append(
            SiteCase(
                str(fid),
                r.sha256,
                1.0 if r.sex == "M" else 0.0,
                float(r.consensus_months),
                lambda f=fid: service.pixels(f),
            )
        )
    source = {
        "kind": "log-consensus",
        "db": str(db),
        "study": study,
        "readers": sorted(set(table["reader"])) if not table.empty else [],
        "n_readings": len(table),
        "mean_readers_per_case": round(float(ref["n_readers"].mean()), 3) if len(ref) else 0.0,
    }
    if not cases:
        raise BoneAgeError(f"study {study!r} of {db} has no blinded reading of a case with a known sex")
    return CaseSet(cases, source, skipped)


def base_estimates(
    predictor,
    cases: list[SiteCase],
    cache: Path | None = None,
    *,
    batch_size: int = 16,
    progress: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(months, spread, unreadable): the base ``predictor``'s estimate ``(N,)`` of each case, each film
    estimated once (NaN for a film that cannot be read, listed in ``unreadable`` as ``{"id", "reason"}``);
    with ``cache``, only films not already there for this model, the new ones appended to it."""
    if predictor.adapter is not None:
        raise BoneAgeError(f"{predictor.version} is already adapted: adapt its base model")
    key = (predictor.weights_sha256, predictor.tta)
    known = _read_cache(cache, key) if cache else {}
    todo = [c for c in cases if (c.sha256, c.male) not in known]
    new: dict[tuple[str, float], tuple[float, float]] = {}
    unreadable = []
    starts = range(0, len(todo), batch_size)
    for start in progress(starts) if progress else starts:
        batch, pixels = [], []
        for c in todo[start : start + batch_size]:
            try:
                pixels.append(c.load())
                batch.append(c)
            except BoneAgeError as e:
                unreadable.append({"id": c.id, "reason": str(e)})
        months, spread = predictor.predict_batch_spread(pixels, [c.male for c in batch])
        for c, m, s in zip(batch, months, spread, strict=True):
            new[(c.sha256, c.male)] = (float(m), float(s))
    if cache and new:
        _append_cache(cache, key, new)
    known.update(new)
    got = [known.get((c.sha256, c.male), (np.nan, np.nan)) for c in cases]
    return np.array([g[0] for g in got]), np.array([g[1] for g in got]), unreadable


def _read_cache(path: Path, key: tuple[str, str]) -> dict[tuple[str, float], tuple[float, float]]:
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if (r["weights_sha256"], r["tta"]) == key:
                out[(r["sha256"], float(r["male"]))] = (float(r["months"]), float(r["spread"]))
    return out


def _append_cache(
    path: Path, key: tuple[str, str], rows: dict[tuple[str, float], tuple[float, float]]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CACHE_FIELDS)
        if header:
            w.writeheader()
        for (sha, male), (m, s) in rows.items():
            w.writerow(
                {
                    "weights_sha256": key[0],
                    "tta": key[1],
                    "sha256": sha,
                    "male": male,
                    "months": repr(m),
                    "spread": repr(s),
                }
            )
