"""Turn raw counts of the chosen genes into regression targets.

``reference`` (default, the TRIPLEX / Gene-DML code): library size over the chosen genes only,
``y = log10(1 + 1e4 * c / sum_chosen(c))``, then each spot replaced by the mean of itself and its
neighbours on the spot grid. Neighbours are the spots within 1.5 x the median nearest-spot distance:
exactly the 3x3 array neighbourhood on a legacy-ST square grid, the 6-spot ring on Visium's hexagons.
``log1p`` (HEST-Benchmark): ``log(1 + counts)``, no normalisation, no smoothing.
``log1p_cpm``: ``log(1 + 1e4 * c / sum_all_genes(c))`` without smoothing.
Every output records the recipe, so numbers from different recipes are never compared by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from genedml.errors import InputError
from genedml.pipeline import schema
from genedml.pipeline.spec import StageSpec


@dataclass(frozen=True)
class TargetSpec(StageSpec):
    """How counts become regression targets (config ``targets``)."""

    section: ClassVar[str] = "targets"

    recipe: str  # see the module doc


def grid_neighbours(spatial: np.ndarray, radius_factor: float = 1.5):
    """Sparse (N, N) adjacency with self-loops: spots within ``radius_factor`` x the spot pitch."""
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


def make_targets(
    counts: np.ndarray,
    spatial: np.ndarray,
    recipe: str,
    all_gene_totals: np.ndarray | None = None,
    smooth: bool | None = None,
    sample: str | None = None,
) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if recipe == "reference":
        lib = counts.sum(1, keepdims=True)
        y = np.log10(1.0 + 1e4 * counts / np.where(lib > 0, lib, 1.0))
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
        adj = grid_neighbours(np.asarray(spatial, dtype=float))
        y = np.asarray(adj @ y) / np.asarray(adj.sum(1))
    return y.astype(np.float32)


def build_sample_targets(st_path, sample: str, genes: list[str], recipe: str, out, smooth=None) -> None:
    """Write ``out`` (.h5ad): X = targets (spots x genes), obsm['spatial'], layers['counts'] = raw counts."""
    import anndata as ad
    import scipy.sparse as sp

    from genedml.atomic import atomic_path
    from genedml.io.hest import array_coords, load_st

    adata = load_st(st_path, sample, require_counts=True)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise InputError(f"{len(missing)} chosen genes are absent: {', '.join(missing[:10])}", sample, st_path)
    totals = np.asarray(adata.X.sum(1)).ravel()
    sub = adata[:, genes]
    counts = sub.X.toarray() if sp.issparse(sub.X) else np.asarray(sub.X)
    y = make_targets(counts, adata.obsm["spatial"], recipe, all_gene_totals=totals, smooth=smooth, sample=sample)
    out_ad = ad.AnnData(X=y, obs=adata.obs.copy(), var=sub.var.copy())
    out_ad.layers["counts"] = counts.astype(np.int32)
    out_ad.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=float)
    out_ad.obsm["array_coords"] = array_coords(adata)
    out_ad.uns["genedml_targets"] = {
        "recipe": recipe,
        "smooth": bool(recipe == "reference" if smooth is None else smooth),
    }
    with atomic_path(out) as tmp:
        out_ad.write_h5ad(tmp)
