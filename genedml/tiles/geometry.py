"""Spot geometry: where each spot's local crop and its 5x5 neighbour tiles lie on the slide.

All boxes are in level-0 pixels. ``scale`` is level-0 pixels per output pixel: 1 at native resolution,
``target_mpp / slide_mpp`` when resampling to a physical scale (HEST: 0.5 µm/px). The local crop is
always ``tile_px`` square and centred on the spot. Neighbour tiles come in two modes:

- ``centred`` (the reference code): the ``grid * tile_px`` window centred on the spot, split row-major
  into ``grid x grid`` tiles. Adjacent spots' windows overlap, but every spot's tiles are its own.
- ``grid``: one lattice of tile positions per slide (the *grid nodes*), spaced ``grid_stride * tile``
  apart, with one node centred at ``grid_offset * tile`` (level-0 px; ``auto`` fits the phase to the
  spots). A spot's neighbour tiles are the ``grid x grid`` nodes, one tile apart, around the node nearest
  to its centre, so neighbouring spots share tiles and each node is embedded once per slide. The
  neighbourhood is shifted from the spot-centred one by at most half a stride per axis
  (``misalignment``); ``grid_stride: 0.5`` halves that bound at the price of up to 4x more distinct nodes.

A tile is kept (mask True) when at least ``min_inside`` of its area lies inside the image; the part
outside the image is black (zero-padded).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from genedml.atomic import atomic_path
from genedml.io.hest import check_spots_inside
from genedml.io.pixel_size import positive
from genedml.pipeline.spec import StageSpec


def parse_grid_offset(value) -> tuple[float, float] | None:
    """``auto`` / None -> None (fit to the spots); ``"0.5,0.5"``, ``[x, y]`` or one number -> (x, y) in tiles."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, str):
        value = [float(v) for v in value.replace(",", " ").split()]
    if isinstance(value, (int, float)):
        value = [value, value]
    value = [float(v) for v in value]
    if len(value) != 2:
        raise ValueError(f"grid_offset must be 'auto' or two numbers x, y (in tiles), got {value}")
    return (value[0], value[1])


