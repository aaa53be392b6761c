"""Tissue detection on a bare H&E slide: a boolean mask on a thumbnail of the slide (config ``slides.tissue``).

The recipe is the usual one for H&E (e.g. CLAM's, HEST's fallback): stained tissue is saturated, glass is
white or grey, so

1. a thumbnail whose longest side is about ``thumbnail_px`` is read from the smallest pyramid level that is
   at least that big, in bands (never a whole 20x level), and box-averaged down to that size;
2. its HSV saturation (that of ``skimage.color.rgb2hsv``, as uint8: ``saturation_u8``) is median-filtered (``skimage.filters.rank.median``)
   over a disc of diameter ``blur_um`` (µm, made thumbnail pixels through the slide's µm/px and the
   thumbnail's downsample);
3. Otsu's threshold of the filtered saturation, times ``threshold_scale``, separates tissue from glass. The
   threshold is never below ``MIN_SATURATION``: on a slide without tissue Otsu splits the scanner's noise
   (saturation ~0.01) and would call half the glass tissue;
4. tissue pieces smaller than ``min_object_um2`` are dropped and holes smaller than ``max_hole_um2`` filled
   (``skimage.morphology.remove_small_objects`` / ``remove_small_holes``).

No tissue left is an ``InputError`` naming the sample and the slide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from genedml.errors import InputError
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

# the lowest saturation threshold (0-1) tissue may be cut at: H&E stains are > 0.1, glass and its JPEG noise < 0.05
MIN_SATURATION = 0.05
# a pyramid level is read in square chunks of this many of its pixels (bounded memory on any slide)
CHUNK_PX = 4096


@dataclass(frozen=True)
class TissueSpec(StageSpec):
    """Tissue detection settings (config ``slides.tissue``; defaults and allowed values in the config schema)."""

    section: ClassVar[str] = "slides.tissue"

    thumbnail_px: int  # longest side of the image the mask is made on
    blur_um: float  # median filter diameter before Otsu (µm; 0: none)
    min_object_um2: float  # smaller tissue pieces are dropped
    max_hole_um2: float  # smaller holes are filled
    threshold_scale: float  # Otsu's threshold times this

    @classmethod
    def convert(cls, values: dict) -> dict:
        return {
            "thumbnail_px": int(values["thumbnail_px"]),
            "blur_um": float(values["blur_um"]),
            "min_object_um2": float(values["min_object_um2"]),
            "max_hole_um2": float(values["max_hole_um2"]),
            "threshold_scale": float(values["threshold_scale"]),
        }


@dataclass
class TissueMask:
    """The tissue mask of a slide and the thumbnail it was made on."""

    mask: np.ndarray  # (H, W) bool, True on tissue
    thumbnail: np.ndarray  # (H, W, 3) uint8 RGB
    downsample: tuple[float, float]  # level-0 px per mask px, (x, y)
    threshold: float  # the saturation threshold used (0-1)
    tissue_fraction: float  # fraction of the thumbnail that is tissue
    area_mm2: float  # tissue area
    n_objects: int  # separate tissue pieces (8-connected)
    dimensions: tuple[int, int] = (0, 0)  # level-0 (width, height) of the slide

    def um_per_px(self, mpp: float) -> tuple[float, float]:
        """µm per mask pixel (x, y) for a slide of ``mpp`` µm per level-0 pixel."""
        return self.downsample[0] * mpp, self.downsample[1] * mpp


def _rgb_on_white(region) -> np.ndarray:
    """An OpenSlide RGBA region as RGB, transparent (outside the scanned area) drawn white."""
    from PIL import Image

    white = Image.new("RGBA", region.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, region).convert("RGB"))


def _read_level_reduced(slide, level: int, factor: int) -> np.ndarray:
    """The whole of pyramid ``level`` reduced by the integer ``factor`` (box average), read in chunks."""
    from PIL import Image

    lw, lh = slide.level_dimensions[level]
    down = slide.level_downsamples[level]
    out_w, out_h = -(-lw // factor), -(-lh // factor)
    out = np.empty((out_h, out_w, 3), np.uint8)
    step = max(factor, (CHUNK_PX // factor) * factor)  # a multiple of factor: chunks reduce to whole pixels
    for y in range(0, lh, step):
        for x in range(0, lw, step):
            w, h = min(step, lw - x), min(step, lh - y)
            region = slide.read_region((int(round(x * down)), int(round(y * down))), level, (w, h))
            rgb = _rgb_on_white(region)
            if factor > 1:
                rgb = np.asarray(Image.fromarray(rgb).reduce(factor))
            out[y // factor : y // factor + rgb.shape[0], x // factor : x // factor + rgb.shape[1]] = rgb
    return out


def read_thumbnail(slide, thumbnail_px: int) -> tuple[np.ndarray, tuple[float, float]]:
    """(thumbnail (H, W, 3) uint8 RGB whose longest side is ``thumbnail_px`` or the slide's when smaller,
    level-0 px per thumbnail px (x, y)). Read from the smallest pyramid level at least that big."""
    from PIL import Image

    w0, h0 = slide.dimensions
    target = min(int(thumbnail_px), max(w0, h0))
    big_enough = [i for i, (w, h) in enumerate(slide.level_dimensions) if max(w, h) >= target]
    level = max(big_enough, key=lambda i: slide.level_downsamples[i])  # the smallest of them
    lw, lh = slide.level_dimensions[level]
    factor = max(1, max(lw, lh) // target)
    image = _read_level_reduced(slide, level, factor)
    shrink = target / max(w0, h0)
    size = (max(1, int(round(w0 * shrink))), max(1, int(round(h0 * shrink))))
    if (image.shape[1], image.shape[0]) != size:
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return image, (w0 / size[0], h0 / size[1])


def saturation_u8(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation as uint8 (0-255): ``skimage.color.rgb2hsv(rgb)[..., 1]`` (``(max - min) / max``, 0 on
    black) rounded, computed in integers (rgb2hsv takes 1.5 s on a 2048 px thumbnail, this 0.05 s)."""
    rgb = np.asarray(rgb, np.uint8)
    hi = rgb.max(axis=2).astype(np.int32)
    lo = rgb.min(axis=2).astype(np.int32)
    return ((255 * (hi - lo) + hi // 2) // np.maximum(hi, 1)).astype(np.uint8)


def saturation_mask(thumbnail: np.ndarray, px_um: float, spec: TissueSpec) -> tuple[np.ndarray, float, np.ndarray]:
    """(mask, threshold, filtered saturation) of an RGB thumbnail whose pixels are ``px_um`` µm wide."""
    from skimage.filters import rank, threshold_otsu
    from skimage.morphology import disk, remove_small_holes, remove_small_objects

    sat = saturation_u8(thumbnail)
    radius = int(round(spec.blur_um / px_um / 2.0))
    if radius >= 1:
        sat = rank.median(sat, footprint=disk(radius))  # skimage.filters.median on uint8, 5x faster
    otsu = float(threshold_otsu(sat)) / 255.0 if sat.min() < sat.max() else 1.0
    threshold = max(otsu * spec.threshold_scale, MIN_SATURATION)
    mask = sat > threshold * 255.0
    px_area = px_um * px_um
    mask = remove_small_objects(mask, max_size=int(spec.min_object_um2 / px_area), connectivity=2)
    mask = remove_small_holes(mask, max_size=int(spec.max_hole_um2 / px_area), connectivity=1)
    return mask, threshold, sat


def detect_tissue(slide, mpp: float, spec: TissueSpec, sample: str | None = None, path=None) -> TissueMask:
    """The tissue mask of an open slide (module doc); ``mpp``: µm per level-0 pixel."""
    from skimage.measure import label

    thumbnail, (dx, dy) = read_thumbnail(slide, spec.thumbnail_px)
    px_um = float(np.sqrt(dx * dy)) * mpp
    mask, threshold, _ = saturation_mask(thumbnail, px_um, spec)
    n_objects = int(label(mask, connectivity=2).max())
    if n_objects == 0:
        raise InputError(
            f"no tissue found: no part of the {thumbnail.shape[1]} x {thumbnail.shape[0]} px thumbnail is saturated "
            f"above {threshold:.3f} (HSV saturation, Otsu x slides.tissue.threshold_scale "
            f"{spec.threshold_scale:g}, at least {MIN_SATURATION}) over more than {spec.min_object_um2:g} µm² "
            "(slides.tissue.min_object_um2). Is it a blank or unstained slide? Lower threshold_scale or "
            "min_object_um2 for pale or very small tissue",
            sample,
            path,
        )
    area_mm2 = float(mask.sum()) * dx * dy * mpp * mpp / 1e6
    result = TissueMask(
        mask=mask,
        thumbnail=thumbnail,
        downsample=(float(dx), float(dy)),
        threshold=float(threshold),
        tissue_fraction=float(mask.mean()),
        area_mm2=area_mm2,
        n_objects=n_objects,
        dimensions=(int(slide.dimensions[0]), int(slide.dimensions[1])),
    )
    log.info(
        "%s: tissue %.2f mm² (%.1f%% of the slide, %d piece(s)), saturation threshold %.3f",
        sample,
        area_mm2,
        100 * result.tissue_fraction,
        n_objects,
        threshold,
    )
    return result
