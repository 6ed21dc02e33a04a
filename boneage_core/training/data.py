"""The films a run trains and validates on, and their labels, in memory.

:func:`split_ids` is the fixed split by id (``data.val_ids``; ``data.exclude_ids`` never trained on);
:func:`dataset_ids` then keeps only the films of ``data.manifest`` whose mask is usable (minus those a
reader rejected in ``data.review_db``); :func:`load_film_set` decodes them once into a :class:`FilmSet` of
canonical films ``(N, s, s) uint8`` with ages in months and sex (1.0 male, 0.0 female).
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..films.folder import film_id, list_films
from ..films.labels import read_label_table
from ..films.read import read_film
from ..model.transforms import PreprocessConfig
from ..model.views import canonical_view
from ..review.usable import usable_ids
from .config import TrainConfig


@dataclass
class FilmSet:
    """Canonical films in memory: ``images (N, s, s) uint8``, ``age (N,)`` months, ``male (N,)``."""

    ids: list[str]
    images: torch.Tensor
    age: torch.Tensor
    male: torch.Tensor


def read_rsna_labels(path: Path) -> dict[str, tuple[float, float]]:
    """``id -> (bone age months, male 1/0)`` from RSNA's train or test ground-truth CSV."""
    rows = read_label_table(path)
    unknown = [r.id for r in rows if r.male is None]
    if unknown:
        raise ValueError(f"{path}: training needs the sex of every film; missing for {unknown[:5]}")
    return {r.id: (r.boneage, r.male) for r in rows}


def dataset_ids(cfg: TrainConfig, verbose: bool = False) -> tuple[list[str], list[str], dict]:
    """:func:`split_ids`, then, with ``data.manifest``, only the films whose mask is usable there (status ok
    or flagged and, with ``data.review_db``, not rejected by a reader)."""
    train_ids, val_ids, labels = split_ids(cfg)
    if cfg.data.manifest:
        if not Path(cfg.data.manifest).is_file():
            raise FileNotFoundError(
                f"data.manifest {cfg.data.manifest} does not exist: run `boneage preprocess` first"
            )
        db = Path(cfg.data.review_db) if cfg.data.review_db else None
        usable = set(usable_ids(Path(cfg.data.manifest), db))
        before = len(train_ids) + len(val_ids)
        train_ids = [i for i in train_ids if i in usable]
        val_ids = [i for i in val_ids if i in usable]
        if verbose:
            print(
                f"manifest {cfg.data.manifest}: {before - len(train_ids) - len(val_ids)} films without a usable "
                "mask left out"
            )
    return train_ids, val_ids, labels


def load_film_set(
    images: Path,
    labels: dict[str, tuple[float, float]],
    ids: list[str],
    pre: PreprocessConfig,
    skip_missing: bool = False,
) -> FilmSet:
    paths = {film_id(p): p for p in list_films(images, ids)}
    missing = [i for i in ids if i not in paths]
    if missing and not skip_missing:
        raise FileNotFoundError(f"{len(missing)} films missing from {images}, e.g. {missing[:3]}")
    if missing:
        print(f"{len(missing)} of {len(ids)} labelled films have no file in {images}: left out")
        ids = [i for i in ids if i in paths]

    def load(i: str) -> np.ndarray:  # the images of a crop view are its crops (`boneage localize --crops`)
        return canonical_view(read_film(paths[i]).pixels, pre.view, pre)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(load, ids))
    return FilmSet(
        ids=list(ids),
        images=torch.from_numpy(np.stack(arrays)),
        age=torch.tensor([labels[i][0] for i in ids], dtype=torch.float32),
        male=torch.tensor([labels[i][1] for i in ids], dtype=torch.float32),
    )


def split_ids(cfg: TrainConfig) -> tuple[list[str], list[str], dict[str, tuple[float, float]]]:
    labels = read_rsna_labels(Path(cfg.data.labels))
    val = _read_ids(Path(cfg.data.val_ids))
    held = set(val) | (set(_read_ids(Path(cfg.data.exclude_ids))) if cfg.data.exclude_ids else set())
    unknown = [i for i in held if i not in labels]
    if unknown:
        raise ValueError(f"validation or excluded ids not in {cfg.data.labels}: {sorted(unknown)[:5]}")
    train = sorted((i for i in labels if i not in held), key=_id_key)
    val = sorted(val, key=_id_key)
    if cfg.data.limit_train:
        train = train[: cfg.data.limit_train]
    if cfg.data.limit_val:
        val = val[: cfg.data.limit_val]
    return train, val, labels


def _read_ids(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [row["id"].strip() for row in csv.DictReader(f)]


def _id_key(i: str) -> tuple[int, str]:
    return (int(i), i) if i.isdigit() else (1 << 62, i)
