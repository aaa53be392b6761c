"""Open whole-slide images through OpenSlide and cut spot-centred crops at a physical scale."""

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


def read_crop(slide, centre_xy, out_px: int, scale: float, level_dims=None) -> np.ndarray:
    """An ``out_px`` square RGB crop centred on ``centre_xy`` (level-0 px), ``scale`` level-0 px per output px.

    Reads from the coarsest pyramid level that still has at least the requested resolution, then
    resamples. Area outside the slide is black (zeros): the caller's mask records it.
    """
    size0 = out_px * scale  # crop side in level-0 pixels
    x0 = centre_xy[0] - size0 / 2.0
    y0 = centre_xy[1] - size0 / 2.0
    level = slide.get_best_level_for_downsample(scale + 1e-6)
    down = slide.level_downsamples[level]
    side = int(np.ceil(size0 / down)) + 2
    left, top = int(np.floor(x0)), int(np.floor(y0))
    region = slide.read_region((left, top), level, (side, side))
    rgba = np.asarray(region)
    rgb = np.where(rgba[..., 3:4] == 0, 0, rgba[..., :3]).astype(np.uint8)
    # sub-pixel offset of the exact crop inside the region, in level pixels
    ox, oy = (x0 - left) / down, (y0 - top) / down
    box = (ox, oy, ox + size0 / down, oy + size0 / down)
    img = Image.fromarray(rgb)
    if abs(size0 / down - out_px) < 1e-6 and abs(ox - round(ox)) < 1e-6 and abs(oy - round(oy)) < 1e-6:
        bx, by = int(round(ox)), int(round(oy))
        return rgb[by : by + out_px, bx : bx + out_px]
    return np.asarray(img.resize((out_px, out_px), Image.Resampling.BILINEAR, box=box))
