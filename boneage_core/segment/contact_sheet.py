"""A contact sheet of mask overlays, one tile per film of a preprocessing manifest, for review by eye."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..films.read import read_film
from .manifest import read_manifest


def overlay_tile(
    pixels: np.ndarray,
    mask: np.ndarray,
    title: str,
    height: int = 320,
    width: int = 250,
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """A BGR tile: the film with the mask tinted and outlined, its crop box, and a title."""
    h, w = pixels.shape
    s = height / h
    tile = cv2.cvtColor(
        cv2.resize(pixels, (max(1, round(w * s)), height), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR
    )
    m = cv2.resize(mask.astype(np.uint8), (tile.shape[1], tile.shape[0]), interpolation=cv2.INTER_NEAREST)
    tile[m > 0] = (0.75 * tile[m > 0] + np.array([0, 0, 60])).clip(0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tile, contours, -1, (0, 255, 255), 1)
    if box is not None:
        x0, y0, x1, y1 = (round(v * s) for v in box)
        cv2.rectangle(tile, (x0, y0), (x1 - 1, y1 - 1), (255, 0, 255), 1)
    tile = cv2.copyMakeBorder(tile, 0, 0, 0, max(0, width - tile.shape[1]), cv2.BORDER_CONSTANT)[:, :width]
    cv2.putText(tile, title, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 0), 1, cv2.LINE_AA)
    return tile


def contact_sheet(manifest: Path, out: Path, columns: int = 8) -> int:
    """Write a PNG grid of overlays for every row of ``manifest`` with a mask. Returns the tile count."""
    root = manifest.parent
    tiles = []
    for fid, row in sorted(read_manifest(manifest).items()):
        if row["status"] == "error":
            continue
        film = read_film(row["source"])
        mask = cv2.imread(str(root / row["mask_path"]), cv2.IMREAD_GRAYSCALE) > 127
        box = tuple(int(row[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1"))
        flag = " FLAG" if row["status"] == "flagged" else ""
        tiles.append(overlay_tile(film.pixels, mask, f"{fid} iou {float(row['sam_iou']):.2f}{flag}", box=box))
    if not tiles:
        raise ValueError(f"no segmented films in {manifest}")
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid)
    return sum(1 for t in tiles if t.any())
