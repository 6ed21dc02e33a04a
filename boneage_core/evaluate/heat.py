"""Where the explanation falls: the share of each member's Grad-CAM++ heat inside the hand mask.

``boneage heat-share --images DIR --out FILE.json``: for every film of ``DIR`` (the 32 full-resolution
RSNA films in the model card), the hand mask is SAM's (the app's segmenter; the classical one without
SAM weights) and, for the ensemble and for each of its members alone, the heat map is
:func:`boneage_core.model.explain.gradcam_heatmap` at the film's own size. The share is
``sum(heat inside the mask) / sum(heat)``; the mask's share of the film's area is what a heat map
spread evenly over the film would score, and is reported beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def heat_share(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of ``heat`` (``HW`` float, >= 0) inside ``mask`` (``HW`` bool); NaN for an all-zero map."""
    total = float(heat.sum())
    return float(heat[mask].sum() / total) if total > 0 else float("nan")


def _summary(values: list[float]) -> dict:
    a = np.array([v for v in values if np.isfinite(v)])
    if not len(a):
        return {"n": 0}
    return {
        "n": int(len(a)),
        "mean": round(float(a.mean()), 3),
        "median": round(float(np.median(a)), 3),
        "min": round(float(a.min()), 3),
    }


def heat_shares(images: Path, sex: dict[str, bool] | None = None) -> dict:
    """The figures of the module docstring for every film of ``images`` (sex from ``sex`` by film id, or
    the film's header, else female)."""
    from ..films.folder import film_id, list_films
    from ..films.read import read_film
    from ..model.net import EnsembleNet
    from ..model.predictor import BoneAgePredictor

    predictor = BoneAgePredictor()
    segment = _segmenter()
    n_members = len(predictor.net.members) if isinstance(predictor.net, EnsembleNet) else 0
    rows = []
    for path in list_films(images):
        film = read_film(path.read_bytes(), name=path.name)
        male = (sex or {}).get(film_id(path), film.meta.sex == "M")
        seg = segment(film.pixels)
        row = {"id": film_id(path), "segmenter": seg.segmenter, "mask_area": float(seg.mask.mean())}
        row["ensemble"] = heat_share(predictor.explain(film.pixels, male), seg.mask)
        for k in range(n_members):
            row[f"member_{k}"] = heat_share(predictor.explain(film.pixels, male, member=k), seg.mask)
        rows.append(row)
    keys = ["ensemble", *(f"member_{k}" for k in range(n_members))]
    return {
        "model_version": predictor.version,
        "weights_sha256": predictor.weights_sha256,
        "members": [m.get("version", "") for m in predictor.model.meta.training.get("members", [])],
        "films": len(rows),
        "share_inside_mask": {k: _summary([r[k] for r in rows]) for k in keys},
        "mask_area_fraction": _summary([r["mask_area"] for r in rows]),
        "per_film": rows,
    }


def _segmenter():
    """SAM (as the app segments) when its weights are here, else the classical fallback."""
    from ..segment.classical import classical_segment
    from ..settings import get_settings

    if not get_settings().sam_checkpoint.is_file():
        return classical_segment
    from ..segment.segmenter import HandSegmenter

    sam = HandSegmenter()

    def segment(pixels: np.ndarray):
        sam.set_image(pixels)
        return sam.segment()

    return segment


def add_parser(sub) -> None:
    h = sub.add_parser("heat-share", help="share of each member's Grad-CAM heat inside the hand mask")
    h.add_argument("--images", type=Path, required=True, help="e.g. ../shared/data/rsna-fullres")
    h.add_argument("--labels", type=Path, help="CSV id,boneage,male for the sex (default: the header)")
    h.add_argument("--out", type=Path, required=True, help="JSON file")
    h.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    sex = None
    if args.labels:
        from ..films.labels import read_label_table

        sex = {r.id: bool(r.male) for r in read_label_table(args.labels) if r.male is not None}
    result = heat_shares(args.images, sex)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("films", "share_inside_mask", "mask_area_fraction")}, indent=2))
    return 0
