"""Per-film timings of the segmentation pipeline on this machine (prints figures; asserts nothing).

    .venv/bin/python benchmarks/bench_segmentation.py [--films DIR] [--limit N]

Stages: reading a DICOM (built in memory from the film: 12-bit, MONOCHROME1, RLE, windowed), the SAM
encoder (``set_image``), mask selection (automatic prompts, decodes, scoring, snapping), a re-prompt
(one decode) and the background removal + crop. Default films: ../shared/data/rsna-fullres.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dicom_fixtures import make_dicom  # noqa: E402
from pydicom.uid import RLELossless  # noqa: E402

from boneage_core.films.read import read_film  # noqa: E402
from boneage_core.segment.postprocess import remove_background_and_crop  # noqa: E402
from boneage_core.segment.segmenter import HandSegmenter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--films", type=Path, default=ROOT.parent / "shared" / "data" / "rsna-fullres")
    ap.add_argument("--limit", type=int, default=32)
    args = ap.parse_args()
    films = sorted(args.films.glob("*.jpg"))[: args.limit] or sorted((ROOT / "assets/samples").glob("*.jpg"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(films)} films from {args.films}"
    )
    seg = HandSegmenter()
    seg.set_image(read_film(films[0]).pixels)  # warm-up
    seg.segment()
    times: dict[str, list[float]] = {k: [] for k in ("read_dicom", "encoder", "select", "reprompt", "crop")}
    for path in films:
        px = read_film(path).pixels
        px12 = (255 - px).astype(np.uint16) * 16  # 12-bit, stored inverted as MONOCHROME1
        data = make_dicom(
            px12, photometric="MONOCHROME1", bits_stored=12, window=(2048, 4096), transfer_syntax=RLELossless
        )
        t = time.perf_counter()
        film = read_film(data)
        times["read_dicom"].append(time.perf_counter() - t)
        t = time.perf_counter()
        seg.set_image(film.pixels)
        times["encoder"].append(time.perf_counter() - t)
        t = time.perf_counter()
        result = seg.segment()
        times["select"].append(time.perf_counter() - t)
        t = time.perf_counter()
        seg.refine(result.points, result.labels)
        times["reprompt"].append(time.perf_counter() - t)
        t = time.perf_counter()
        remove_background_and_crop(film.pixels, result)
        times["crop"].append(time.perf_counter() - t)
    print(f"{'stage':<12}{'median s':>10}{'mean s':>10}{'max s':>10}")
    for k, v in times.items():
        print(f"{k:<12}{statistics.median(v):>10.3f}{statistics.mean(v):>10.3f}{max(v):>10.3f}")
    seg_total = [e + s for e, s in zip(times["encoder"], times["select"], strict=True)]
    total = [
        sum(x) for x in zip(*(times[k] for k in ("read_dicom", "encoder", "select", "crop")), strict=True)
    ]
    print(
        f"segmentation (encoder + selection) per film: median {statistics.median(seg_total):.2f} s, "
        f"max {max(seg_total):.2f} s"
    )
    print(
        f"whole film (read + segment + crop): mean {statistics.mean(total):.2f} s "
        f"-> 100 films ~ {100 * statistics.mean(total) / 60:.1f} min (PNG writing not included)"
    )


if __name__ == "__main__":
    main()
