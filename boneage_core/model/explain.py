"""Why the model says what it says: a Grad-CAM++ class-activation map of the predicted age.

``HW float32`` in [0, 1] at the film's own size, for ``pixels`` ``HW uint8`` (any size) and the patient's
sex. An ensemble is explained by the weighted mean of its members' maps, each on the input that member
reads (a crop member's map put back where its crop lies on the film). :meth:`boneage_core.model.predictor.BoneAgePredictor.explain` is the usual way in.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace

import cv2
import numpy as np
import torch

from .net import BoneAgeNet, EnsembleNet
from .transforms import PreprocessConfig, to_model_input
from .views import View, canonical_view


class _FixedSex(torch.nn.Module):
    """Image-only view of the network for Grad-CAM: ``x (N,1,S,S)`` -> months ``(N, 1)``."""

    def __init__(self, net: torch.nn.Module, male: float):
        super().__init__()
        self.net = net
        self.male = male

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        male = torch.full((x.shape[0],), self.male, dtype=x.dtype, device=x.device)
        return self.net(x, male).unsqueeze(1)


def gradcam_heatmap(
    net: BoneAgeNet | EnsembleNet,
    pre: PreprocessConfig,
    pixels: np.ndarray,
    male: bool | float,
    *,
    device: torch.device | str = "cpu",
    lock: threading.Lock | None = None,
    member: int | None = None,
    views: dict[str, View] | None = None,
) -> np.ndarray:
    """Class-activation map of the predicted age: ``HW float32`` in [0, 1] at the film's own size.

    Grad-CAM++ (``pytorch_grad_cam.GradCAMPlusPlus``) at the last feature map (``bn2``), the target
    being the predicted age. Plain Grad-CAM averages the gradients of each channel; for this regression
    head they mostly cancel and its maps came out empty or on the film border (seen on the
    full-resolution RSNA films), which Grad-CAM++'s positive-gradient weighting avoids.

    ``net`` and ``pre`` are the model and the preprocessing it was trained with; ``lock`` (the predictor's)
    is held while a network runs, so that concurrent calls do not interleave. ``member``: of an
    ensemble, explain that member alone (index into ``net.members``). ``views``: what each view of the
    model is on this film (:func:`boneage_core.model.views.film_views`); a member reading a crop is
    explained on the crop and its map put back at the crop's box, zero elsewhere. Without ``views``
    every member reads ``pixels``.
    """
    from pytorch_grad_cam import GradCAMPlusPlus

    guard = lock if lock is not None else contextlib.nullcontext()
    # An ensemble is explained by the weighted mean of its members' maps, each on the input that member reads.
    if isinstance(net, EnsembleNet):
        members = [
            (m, replace(pre, input_size=size), float(w), view)
            for m, size, w, view in zip(
                net.members, net.sizes, net.member_weights.tolist(), net.views, strict=True
            )
        ]
        if member is not None:
            members = [(*members[member][:2], 1.0, members[member][3])]
    else:
        members = [(net, pre, 1.0, pre.views[0])]
    h, w = pixels.shape[:2]
    heat = np.zeros((h, w), np.float32)
    for one_net, member_pre, weight, view in members:
        if weight <= 0:
            continue
        seen = (views or {}).get(view) or View(pixels, (0, 0, w, h))
        x0, y0, x1, y1 = seen.box
        wrapped = _FixedSex(one_net, float(male)).eval()
        x = to_model_input([canonical_view(seen.pixels, view, member_pre)], member_pre).to(device)
        with guard, GradCAMPlusPlus(model=wrapped, target_layers=[one_net.backbone.bn2]) as cam:
            one = cam(input_tensor=x, targets=[lambda out: out.sum()])[0]
        one = cv2.resize(
            np.nan_to_num(one.astype(np.float32), nan=0.0), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR
        )
        peak = one.max()
        heat[y0:y1, x0:x1] += weight * (one / peak if peak > 0 else one)
    peak = float(heat.max())
    return (heat / peak).clip(0, 1) if peak > 0 else heat
