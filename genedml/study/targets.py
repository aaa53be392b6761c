"""Turn raw counts of the chosen genes into regression targets.

``reference`` (default, the TRIPLEX / Gene-DML code): library size over the chosen genes only,
``y = log10(1 + 1e4 * c / sum_chosen(c))``, then each spot replaced by the mean of itself and its
neighbours. ``targets.neighbours`` says which: ``array_grid`` (default, the reference code) takes the
spots that exist at the neighbouring *array* positions (``array_row``, ``array_col``): Chebyshev
distance <= 1 on legacy ST's square grid (the 3x3 block), the 6-spot ring on Visium's hexagonal array
(where a row's columns step by 2). ``pixel_radius`` (genedml 0.x) takes the spots within 1.5 x the
median nearest-spot *pixel* distance; spot centres jitter, so on real HER2ST sections it misses about
a quarter of the array-grid pairs (half of the diagonals).
``log1p`` (HEST-Benchmark): ``log(1 + counts)``, no normalisation, no smoothing.
``log1p_cpm``: ``log(1 + 1e4 * c / sum_all_genes(c))`` without smoothing.
Every output records the recipe, so numbers from different recipes are never compared by accident.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from genedml.errors import InputError
from genedml.pipeline import schema
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetSpec(StageSpec):
    """How counts become regression targets (config ``targets``)."""

    section: ClassVar[str] = "targets"

    recipe: str  # see the module doc
    neighbours: str  # which spots the reference recipe averages over (module doc)


def grid_neighbours(spatial: np.ndarray, radius_factor: float = 1.5):
    """Sparse (N, N) adjacency with self-loops: spots within ``radius_factor`` x the spot pitch (pixels)."""
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    n = len(spatial)
    if n < 2:
        return sp.identity(n, format="csr")
    tree = cKDTree(spatial)
    d, _ = tree.query(spatial, k=2)
    pitch = float(np.median(d[:, 1]))
    pairs = tree.query_pairs(r=radius_factor * pitch, output_type="ndarray")
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))


# neighbouring array positions (row, col) of each grid kind, self excluded
SQUARE_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
HEX_OFFSETS = [(0, -2), (0, 2), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def array_grid_kind(coords: np.ndarray) -> str:
    """``hex`` when every spot's row + col has the same parity (Visium's array: columns step by 2 within a
    row, odd rows shifted by one), else ``square`` (legacy ST, binned grids)."""
    parity = (np.asarray(coords[:, 0]) + np.asarray(coords[:, 1])) % 2
    return "hex" if len(coords) > 1 and np.all(parity == parity[0]) else "square"


def array_grid_neighbours(coords: np.ndarray, sample: str | None = None, source=None):
    """Sparse (N, N) adjacency with self-loops over array coordinates (N, 2) = (row, col): the spots that
    exist at the neighbouring positions of the grid kind (``array_grid_kind``)."""
    import scipy.sparse as sp

    coords = np.asarray(coords, dtype=np.int64)
    n = len(coords)
    if n and (coords < 0).any():
        raise InputError(
            "spots have no array coordinates (obs array_row / array_col, or '{x}x{y}' barcodes); "
            "set targets.neighbours: pixel_radius to smooth over pixel distances instead",
            sample,
            source,
        )
    if n < 2:
        return sp.identity(n, format="csr")
    width = int(coords[:, 1].max()) + 3  # one key per position, room for col + 2
    keys = (coords[:, 0] + 1) * width + coords[:, 1] + 1
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeated = sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]]
    if repeated.size:
        r, c = divmod(int(repeated[0]), width)
        raise InputError(
            f"{repeated.size} spots share an array position, e.g. row {r - 1}, col {c - 1}", sample, source
        )
    offsets = HEX_OFFSETS if array_grid_kind(coords) == "hex" else SQUARE_OFFSETS
    rows, cols = [np.arange(n)], [np.arange(n)]
    for dr, dc in offsets:
        want = (coords[:, 0] + dr + 1) * width + coords[:, 1] + dc + 1
        pos = np.clip(np.searchsorted(sorted_keys, want), 0, n - 1)
        hit = (sorted_keys[pos] == want) & (coords[:, 1] + dc >= 0)
        rows.append(np.flatnonzero(hit))
        cols.append(order[pos[hit]])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))


def make_targets(
    counts: np.ndarray,
    spatial: np.ndarray,
    recipe: str,
    neighbours: str,
    *,
    array_coords: np.ndarray | None = None,
    all_gene_totals: np.ndarray | None = None,
    smooth: bool | None = None,
    sample: str | None = None,
    source=None,
) -> np.ndarray:
    """Targets (N, G) float32 of one section; ``smooth`` defaults to the recipe's own (reference: yes)."""
    counts = np.asarray(counts, dtype=np.float64)
    defined = np.ones(len(counts), dtype=bool)  # spots whose normalised values exist
    if recipe == "reference":
        lib = counts.sum(1, keepdims=True)
        y = np.log10(1.0 + 1e4 * counts / np.where(lib > 0, lib, 1.0))
        # no counts over the chosen genes: 0/0 in the recipe. Such a spot is left out of its neighbours'
        # means (as a NaN-skipping mean does) and takes theirs; alone, it stays 0
        defined = lib[:, 0] > 0
        if not defined.all():
            log.info("%s: %d spot(s) without counts over the chosen genes", sample or "section", int((~defined).sum()))
        smooth = True if smooth is None else smooth
    elif recipe == "log1p":
        y = np.log1p(counts)
        smooth = False if smooth is None else smooth
    elif recipe == "log1p_cpm":
        lib = counts.sum(1, keepdims=True) if all_gene_totals is None else np.asarray(all_gene_totals)[:, None]
        y = np.log1p(1e4 * counts / np.where(lib > 0, lib, 1.0))
        smooth = False if smooth is None else smooth
    else:
        raise InputError(
            f"unknown target recipe {recipe!r}; choose one of {', '.join(schema.choices('targets.recipe'))}", sample
        )
    if smooth:
        adj = smoothing_adjacency(neighbours, spatial, array_coords, sample, source)
        weight = defined.astype(np.float64)
        total = np.asarray(adj @ (y * weight[:, None]))
        n = np.asarray(adj @ weight).ravel()
        y = np.where(n[:, None] > 0, total / np.maximum(n, 1.0)[:, None], 0.0)
    return y.astype(np.float32)


