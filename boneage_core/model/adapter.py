"""A site's recalibration of the estimate, applied by the predictor: one monotone map per sex.

``boneage adapt`` (:mod:`boneage_core.hospital.adapt`) fits, on a hospital's own reference readings, a
non-decreasing piecewise-linear map of the base model's estimate for girls and one for boys (a line, or
an isotonic fit) and writes the base checkpoint again with it. The maps travel in the checkpoint's
``state_dict`` as ``adapter.<sex>.x`` (knots, months of the base estimate), ``adapter.<sex>.y`` (the
adapted months there) and ``adapter.<sex>.slopes`` (the slopes below the first knot and above the last),
so the weights sha256 covers them: an adapted model's hash differs from its base's, and every prediction
made with it names the map that made it. What the maps mean (method, parameters, cross-validated figures
before and after, the base model) is ``meta["adaptation"]``, read by :func:`adaptation_info`.

    adapter = Adapter.from_state_dict(state)             # None when the checkpoint carries no map
    months = adapter.apply(base_months, male)            # (N,) arrays; male 1.0 / 0.0
    info = adaptation_info(Path("site.pt"))              # the dashboard's before/after figures, or None

A monotone map keeps the order of the estimates, so an interval's ends mapped through it stay an interval
around the mapped estimate (:class:`~boneage_core.model.predictor.BoneAgePredictor` does that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError

#: Prefix of the adapter's tensors in a checkpoint's state_dict.
ADAPTER_PREFIX = "adapter."
#: The sexes an adapter maps, in the order of ``male`` 0.0 and 1.0.
SEXES = ("F", "M")
#: Adaptation methods that carry a map (fine-tuning changes the weights instead).
RECALIBRATION_METHODS = ("offset", "linear", "isotonic")
#: The adapted estimate is kept in [0, MONTHS_MAX] months (the range a reading may take).
MONTHS_MAX = 240.0


@dataclass(frozen=True)
class MonotoneMap:
    """A continuous non-decreasing piecewise-linear map of months: through the knots ``(x, y)``, and
    with ``slope_low`` below ``x[0]`` and ``slope_high`` above ``x[-1]``; the result is clipped to
    [0, :data:`MONTHS_MAX`]. A line ``a + b * months`` is one knot with both slopes ``b``."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    slope_low: float
    slope_high: float

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)
        if x.ndim != 1 or len(x) == 0 or x.shape != y.shape:
            raise ValueError(f"a monotone map needs matching knots, got x {x.shape} and y {y.shape}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("a monotone map's knots must be finite")
        if (np.diff(x) <= 0).any() or (np.diff(y) < 0).any():
            raise ValueError("a monotone map needs increasing x and non-decreasing y")
        if not (self.slope_low >= 0 and self.slope_high >= 0):
            raise ValueError(
                f"a monotone map's end slopes must be >= 0, got {self.slope_low}, {self.slope_high}"
            )

    @classmethod
    def line(cls, intercept: float, slope: float, at: float = 120.0) -> MonotoneMap:
        """``intercept + slope * months`` (one knot at ``at``)."""
        return cls((float(at),), (float(intercept + slope * at),), float(slope), float(slope))

    @classmethod
    def identity(cls) -> MonotoneMap:
        return cls.line(0.0, 1.0)

    def __call__(self, months: np.ndarray | float) -> np.ndarray:
        m = np.asarray(months, dtype=np.float64)
        x, y = np.asarray(self.x), np.asarray(self.y)
        out = np.interp(m, x, y)
        out = np.where(m < x[0], y[0] + self.slope_low * (m - x[0]), out)
        out = np.where(m > x[-1], y[-1] + self.slope_high * (m - x[-1]), out)
        return np.clip(out, 0.0, MONTHS_MAX)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "x": torch.tensor(self.x, dtype=torch.float64),
            "y": torch.tensor(self.y, dtype=torch.float64),
            "slopes": torch.tensor([self.slope_low, self.slope_high], dtype=torch.float64),
        }

    @classmethod
    def from_tensors(cls, x: torch.Tensor, y: torch.Tensor, slopes: torch.Tensor) -> MonotoneMap:
        s = slopes.double().tolist()
        return cls(tuple(x.double().tolist()), tuple(y.double().tolist()), s[0], s[1])


@dataclass(frozen=True)
class Adapter:
    """The map of each sex (:data:`SEXES`)."""

    maps: dict[str, MonotoneMap]

    def __post_init__(self) -> None:
        if sorted(self.maps) != sorted(SEXES):
            raise ValueError(f"an adapter maps both sexes {SEXES}, got {sorted(self.maps)}")

    def apply(self, months: np.ndarray, male: np.ndarray | list[float]) -> np.ndarray:
        """Adapted months ``(N,)`` (or ``(V, N)``: the map applies elementwise, sex by column)."""
        months = np.asarray(months, dtype=np.float64)
        is_male = np.broadcast_to(np.asarray(male, dtype=np.float64) >= 0.5, months.shape)
        return np.where(is_male, self.maps["M"](months), self.maps["F"](months))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors to put in a checkpoint's state_dict (:data:`ADAPTER_PREFIX` keys)."""
        return {
            f"{ADAPTER_PREFIX}{sex}.{name}": t
            for sex in SEXES
            for name, t in self.maps[sex].tensors().items()
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Adapter | None:
        """The adapter of a checkpoint's state_dict, or None when it has no :data:`ADAPTER_PREFIX` key."""
        keys = {k for k in state if k.startswith(ADAPTER_PREFIX)}
        if not keys:
            return None
        try:
            return cls(
                {
                    sex: MonotoneMap.from_tensors(
                        *(state[f"{ADAPTER_PREFIX}{sex}.{n}"] for n in ("x", "y", "slopes"))
                    )
                    for sex in SEXES
                }
            )
        except (KeyError, ValueError, IndexError) as e:
            raise CheckpointError(f"the checkpoint's adapter is incomplete or not monotone: {e}") from e


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Adapter | None]:
    """A checkpoint's state_dict as (the network's tensors, its adapter or None)."""
    net = {k: v for k, v in state.items() if not k.startswith(ADAPTER_PREFIX)}
    return net, Adapter.from_state_dict(state)


def adaptation_info(path: Path) -> dict | None:
    """``meta["adaptation"]`` of a model file (method, case count, per-sex parameters, the base model,
    cross-validated figures ``cv.before`` / ``cv.after``), or None for a model that was not adapted."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"{Path(path).name} is not a readable checkpoint: {e}") from e
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{Path(path).name} is not a bone-age checkpoint (no meta)")
    return meta.get("adaptation") or None
