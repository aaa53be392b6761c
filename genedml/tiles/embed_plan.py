"""What the embed engine reads and writes, in which unit of work.

A ``Unit`` is a chunk-aligned range of store rows, written (and marked done) as one piece; each unit has
the data-loader ``Item``s whose tiles fill it. Items say which level-0 boxes to read, where to cut tiles
out of them and which store row (and neighbour slot) each tile's embedding goes to. With
``encoder.local_views`` V > 1 each local crop is cut V times, once per dihedral view (``views.py``; the
loader transforms the pixels); neighbour and grid tiles are cut once, untransformed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genedml.io.slide import crop_corner
from genedml.tiles.features import StoreLayout
from genedml.tiles.geometry import Geometry, nodes_per_block

LOCALS_PER_ITEM = 16  # grid mode: local crops read per data-loader item


@dataclass
class Item:
    """One data-loader item: region reads and the tiles cut from them, with where each tile's output goes.

    ``boxes`` (B, 4): level-0 corner x, y and output width, height; ``cuts`` (K, 4): box, x, y (output px),
    view; ``dest`` (K, 5): unit, row in the unit, neighbour slot (-1: none), is-local (1: a view of the local
    crop), view (0: identity; the local embedding itself).
    """

    boxes: np.ndarray
    cuts: np.ndarray
    dest: np.ndarray


@dataclass
class Unit:
    """A chunk-aligned range of output rows, written (and marked done) as one piece."""

    kind: str  # spots (centred: local + neighbour) | nodes (grid tiles) | locals (grid: local crops)
    lo: int
    hi: int
    n_tiles: int = 0
    copy_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # locals reusing a node
    copy_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _centred_box(centre, out_px: int, scale: float) -> list[float]:
    """The ``Item.boxes`` row of the ``out_px`` square read centred on ``centre``."""
    x0, y0 = crop_corner(centre, out_px, scale)
    return [x0, y0, out_px, out_px]


def _dest(unit: int, rows: np.ndarray, slots: np.ndarray, is_local: np.ndarray, views=None) -> np.ndarray:
    views = np.zeros(len(rows), np.int64) if views is None else views
    return np.column_stack([np.full(len(rows), unit), rows, slots, is_local, views]).astype(np.int64)


def coincident_locals(g: Geometry) -> np.ndarray:
    """Grid mode: spots whose local crop is exactly a grid tile that is encoded anyway (bool, N)."""
    centre = (g.spec.grid * g.spec.grid) // 2
    exact = (np.abs(g.misalignment) < 1e-6 * max(g.tile0, 1.0)).all(axis=1)
    return exact & (g.neighbour_index[:, centre] >= 0)


def reading_order(centres: np.ndarray, band: float) -> np.ndarray:
    """Indices of ``centres`` in bands of rows, left to right: consecutive reads share the slide's decoded
    tiles in OpenSlide's cache (store rows stay in sample order; only the reading order changes)."""
    return np.lexsort((centres[:, 0], np.floor(centres[:, 1] / max(band, 1e-9))))


