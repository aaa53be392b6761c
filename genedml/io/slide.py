"""Open whole-slide images through OpenSlide and read level-0 boxes (or spot-centred crops) at a scale.

``read_box`` is the one region reader: the embed engine reads every tile and local crop through it (through
``read_box_pixels``, the same pixels without the last copy, cut into tiles with ``copy_rgb``).
"""

from __future__ import annotations

import ctypes
import functools
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
    pixels = read_box_pixels(slide, x0, y0, out_w, out_h, scale)
    if pixels.shape[2] == 3:
        return pixels
    rgb = np.empty((out_h, out_w, 3), np.uint8)
    copy_rgb(pixels, rgb)
    return rgb


def read_box_pixels(slide, x0: float, y0: float, out_w: int, out_h: int, scale: float) -> np.ndarray:
    """``read_box``'s pixels in channels 0-2 of an (out_h, out_w, C) uint8 array, without the last copy: C = 4
    (the RGBA buffer OpenSlide decoded into; ignore alpha) when no resizing is needed, else 3. Cut tiles
    from it with ``copy_rgb``: the embed loader's reader."""
    level = slide.get_best_level_for_downsample(scale + 1e-6)
    down = slide.level_downsamples[level]
    w0, h0 = out_w * scale, out_h * scale
    if abs(w0 / down - out_w) < 1e-6 and abs(h0 / down - out_h) < 1e-6:
        lx, ly = int(np.floor(x0 / down + 0.5)), int(np.floor(y0 / down + 0.5))  # level px of the corner
        # outside the image: transparent black, whose RGB is black
        return read_rgba(slide, int(round(lx * down)), int(round(ly * down)), level, out_w, out_h)
    left, top = int(np.floor(x0)), int(np.floor(y0))
    side_w = int(np.ceil(w0 / down)) + 2
    side_h = int(np.ceil(h0 / down)) + 2
    rgba = read_rgba(slide, left, top, level, side_w, side_h)
    region = Image.frombytes("RGB", (side_w, side_h), rgba, "raw", "RGBX")  # drops alpha, as convert("RGB")
    ox, oy = (x0 - left) / down, (y0 - top) / down  # the box's sub-pixel offset in the region, level px
    box = (ox, oy, ox + w0 / down, oy + h0 / down)
    return np.asarray(region.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box))


def read_rgba(slide, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
    """(h, w, 4) uint8 RGBA of ``slide.read_region((x, y), level, (w, h))``: the same pixels, decoded straight
    into a numpy buffer by openslide-python's own two steps, without its PIL image and the byte-string copies
    that ``np.asarray(image)`` makes. Other slide objects (``openslide.ImageSlide``) use ``read_region``."""
    lowlevel = _openslide_into_buffer()
    osr = getattr(slide, "_osr", None)
    if lowlevel is None or osr is None or w <= 0 or h <= 0:
        return np.asarray(slide.read_region((x, y), level, (w, h)).convert("RGBA"))
    read_into, argb2rgba = lowlevel
    words = np.empty((h, w), np.uint32)  # OpenSlide clears the buffer before painting into it
    read_into(osr, words.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), x, y, level, w, h)
    argb2rgba(words)  # in place: premultiplied ARGB words -> straight-alpha RGBA bytes, as read_region does
    return words.view(np.uint8).reshape(h, w, 4)


@functools.cache
def _openslide_into_buffer():
    """(read region into a caller's uint32 buffer, ARGB -> RGBA in place) from openslide-python's internals,
    or None where they are missing (another version): callers fall back to ``read_region``."""
    try:
        from openslide import _convert, lowlevel

        return lowlevel._read_region, _convert.argb2rgba
    except (ImportError, AttributeError, OSError):
        return None


def copy_rgb(src: np.ndarray, out: np.ndarray) -> None:
    """``out`` (h, w, 3) <- channels 0-2 of ``src`` (h, w, C), e.g. a tile-sized view of ``read_box_pixels``.
    Channel by channel when C > 3: numpy copies a strided channel ~5x faster than an (h, w, 3) block of
    a 4-channel buffer, whose 3-byte inner loop is slow."""
    if src.shape[2] == 3:
        out[...] = src
        return
    for c in range(3):
        out[..., c] = src[..., c]


def crop_corner(centre_xy, out_px: int, scale: float) -> tuple[float, float]:
    """Level-0 corner of the ``out_px`` square crop centred on ``centre_xy`` at ``scale`` level-0 px per px."""
    half = out_px * scale / 2.0
    return centre_xy[0] - half, centre_xy[1] - half


def read_crop(slide, centre_xy, out_px: int, scale: float) -> np.ndarray:
    """An ``out_px`` square RGB crop centred on ``centre_xy`` (level-0 px): ``read_box`` around a centre."""
    x0, y0 = crop_corner(centre_xy, out_px, scale)
    return read_box(slide, x0, y0, out_px, out_px, scale)
