"""Ensembles of trained bone-age models: members from checkpoints, their estimates, their weights.

An ensemble checkpoint (:class:`boneage_core.model.net.EnsembleNet`) reads the canonical film and gives each
member the view it was trained on (the whole film, the hand crop or the carpal square,
:mod:`boneage_core.model.views`) at the input size it was trained at. Its weights are chosen on films that the reported figures never
see (the *tune* half of the validation split, ``configs/splits/rsna-val-tune.csv``): :func:`boneage_core.model.subsets.choose_weights`
searches the simplex on a grid for the lowest mean absolute error of the weighted mean; on the same films
an output map (:mod:`boneage_core.model.output_map`) may then undo the regression toward the mean age;
:func:`build_ensemble` puts it together (``boneage ensemble``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BoneAgeError
from ..films.folder import film_id, list_films
from ..films.labels import read_label_table
from ..films.read import read_film
from .checkpoint import LoadedModel, ModelMeta, load_checkpoint
from .net import ENSEMBLE_ARCH, BoneAgeNet, EnsembleNet, OutputMap
from .output_map import tune_output_map
from .subsets import cheapest_within, choose_weights, subset_table
from .transforms import PreprocessConfig, split_views
from .views import localizer_for, model_inputs, to_device, tta_inputs

#: How the output map's cross-validation is logged.
FOLDS_NOTE = "{folds}-fold cross-validated MAE {cv_mae_months:.3f} against {mae_months:.3f} unmapped"


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
    if loaded.adapter is not None:
        raise BoneAgeError(
            f"{loaded.path.name} is adapted to a site ({loaded.meta.version}): its recalibration cannot go into "
            "an ensemble; combine the base models, then adapt the ensemble"
        )
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
    """The members of ``paths`` (ensembles flattened), checked to combine: each given once, crop members
    all made by one localizer, a ``sam-crop`` member alone in its view."""
    members = [m for p in paths for m in members_of(load_checkpoint(p))]
    split_views("+".join(sorted({m.preprocess["view"] for m in members})))  # refuses sam-crop among others
    localizers = {m.preprocess.get("localizer", "") for m in members} - {""}
    if len(localizers) > 1:
        raise BoneAgeError(
            "the crop members learnt on the crops of different localizers "
            f"({', '.join(sorted(x[:12] for x in localizers))}): one localizer must serve them all"
        )
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
    (the same views of each film, made canonical alike, the same test-time views, then each member at its
    own size): ``images`` holds the films themselves, whatever views the members read.

    Returns ``(ids, truth (N,), predictions (M, N))`` in months. Unreadable films are left out.
    """
    from ..settings import get_settings

    localizer = localizer_for(pre, get_settings().localizer_path)
    rows = {r.id: r for r in read_label_table(labels)}
    paths = {film_id(p): p for p in list_films(images, rows)}
    ids, truth, chunks = [], [], []
    films: list[np.ndarray] = []
    male: list[float] = []

    def flush() -> None:
        if not films:
            return
        x = to_device(model_inputs(films, pre, localizer), "cpu")
        m = torch.tensor(male)
        views = tta_inputs(x, tta, pre)
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


def write_member_predictions(
    path: Path, ids: list[str], truth: np.ndarray, preds: np.ndarray, versions: list[str]
) -> None:
    """``id,boneage,<version>...``: each member's estimate (months, ``preds`` ``(M, N)``) of each film, so that
    other weightings or subsets of the members can be studied on the tune films without running them again."""
    import pandas as pd

    table = pd.DataFrame(
        {"id": ids, "boneage": truth, **{v: np.round(p, 4) for v, p in zip(versions, preds, strict=True)}}
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)


