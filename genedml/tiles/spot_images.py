"""Spot images: every spot's local crop as uint8 pixels, cached once for the heads that train an image encoder.

TRIPLEX and DKAN train a ResNet-18 on the spot image itself (``spot_encoder: resnet18``, ``genedml.networks.
spot_encoder``). Reading the slide again every epoch would make training as slow as the slide reader, so the
``spot_images`` rule reads each spot's local crop once (the same square as the embed stage's local tile: same
centre, ``tiles.tile_px`` at ``tiles.target_mpp``) and stores it resampled to ``spot_images.px`` pixels:

``results/spot_images/{sample}.zarr``
- ``images``: (N, px, px, 3) uint8, chunks of ``CHUNK_SPOTS`` spots, zstd-compressed;
- ``barcodes``: (N,) str, the geometry's order;
- attributes: ``sample``, ``px``, ``crop_um`` (side of the crop on the tissue), ``scale`` (level-0 px per
  stored px), ``tile_spec``, ``slide`` (path, size, mtime), ``geometry_sha256``, ``complete``.

The store is independent of the encoder (one per sample, shared by every encoder and head) and is its own
rule, so adding a head that asks for pixels never re-embeds. It is written under a temporary name and
renamed into place when complete; training reads a section's images into memory once (about 150 KB a spot
at 224 px, before compression) and applies the flips and rotations there.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from genedml import __version__
from genedml.atomic import atomic_path
from genedml.errors import InputError
from genedml.pipeline.spec import StageSpec
from genedml.tiles.geometry import Geometry

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHUNK_SPOTS = 64  # spots per chunk: ~10 MB of raw pixels at 224 px


@dataclass(frozen=True)
class SpotImageSpec(StageSpec):
    """The spot-image stage's settings (config ``spot_images``; defaults and allowed values in the schema)."""

    section: ClassVar[str] = "spot_images"

    px: int  # side of every stored crop, in pixels

    @classmethod
    def convert(cls, values: dict) -> dict:
        return {"px": int(values["px"])}


def _geometry_digest(g: Geometry) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(g.centres, dtype=np.float64).tobytes())
    h.update("\n".join(g.barcodes.astype(str)).encode())
    h.update(repr((g.scale, g.spec.tile_px)).encode())
    return h.hexdigest()


def write_spot_images(g: Geometry, spec: SpotImageSpec, out, log_every_s: float = 10.0) -> dict:
    """Read every spot's local crop from ``g.slide_path``, resampled to ``spec.px``, into the store ``out``."""
    import openslide
    import zarr
    from zarr.codecs import BloscCodec

    from genedml.io.slide import open_slide, read_crop

    out = Path(out)
    px, n = spec.px, g.n_spots
    scale = g.tile0 / px  # level-0 px per stored px: the local tile's square, resampled
    slide = open_slide(g.slide_path, g.sample)
    t0, last = time.perf_counter(), time.perf_counter()
    with atomic_path(out) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        images = group.create_array(
            "images",
            shape=(n, px, px, 3),
            chunks=(CHUNK_SPOTS, px, px, 3),
            dtype="uint8",
            fill_value=0,
            compressors=[BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle", typesize=1)],
        )
        group.create_array("barcodes", shape=(n,), dtype=str)[:] = g.barcodes.astype(str)
        for lo in range(0, n, CHUNK_SPOTS):
            hi = min(n, lo + CHUNK_SPOTS)
            chunk = np.empty((hi - lo, px, px, 3), np.uint8)
            for i in range(lo, hi):
                try:
                    chunk[i - lo] = read_crop(slide, g.centres[i], px, scale)
                except openslide.OpenSlideError as exc:
                    raise InputError(
                        f"the slide cannot be decoded at spot {g.barcodes[i]} ({exc})", g.sample, g.slide_path
                    ) from None
            images[lo:hi] = chunk
            if time.perf_counter() - last >= log_every_s or hi == n:
                last = time.perf_counter()
                log.info("%s: %d / %d spot images (%.1f s)", g.sample, hi, n, last - t0)
        facts = {
            "genedml_spot_images_version": FORMAT_VERSION,
            "sample": g.sample,
            "px": px,
            "scale": float(scale),
            "crop_um": float(g.tile0 * g.slide_mpp),
            "tile_spec": g.spec.describe(),
            "slide": g.slide_path,
            "slide_bytes": int(Path(g.slide_path).stat().st_size),
            "geometry_sha256": _geometry_digest(g),
            "genedml_version": __version__,
            "spots": n,
            "wall_s": round(time.perf_counter() - t0, 3),
            "complete": True,
        }
        group.attrs.update(facts)
    slide.close()
    stored = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info(
        "%s: %d spot images of %d px written to %s (%.0f bytes a spot on disk, %.1f s)",
        g.sample,
        n,
        px,
        out,
        stored / max(n, 1),
        facts["wall_s"],
    )
    return {**facts, "bytes_on_disk": stored, "bytes_per_spot": stored / max(n, 1)}


@dataclass
class SpotImages:
    """One section's spot images in memory: ``images`` (N, px, px, 3) uint8 in ``barcodes`` order."""

    sample: str
    images: np.ndarray
    barcodes: np.ndarray
    attrs: dict
    path: str | None = None

    @property
    def px(self) -> int:
        return int(self.images.shape[1])

    def aligned(self, barcodes, sample: str | None = None) -> np.ndarray:
        """The images of ``barcodes`` (the features' spots, in their order); a spot without one is an error."""
        pos = {b: i for i, b in enumerate(self.barcodes.tolist())}
        rows = np.array([pos.get(b, -1) for b in np.asarray(barcodes).astype(str).tolist()], dtype=np.int64)
        if (rows < 0).any():
            missing = np.asarray(barcodes)[rows < 0][:3].tolist()
            raise InputError(
                f"{int((rows < 0).sum())} spots have no spot image (e.g. {missing}); were the spot images and the "
                "features made from different tile geometries? Delete the spot-image store and rerun",
                sample or self.sample,
                self.path,
            )
        return self.images[rows]


def load_spot_images(path, sample: str | None = None, rows: slice | None = None) -> SpotImages:
    """A complete spot-image store, read into memory (``rows``: only those consecutive spots); a missing or
    unfinished one is an input error."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise InputError("spot-image store not found (run the spot_images step: genedml spot-images)", sample, path)
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    if not attrs.get("complete") or "images" not in group:
        raise InputError("spot-image store is incomplete; delete it and rerun", sample, path)
    part = slice(None) if rows is None else rows
    images = np.asarray(group["images"][part], dtype=np.uint8)
    barcodes = np.array(group["barcodes"][part].tolist(), dtype=str)
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2] or len(images) != len(barcodes):
        raise InputError(f"spot-image store has images of shape {images.shape} for {len(barcodes)} spots", sample, path)
    return SpotImages(attrs.get("sample", sample or path.stem), images, barcodes, attrs, str(path))