def smoothing_adjacency(neighbours: str, spatial, array_coords, sample=None, source=None):
    """The adjacency the reference recipe averages over (``targets.neighbours``)."""
    if neighbours == "array_grid":
        if array_coords is None:
            raise InputError("targets.neighbours array_grid needs the spots' array coordinates", sample, source)
        return array_grid_neighbours(array_coords, sample, source)
    if neighbours == "pixel_radius":
        return grid_neighbours(np.asarray(spatial, dtype=float))
    raise InputError(
        f"unknown targets.neighbours {neighbours!r}; choose one of {', '.join(schema.choices('targets.neighbours'))}",
        sample,
    )


def build_sample_targets(
    st_path, sample: str, genes: list[str], spec: TargetSpec, out, smooth=None, spots=None
) -> None:
    """Write ``out`` (.h5ad): X = targets (spots x genes), obsm['spatial'], layers['counts'] = raw counts.
    ``spots``: which spots take part (``genedml.io.hest.SpotFilterSpec``; None: the schema's default)."""
    import anndata as ad
    import scipy.sparse as sp

    from genedml.atomic import atomic_path
    from genedml.io.hest import SpotFilterSpec, array_coords, load_st, tissue_spots

    adata = load_st(st_path, sample, require_counts=True)
    adata = tissue_spots(adata, spots or SpotFilterSpec.from_config({}), sample, st_path)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise InputError(f"{len(missing)} chosen genes are absent: {', '.join(missing[:10])}", sample, st_path)
    totals = np.asarray(adata.X.sum(1)).ravel()
    sub = adata[:, genes]
    counts = sub.X.toarray() if sp.issparse(sub.X) else np.asarray(sub.X)
    coords = array_coords(adata, sample)
    y = make_targets(
        counts,
        adata.obsm["spatial"],
        spec.recipe,
        spec.neighbours,
        array_coords=coords,
        all_gene_totals=totals,
        smooth=smooth,
        sample=sample,
        source=st_path,
    )
    out_ad = ad.AnnData(X=y, obs=adata.obs.copy(), var=sub.var.copy())
    out_ad.layers["counts"] = counts.astype(np.int32)
    out_ad.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=float)
    out_ad.obsm["array_coords"] = coords
    smoothed = bool(spec.recipe == "reference" if smooth is None else smooth)
    out_ad.uns["genedml_targets"] = {
        "recipe": spec.recipe,
        "smooth": smoothed,
        "neighbours": spec.neighbours if smoothed else "none",
        "grid": array_grid_kind(coords) if smoothed and spec.neighbours == "array_grid" else "",
    }
    with atomic_path(out) as tmp:
        out_ad.write_h5ad(tmp)
