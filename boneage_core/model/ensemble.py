"""Ensembles of trained bone-age models: members from checkpoints, their estimates, their weights.

An ensemble checkpoint (:class:`boneage_core.model.net.EnsembleNet`) reads the canonical film and gives each
member the input size it was trained at. Its weights are chosen on films that the reported figures never
see (the *tune* half of the validation split, ``configs/splits/rsna-val-tune.csv``): :func:`choose_weights`
searches the simplex on a grid for the lowest mean absolute error of the weighted mean.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BoneAgeError
from ..films.folder import film_id, list_films
from ..films.labels import read_label_table
from ..films.read import read_film
from .checkpoint import LoadedModel, load_checkpoint
from .net import ENSEMBLE_ARCH, BoneAgeNet, EnsembleNet
from .transforms import PreprocessConfig, to_model_input, tta_views


@dataclass
class Member:
    """One trained network of an ensemble with what describes it."""

    net: BoneAgeNet
    version: str
    arch: str
    preprocess: dict
    weights_sha256: str
    validation: dict
    training: dict


def members_of(loaded: LoadedModel) -> list[Member]:
    """The members of a checkpoint: itself for a single model, its members for an ensemble (flattened)."""
    if loaded.meta.arch != ENSEMBLE_ARCH:
        m = loaded.meta
        return [
            Member(
                loaded.net, m.version, m.arch, m.preprocess, loaded.weights_sha256, m.validation, m.training
            )
        ]
    out = []
    for net, info in zip(loaded.net.members, loaded.meta.training["members"], strict=True):
        out.append(
            Member(
                net,
                info["version"],
                info["arch"],
                info["preprocess"],
                info["weights_sha256"],
                info.get("validation", {}),
                info.get("training", {}),
            )
        )
    return out


def load_members(paths: list[Path]) -> list[Member]:
    members = [m for p in paths for m in members_of(load_checkpoint(p))]
    if len({m.preprocess["view"] for m in members}) != 1:
        raise BoneAgeError("ensemble members must read the same view (all film or all sam-crop)")
    seen: set[str] = set()
    for m in members:
        if m.weights_sha256 in seen:
            raise BoneAgeError(f"member {m.version} is given twice")
        seen.add(m.weights_sha256)
    return members


@torch.no_grad()
def member_predictions(
    net: EnsembleNet, pre: PreprocessConfig, images: Path, labels: Path, tta: str, batch_size: int = 32
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each member's estimate of every labelled film of ``images``, exactly as the ensemble computes it
    (the same canonical input and test-time views, then each member at its own size).

    Returns ``(ids, truth (N,), predictions (M, N))`` in months. Unreadable films are left out.
    """
    rows = {r.id: r for r in read_label_table(labels)}
    paths = {film_id(p): p for p in list_films(images, rows)}
    ids, truth, chunks = [], [], []
    films: list[np.ndarray] = []
    male: list[float] = []

    def flush() -> None:
        if not films:
            return
        x = to_model_input(films, pre).contiguous(memory_format=torch.channels_last)
        m = torch.tensor(male)
        views = tta_views(x, tta, pre)
        chunks.append(torch.stack([net.forward_members(v, m) for v in views]).mean(0).double().numpy())
        films.clear()
        male.clear()

    net.eval()
    for i, row in rows.items():
        if i not in paths or row.male is None:
            continue
        try:
            film = read_film(paths[i])
        except BoneAgeError:
            continue
        ids.append(i)
        truth.append(row.boneage)
        films.append(film.pixels)
        male.append(float(row.male))
        if len(films) >= batch_size:
            flush()
    flush()
    if not ids:
        raise BoneAgeError(f"no labelled film of {labels} could be read from {images}")
    return ids, np.asarray(truth, dtype=np.float64), np.concatenate(chunks, axis=1)


def choose_weights(preds: np.ndarray, truth: np.ndarray, step: float = 0.05) -> tuple[np.ndarray, float]:
    """Weights on the simplex (multiples of ``step``) minimising the MAE of ``w @ preds`` against ``truth``.

    ``preds`` is ``(M, N)``. Ties go to the weights closest to uniform. Returns ``(weights (M,), mae)``.
    """
    m = preds.shape[0]
    if m == 1:
        return np.ones(1), float(np.abs(preds[0] - truth).mean())
    k = int(round(1 / step))
    best: tuple[float, float, np.ndarray] | None = None
    uniform = np.full(m, 1.0 / m)
    for head in itertools.product(range(k + 1), repeat=m - 1):
        if sum(head) > k:
            continue
        w = np.array([*head, k - sum(head)], dtype=np.float64) / k
        mae = float(np.abs(w @ preds - truth).mean())
        key = (round(mae, 9), float(np.abs(w - uniform).sum()), w)
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    return best[2], best[0]
