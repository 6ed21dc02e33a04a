"""Sizes of the region crops that ``boneage localize --crops/--carpal-crops`` wrote (docs/MODEL_CARD.md).

    python benchmarks/crop_sizes.py ~/boneage-runs/hand-crops ~/boneage-runs/carpal-crops

For each folder of PNG crops of the 299 x 299 training copies: how many, the longer side and the area as
a share of the copy (5th, 50th and 95th percentiles), and how many are the whole film (no hand or no
wrist found). Reads only the PNG headers.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np

SIDE = 299


def png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+")
    for folder in ap.parse_args().folders:
        wh = np.array([png_size(p) for p in sorted(folder.glob("*.png"))])
        side, area = wh.max(1), wh.prod(1) / SIDE**2
        whole = int(((wh[:, 0] == SIDE) & (wh[:, 1] == SIDE)).sum())
        p = [5, 50, 95]
        print(
            f"{folder}: {len(wh)} crops; longer side px (5/50/95th) {np.percentile(side, p).round().tolist()}; "
            f"area share {np.percentile(area, p).round(3).tolist()}; whole film {whole}"
        )


if __name__ == "__main__":
    main()
