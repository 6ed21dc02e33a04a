"""What a run shows and records as it goes: the progress bar, ``<out>/log.csv`` and TensorBoard scalars."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def progress_bar(it, enabled: bool, desc: str):
    if not enabled:
        return _Quiet(it)
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="step", dynamic_ncols=True, mininterval=5)


class _Quiet:
    def __init__(self, it):
        self.it = it

    def __iter__(self) -> Iterator:
        return iter(self.it)

    def set_postfix(self, **_: object) -> None:
        pass


class RunLog:
    """``log.csv`` (one row per 20 steps and per validation) and TensorBoard scalars."""

    FIELDS = ["time", "step", "epoch", "lr", "train_mae", "val_mae", "val_mae_no_tta", "val_bias"]

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.running = float("nan")
        self._acc: list[float] = []
        if not enabled:
            return
        path = out / "log.csv"
        new = not path.exists()
        self.f = open(path, "a", newline="")  # noqa: SIM115 - kept open for the whole run, closed in close()
        self.w = csv.DictWriter(self.f, fieldnames=self.FIELDS)
        if new:
            self.w.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self.tb = None

    def step(self, step: int, epoch: int, lr: float, mae: float) -> None:
        self._acc.append(mae)
        self._acc = self._acc[-50:]
        self.running = float(np.mean(self._acc))
        if not self.enabled or step % 20:
            return
        self.w.writerow(
            {"time": round(time.time()), "step": step, "epoch": epoch, "lr": lr, "train_mae": self.running}
        )
        self.f.flush()
        if self.tb:
            self.tb.add_scalar("train/mae_months", self.running, step)
            self.tb.add_scalar("train/lr", lr, step)

    def epoch(self, val: dict) -> None:
        if not self.enabled:
            return
        self.w.writerow(
            {
                "time": round(time.time()),
                "step": val["step"],
                "epoch": val["epoch"],
                **{k: val[k] for k in ("val_mae", "val_mae_no_tta", "val_bias")},
            }
        )
        self.f.flush()
        if self.tb:
            for k in ("val_mae", "val_mae_no_tta", "val_bias"):
                self.tb.add_scalar(f"val/{k}", val[k], val["step"])

    def close(self) -> None:
        if self.enabled:
            self.f.close()
            if self.tb:
                self.tb.close()
