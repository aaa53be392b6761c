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
    except openslide.OpenSlideUnsupportedFormatError as exc:  # a subclass of OpenSlideError: caught first
        raise InputError(unsupported_slide_problem(path), sample, path) from exc
    except openslide.OpenSlideError as exc:
        raise InputError(f"OpenSlide cannot read this slide ({exc})", sample, path) from exc


CONVERT_HINT = (
    "Convert it to a tiled pyramidal TIFF, e.g. `vips tiffsave IN OUT.tif --tile --pyramid --compression jpeg "
    "--Q 90 --tile-width 256 --tile-height 256` (or, from Python, genedml.io.tiff.write_pyramidal_tiff(OUT, "
    "rgb_array, mpp); a legacy-ST section's JPEG converts with `genedml import-st`), and keep its µm/px in "
    "the sample's metadata JSON (pixel_size_um_estimated)"
)

_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"BM", "a BMP image"),
    (b"GIF8", "a GIF image"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"version https://git-lfs", "a Git LFS pointer (the slide itself was never downloaded)"),
)


def unsupported_slide_problem(path: str | os.PathLike) -> str:
    """The message for a file OpenSlide does not recognise: what the file is and what to do about it."""
    what, is_image = describe_image_file(path)
    supported = "genedml reads tiled, pyramidal TIFFs (and SVS, NDPI, MRXS, SCN, ...)"
    todo = CONVERT_HINT if is_image else "The file is damaged or not an image: download or copy the slide again"
    return f"not a slide format OpenSlide supports: the file is {what}. {supported}. {todo}"


def describe_image_file(path: str | os.PathLike) -> tuple[str, bool]:
    """What a file that OpenSlide refuses actually is, from its first bytes ("a JPEG image (named .tif)",
    "a TIFF with strips, not tiles, and 1 level (400 x 300 px)", "empty (0 bytes)", ...), and whether it is
    an image that can be converted."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})", False
    if not head:
        return "empty (0 bytes)", False
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _describe_tiff(path)
    named = f" (named {path.suffix})" if path.suffix else ""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            is_image = what.endswith(" image")
            return what + (named if is_image else ""), is_image
    return f"not an image file (it starts with {head[:16]!r})", False


def _describe_tiff(path: Path) -> tuple[str, bool]:
    """("a TIFF with strips, not tiles, and 1 level (W x H px)", True) or the like, read with tifffile."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            series = tif.series[0] if tif.series else None
            levels = len(series.levels) if series is not None else 1
            # pyramids written as separate top-level pages (reduced-resolution subfiletype 1) count too
            levels = max(levels, 1 + sum(1 for p in tif.pages[1:] if getattr(p, "subfiletype", 0) & 1))
            layout = "tiles" if page.is_tiled else "strips, not tiles,"
            size = f"{page.imagewidth} x {page.imagelength} px"
            return f"a TIFF with {layout} and {levels} level{'s' if levels != 1 else ''} ({size})", True
    except Exception as exc:  # noqa: BLE001 - a damaged TIFF: say so
        return f"a damaged or unusual TIFF ({type(exc).__name__}: {exc})", False


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
