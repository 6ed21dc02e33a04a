"""The hand localizer against SAM on the full-resolution RSNA films: agreement (Dice) and time per film.

    python benchmarks/bench_localizer.py [--films ../shared/data/rsna-fullres] [--out out/bench-localizer.json]

For each film, SAM (``HandSegmenter``, the Read page's masks) and the localizer's finished mask
(``Localizer.segment``, as the DICOM node and ``boneage localize`` use it) are computed at the film's own
size; prints one JSON object: Dice summary (on the films SAM does not flag), the films under 0.95, and
the localizer's seconds per film. None of the 32 full-resolution films is in the localizer's training
list (``configs/splits/localizer-v1-films.csv``); the script says how many are.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", type=Path, default=ROOT.parent / "shared" / "data" / "rsna-fullres")
    ap.add_argument("--localizer", type=Path, default=ROOT / "assets" / "models" / "hand-localizer.pt")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from boneage_core.films.read import read_film
    from boneage_core.model.localizer import load_localizer
    from boneage_core.segment.segmenter import HandSegmenter
    from boneage_core.training.localizer import dice

    with open(ROOT / "configs" / "splits" / "localizer-v1-films.csv", newline="") as f:
        trained = {r["id"] for r in csv.DictReader(f)}
    loc = load_localizer(args.localizer)
    sam = HandSegmenter()
    rows = []
    for path in sorted(args.films.glob("*.jpg")):
        film = read_film(path.read_bytes(), name=path.name).pixels
        sam.set_image(film)
        reference = sam.segment()
        t = time.perf_counter()
        mask = loc.segment(film).mask
        seconds = time.perf_counter() - t
        rows.append(
            {
                "id": path.stem,
                "sam_flagged": reference.quality.flagged,
                "dice": round(dice(mask, reference.mask), 4),
                "seconds": round(seconds, 3),
            }
        )
    scores = np.array([r["dice"] for r in rows if not r["sam_flagged"]])
    result = {
        "localizer": loc.name,
        "films": len(rows),
        "in_localizer_training": sum(r["id"] in trained for r in rows),
        "compared": len(scores),
        "dice_mean": round(float(scores.mean()), 4),
        "dice_median": round(float(np.median(scores)), 4),
        "dice_min": round(float(scores.min()), 4),
        "share_ge_095": round(float((scores >= 0.95).mean()), 4),
        "under_095": {r["id"]: r["dice"] for r in rows if not r["sam_flagged"] and r["dice"] < 0.95},
        "localizer_seconds_median": round(float(np.median([r["seconds"] for r in rows])), 3),
        "per_film": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "per_film"}))


if __name__ == "__main__":
    main()
