"""Spot geometry: where each spot's local crop and its 5x5 neighbour tiles lie on the slide.

All boxes are in level-0 pixels. ``scale`` is level-0 pixels per output pixel: 1 at native resolution,
``target_mpp / slide_mpp`` when resampling to a physical scale (HEST: 0.5 µm/px). The neighbour window is
``grid * tile_px`` output pixels, centred on the spot and split row-major into ``grid x grid`` tiles.
A tile is kept (mask True) when at least ``min_inside`` of its area lies inside the image; the part
outside the image is black (zero-padded).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError


@dataclass(frozen=True)
class TileSpec:
    tile_px: int = 224
    target_mpp: float | None = None  # None = native resolution (the reference code)
    grid: int = 5
    min_inside: float = 0.5

    @classmethod
    def from_config(cls, cfg: dict) -> "TileSpec":
        mpp = cfg.get("target_mpp", None)
        mpp = None if mpp in (None, "native") else float(mpp)
        return cls(int(cfg.get("tile_px", 224)), mpp, int(cfg.get("grid", 5)), float(cfg.get("min_inside", 0.5)))

    def describe(self) -> dict:
        d = asdict(self)
        d["target_mpp"] = "native" if self.target_mpp is None else self.target_mpp
        return d


@dataclass
class Geometry:
    sample: str
    barcodes: np.ndarray  # (N,) str
    centres: np.ndarray  # (N, 2) float, level-0 px (x, y)
    array_coords: np.ndarray  # (N, 2) int (row, col)
    neighbour_centres: np.ndarray  # (N, grid*grid, 2) float, level-0 px
    neighbour_mask: np.ndarray  # (N, grid*grid) bool
    local_inside: np.ndarray  # (N,) float: fraction of the local crop inside the image
    scale: float
    slide_mpp: float
    slide_dims: tuple[int, int]  # (width, height) level 0
    spec: TileSpec
    slide_path: str = ""
    mpp_source: str = ""

    @property
    def n_spots(self) -> int:
        return len(self.barcodes)

    def save(self, path: str | os.PathLike) -> None:
        attrs = {
            "sample": self.sample,
            "scale": self.scale,
            "slide_mpp": self.slide_mpp,
            "slide_dims": list(self.slide_dims),
            "spec": self.spec.describe(),
            "slide_path": self.slide_path,
            "mpp_source": self.mpp_source,
        }
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    barcodes=self.barcodes.astype(str),
                    centres=self.centres,
                    array_coords=self.array_coords,
                    neighbour_centres=self.neighbour_centres,
                    neighbour_mask=self.neighbour_mask,
                    local_inside=self.local_inside,
                    attrs=np.array(json.dumps(attrs)),
                )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Geometry":
        with np.load(path, allow_pickle=False) as z:
            attrs = json.loads(str(z["attrs"]))
            spec = dict(attrs["spec"])
            return cls(
                sample=attrs["sample"],
                barcodes=z["barcodes"],
                centres=z["centres"],
                array_coords=z["array_coords"],
                neighbour_centres=z["neighbour_centres"],
                neighbour_mask=z["neighbour_mask"],
                local_inside=z["local_inside"],
                scale=float(attrs["scale"]),
                slide_mpp=float(attrs["slide_mpp"]),
                slide_dims=tuple(attrs["slide_dims"]),
                spec=TileSpec.from_config(spec),
                slide_path=attrs.get("slide_path", ""),
                mpp_source=attrs.get("mpp_source", ""),
            )


def inside_fraction(centres: np.ndarray, side: float, dims: tuple[int, int]) -> np.ndarray:
    """Fraction of the area of squares (side ``side``, centred at ``centres``) inside [0, W) x [0, H)."""
    half = side / 2.0
    w, h = dims
    ox = np.clip(np.minimum(centres[..., 0] + half, w) - np.maximum(centres[..., 0] - half, 0), 0, None)
    oy = np.clip(np.minimum(centres[..., 1] + half, h) - np.maximum(centres[..., 1] - half, 0), 0, None)
    return (ox * oy) / (side * side)


def neighbour_offsets(grid: int) -> np.ndarray:
    """(grid*grid, 2) offsets in tile units (dx, dy), row-major: tile k is row k // grid, column k % grid."""
    k = np.arange(grid * grid)
    rows, cols = k // grid, k % grid
    mid = (grid - 1) / 2.0
    return np.stack([cols - mid, rows - mid], 1).astype(float)


def compute_geometry(
    sample: str,
    barcodes,
    centres: np.ndarray,
    array_coords: np.ndarray,
    slide_dims: tuple[int, int],
    slide_mpp: float,
    spec: TileSpec,
    slide_path: str = "",
    mpp_source: str = "",
) -> Geometry:
    centres = np.asarray(centres, dtype=float)[:, :2]
    w, h = slide_dims
    outside = (centres[:, 0] < 0) | (centres[:, 1] < 0) | (centres[:, 0] >= w) | (centres[:, 1] >= h)
    if outside.any():
        idx = np.flatnonzero(outside)[:3]
        examples = ", ".join(f"{barcodes[i]} at ({centres[i, 0]:.0f}, {centres[i, 1]:.0f})" for i in idx)
        raise InputError(
            f"{int(outside.sum())} spot centres lie outside the {w} x {h} px image, e.g. {examples}",
            sample,
            slide_path,
        )
    scale = 1.0 if spec.target_mpp is None else spec.target_mpp / slide_mpp
    tile0 = spec.tile_px * scale
    offsets = neighbour_offsets(spec.grid) * tile0
    neigh = centres[:, None, :] + offsets[None]
    mask = inside_fraction(neigh, tile0, slide_dims) >= spec.min_inside
    return Geometry(
        sample=sample,
        barcodes=np.asarray(barcodes).astype(str),
        centres=centres,
        array_coords=np.asarray(array_coords, dtype=np.int32),
        neighbour_centres=neigh,
        neighbour_mask=mask,
        local_inside=inside_fraction(centres, tile0, slide_dims),
        scale=float(scale),
        slide_mpp=float(slide_mpp),
        slide_dims=(int(w), int(h)),
        spec=spec,
        slide_path=str(slide_path),
        mpp_source=mpp_source,
    )


def tile_sample(paths, spec: TileSpec, out: str | os.PathLike) -> Geometry:
    """Read one HEST-layout sample, compute its geometry and write it to ``out`` (.npz)."""
    from .hest import array_coords, load_metadata, load_st, resolve_mpp
    from .slide import open_slide

    meta = load_metadata(paths.metadata, paths.sample)
    slide = open_slide(paths.slide, paths.sample)
    mpp, source = resolve_mpp(meta, slide, paths.sample, paths.slide)
    adata = load_st(paths.st, paths.sample, require_counts=False)
    geom = compute_geometry(
        paths.sample,
        adata.obs_names.to_numpy(),
        np.asarray(adata.obsm["spatial"]),
        array_coords(adata),
        slide.dimensions,
        mpp,
        spec,
        slide_path=str(Path(paths.slide)),
        mpp_source=source,
    )
    slide.close()
    geom.save(out)
    return geom
