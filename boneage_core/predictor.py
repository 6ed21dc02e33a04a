"""Bone-age inference and Grad-CAM++ explanation: a thin stateful class, numpy in, numbers out.

    predictor = BoneAgePredictor()                # the shipped model (assets/models/), on the CPU
    months = predictor.predict(pixels, male=True) # pixels: HW uint8 film, any size
    pred = predictor.predict_film(film, sex=None) # sex from the argument, else from the DICOM header
    heat = predictor.explain(pixels, male=True)   # HW float32 in [0, 1], the film's own size

The film goes through :func:`boneage_core.transforms.to_model_input`, the same function used in
training. With ``tta=True`` (default) the estimate is the mean over the test-time augmentation the
checkpoint was validated with (``preprocess.tta``: the mirror image, or small zooms and rotations).
Grad-CAM++ (the ``grad-cam`` package) targets the predicted age at the last feature map of the backbone,
and the map is stretched back onto the film the reader sees (the inverse of the canonical stretch).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import BoneAgeError, MissingSexError
from .film_io import Film
from .model import LoadedModel, load_checkpoint
from .settings import get_settings
from .transforms import to_model_input, tta_views


def format_years_months(months: float) -> str:
    """``125.6`` -> ``"10 y 6 m"`` (months rounded to the nearest whole month)."""
    total = int(round(months))
    sign = "-" if total < 0 else ""
    y, m = divmod(abs(total), 12)
    return f"{sign}{y} y {m} m"


@dataclass(frozen=True)
class Prediction:
    """One bone-age estimate and what produced it."""

    months: float
    #: "M" or "F".
    sex: str
    #: Where the sex came from: "given" (argument, form or labels file) or "dicom" (PatientSex).
    sex_source: str
    model_version: str
    weights_sha256: str
    preprocess: str
    #: Test-time augmentation: "none", "flip" or "geo4" (see boneage_core.transforms.TTA_VIEWS).
    tta: str
    seconds: float
    #: Half-width of the 95 % limits of agreement on the validation films of the same age band
    #: (1.96 x SD of the error; all validation films when the band has fewer than 20), or None when
    #: the model carries no such figures.
    loa_halfwidth_months: float | None = None

    @property
    def years_months(self) -> str:
        return format_years_months(self.months)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["months"] = round(self.months, 2)
        d["years_months"] = self.years_months
        d["seconds"] = round(self.seconds, 3)
        if self.loa_halfwidth_months is not None:
            d["loa_halfwidth_months"] = round(self.loa_halfwidth_months, 1)
        return d


def resolve_sex(given: str | bool | float | None, film: Film | None = None) -> tuple[str, str]:
    """Sex to use and its source: the argument wins, else the DICOM header; else MissingSexError."""
    if given is not None and given != "":
        if isinstance(given, str):
            g = given.strip().upper()[:1]
            if g not in ("M", "F"):
                raise MissingSexError(f"sex must be M or F, got {given!r}")
            return g, "given"
        return ("M" if float(given) >= 0.5 else "F"), "given"
    if film is not None and film.meta.sex in ("M", "F"):
        return film.meta.sex, "dicom"
    raise MissingSexError(
        "The patient's sex is needed (bone-age standards differ for girls and boys) and the film does not "
        "say it: give it (M or F)."
    )


class _FixedSex(torch.nn.Module):
    """Image-only view of the network for Grad-CAM: ``x (N,1,S,S)`` -> months ``(N, 1)``."""

    def __init__(self, net: torch.nn.Module, male: float):
        super().__init__()
        self.net = net
        self.male = male

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        male = torch.full((x.shape[0],), self.male, dtype=x.dtype, device=x.device)
        return self.net(x, male).unsqueeze(1)


class BoneAgePredictor:
    """The bone-age model ready for inference. Thread-safe for concurrent ``predict`` calls."""

    def __init__(self, checkpoint: Path | None = None, device: str | None = None, tta: bool = True):
        settings = get_settings()
        self.device = device or settings.resolved_device()
        self.model: LoadedModel = load_checkpoint(checkpoint or settings.model_path, self.device)
        self.net = self.model.net.to(memory_format=torch.channels_last)
        self.pre = self.model.meta.preprocess_config
        #: The test-time augmentation in use: the one the checkpoint was validated with, or "none".
        self.tta = self.pre.tta if tta else "none"
        self._lock = threading.Lock()

    # ---- provenance
    @property
    def version(self) -> str:
        return self.model.meta.version

    @property
    def weights_sha256(self) -> str:
        return self.model.weights_sha256

    @property
    def preprocess_tag(self) -> str:
        return self.pre.tag()

    def provenance(self) -> dict:
        return {
            "model_version": self.version,
            "weights_sha256": self.weights_sha256,
            "preprocess": self.preprocess_tag,
            "tta": self.tta,
        }

    # ---- inference
    @torch.no_grad()
    def predict_batch(self, films: list[np.ndarray], male: np.ndarray | list[float]) -> np.ndarray:
        """Months ``(N,) float64`` for films (each ``HW uint8``) and sexes (1.0 male, 0.0 female)."""
        if len(films) == 0:
            return np.zeros(0)
        x = to_model_input(list(films), self.pre).to(self.device).contiguous(memory_format=torch.channels_last)
        m = torch.as_tensor(np.asarray(male, dtype=np.float32), device=self.device)
        with self._lock:
            views = tta_views(x, self.tta, self.pre)
            y = torch.stack([self.net(v.contiguous(memory_format=torch.channels_last), m) for v in views]).mean(0)
        return y.double().cpu().numpy()

    def predict(self, pixels: np.ndarray, male: bool | float) -> float:
        """Bone age in months of one ``HW uint8`` film."""
        return float(self.predict_batch([pixels], [float(male)])[0])

    def model_view(self, film: Film, segmentation=None) -> np.ndarray:
        """The pixels this model reads: the film, or for a ``sam-crop`` model the SAM crop of it."""
        if self.pre.view == "film":
            return film.pixels
        if segmentation is None:
            raise BoneAgeError(f"model {self.version} reads the SAM-cropped hand: segment the film first")
        from .segmentation import remove_background_and_crop

        return remove_background_and_crop(film.pixels, segmentation)

    def predict_film(self, film: Film, sex: str | bool | None = None, segmentation=None) -> Prediction:
        """Estimate for a :class:`Film`; ``sex`` ("M"/"F") overrides the DICOM header.

        ``segmentation`` (a :class:`boneage_core.segmentation.Segmentation` of the film) is needed only
        by a model trained on SAM crops (``preprocess.view == "sam-crop"``).
        """
        s, source = resolve_sex(sex, film)
        t = time.perf_counter()
        months = self.predict(self.model_view(film, segmentation), 1.0 if s == "M" else 0.0)
        return Prediction(
            months=months,
            sex=s,
            sex_source=source,
            model_version=self.version,
            weights_sha256=self.weights_sha256,
            preprocess=self.preprocess_tag,
            tta=self.tta,
            seconds=time.perf_counter() - t,
            loa_halfwidth_months=self.uncertainty(months),
        )

    def uncertainty(self, months: float) -> float | None:
        """1.96 x SD of the validation error in the age band of ``months`` (None if not recorded)."""
        from .evaluate import AGE_BANDS_YEARS, band_label

        figures = self.model.meta.validation.get("export") or {}
        bands = figures.get("by_age_band") or {}
        years = min(max(months / 12.0, 0.0), AGE_BANDS_YEARS[-1][1] - 1e-6)
        band = next((bands.get(band_label(lo, hi)) for lo, hi in AGE_BANDS_YEARS if lo <= years < hi), None)
        if band and band.get("n", 0) >= 20:  # too few films in a band: use the overall figure
            figures = band
        sd = figures.get("sd_error_months")
        return 1.96 * sd if sd is not None else None

    # ---- explanation
    def explain(self, pixels: np.ndarray, male: bool | float) -> np.ndarray:
        """Class-activation map of the predicted age: ``HW float32`` in [0, 1] at the film's own size.

        Grad-CAM++ (``pytorch_grad_cam.GradCAMPlusPlus``) at the last feature map (``bn2``), the target
        being the predicted age. Plain Grad-CAM averages the gradients of each channel; for this regression
        head they mostly cancel and its maps came out empty or on the film border (seen on the
        full-resolution RSNA films), which Grad-CAM++'s positive-gradient weighting avoids.
        """
        from pytorch_grad_cam import GradCAMPlusPlus

        from .model import EnsembleNet

        # An ensemble is explained by the weighted mean of its members' maps, each on the input that member reads.
        if isinstance(self.net, EnsembleNet):
            members = [(net, replace(self.pre, input_size=size), float(w)) for net, size, w in
                       zip(self.net.members, self.net.sizes, self.net.member_weights.tolist(), strict=True)]
        else:
            members = [(self.net, self.pre, 1.0)]
        h, w = pixels.shape[:2]
        heat = np.zeros((h, w), np.float32)
        for net, pre, weight in members:
            if weight <= 0:
                continue
            wrapped = _FixedSex(net, float(male)).eval()
            x = to_model_input([pixels], pre).to(self.device)
            with self._lock, GradCAMPlusPlus(model=wrapped, target_layers=[net.backbone.bn2]) as cam:
                one = cam(input_tensor=x, targets=[lambda out: out.sum()])[0]
            one = cv2.resize(np.nan_to_num(one.astype(np.float32), nan=0.0), (w, h), interpolation=cv2.INTER_LINEAR)
            heat += weight * (one / one.max() if one.max() > 0 else one)
        peak = float(heat.max())
        return (heat / peak).clip(0, 1) if peak > 0 else heat