@dataclass(frozen=True)
class TileSpec(StageSpec):
    """The tile stage's settings (config ``tiles``; defaults and allowed values in the config schema)."""

    section: ClassVar[str] = "tiles"

    tile_px: int
    target_mpp: float | None  # None = native resolution (the reference code)
    grid: int
    min_inside: float
    neighbour_mode: str  # how neighbour tiles are laid out (module doc)
    grid_stride: float  # grid mode: node spacing in tiles, 1/k (1, 0.5, 0.25, ...)
    grid_offset: tuple[float, float] | None  # grid mode: a node centre, in tiles; None = auto

    @classmethod
    def convert(cls, values: dict) -> dict:
        mpp = values["target_mpp"]
        return {
            **values,
            "tile_px": int(values["tile_px"]),
            "grid": int(values["grid"]),
            "target_mpp": None if mpp == "native" else float(mpp),
            "min_inside": float(values["min_inside"]),
            "grid_stride": float(values["grid_stride"]),
            "grid_offset": parse_grid_offset(values["grid_offset"]),
        }

    def __post_init__(self):
        # the schema allows each value on its own; these checks span two settings
        stride_px = self.tile_px * self.grid_stride
        if abs(stride_px - round(stride_px)) > 1e-9:
            raise ValueError(
                f"grid_stride {self.grid_stride} x tile_px {self.tile_px} must be a whole number of pixels"
            )

    @property
    def steps_per_tile(self) -> int:
        """Grid nodes per tile width: neighbour tiles are this many nodes apart."""
        return int(round(1.0 / self.grid_stride))

    def to_config(self) -> dict:
        d = asdict(self)
        d["target_mpp"] = "native" if self.target_mpp is None else self.target_mpp
        d["grid_offset"] = "auto" if self.grid_offset is None else list(self.grid_offset)
        return d

    describe = to_config  # the form recorded in geometry files and feature stores


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
    # grid mode only: the slide's grid nodes that some neighbourhood uses (mask True), and per spot and
    # slot the node's row in that table (-1 where masked); empty / None in centred mode
    grid_nodes: np.ndarray | None = None  # (M, 2) float, level-0 px centres
    grid_node_rc: np.ndarray | None = None  # (M, 2) int, lattice (row, col)
    neighbour_index: np.ndarray | None = None  # (N, grid*grid) int32
    grid_origin: tuple[float, float] | None = None  # level-0 px centre of lattice node (0, 0)
    misalignment: np.ndarray | None = None  # (N, 2) node centre minus spot-centred position, level-0 px
    # what the sample says about its spots (technology, spot diameter and pitch in µm) and which spots of its
    # file were left out, for the report's geometry audit (``audit_facts``)
    sample_facts: dict | None = None

    @property
    def n_spots(self) -> int:
        return len(self.barcodes)

    @property
    def tile0(self) -> float:
        """Tile side in level-0 pixels."""
        return self.spec.tile_px * self.scale

    def audit_facts(self) -> dict:
        """The sample's geometry as the report audits it: pixel size and its source, the spot against the crop
        and the neighbourhood (µm), and the spots used and left out."""
        facts = dict(self.sample_facts or {})
        crop = self.tile0 * self.slide_mpp
        out = {
            "um_per_px": round(float(self.slide_mpp), 5),
            "um_per_px_source": self.mpp_source,
            "crop_um": round(float(crop), 2),
            "neighbourhood_um": round(float(crop * self.spec.grid), 2),
            "spots": int(self.n_spots),
            "neighbour_tiles_in_image": round(float(self.neighbour_mask.mean()), 4) if self.n_spots else None,
            **facts,
        }
        diameter = facts.get("spot_diameter_um")
        if diameter:
            out["spot_share_of_crop"] = round(float(np.pi * (diameter / 2) ** 2 / crop**2), 4)
        return out

    def neighbour_tiles_to_encode(self) -> int:
        """Encoder calls for the neighbour tiles: per spot and slot (centred) or per grid node (grid)."""
        if self.spec.neighbour_mode == "grid":
            return len(self.grid_nodes)
        return int(self.neighbour_mask.sum())

    def summary(self) -> dict:
        facts = {
            "spots": self.n_spots,
            "neighbour_mode": self.spec.neighbour_mode,
            "neighbour_tiles_in_image": int(self.neighbour_mask.sum()),
            "neighbour_tiles_to_encode": self.neighbour_tiles_to_encode(),
        }
        if self.spec.neighbour_mode == "grid":
            mis = np.abs(self.misalignment) * self.slide_mpp
            facts.update(
                {
                    "grid_nodes": len(self.grid_nodes),
                    "grid_origin_px": [round(v, 3) for v in self.grid_origin],
                    "misalignment_um_mean": round(float(np.hypot(mis[:, 0], mis[:, 1]).mean()), 3),
                    "misalignment_um_max_per_axis": round(float(mis.max()) if len(mis) else 0.0, 3),
                }
            )
        return facts

    def save(self, path: str | os.PathLike) -> None:
        attrs = {
            "sample": self.sample,
            "scale": self.scale,
            "slide_mpp": self.slide_mpp,
            "slide_dims": list(self.slide_dims),
            "spec": self.spec.describe(),
            "slide_path": self.slide_path,
            "mpp_source": self.mpp_source,
            "grid_origin": None if self.grid_origin is None else list(self.grid_origin),
            "sample_facts": self.sample_facts or {},
        }
        grid = {}
        if self.spec.neighbour_mode == "grid":
            grid = dict(
                grid_nodes=self.grid_nodes,
                grid_node_rc=self.grid_node_rc,
                neighbour_index=self.neighbour_index,
                misalignment=self.misalignment,
            )
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
                    **grid,
                )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Geometry:
        with np.load(path, allow_pickle=False) as z:
            attrs = json.loads(str(z["attrs"]))
            spec = dict(attrs["spec"])
            grid = {k: z[k] for k in ("grid_nodes", "grid_node_rc", "neighbour_index", "misalignment") if k in z}
            origin = attrs.get("grid_origin")
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
                sample_facts=attrs.get("sample_facts") or {},
                grid_origin=None if origin is None else tuple(origin),
                **grid,
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
    check_spots_inside(centres, barcodes, slide_dims, sample, slide_path)
    w, h = slide_dims
    scale = 1.0 if spec.target_mpp is None else spec.target_mpp / slide_mpp
    tile0 = spec.tile_px * scale
    offsets = neighbour_offsets(spec.grid) * tile0
    grid = {}
    if spec.neighbour_mode == "grid":
        grid = grid_neighbourhoods(centres, tile0, spec)
        neigh = grid.pop("neighbour_centres")
    else:
        neigh = centres[:, None, :] + offsets[None]
    mask = inside_fraction(neigh, tile0, slide_dims) >= spec.min_inside
    if grid:
        grid = _used_nodes(grid, mask, nodes_per_block(spec))
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
        **grid,
    )


def fit_grid_origin(centres: np.ndarray, stride0: float) -> tuple[float, float]:
    """The lattice phase (per axis) that minimises the spots' distance to their nearest node.

    The circular mean of ``centre mod stride`` per axis: exact when the spots lie on a lattice whose pitch
    is a multiple of the stride, and a least-squares-like compromise otherwise.
    """
    origin = []
    for axis in range(2):
        angle = 2 * np.pi * (centres[:, axis] / stride0)
        phase = np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()) / (2 * np.pi)
        origin.append(float(phase % 1.0) * stride0)
    return origin[0], origin[1]


