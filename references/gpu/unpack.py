"""On the GPU machine: the packed WebP films back as lossless PNG, which the film reader reads (it refuses
WebP by design). ``python3 references/gpu/unpack.py gpu/films /tmp/runs/gpu-films``"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image


def unpack_one(args: tuple[Path, Path]) -> None:
    src, out = args
    Image.open(src).convert("L").save(out / f"{src.stem}.png", compress_level=1)


def main(src: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    films = sorted(src.glob("*.webp"))
    with ProcessPoolExecutor() as pool:
        list(pool.map(unpack_one, [(p, out) for p in films], chunksize=64))
    print(f"{len(films)} films -> {out}")
    return 0 if films else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
