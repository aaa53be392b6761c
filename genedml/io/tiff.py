"""Write RGB images as pyramidal tiled TIFFs that OpenSlide opens as ``generic-tiff``.

Layout measured to work with OpenSlide 4: each pyramid level is its own top-level tiled page (level 0
``subfiletype=0``, reduced levels ``subfiletype=1``), 256 px tiles, resolution tags in pixels per
centimetre so that OpenSlide reports ``openslide.mpp-x``. SubIFD pyramids show one level only and strip
TIFFs are refused, so neither is used.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from genedml.atomic import atomic_path


def pyramid_levels(image: np.ndarray, min_size: int = 512, max_levels: int = 6) -> list[np.ndarray]:
    """Level 0 plus 2x reductions (box filter) until the short side would drop below ``min_size``."""
    levels = [image]
    while len(levels) < max_levels and min(levels[-1].shape[:2]) // 2 >= min_size:
        prev = levels[-1]
        h, w = prev.shape[0] // 2, prev.shape[1] // 2
        levels.append(np.asarray(Image.fromarray(prev).resize((w, h), Image.Resampling.BOX)))
    return levels


def write_pyramidal_tiff(
    path: str | os.PathLike,
    image: np.ndarray,
    mpp: float,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    min_level_size: int = 512,
) -> None:
    """Write ``image`` (H, W, 3 uint8) with its pyramid; ``mpp`` is µm per level-0 pixel."""
    import tifffile

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if not mpp or mpp <= 0:
        raise ValueError(f"pixel size must be positive, got {mpp}")
    args = {"compressionargs": {"level": quality}} if compression == "jpeg" else {}
    levels = pyramid_levels(image, min_size=min_level_size)
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=image.nbytes > 2**31) as tif:
            for i, level in enumerate(levels):
                factor = image.shape[1] / level.shape[1]
                res = 1e4 / (mpp * factor)  # pixels per centimetre at this level
                tif.write(
                    level,
                    photometric="rgb",
                    tile=(tile, tile),
                    compression=compression,
                    **args,
                    subfiletype=0 if i == 0 else 1,
                    resolution=(res, res),
                    resolutionunit="CENTIMETER",
                    metadata=None,
                )
