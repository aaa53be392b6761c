"""Open whole-slide images through OpenSlide and read level-0 boxes (or spot-centred crops) at a scale.

``read_box`` is the one region reader: the embed engine reads every tile and local crop through it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from genedml.errors import InputError


def open_slide(path: str | os.PathLike, sample: str | None = None):
    """Open a slide (pyramidal TIFF, SVS, ...) with OpenSlide, or raise an InputError that says why."""
    import openslide

    path = Path(path)
    if not path.exists():
        raise InputError("slide image not found", sample, path)
    try:
        slide = openslide.OpenSlide(str(path))
        # touch the lowest level once: truncated files often open but fail on the first read
        w, h = slide.level_dimensions[-1]
        slide.read_region((0, 0), slide.level_count - 1, (min(w, 64), min(h, 64)))
        return slide
    except openslide.OpenSlideError as exc:
        raise InputError(f"OpenSlide cannot read this slide ({exc})", sample, path) from exc
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise InputError(
            "not a slide format OpenSlide supports (pyramidal tiled TIFF, SVS, NDPI, ...)", sample, path
        ) from exc


def tiff_mpp(slide) -> float | None:
    """µm per level-0 pixel from the slide's own tags, or None when it has none."""
    value = slide.properties.get("openslide.mpp-x")
    try:
        mpp = float(value) if value is not None else None
    except ValueError:
        return None
    return mpp if mpp and mpp > 0 else None


def read_box(slide, x0: float, y0: float, out_w: int, out_h: int, scale: float) -> np.ndarray:
    """(out_h, out_w, 3) uint8 RGB of the level-0 box at (x0, y0) of size (out_w, out_h) * ``scale``.

    Reads from the coarsest pyramid level that still has the requested resolution. When the box needs no
    resizing at that level (native resolution, or a scale that is exactly a pyramid downsample) its corner
    is snapped to the nearest whole pixel of the level (a shift of at most half a pixel) and the pixels are
    copied, not interpolated; otherwise it is resampled (bilinear, sub-pixel exact). Outside the image is
    black. A slide that cannot be decoded there raises ``openslide.OpenSlideError``.
    """
    level = slide.get_best_level_for_downsample(scale + 1e-6)
    down = slide.level_downsamples[level]
    w0, h0 = out_w * scale, out_h * scale
    if abs(w0 / down - out_w) < 1e-6 and abs(h0 / down - out_h) < 1e-6:
        lx, ly = int(np.floor(x0 / down + 0.5)), int(np.floor(y0 / down + 0.5))  # level px of the corner
        region = slide.read_region((int(round(lx * down)), int(round(ly * down))), level, (out_w, out_h))
        return np.asarray(region.convert("RGB"))  # outside the image: transparent black -> black
    left, top = int(np.floor(x0)), int(np.floor(y0))
    side_w = int(np.ceil(w0 / down)) + 2
    side_h = int(np.ceil(h0 / down)) + 2
    region = slide.read_region((left, top), level, (side_w, side_h)).convert("RGB")
    ox, oy = (x0 - left) / down, (y0 - top) / down  # the box's sub-pixel offset in the region, level px
    box = (ox, oy, ox + w0 / down, oy + h0 / down)
    return np.asarray(region.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box))


def crop_corner(centre_xy, out_px: int, scale: float) -> tuple[float, float]:
    """Level-0 corner of the ``out_px`` square crop centred on ``centre_xy`` at ``scale`` level-0 px per px."""
    half = out_px * scale / 2.0
    return centre_xy[0] - half, centre_xy[1] - half


def read_crop(slide, centre_xy, out_px: int, scale: float) -> np.ndarray:
    """An ``out_px`` square RGB crop centred on ``centre_xy`` (level-0 px): ``read_box`` around a centre."""
    x0, y0 = crop_corner(centre_xy, out_px, scale)
    return read_box(slide, x0, y0, out_px, out_px, scale)
