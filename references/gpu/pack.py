"""Pack one member's training films for a lent GPU machine (the `device` tool), whose working tree is capped
at 64 MiB: the films as WebP (quality 80: about 2.6 KB a hand crop, 3.3 KB a whole film, a mean change of
about 1 grey level), the RSNA labels, and the wheel of the one package the training code needs that the
machine's image lacks (pydicom). Everything goes into ``gpu/`` (git-ignored; name it in the call's
``carry``). See references/gpu/README.md.

    python references/gpu/pack.py --images ~/boneage-runs/hand-crops --out gpu
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

FILM_SUFFIXES = {".png", ".jpg", ".jpeg"}
#: The training code's one import that the GPU machine's image lacks (its own torch, timm, Pillow,
#: OpenCV, PyYAML and numpy serve).
WHEELS = ("pydicom==3.0.2",)


def to_webp(src: Path, dst: Path, quality: int) -> float:
    """Write ``src`` (grey) as WebP at ``dst``; returns the mean absolute change in grey levels."""
    a = np.asarray(Image.open(src).convert("L"))
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "WEBP", quality=quality, method=6)
    dst.write_bytes(buf.getvalue())
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    return float(np.abs(back.astype(np.int16) - a).mean())


def pack(images: Path, labels: Path, out: Path, quality: int = 80, wheels: bool = True) -> dict:
    films = sorted(p for p in images.iterdir() if p.suffix.lower() in FILM_SUFFIXES)
    if not films:
        raise SystemExit(f"no PNG or JPEG films in {images}")
    (out / "films").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        change = list(pool.map(lambda p: to_webp(p, out / "films" / f"{p.stem}.webp", quality), films))
    shutil.copyfile(labels, out / "labels.csv")
    if wheels:
        (out / "wheels").mkdir(exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(out / "wheels"),
                *WHEELS,
            ],
            check=True,
        )
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "films": len(films),
        "mean_change_grey_levels": round(float(np.mean(change)), 3),
        "mib": size / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="the member's training films (PNG or JPEG)")
    ap.add_argument("--labels", type=Path, default=Path("../shared/data/rsna-train/labels.csv"))
    ap.add_argument("--out", type=Path, default=Path("gpu"))
    ap.add_argument("--quality", type=int, default=80)
    ap.add_argument("--no-wheels", action="store_true", help="skip the pydicom wheel (no registry)")
    args = ap.parse_args()
    r = pack(args.images, args.labels, args.out, args.quality, wheels=not args.no_wheels)
    print(
        f"{r['films']} films -> {args.out}/films (mean change {r['mean_change_grey_levels']} grey levels); "
        f"{args.out}: {r['mib']:.1f} MiB"
    )


if __name__ == "__main__":
    main()