def grid_neighbourhoods(centres: np.ndarray, tile0: float, spec: TileSpec) -> dict:
    """Per spot, the lattice nodes of its grid x grid neighbourhood (before masking)."""
    stride0 = tile0 * spec.grid_stride
    if spec.grid_offset is None:
        origin = fit_grid_origin(centres, stride0)
    else:
        origin = (spec.grid_offset[0] * tile0, spec.grid_offset[1] * tile0)
    o = np.asarray(origin)
    nearest = np.rint((centres - o) / stride0).astype(np.int64)  # (N, 2) lattice (col, row) of the centre node
    steps = neighbour_offsets(spec.grid).astype(np.int64) * spec.steps_per_tile  # (T, 2) in nodes
    cols_rows = nearest[:, None, :] + steps[None]  # (N, T, 2) as (col, row)
    node_centres = o + cols_rows * stride0
    misalignment = o + nearest * stride0 - centres
    return {
        "neighbour_centres": node_centres,
        "cols_rows": cols_rows,
        "grid_origin": (float(o[0]), float(o[1])),
        "misalignment": misalignment,
        "stride0": stride0,
    }


# grid mode reads the slide in square blocks about this many tiles wide (1120 px for 224 px tiles, like one
# centred window); nodes are numbered block by block so that a block's tiles are consecutive
BLOCK_TILES = 5


def nodes_per_block(spec: TileSpec) -> int:
    return BLOCK_TILES * spec.steps_per_tile


def _used_nodes(grid: dict, mask: np.ndarray, block: int) -> dict:
    """Number the nodes that some spot uses (mask True); order them block by block for region reads."""
    cols_rows = grid["cols_rows"]
    used = cols_rows[mask]  # (K, 2) (col, row)
    if len(used):
        uniq, inverse = np.unique(used, axis=0, return_inverse=True)
    else:
        uniq, inverse = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    # reading order: blocks of nodes that fit one region read, row-major inside a block
    order = np.lexsort((uniq[:, 0], uniq[:, 1], uniq[:, 0] // block, uniq[:, 1] // block))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    index = np.full(mask.shape, -1, np.int32)
    index[mask] = rank[inverse.reshape(-1)]
    nodes = uniq[order]
    o, stride0 = np.asarray(grid["grid_origin"]), grid["stride0"]
    return {
        "grid_nodes": o + nodes * stride0,
        "grid_node_rc": nodes[:, ::-1].astype(np.int32),
        "neighbour_index": index,
        "grid_origin": grid["grid_origin"],
        "misalignment": grid["misalignment"],
    }


def tile_sample(paths, spec: TileSpec, out: str | os.PathLike, spots=None) -> Geometry:
    """Read one HEST-layout sample, compute its geometry and write it to ``out`` (.npz). ``spots``: which spots
    take part (``genedml.io.hest.SpotFilterSpec``; None: the schema's default)."""
    from genedml.io.hest import SpotFilterSpec, array_coords, load_metadata, load_st, resolve_mpp, tissue_spots
    from genedml.io.pixel_size import check_pixel_size
    from genedml.io.slide import open_slide

    meta = load_metadata(paths.metadata, paths.sample)
    slide = open_slide(paths.slide, paths.sample)
    mpp, source = resolve_mpp(meta, slide, paths.sample, paths.slide, paths.metadata)
    adata = load_st(paths.st, paths.sample, require_counts=False)
    # all spots with a position (in and outside the tissue) lie on the lattice whose pitch checks the µm/px
    spatial = np.asarray(adata.obsm["spatial"], float)[:, :2]
    check_pixel_size(paths.sample, spatial, mpp, source, meta, paths.metadata, paths.slide, paths.st)
    in_file = adata.n_obs
    spots = spots or SpotFilterSpec.from_config({})
    adata = tissue_spots(adata, spots, paths.sample, paths.st)
    geom = compute_geometry(
        paths.sample,
        adata.obs_names.to_numpy(),
        np.asarray(adata.obsm["spatial"]),
        array_coords(adata, paths.sample),
        slide.dimensions,
        mpp,
        spec,
        slide_path=str(Path(paths.slide)),
        mpp_source=source,
    )
    geom.sample_facts = {
        "technology": str(meta.get("st_technology") or ""),
        "spot_diameter_um": positive(meta.get("spot_diameter")),
        "spot_pitch_um": positive(meta.get("inter_spot_dist")),
        "spots_in_file": int(in_file),
        "left_out_outside_tissue": int(in_file - adata.n_obs),
        "in_tissue": spots.in_tissue,
    }
    slide.close()
    geom.save(out)
    return geom