def build_ensemble(
    member_paths: list[Path],
    *,
    version: str,
    tta: str | None = None,
    weights: list[float] | None = None,
    tune_images: Path | None = None,
    tune_labels: Path | None = None,
    output_map_knots: list[float] | None = None,
    predictions_out: Path | None = None,
    prune_tolerance: float | None = None,
    log: Callable[[str], None] = print,
) -> tuple[EnsembleNet, ModelMeta]:
    """The ensemble of ``member_paths`` (ensembles among them are flattened), largest input first.

    Member weights: ``weights`` (in the order given), else chosen on the films of ``tune_labels`` (members
    of weight 0 dropped), else equal. With ``output_map_knots`` (and ``tune_labels``) an output map of the
    weighted mean is cross-validated on the tune films and kept when it lowers their cross-validated MAE.
    ``predictions_out``: write every member's estimate of each tune film there (:func:`write_member_predictions`).
    ``prune_tolerance`` (months): keep only the cheapest subset of members whose tune MAE is within it of the
    best subset's (:mod:`boneage_core.model.subsets`), its weights chosen alike.
    The ensemble reads the canonical film; each member resizes it to its own input, as in training. Returns
    the network (eval mode) and its metadata, ready for shipping.
    """
    members = load_members(member_paths)
    order = sorted(range(len(members)), key=lambda i: -int(members[i].preprocess["input_size"]))
    members = [members[i] for i in order]
    if weights and len(weights) != len(members):
        raise BoneAgeError(f"--weights has {len(weights)} numbers for {len(members)} members")
    given = [weights[i] / sum(weights) for i in order] if weights else None
    if prune_tolerance is not None and not tune_labels:
        raise BoneAgeError("members are pruned on the tune films: give --tune-labels with --prune-tolerance")
    if output_map_knots and not tune_labels:
        raise BoneAgeError(
            "an output map is fitted on the tune films: give --tune-labels with --output-map-knots"
        )
    net = _assemble(members, given)
    tta = tta or members[0].preprocess.get("tta", "flip")
    preprocess = ensemble_preprocess(members, tta)
    tuning: dict = {}
    if tune_labels:
        if given:
            raise BoneAgeError("give either --weights or --tune-labels, not both")
        pre = PreprocessConfig.from_dict(preprocess)
        ids, truth, preds = member_predictions(net, pre, tune_images, tune_labels, tta)
        if predictions_out:
            write_member_predictions(predictions_out, ids, truth, preds, [m.version for m in members])
        if prune_tolerance is not None:  # every subset weighed, the full set among them
            chosen, mae, subsets = _pruned(members, preds, truth, prune_tolerance, log)
        else:
            (chosen, mae), subsets = choose_weights(preds, truth), None
        tuning = {
            "labels": str(tune_labels),
            "n": len(ids),
            "mae_months": round(mae, 4),
            "member_mae_months": [round(float(np.abs(p - truth).mean()), 4) for p in preds],
            "uniform_mae_months": round(float(np.abs(preds.mean(0) - truth).mean()), 4),
            "chosen": {m.version: round(float(w), 4) for m, w in zip(members, chosen, strict=True)},
        }
        if subsets:
            tuning["subsets"] = subsets
        log(
            f"weights chosen on {len(ids)} films of {tune_labels}: "
            + ", ".join(
                f"{m.version} {w:.2f} (alone {e:.2f})"
                for m, w, e in zip(members, chosen, tuning["member_mae_months"], strict=True)
            )
            + f"; MAE {mae:.2f} (uniform {tuning['uniform_mae_months']:.2f})"
        )
        keep = [i for i, w in enumerate(chosen) if w > 0]  # a member of weight 0 would only cost time
        members = [members[i] for i in keep]
        output_map = None
        if output_map_knots:
            output_map, tuning["output_map"] = tune_output_map(chosen @ preds, truth, output_map_knots)
            r = tuning["output_map"]
            log(
                f"output map, knots {r['knots_months']}: {FOLDS_NOTE.format(**r)}; "
                + ("kept" if r["kept"] else "not kept (no gain)")
            )
        net = _assemble(members, chosen[keep].tolist(), output_map)
        preprocess = ensemble_preprocess(members, tta)
    w = net.member_weights.tolist()
    meta = ModelMeta(
        version=version,
        arch=ENSEMBLE_ARCH,
        preprocess=preprocess,
        training={
            "members": [
                {
                    "version": m.version,
                    "arch": m.arch,
                    "preprocess": m.preprocess,
                    "weights_sha256": m.weights_sha256,
                    "validation": m.validation,
                    "training": m.training,
                    "weight": round(wi, 6),
                }
                for m, wi in zip(members, w, strict=True)
            ],
            "weights_tuning": tuning,
        },
        validation={},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    return net.eval(), meta


def _pruned(
    members: list[Member], preds: np.ndarray, truth: np.ndarray, tolerance: float, log: Callable[[str], None]
) -> tuple[np.ndarray, float, dict]:
    """The weights (0 for a member left out) and tune MAE of the cheapest subset within ``tolerance``
    months of the best, and the record of that choice for the checkpoint's metadata."""
    rows = subset_table(preds, truth, [int(m.preprocess["input_size"]) for m in members])
    kept, best = cheapest_within(rows, tolerance), min(rows, key=lambda r: r.mae)
    versions = [m.version for m in members]
    chosen = np.zeros(len(members))
    chosen[list(kept.members)] = kept.weights
    log(
        f"members pruned within {tolerance} months of the best subset's tune MAE {best.mae:.3f}: kept "
        + ", ".join(versions[i] for i in kept.members)
        + f" (MAE {kept.mae:.3f}, {kept.cost / best.cost:.0%} of the best subset's pixels)"
    )
    record = {
        "tolerance_months": tolerance,
        "subsets_weighed": len(rows),
        "best": best.to_dict(versions),
        "kept": kept.to_dict(versions),
    }
    return chosen, kept.mae, record


def ensemble_preprocess(members: list[Member], tta: str) -> dict:
    """The ensemble's own preprocessing: the canonical film in, the members' views (joined by ``+`` in the
    order they first appear, :mod:`boneage_core.model.views`) and the localizer their crops need."""
    views = list(dict.fromkeys(m.preprocess["view"] for m in members))
    localizer = next((m.preprocess["localizer"] for m in members if m.preprocess.get("localizer")), "")
    return {
        **members[0].preprocess,
        "input_size": int(members[0].preprocess["canonical_side"]),
        "view": "+".join(views),
        "localizer": localizer,
        "tta": tta,
    }


def _assemble(members: list, weights: list[float] | None, output_map: OutputMap | None = None) -> EnsembleNet:
    net = EnsembleNet(
        [(m.arch, int(m.preprocess["input_size"])) for m in members],
        weights,
        views=[m.preprocess["view"] for m in members],
        output_map=output_map,
    )
    for dst, m in zip(net.members, members, strict=True):
        dst.load_state_dict(m.net.state_dict())
    return net