def _centred_units(g: Geometry, layout: StoreLayout) -> tuple[list[Unit], list[list[Item]]]:
    """Centred mode: per spot one read of its grid x grid window, cut into tiles (the centre one is local)."""
    px, grid = g.spec.tile_px, g.spec.grid
    n_slots = grid * grid
    centre = n_slots // 2
    slot_xy = np.stack([np.arange(n_slots) % grid, np.arange(n_slots) // grid], 1) * px
    units, items = [], []
    for lo in range(0, g.n_spots, layout.spot_rows):
        hi = min(lo + layout.spot_rows, g.n_spots)
        u = len(units)
        unit_items = []
        for i in lo + reading_order(g.centres[lo:hi], g.tile0):
            keep = g.neighbour_mask[i].copy()
            keep[centre] = True  # the centre tile is the local crop (view 0): always encoded
            slots = np.flatnonzero(keep)
            extra = np.arange(1, layout.n_views)  # the local crop's other views: the centre tile transformed
            cut_slots = np.r_[slots, np.full(len(extra), centre)]
            views = np.r_[np.zeros(len(slots), np.int64), extra]
            cuts = np.column_stack([np.zeros(len(cut_slots), np.int64), slot_xy[cut_slots], views])
            dest = _dest(
                u,
                np.full(len(cut_slots), i - lo),
                np.r_[np.where(g.neighbour_mask[i, slots], slots, -1), np.full(len(extra), -1)],
                (cut_slots == centre).astype(np.int64),
                views,
            )
            box = np.array([_centred_box(g.centres[i], px * grid, g.scale)])
            unit_items.append(Item(box, cuts.astype(np.int64), dest))
        units.append(Unit("spots", lo, hi, sum(len(it.cuts) for it in unit_items)))
        items.append(unit_items)
    return units, items


def _grid_node_units(g: Geometry, layout: StoreLayout) -> tuple[list[Unit], list[list[Item]]]:
    """Grid mode, first: the grid tiles, one region read per block of lattice nodes."""
    px = g.spec.tile_px
    stride_px = int(round(px * g.spec.grid_stride))
    block = nodes_per_block(g.spec)
    rc = g.grid_node_rc.astype(np.int64)
    half0 = g.tile0 / 2.0
    origin, stride0 = g.grid_origin, g.tile0 * g.spec.grid_stride
    units, items = [], []
    for lo in range(0, len(g.grid_nodes), layout.node_rows):
        hi = min(lo + layout.node_rows, len(g.grid_nodes))
        u = len(units)
        unit_items = []
        blocks = (rc[lo:hi] // block) @ np.array([1 << 32, 1])
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
        for a, b in zip(starts, np.r_[starts[1:], hi - lo]):
            rows = np.arange(lo + a, lo + b)
            r0, c0 = rc[rows].min(0)
            r1, c1 = rc[rows].max(0)
            # one read covers the block's nodes: corner = centre of lattice node (r0, c0) minus half a tile
            x0 = origin[0] + c0 * stride0 - half0
            y0 = origin[1] + r0 * stride0 - half0
            box = np.array([[x0, y0, (c1 - c0) * stride_px + px, (r1 - r0) * stride_px + px]])
            cuts = np.column_stack(
                [
                    np.zeros(len(rows), np.int64),
                    (rc[rows, 1] - c0) * stride_px,
                    (rc[rows, 0] - r0) * stride_px,
                    np.zeros(len(rows), np.int64),
                ]
            )
            dest = _dest(u, rows - lo, np.full(len(rows), -1), np.zeros(len(rows), np.int64))
            unit_items.append(Item(box, cuts.astype(np.int64), dest))
        units.append(Unit("nodes", lo, hi, hi - lo))
        items.append(unit_items)
    return units, items


def _grid_local_units(
    g: Geometry, layout: StoreLayout, first_unit: int, reuse: np.ndarray
) -> tuple[list[Unit], list[list[Item]]]:
    """Grid mode, then: the local crops, read centred on their spots unless reused from a grid tile."""
    px = g.spec.tile_px
    centre = (g.spec.grid * g.spec.grid) // 2
    units, items = [], []
    for lo in range(0, g.n_spots, layout.spot_rows):
        hi = min(lo + layout.spot_rows, g.n_spots)
        u = first_unit + len(units)
        read = lo + reading_order(g.centres[lo:hi], g.tile0)
        read = read[~reuse[read]]
        unit_items = []
        n_views = layout.n_views
        for s in range(0, len(read), LOCALS_PER_ITEM):
            spots = read[s : s + LOCALS_PER_ITEM]
            boxes = np.array([_centred_box(g.centres[i], px, g.scale) for i in spots])
            box = np.repeat(np.arange(len(spots)), n_views)  # every view of a crop, from its one read
            views = np.tile(np.arange(n_views), len(spots))
            cuts = np.column_stack([box, np.zeros((len(box), 2), np.int64), views])
            dest = _dest(u, spots[box] - lo, np.full(len(box), -1), np.ones(len(box), np.int64), views)
            unit_items.append(Item(boxes, cuts.astype(np.int64), dest))
        copy_rows = np.flatnonzero(reuse[lo:hi])
        copy_nodes = g.neighbour_index[lo + copy_rows, centre].astype(np.int64)
        units.append(Unit("locals", lo, hi, len(read) * n_views, copy_rows, copy_nodes))
        items.append(unit_items)
    return units, items


def plan_units(g: Geometry, layout: StoreLayout, reuse_grid_locals: bool = True) -> tuple[list[Unit], list[list[Item]]]:
    """Units of work in writing order and, per unit, the items that read its tiles. A local crop that is a
    grid tile is reused only without token cache and views (the grid tile has neither)."""
    if g.spec.neighbour_mode == "centred":
        return _centred_units(g, layout)
    units, items = _grid_node_units(g, layout)
    reuse_grid_locals = reuse_grid_locals and layout.n_views == 1
    reuse = coincident_locals(g) if reuse_grid_locals else np.zeros(g.n_spots, bool)
    local_units, local_items = _grid_local_units(g, layout, len(units), reuse)
    return units + local_units, items + local_items
