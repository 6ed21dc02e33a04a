"""Bone-age checkpoints: plain ``torch.save`` dicts carrying their own metadata, checked before use.

A checkpoint is ``{"meta": ModelMeta.to_dict(), "state_dict": {name: tensor}, **extra}``: no pickled class,
so it loads with ``torch.load(weights_only=True)`` whatever the package layout. :class:`ModelMeta` holds the
architecture, preprocessing, training data, validation figures, a site's adaptation and a version string;
:func:`load_checkpoint` checks them and builds the :class:`~boneage_core.model.net.BoneAgeNet` (or ensemble)
they describe, with the recalibration an adapted checkpoint carries (:mod:`boneage_core.model.adapter`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError
from .adapter import RECALIBRATION_METHODS, Adapter, split_state
from .net import ENSEMBLE_ARCH, OUTPUT_MAP_PREFIX, BoneAgeNet, EnsembleNet, OutputMap
from .transforms import PreprocessConfig

#: Format of the checkpoint dictionary; bump when its layout changes.
CHECKPOINT_FORMAT = 1


@dataclass
class ModelMeta:
    """What a checkpoint says about itself."""

    version: str
    arch: str
    preprocess: dict
    training: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    format: int = CHECKPOINT_FORMAT
    #: ``boneage adapt``: how the model was adapted to a site (empty for a model that was not).
    adaptation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)


def save_checkpoint(
    path: Path,
    model: nn.Module,
    meta: ModelMeta,
    *,
    half: bool = False,
    extra: dict | None = None,
) -> str:
    """Write ``{"meta", "state_dict", **extra}`` atomically; returns the sha256 of the weights."""
    if meta.adaptation.get("method") in RECALIBRATION_METHODS:
        raise CheckpointError(
            f"{meta.version} carries a site's map of the estimate, which is not part of the network: "
            "write the base model and adapt it again (boneage adapt)"
        )
    state = {k: (v.half() if half and _halves(k, v) else v) for k, v in model.state_dict().items()}
    payload = {"meta": meta.to_dict(), "state_dict": state, **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return weights_sha256(state)


def _halves(key: str, v: torch.Tensor) -> bool:
    """Shipped in half precision: the floating-point weights, not an ensemble's output map (its knots and
    slopes set the estimate itself to a fraction of a month)."""
    return v.is_floating_point() and not key.startswith(OUTPUT_MAP_PREFIX)


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of the tensors themselves (not of the file), stable across re-saves."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        h.update(k.encode())
        buf = io.BytesIO()
        buf.write(v.detach().cpu().contiguous().numpy().tobytes())
        h.update(buf.getvalue())
    return h.hexdigest()


def _output_map(path: Path, state: dict[str, torch.Tensor]) -> OutputMap | None:
    """The ensemble's output map from its tensors (None when it has none: the identity)."""
    if OUTPUT_MAP_PREFIX + "knots" not in state:
        return None
    try:
        k, v, s = (state[OUTPUT_MAP_PREFIX + n].double().tolist() for n in ("knots", "values", "slopes"))
        return OutputMap(k, v, (s[0], s[1]))
    except (KeyError, ValueError, IndexError, TypeError) as e:
        raise CheckpointError(f"{path.name}: its output map is not a monotone map: {e}") from e


@dataclass
class LoadedModel:
    net: BoneAgeNet | EnsembleNet
    meta: ModelMeta
    weights_sha256: str
    path: Path
    #: The recalibration of the estimate an adapted checkpoint carries (None: the network's own estimate).
    adapter: Adapter | None = None


def load_checkpoint(path: Path, device: str = "cpu") -> LoadedModel:
    """Load a bone-age checkpoint, check its metadata, return the model in eval mode (float32)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"{path.name} is not a readable checkpoint: {e}") from e
    if not isinstance(payload, dict) or "meta" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path.name} is not a bone-age checkpoint (no meta/state_dict)")
    raw = payload["meta"]
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path.name}: checkpoint format {raw.get('format')}, expected {CHECKPOINT_FORMAT}"
        )
    meta = ModelMeta(**{k: raw[k] for k in ModelMeta.__dataclass_fields__ if k in raw})
    for key in ("input_size", "canonical_side", "view"):
        if key not in meta.preprocess:
            raise CheckpointError(f"{path.name}: preprocessing metadata lacks {key!r}")
    sha = weights_sha256(payload["state_dict"])  # the adapter's tensors included
    state, adapter = split_state(payload["state_dict"])
    if (adapter is not None) != (meta.adaptation.get("method") in RECALIBRATION_METHODS):
        raise CheckpointError(
            f"{path.name}: its adapter tensors and its adaptation metadata disagree "
            f"(method {meta.adaptation.get('method')!r}, adapter {'present' if adapter else 'absent'})"
        )
    if meta.arch == ENSEMBLE_ARCH:
        members = meta.training.get("members") or []
        if not members:
            raise CheckpointError(f"{path.name}: an ensemble checkpoint without members")
        net = EnsembleNet(
            [(m["arch"], int(m["preprocess"]["input_size"])) for m in members],
            views=[m["preprocess"].get("view", "film") for m in members],
            output_map=_output_map(path, state),
        )
        if "member_weights" not in state:  # written before ensembles had weights: the plain mean
            state = {**state, "member_weights": net.member_weights.clone()}
        if OUTPUT_MAP_PREFIX + "knots" not in state:  # written before output maps: the identity
            state = {**state, **{OUTPUT_MAP_PREFIX + k: v for k, v in net.output_map.state_dict().items()}}
    else:
        net = BoneAgeNet(meta.arch, pretrained=False)
    try:
        net.load_state_dict(
            {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in state.items()}
        )
    except RuntimeError as e:
        raise CheckpointError(f"{path.name}: weights do not fit {meta.arch}: {e}") from e
    net.eval().to(device)
    return LoadedModel(net=net, meta=meta, weights_sha256=sha, path=path, adapter=adapter)
