"""PNG, JPEG and TIFF films: decoded with Pillow's format plugins into ``(H, W) uint8`` grey.

The size is checked before any pixel is decoded; EXIF orientation is applied; 16-bit and float images get
the percentile window; transparency becomes black; a colour picture (not a radiograph) is refused.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from ..errors import ImageSizeError, NotARadiographError, UnreadableFilmError
from ..settings import Settings
from .pixels import check_size, percentile_window

_OPENERS = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.jpeg_factory,
    "tiff": TiffImagePlugin.TiffImageFile,
}


def read_raster(data: bytes, fmt: str, settings: Settings) -> np.ndarray:
    # The format plugin is called directly so the size is known before PIL's decompression-bomb check
    # (which would refuse large films with a traceback-style message) and before any pixel is decoded.
    try:
        im = _OPENERS[fmt](io.BytesIO(data))
    except Exception as exc:
        raise UnreadableFilmError(f"Damaged {fmt.upper()} file ({exc})") from exc
    check_size(im.width, im.height, settings)
    if fmt == "tiff" and getattr(im, "n_frames", 1) > 1:
        raise UnreadableFilmError(f"Multi-page TIFF ({im.n_frames} pages) is not supported: export one film")
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:
        raise ImageSizeError(f"Image is too large for the decoder ({exc})") from exc
    except Exception as exc:
        raise UnreadableFilmError(f"Truncated or damaged {fmt.upper()} file ({exc})") from exc
    return _pil_to_gray(im)


#: A colour image is refused as "not a radiograph" when its pixels differ between channels by more than
#: COLOUR_CHROMA grey levels on average (a film saved as RGB, or photographed on a light box, stays far below).
COLOUR_CHROMA = 24.0


def colourfulness(rgb: np.ndarray) -> float:
    """Mean (max - min over the channels) of an HWC uint8 image, on a subsample: 0 for a grey image."""
    sub = rgb[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256), :3].astype(np.int16)
    return float((sub.max(axis=2) - sub.min(axis=2)).mean())


def _pil_to_gray(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return percentile_window(np.asarray(im))
    if im.mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        # Transparent parts become black (the film background).
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), rgba)
    if im.mode not in ("L", "LA", "1"):
        chroma = colourfulness(np.asarray(im.convert("RGB")))
        if chroma > COLOUR_CHROMA:
            raise NotARadiographError(
                f"This is a colour picture (mean channel spread {chroma:.0f} grey levels), not a radiograph: "
                "upload the hand film itself (DICOM, or a grayscale PNG/JPEG export)."
            )
    return np.asarray(im if im.mode == "L" else im.convert("L"))
