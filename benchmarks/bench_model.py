"""Timings of the bone-age model on this machine (prints figures; asserts nothing).

    .venv/bin/python benchmarks/bench_model.py [--films DIR] [--eval-labels CSV] [--model PATH]

* model load (checkpoint -> ready predictor);
* inference per full-resolution film, test-time mirror included, one film at a time (the app's case);
* Grad-CAM++ per film;
* agreement between each full-resolution film and its 299x299 training copy;
* ``evaluate`` of 1,000 preprocessed 299x299 films (the fixed validation split), end to end:
  reading, inference with TTA, metrics, files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boneage_core.evaluate.folder import evaluate_folder  # noqa: E402
from boneage_core.films.read import read_film  # noqa: E402
from boneage_core.model.predictor import BoneAgePredictor  # noqa: E402


def _stats(name: str, xs: list[float]) -> None:
    print(f"{name:<38} median {statistics.median(xs):6.3f} s   max {max(xs):6.3f} s   (n={len(xs)})")


def main() -> None:
    shared = ROOT.parent / "shared" / "data"
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--films", type=Path, default=shared / "rsna-fullres")
    ap.add_argument("--eval-images", type=Path, default=shared / "rsna-train" / "images")
    ap.add_argument("--eval-labels", type=Path, default=ROOT / "configs" / "splits" / "rsna-val.csv")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    t = time.perf_counter()
    predictor = BoneAgePredictor(args.model)
    print(f"{'model load':<38} {time.perf_counter() - t:6.3f} s   ({predictor.version})")

    films = [read_film(p).pixels for p in sorted(args.films.glob("*.jpg"))]
    predictor.predict(films[0], True)  # warm-up
    infer, cam = [], []
    for i, pixels in enumerate(films):
        t = time.perf_counter()
        predictor.predict(pixels, i % 2 == 0)
        infer.append(time.perf_counter() - t)
        t = time.perf_counter()
        predictor.explain(pixels, i % 2 == 0)
        cam.append(time.perf_counter() - t)
    _stats("inference per full-res film (TTA)", infer)
    _stats("Grad-CAM++ per full-res film", cam)

    # Full-resolution film versus its 299x299 training copy (same id in rsna-train).
    copies_dir = args.eval_images
    pairs = [
        (p, copies_dir / p.name) for p in sorted(args.films.glob("*.jpg")) if (copies_dir / p.name).is_file()
    ]
    if pairs:
        import csv

        with open(args.films / "labels.csv") as f:
            male = {r["id"]: 1.0 if r["male"] == "True" else 0.0 for r in csv.DictReader(f)}
        sexes = [male[p.stem] for p, _ in pairs]
        full = predictor.predict_batch([read_film(p).pixels for p, _ in pairs], sexes)
        copy = predictor.predict_batch([read_film(c).pixels for _, c in pairs], sexes)
        diff = abs(full - copy)
        print(
            f"{'full-res vs 299 copy, |difference|':<38} mean {diff.mean():6.2f} mo   max {diff.max():6.2f} mo"
            f"   (n={len(pairs)})"
        )

    if not args.skip_eval:
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            res = evaluate_folder(args.eval_images, args.eval_labels, Path(out), predictor)
            dt = time.perf_counter() - t
        m = res.metrics
        print(
            f"{'evaluate ' + str(m['n']) + ' films':<38} {dt:6.1f} s   ({dt / max(1, m['n']) * 1000:.0f} ms/film)"
            f"   MAE {m['mae_months']:.2f} months"
        )


if __name__ == "__main__":
    main()
