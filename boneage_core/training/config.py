"""The training configuration: a YAML file (``configs/<name>.yaml``) read into dataclasses.

``TrainConfig.from_yaml(path, {"optim.epochs": 2})`` applies dotted overrides (``--set key=value``) before
building ``DataConfig``, ``PreprocessConfig``, ``AugmentConfig`` and ``OptimConfig``; ``to_dict`` is what
every checkpoint stores, so that a run can be resumed only with the same configuration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ..model.transforms import AugmentConfig, PreprocessConfig


@dataclass
class DataConfig:
    images: str
    labels: str
    #: CSV whose ``id`` column lists the validation films (the fixed split, by id).
    val_ids: str
    #: CSV whose ``id`` column lists films never trained on besides ``val_ids`` (e.g. the whole validation
    #: split when ``val_ids`` is only its tune half: the report half must stay unseen).
    exclude_ids: str = ""
    #: Keep at most this many training / validation films (smoke tests, ablations on a subset); 0 = all.
    limit_train: int = 0
    limit_val: int = 0
    #: Leave out labelled ids with no film in ``images`` (e.g. films whose SAM crop failed) instead of
    #: stopping; the count left out is printed and stored in the checkpoint.
    skip_missing: bool = False
    #: A ``boneage preprocess`` manifest.csv: only its usable films are trained and validated on
    #: (status ok/flagged; with ``review_db``, minus the masks a reader rejected in the review log).
    manifest: str = ""
    review_db: str = ""


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    ema_decay: float = 0.998
    #: Stop after this many optimiser steps in this run (0 = no limit); for smoke tests.
    max_steps: int = 0
    checkpoint_every: int = 200
    #: Freeze the stem and the first ``freeze_blocks`` stages of the backbone (weights and batch-norm
    #: statistics): no backward pass through them, about 2x faster on a CPU. 0: train everything.
    freeze_blocks: int = 0


@dataclass
class TrainConfig:
    name: str
    version: str
    data: DataConfig
    arch: str = "tf_efficientnet_lite0"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: ``{runs}``: the runs folder of the settings (``$BONEAGE_RUNS``, default ``~/boneage-runs``).
    out: str = "{runs}/{name}"
    #: Start from the weights of this bone-age checkpoint instead of ImageNet (warm start, e.g. to
    #: continue at a higher resolution); None: ImageNet.
    init: str | None = None
    seed: int = 0
    #: Speed switches (CPU: channels_last + bf16 autocast roughly halves the step time).
    channels_last: bool = True
    bf16: bool = True

    @property
    def out_dir(self) -> Path:
        from ..settings import get_settings

        return Path(self.out.format(name=self.name, runs=get_settings().runs_dir)).expanduser()

    @property
    def images_dir(self) -> Path:
        """``data.images`` with ``{runs}`` (the runs folder) and ``~`` expanded: crops made by ``boneage
        localize --crops`` live in the runs folder, outside the clone."""
        from ..settings import get_settings

        return Path(self.data.images.format(runs=get_settings().runs_dir)).expanduser()

    @classmethod
    def from_yaml(cls, path: Path, overrides: dict | None = None) -> TrainConfig:
        raw = yaml.safe_load(Path(path).read_text())
        for k, v in (overrides or {}).items():
            node = raw
            *parents, leaf = k.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = v
        aug = raw.pop("augment", {}) or {}
        if "scale" in aug:
            aug["scale"] = tuple(aug["scale"])
        return cls(
            data=DataConfig(**raw.pop("data")),
            preprocess=PreprocessConfig(**(raw.pop("preprocess", {}) or {})),
            augment=AugmentConfig(**aug),
            optim=OptimConfig(**(raw.pop("optim", {}) or {})),
            **raw,
        )

    def to_dict(self) -> dict:
        return asdict(self)
