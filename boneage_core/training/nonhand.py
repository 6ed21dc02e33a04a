"""Pictures that are not hand films, built offline, to measure the gate's ``not_hand`` flag.

No other radiographs can be fetched here, so the set is what can be made on this machine: rendered
documents (text pages, black on white and white on black), tables and charts, noise and texture fields,
geometric shapes, and crops of the photographs shipped with matplotlib (``mpl-data/sample_data``). All
are (H, W) uint8. It says nothing about chest films or other body parts: see the model card.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_WORDS = [
    "bone",
    "age",
    "radiograph",
    "report",
    "patient",
    "left",
    "hand",
    "wrist",
    "study",
    "date",
    "result",
    "normal",
    "follow",
    "up",
]


def _document(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    dark = rng.random() < 0.3
    img = Image.new(
        "L", (side, int(side * rng.uniform(1.1, 1.5))), 0 if dark else int(rng.integers(200, 256))
    )
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=int(rng.integers(12, 28)))
    y = int(rng.integers(10, 40))
    while y < img.height - 30:
        line = " ".join(rng.choice(_WORDS, int(rng.integers(3, 9))))
        draw.text(
            (int(rng.integers(10, 40)), y), line, fill=255 if dark else int(rng.integers(0, 60)), font=font
        )
        y += int(rng.integers(20, 40))
    return np.asarray(img)


def _chart(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    img = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(img)
    for k in range(int(rng.integers(3, 9))):
        x0 = 40 + k * 50
        draw.rectangle((x0, int(rng.integers(100, 450)), x0 + 30, 470), fill=int(rng.integers(0, 200)))
    draw.line((30, 470, side - 20, 470), fill=0, width=3)
    draw.line((30, 20, 30, 470), fill=0, width=3)
    return np.asarray(img)


def _noise(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    coarse = rng.random((int(rng.integers(4, 32)),) * 2)
    field = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC))
    grain = rng.normal(0, rng.uniform(2, 20), (side, side))
    return np.clip(field + grain, 0, 255).astype(np.uint8)


def _shapes(rng: np.random.Generator, side: int = 512) -> np.ndarray:
    img = Image.new("L", (side, side), int(rng.integers(0, 80)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 8))):
        x0, y0 = (int(v) for v in rng.integers(0, side - 60, 2))
        box = (x0, y0, x0 + int(rng.integers(40, 250)), y0 + int(rng.integers(40, 250)))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=int(rng.integers(100, 256)))
    return np.asarray(img)


def _photo_crops(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "sample_data"
    photos = [
        np.asarray(Image.open(p).convert("L"))
        for p in sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))
    ]
    out = []
    for k in range(n if photos else 0):
        p = photos[k % len(photos)]
        h, w = p.shape
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out.append(np.ascontiguousarray(p[y : y + ch, x : x + cw]))
    return out


def nonhand_images(n_per_kind: int = 50, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """``{kind: images}`` for documents, charts, noise, shapes and photographs."""
    rng = np.random.default_rng(seed)
    return {
        "document": [_document(rng) for _ in range(n_per_kind)],
        "chart": [_chart(rng) for _ in range(n_per_kind)],
        "noise": [_noise(rng) for _ in range(n_per_kind)],
        "shapes": [_shapes(rng) for _ in range(n_per_kind)],
        "photo": _photo_crops(rng, n_per_kind),
    }
