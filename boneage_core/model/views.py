"""What each member of a model reads: the whole film, the hand crop or the carpal square, made from a film.

A model's ``preprocess.view`` names its view (``film``, ``hand``, ``carpal`` or ``sam-crop``); an ensemble
whose members read different views names them joined by ``+`` in member order (``film+hand+carpal``,
:attr:`boneage_core.model.transforms.PreprocessConfig.views`). :func:`film_views` makes every view a model
needs from the films (``HW uint8``, any size), with the hand localizer run once per film for the
``hand`` and ``carpal`` views together, by the functions that made the training crops
(:func:`boneage_core.model.localizer.hand_crop`, :func:`carpal_crop`).

Coordinates: each view comes with its box on the film, XYXY pixels with exclusive right/bottom edges
(``(0, 0, W, H)`` for the whole film), so that a crop member's heatmap can be put back where the crop came
from. A ``sam-crop`` model is given its crop by the caller (it needs SAM's segmentation, not made here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BoneAgeError
from .intensity import view_pixels
from .transforms import KNOWN_VIEWS, canonical_film, split_views, to_model_input, tta_views

__all__ = [
    "KNOWN_VIEWS",
    "LOCALIZER_VIEWS",
    "View",
    "canonical_view",
    "film_views",
    "model_inputs",
    "split_views",
    "tta_inputs",
]

#: Views the localizer makes.
LOCALIZER_VIEWS = ("hand", "hand-eq", "carpal")


@dataclass(frozen=True)
class View:
    """One view of one film: its pixels ``hw uint8`` and its box on the film (XYXY, exclusive)."""

    pixels: np.ndarray
    box: tuple[int, int, int, int]


def localizer_for(pre, localizer_path: Path):
    """The localizer a ``hand``/``carpal`` model needs, checked against the one it learnt on
    (``pre.localizer``, a weights sha256); None when the model reads no localizer view."""
    if not any(v in LOCALIZER_VIEWS for v in pre.views):
        return None
    from .localizer import cached_localizer

    loc = cached_localizer(Path(localizer_path))
    if pre.localizer and loc.weights_sha256 != pre.localizer:
        raise BoneAgeError(
            f"this model learnt on the crops of localizer {pre.localizer[:12]}, not of {loc.name} "
            f"({loc.path}): set BONEAGE_LOCALIZER to that one"
        )
    return loc


def film_views(films: list[np.ndarray], views: tuple[str, ...], localizer=None) -> dict[str, list[View]]:
    """Every view of ``views`` for every film: ``{view: [View per film]}``.

    ``localizer`` (a :class:`boneage_core.model.localizer.Localizer`) is needed for ``hand`` and
    ``carpal``; its probabilities are computed once per film for both. ``film`` (and ``sam-crop``, whose
    crop the caller passes as the film) is the film itself.

    The crops are cut from the **canonical** film (:func:`boneage_core.model.transforms.canonical_film`:
    299 x 299, JPEG 92), as the training crops were cut from the 299 px RSNA copies, and their boxes mapped
    back onto the film. Cut from a full-resolution film instead, a crop is sharper than any the crop
    members saw in training (its 299 px copy's crop is upsampled): on the 32 full-resolution films that
    moved 0.5.0's estimates 1.65 months from their copies' on average. A 299 px film is canonical already,
    so its crops are unchanged. Where the crops need it, the ``film`` view's pixels are that canonical
    film too (its box still the whole film), which is what the network would read of the film anyway.
    """
    out: dict[str, list[View]] = {}
    need_loc = [v for v in views if v in LOCALIZER_VIEWS]
    probs, canonical = None, []
    if need_loc:
        if localizer is None:
            raise BoneAgeError(f"the {need_loc[0]} view needs the hand localizer")
        canonical = [canonical_film(f) for f in films]
        probs = localizer.probabilities(canonical) if len(films) else []
    from .localizer import carpal_crop, hand_crop

    for v in views:
        if v in ("film", "sam-crop"):
            # Made canonical already for the crops: the film view reads that copy (to_model_input takes a
            # canonical film as is), so a full-resolution film is resized and JPEG-coded once, not twice.
            seen = canonical or films
            out[v] = [View(c, (0, 0, f.shape[1], f.shape[0])) for f, c in zip(films, seen, strict=True)]
        else:
            crop = carpal_crop if v == "carpal" else hand_crop  # hand-eq: the hand crop, stretched later
            out[v] = [
                View(pixels, _on_film(box, c.shape, f.shape))
                for f, c, p in zip(films, canonical, probs, strict=True)
                for pixels, box in [crop(c, localizer, prob=p)]
            ]
    return out


def _on_film(
    box: tuple[int, int, int, int], canonical_shape: tuple[int, ...], film_shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """A box on the canonical film (XYXY, exclusive) mapped onto the film, rounded outwards, inside it."""
    (ch, cw), (h, w) = canonical_shape[:2], film_shape[:2]
    sx, sy = w / cw, h / ch
    x0, y0 = max(0, int(np.floor(box[0] * sx))), max(0, int(np.floor(box[1] * sy)))
    return x0, y0, min(w, int(np.ceil(box[2] * sx))), min(h, int(np.ceil(box[3] * sy)))


def canonical_view(pixels: np.ndarray, view: str, pre) -> np.ndarray:
    """A view's pixels (``hw uint8``, as :func:`film_views` makes them and ``boneage localize --crops``
    saves them) as its network reads them before resizing: given the view's grey-level normalisation
    (:func:`boneage_core.model.intensity.view_pixels`: ``hand-eq`` only, on the crop itself, whose removed
    background is exactly 0), then made canonical (:func:`boneage_core.model.transforms.canonical_film`).
    Training's loader, :func:`model_inputs`, the Grad-CAM of a member and a site's fine-tuning all make a
    view's input with this function."""
    return canonical_film(view_pixels(pixels, view), pre.canonical_side, pre.canonical_jpeg)


def model_inputs(films: list[np.ndarray], pre, localizer=None):
    """The network input of ``films`` (each ``HW uint8``): the normalised ``(N, 1, S, S)`` tensor of
    :func:`boneage_core.model.transforms.to_model_input` when the model reads one view, else
    ``{view: tensor}`` for an ensemble whose members read several (each view made canonical alike)."""
    views = pre.views
    if views in (("film",), ("sam-crop",)):
        return to_model_input(list(films), pre)
    made = film_views(films, views, localizer)
    out = {v: to_model_input([canonical_view(one.pixels, v, pre) for one in made[v]], pre) for v in views}
    return out[views[0]] if len(views) == 1 else out


def tta_inputs(x, name: str, pre) -> list:
    """The test-time views (:func:`boneage_core.model.transforms.tta_views`) of a :func:`model_inputs`
    result: a list of tensors, or of ``{view: tensor}`` with each view transformed alike."""
    if not isinstance(x, dict):
        return tta_views(x, name, pre)
    per_view = {v: tta_views(t, name, pre) for v, t in x.items()}
    n = len(next(iter(per_view.values())))
    return [{v: per_view[v][k] for v in per_view} for k in range(n)]


def to_device(x, device):
    """A :func:`model_inputs` result on ``device``, channels-last."""
    if isinstance(x, dict):
        return {v: t.to(device).contiguous(memory_format=torch.channels_last) for v, t in x.items()}
    return x.to(device).contiguous(memory_format=torch.channels_last)
