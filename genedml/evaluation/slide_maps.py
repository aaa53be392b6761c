"""Maps of a slide predicted without counts: chosen genes, the fold models' disagreement, the OOD score.

One figure per (head, slide), drawn from the prediction ``.h5ad`` alone (``genedml predict``): the
thumbnail and scale factors in its ``uns['spatial']``, ``X`` (mean over the fold models), ``layers['std']``
(their standard deviation) and ``obs['ood_score']``. Panels: each chosen gene's predicted expression
(min-max scaled over the slide's spots, as the held-out maps); the disagreement, the standard deviation over
folds divided by the gene's spread over the slide's spots, averaged over the chosen genes (0: the fold
models agree; 1: they differ as much as the slide's spots do); and the OOD score, capped at 3.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genedml.errors import InputError
from genedml.evaluation.figures import _save, choose_spatial_genes, draw_spots, pyplot, scale01

log = logging.getLogger(__name__)

OOD_CAP = 3.0  # the OOD panel's colour scale ends here (1: a typical held-out spot)


def slide_image(adata, path) -> tuple[np.ndarray | None, float, float]:
    """(thumbnail, level-0 px per thumbnail px, spot diameter in level-0 px) from ``uns['spatial']``."""
    spatial = adata.uns.get("spatial") or {}
    if not spatial:
        return None, 1.0, 0.0
    library = next(iter(spatial.values()))
    images, factors = library.get("images", {}), library.get("scalefactors", {})
    for name, key in (("hires", "tissue_hires_scalef"), ("downscaled_fullres", "tissue_downscaled_fullres_scalef")):
        if name in images and key in factors:
            return np.asarray(images[name]), 1.0 / float(factors[key]), float(factors.get("spot_diameter_fullres", 0))
    log.warning("%s: uns['spatial'] has no image with its scale factor; maps without H&E", path)
    return None, 1.0, float(factors.get("spot_diameter_fullres", 0))


def disagreement(adata, genes: list[str]) -> np.ndarray | None:
    """Per spot: the fold models' standard deviation over the gene's spread across spots, mean over genes."""
    if "std" not in adata.layers:
        return None
    cols = [adata.var_names.get_loc(g) for g in genes]
    std = np.asarray(adata.layers["std"][:, cols], dtype=float)
    spread = np.asarray(adata.X[:, cols], dtype=float).std(0)
    return (std / np.where(spread > 0, spread, np.inf)).mean(1)


def slide_maps(predictions, genes_wanted: list[str], out_png) -> dict:
    """Draw the maps (module doc) into ``out_png``; return what was drawn."""
    import anndata as ad
    from matplotlib.colors import Normalize

    path = Path(predictions)
    if not path.exists():
        raise InputError("prediction file not found (run the predict step)", None, path)
    adata = ad.read_h5ad(path)
    sample = str(adata.obs["sample"].iloc[0]) if "sample" in adata.obs and adata.n_obs else path.stem
    head = str(adata.uns.get("genedml", {}).get("head", ""))
    genes = choose_spatial_genes(genes_wanted, adata.var_names.tolist())
    image, downsample, diameter = slide_image(adata, path)
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    if not diameter:
        diameter = float(np.median(np.diff(np.sort(xy[:, 0])))) or 1.0
    panels = [
        (f"{g} (predicted)", scale01(np.asarray(adata[:, g].X).ravel()), Normalize(0, 1), "viridis") for g in genes
    ]
    spread = disagreement(adata, genes)
    if spread is not None:
        panels.append(
            ("fold disagreement (std / spread)", spread, Normalize(0, max(float(np.nanmax(spread)), 1e-6)), "magma")
        )
    ood = adata.obs["ood_score"].to_numpy(float) if "ood_score" in adata.obs else None
    if ood is not None:
        panels.append(
            (f"OOD score (1: typical held-out spot; capped at {OOD_CAP:g})", ood, Normalize(0, OOD_CAP), "coolwarm")
        )
    x0, y0 = np.maximum(xy.min(0) - 2 * diameter, 0)
    x1, y1 = xy.max(0) + 2 * diameter
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    panel_w = 3.6
    panel_h = max(1.6, min(5.0, panel_w * (y1 - y0) / max(x1 - x0, 1.0)))
    fig, axes = pyplot().subplots(
        rows, cols, figsize=(cols * panel_w + 1.2, rows * panel_h + 0.7), squeeze=False, layout="constrained"
    )
    for ax, (title, values, norm, cmap) in zip(axes.ravel(), panels):
        if image is not None:
            h, w = image.shape[:2]
            ax.imshow(image, extent=(0, w * downsample, h * downsample, 0), interpolation="bilinear")
        spots = draw_spots(ax, xy, diameter, np.nan_to_num(np.asarray(values, dtype=float)), norm, cmap, 0.85)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
        fig.colorbar(spots, ax=ax, shrink=0.8)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{head}: {sample}, {adata.n_obs} spots (no counts)" if head else sample, fontsize=10)
    _save(fig, out_png)
    facts = {"sample": sample, "head": head, "genes": genes, "n_spots": int(adata.n_obs)}
    if ood is not None:
        facts["ood_median"] = float(np.median(ood))
    log.info("%s: maps of %s (%s) -> %s", sample, ", ".join(genes), head, out_png)
    return facts
