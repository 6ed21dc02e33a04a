"""The film viewer: the film at full resolution with window/level, zoom and pan, and optional overlays.

    shown = window_level(pixels, low=40, high=220, invert=False)          # HW uint8 -> HW uint8
    fig = viewer_figure(pixels, window=(40, 220), mask=mask, heat=None)  # a Plotly figure

The figure holds the film as one PNG at its own resolution (up to :data:`MAX_SIDE` pixels on the long
side), so that zooming shows the film's own pixels; Plotly does zoom (scroll wheel, box) and pan (drag).
Window/level is applied here, on the stored 8-bit film: ``low`` and ``high`` are the grey levels shown as
black and white. The mask is drawn as an outline and the heatmap as a colour map, each only when given.
Coordinates: x to the right and y down, in film pixels (the axes' units), origin at the top left.
"""

from __future__ import annotations

import cv2
import numpy as np
import plotly.graph_objects as go

from .visual import heatmap_overlay
from .worklist import png_data_url

#: Films larger than this on their long side are shown downsampled to it (a 40-megapixel film would
#: otherwise be a 60 MB page); the RSNA originals (about 2000x2500) are shown at full resolution.
MAX_SIDE = 4096
OUTLINE = (255, 220, 0)


def window_level(pixels: np.ndarray, low: float = 0, high: float = 255, invert: bool = False) -> np.ndarray:
    """``pixels`` (HW uint8) with grey ``low`` shown black and ``high`` white, linear in between."""
    if not 0 <= low < high <= 255:
        raise ValueError(f"window must satisfy 0 <= low < high <= 255, got {low}, {high}")
    lut = np.clip((np.arange(256, dtype=np.float32) - low) * 255.0 / (high - low), 0, 255)
    if invert:
        lut = 255 - lut
    return lut.round().astype(np.uint8)[pixels]


def outline(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = OUTLINE) -> np.ndarray:
    """``rgb`` (HWC uint8) with the outer contour of ``mask`` (HW bool, same size) drawn on it."""
    out = rgb.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, max(1, round(max(mask.shape) / 600)))
    return out


def viewer_image(
    pixels: np.ndarray,
    window: tuple[float, float] = (0, 255),
    invert: bool = False,
    mask: np.ndarray | None = None,
    heat: np.ndarray | None = None,
    opacity: float = 0.45,
) -> np.ndarray:
    """The picture the viewer shows (HWC uint8 RGB, film size): windowed film, heatmap, mask outline."""
    shown = window_level(pixels, window[0], window[1], invert)
    rgb = heatmap_overlay(shown, heat, opacity) if heat is not None else np.repeat(shown[:, :, None], 3, 2)
    if mask is not None:
        rgb = outline(rgb, mask > 0)
    return rgb


def viewer_figure(
    pixels: np.ndarray,
    window: tuple[float, float] = (0, 255),
    invert: bool = False,
    mask: np.ndarray | None = None,
    heat: np.ndarray | None = None,
    opacity: float = 0.45,
    height: int = 820,
) -> go.Figure:
    """A Plotly figure of :func:`viewer_image`, axes in film pixels, dragging pans, equal aspect."""
    rgb = viewer_image(pixels, window, invert, mask, heat, opacity)
    h, w = pixels.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    fig = go.Figure(
        go.Image(source=png_data_url(rgb), x0=0, y0=0, dx=1 / scale, dy=1 / scale, hoverinfo="x+y")
    )
    fig.update_layout(
        height=height,
        margin=dict(l=0, r=0, t=0, b=0),
        dragmode="pan",
        xaxis=dict(visible=False, range=[0, w], constrain="domain"),
        yaxis=dict(visible=False, range=[h, 0], scaleanchor="x", constrain="domain"),
        plot_bgcolor="black",
        paper_bgcolor="black",
    )
    return fig


#: Plotly's chart options for the viewer: the scroll wheel zooms, the mode bar keeps zoom and reset.
VIEWER_CONFIG = {
    "scrollZoom": True,
    "displaylogo": False,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toImage"],
}
