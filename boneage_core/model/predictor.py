"""Bone-age inference and Grad-CAM++ explanation: a thin stateful class, numpy in, numbers out.

    predictor = BoneAgePredictor()                # the shipped model (assets/models/), on the CPU
    months = predictor.predict(pixels, male=True) # pixels: HW uint8 film, any size
    pred = predictor.predict_film(film, sex=None) # sex from the argument, else from the DICOM header
    heat = predictor.explain(pixels, male=True)   # HW float32 in [0, 1], the film's own size

The film goes through :func:`boneage_core.model.transforms.to_model_input`, the same function used in
training; a member that reads the hand crop or the carpal square gets it made from the film by the hand
localizer first, with the functions that made its training crops (:mod:`boneage_core.model.views`). With ``tta=True`` (default) the estimate is the mean over the test-time augmentation the
checkpoint was validated with (``preprocess.tta``: the mirror image, or small zooms and rotations).
Grad-CAM++ (the ``grad-cam`` package) targets the predicted age at the last feature map of the backbone,
and the map is stretched back onto the film the reader sees (the inverse of the canonical stretch)
(:mod:`boneage_core.model.explain`).

A checkpoint adapted to a site (``boneage adapt``) carries a monotone map of the estimate per sex
(:mod:`boneage_core.model.adapter`): the estimate is the map of the mean over the views, the spread the SD
of the mapped views, and the calibrated interval's ends are those of the base estimate mapped through it.
Provenance (version, weights sha256) is the adapted checkpoint's, whose hash covers the map.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..clinical.ages import format_years_months
from ..clinical.bands import AGE_BANDS_YEARS, band_label
from ..errors import BoneAgeError, MissingSexError
from ..films.film import Film
from ..settings import get_settings
from .checkpoint import LoadedModel, load_checkpoint
from .explain import gradcam_heatmap
from .intervals import IntervalCalibration
from .views import film_views, localizer_for, model_inputs, to_device, tta_inputs


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
    #: Test-time augmentation: "none", "flip" or "geo4" (see boneage_core.model.transforms.TTA_VIEWS).
    tta: str
    seconds: float
    #: Half-width of the 95 % limits of agreement on the validation films of the same age band
    #: (1.96 x SD of the error; all validation films when the band has fewer than 20), or None when
    #: the model carries no such figures.
    loa_halfwidth_months: float | None = None
    #: The calibrated interval for a single radiologist's reading (:mod:`boneage_core.model.intervals`),
    #: or None when the model carries no calibration.
    interval_low_months: float | None = None
    interval_high_months: float | None = None
    interval_level: float | None = None

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
        for key in ("interval_low_months", "interval_high_months"):
            if d[key] is not None:
                d[key] = round(d[key], 1)
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
        #: The interval calibration the checkpoint carries (None: estimates come without an interval).
        self.interval = IntervalCalibration.from_dict(self.model.meta.validation.get("interval"))
        #: The site's recalibration of the estimate (None: the network's own estimate).
        self.adapter = self.model.adapter
        #: The hand localizer the ``hand``/``carpal`` members crop with (None when no member needs it).
        self.localizer = localizer_for(self.pre, settings.localizer_path)

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
    def predict_batch(self, films: list[np.ndarray], male: np.ndarray | list[float]) -> np.ndarray:
        """Months ``(N,) float64`` for films (each ``HW uint8``) and sexes (1.0 male, 0.0 female)."""
        return self.predict_batch_spread(films, male)[0]

    def predict_batch_spread(
        self, films: list[np.ndarray], male: np.ndarray | list[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(months, spread), both ``(N,) float64``: the mean over the TTA views and their standard
        deviation (0 without TTA), both through the site's map when the model is adapted."""
        months, spread, _ = self.predict_batch_interval(films, male)
        return months, spread

    def predict_batch_interval(
        self, films: list[np.ndarray], male: np.ndarray | list[float]
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """(months, spread, bounds): :meth:`predict_batch_spread` and the calibrated ``(low, high)`` of
        each film (None without a calibration); an adapted model maps the base interval's ends."""
        views = self._views(films, male)
        raw = views.mean(0)
        spread = views.std(0) if len(views) > 1 else np.zeros_like(raw)
        bounds = self.interval.bounds(raw, spread) if self.interval else None
        if self.adapter is None:
            return raw, spread, bounds
        adapted = self.adapter.apply(views, male)
        months = self.adapter.apply(raw, male)
        if bounds is not None:
            bounds = (self.adapter.apply(bounds[0], male), self.adapter.apply(bounds[1], male))
        return months, (adapted.std(0) if len(views) > 1 else np.zeros_like(raw)), bounds

    @torch.no_grad()
    def _views(self, films: list[np.ndarray], male: np.ndarray | list[float]) -> np.ndarray:
        """The network's estimate of each TTA view, ``(V, N) float64`` (months, before any adapter)."""
        if len(films) == 0:
            return np.zeros((1, 0))
        x = to_device(model_inputs(list(films), self.pre, self.localizer), self.device)
        m = torch.as_tensor(np.asarray(male, dtype=np.float32), device=self.device)
        with self._lock:
            views = [to_device(v, self.device) for v in tta_inputs(x, self.tta, self.pre)]
            y = torch.stack([self.net(v, m) for v in views]).double()
        return y.cpu().numpy()

    def interval_bounds(self, months: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The calibrated (low, high) for these estimates, or None without a calibration.

        Only for a model that was not adapted (an adapted model's interval is the base interval mapped,
        which needs the base estimate): use :meth:`predict_batch_interval`."""
        if self.adapter is not None:
            raise BoneAgeError(
                f"model {self.version} is adapted: its interval comes with predict_batch_interval"
            )
        return self.interval.bounds(months, spread) if self.interval else None

    def predict(self, pixels: np.ndarray, male: bool | float) -> float:
        """Bone age in months of one ``HW uint8`` film."""
        return float(self.predict_batch([pixels], [float(male)])[0])

    def model_view(self, film: Film, segmentation=None) -> np.ndarray:
        """The pixels to give :meth:`predict_batch`: the film; for a ``sam-crop`` model the SAM crop of it.
        (The ``hand`` and ``carpal`` views are made from the film by the predictor itself, with the
        hand localizer, as in training: :mod:`boneage_core.model.views`.)"""
        if self.pre.view != "sam-crop":
            return film.pixels
        if segmentation is None:
            raise BoneAgeError(f"model {self.version} reads the SAM-cropped hand: segment the film first")
        from ..segment.postprocess import remove_background_and_crop

        return remove_background_and_crop(film.pixels, segmentation)

    def predict_film(self, film: Film, sex: str | bool | None = None, segmentation=None) -> Prediction:
        """Estimate for a :class:`Film`; ``sex`` ("M"/"F") overrides the DICOM header.

        ``segmentation`` (a :class:`boneage_core.segment.result.Segmentation` of the film) is needed only
        by a model trained on SAM crops (``preprocess.view == "sam-crop"``).
        """
        s, source = resolve_sex(sex, film)
        t = time.perf_counter()
        months_, _, bounds = self.predict_batch_interval(
            [self.model_view(film, segmentation)], [1.0 if s == "M" else 0.0]
        )
        months = float(months_[0])
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
            interval_low_months=float(bounds[0][0]) if bounds else None,
            interval_high_months=float(bounds[1][0]) if bounds else None,
            interval_level=self.interval.level if self.interval else None,
        )

    def uncertainty(self, months: float) -> float | None:
        """1.96 x SD of the validation error in the age band of ``months`` (None if not recorded)."""
        figures = self.model.meta.validation.get("export") or {}
        bands = figures.get("by_age_band") or {}
        years = min(max(months / 12.0, 0.0), AGE_BANDS_YEARS[-1][1] - 1e-6)
        band = next((bands.get(band_label(lo, hi)) for lo, hi in AGE_BANDS_YEARS if lo <= years < hi), None)
        if band and band.get("n", 0) >= 20:  # too few films in a band: use the overall figure
            figures = band
        sd = figures.get("sd_error_months")
        return 1.96 * sd if sd is not None else None

    # ---- explanation
    def explain(self, pixels: np.ndarray, male: bool | float, member: int | None = None) -> np.ndarray:
        """Class-activation map of the predicted age: ``HW float32`` in [0, 1] at the film's own size.

        Grad-CAM++ at the last feature map, the target being the predicted age; an ensemble gives the
        weighted mean of its members' maps, a crop member's map put back where its crop lies on the film
        (:func:`boneage_core.model.explain.gradcam_heatmap`). ``member``: that member of an ensemble alone.
        """
        views = {v: made[0] for v, made in film_views([pixels], self.pre.views, self.localizer).items()}
        return gradcam_heatmap(
            self.net, self.pre, pixels, male, device=self.device, lock=self._lock, member=member, views=views
        )
