"""The report's figures (matplotlib, Agg backend: no display needed).

- spatial maps (as the papers' Fig. 3): per held-out section and head, for a few chosen genes, truth and
  prediction as spots over the H&E thumbnail. Each map is min-max scaled to [0, 1] on its own (Pearson r
  ignores scale, so shapes are what is compared); the prediction's PCC for that gene and section is in
  its title;
- per-gene PCC distribution of every head (mean PCC over folds per gene);
- hyper-parameter sweeps: PCC(A) and PCC(H) (mean ± std over folds) against the swept value; a point
  averaged over fewer than all folds is annotated "k/n folds".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from genedml.atomic import atomic_path
from genedml.evaluation.metrics import pearson_per_gene
from genedml.pipeline.spec import StageSpec


@dataclass(frozen=True)
class SpatialFigureSpec(StageSpec):
    """Which genes the spatial maps show (config ``report.spatial_genes``)."""

    section: ClassVar[str] = "report"
    keys: ClassVar[tuple[str, ...]] = ("spatial_genes",)

    spatial_genes: list


log = logging.getLogger(__name__)

DPI = 90


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported when a figure is drawn: the workflow
    imports this module's spec when it starts, and matplotlib takes a third of a second to import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out) -> None:
    """PNG for plots; JPEG (quality 90) for maps over H&E, which PNG stores ~6x larger."""
    jpeg = Path(out).suffix.lower() in (".jpg", ".jpeg")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="jpeg" if jpeg else "png", dpi=DPI, pil_kwargs={"quality": 90} if jpeg else None)
    pyplot().close(fig)


def choose_spatial_genes(wanted, available: list[str], n_fallback: int = 3) -> list[str]:
    """The wanted genes that were predicted, in the order asked; if none was, the first ``n_fallback``
    genes of the gene list (the most expressed when genes were chosen by total counts)."""
    present = [g for g in (wanted or []) if g in set(available)]
    return present if present else list(available[:n_fallback])


def scale01(values) -> np.ndarray:
    """Min-max scaling to [0, 1]; a constant map becomes all zeros."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.nanmin(v), np.nanmax(v)
    if not np.isfinite(hi - lo) or hi - lo <= 0:
        return np.zeros_like(v)
    return (v - lo) / (hi - lo)


def _crop_box(xy: np.ndarray, diameter: float, width: int, height: int) -> tuple[float, float, float, float]:
    pad = 1.5 * diameter
    x0, y0 = np.maximum(xy.min(0) - pad, 0)
    x1, y1 = np.minimum(xy.max(0) + pad, [width, height])
    return float(x0), float(x1), float(y0), float(y1)


def backdrop(image: np.ndarray, box: tuple[float, float, float, float], width: int, max_px: int):
    """The part of the thumbnail under ``box`` (x0, x1, y0, y1 in level-0 px), shrunk to at most ``max_px``
    on its longer side, and its extent in level-0 px for imshow. Drawing the whole thumbnail in every panel
    made matplotlib resample it once per panel and draw: most of a map's time."""
    from PIL import Image

    s = image.shape[1] / width  # thumbnail px per level-0 px
    x0, x1, y0, y1 = box
    px0, py0 = max(int(np.floor(x0 * s)), 0), max(int(np.floor(y0 * s)), 0)
    px1, py1 = min(int(np.ceil(x1 * s)), image.shape[1]), min(int(np.ceil(y1 * s)), image.shape[0])
    crop = Image.fromarray(np.ascontiguousarray(image[py0:py1, px0:px1]))
    shrink = max(crop.width, crop.height) / max_px
    if shrink > 1:
        crop = crop.resize((max(1, round(crop.width / shrink)), max(1, round(crop.height / shrink))), Image.LANCZOS)
    return np.asarray(crop), (px0 / s, px1 / s, py1 / s, py0 / s)


def draw_spots(ax, xy, diameter: float, values, norm, cmap: str = "viridis", alpha: float = 0.9):
    """Spots as discs of ``diameter`` (data units: level-0 px) at ``xy``, coloured by ``values``."""
    from matplotlib.collections import EllipseCollection

    spots = EllipseCollection(
        diameter,
        diameter,
        0.0,
        units="xy",
        offsets=xy,
        offset_transform=ax.transData,
        cmap=cmap,
        norm=norm,
        alpha=alpha,
        edgecolors="none",
    )
    spots.set_array(values)
    ax.add_collection(spots)
    return spots


def spatial_maps(export_h5ad, thumbnail_json, genes: list[str], out_png, head: str = "") -> list[dict]:
    """One PNG: a row per gene, columns truth | prediction. Returns the PCC per gene (for the caption)."""
    import anndata as ad
    from matplotlib.colors import Normalize

    from genedml.evaluation.thumbnails import load_thumbnail

    adata = ad.read_h5ad(export_h5ad)
    sample = str(adata.uns.get("genedml", {}).get("sample", Path(export_h5ad).stem))
    image, facts = load_thumbnail(thumbnail_json)
    width, height = facts["fullres_width"], facts["fullres_height"]
    diameter = facts["spot_diameter_fullres"]
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    names = adata.var_names.tolist()
    truth = np.asarray(adata.layers["truth"], dtype=float)
    pred = np.asarray(adata.layers["prediction"] if "prediction" in adata.layers else adata.X, dtype=float)
    x0, x1, y0, y1 = _crop_box(xy, diameter, width, height)
    panel_w = 3.6
    panel_h = max(1.6, min(5.0, panel_w * (y1 - y0) / max(x1 - x0, 1.0)))
    fig, axes = pyplot().subplots(
        len(genes), 2, figsize=(2 * panel_w + 1.0, panel_h * len(genes) + 0.6), squeeze=False, layout="constrained"
    )
    # twice the panel's pixels: sharp at the saved DPI, a fraction of the full thumbnail
    under, extent = backdrop(image, (x0, x1, y0, y1), width, max_px=int(2 * panel_w * DPI))
    norm = Normalize(0.0, 1.0)
    scores = []
    for row, gene in enumerate(genes):
        j = names.index(gene)
        r = float(pearson_per_gene(truth[:, [j]], pred[:, [j]])[0])
        scores.append({"gene": gene, "pcc": r})
        pcc = "n/a (constant)" if np.isnan(r) else f"{r:.3f}"
        for col, values in enumerate((truth[:, j], pred[:, j])):  # truth, then prediction
            ax = axes[row, col]
            ax.imshow(under, extent=extent, interpolation="bilinear")
            spots = draw_spots(ax, xy, diameter, scale01(values), norm)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y1, y0)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{gene} truth" if col == 0 else f"{gene} prediction, PCC = {pcc}", fontsize=9)
        fig.colorbar(spots, ax=axes[row, :].tolist(), shrink=0.85, label="scaled to [0, 1]")
    fig.suptitle(f"{head}: held-out section {sample}" if head else f"held-out section {sample}", fontsize=10)
    _save(fig, out_png)
    return scores


def head_spatial_figures(head: str, exports: dict, thumbnails: dict, genes_tsv, wanted, out_dir) -> dict:
    """Spatial maps of every exported section of one head: ``{sample: [{gene, pcc}, ...]}``.

    The maps go to ``out_dir/spatial/{sample}.jpg``, ``spatial_pcc.json`` (the PCC in each title) to ``out_dir``."""
    available = pd.read_csv(genes_tsv, sep="\t")["gene"].astype(str).tolist()
    genes = choose_spatial_genes(wanted, available)
    out_dir = Path(out_dir)
    scores = {}
    for sample, path in exports.items():
        scores[sample] = spatial_maps(path, thumbnails[sample], genes, out_dir / "spatial" / f"{sample}.jpg", head)
        log.info("%s %s: %s", head, sample, ", ".join(f"{s['gene']} r={s['pcc']:.3f}" for s in scores[sample]))
    with atomic_path(out_dir / "spatial_pcc.json") as tmp:
        tmp.write_text(json.dumps({"genes": genes, "wanted": list(wanted or []), "sections": scores}, indent=2))
    return scores


def pcc_distribution(per_gene: dict, labels: dict, out_png) -> None:
    """Box plot plus the genes as points: mean PCC over folds of every gene, one box per head."""
    heads = list(per_gene)
    data = [pd.read_csv(per_gene[h], sep="\t")["mean_pcc"].to_numpy(dtype=float) for h in heads]
    fig, ax = pyplot().subplots(figsize=(max(4.5, 1.2 * len(heads) + 2.0), 4.2), layout="constrained")
    clean = [d[~np.isnan(d)] for d in data]
    ax.boxplot([c if c.size else [np.nan] for c in clean], showfliers=False, widths=0.55)
    rng = np.random.default_rng(0)
    for i, c in enumerate(clean, start=1):
        ax.scatter(i + rng.uniform(-0.18, 0.18, c.size), c, s=7, alpha=0.5, color="tab:blue", linewidths=0)
        if c.size:
            ax.annotate(
                f"gene mean {c.mean():.3f}\n{c.size} genes",
                (i, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, -2),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=7,
            )
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(
        range(1, len(heads) + 1),
        [labels.get(h, h) for h in heads],
        rotation=20 if len(heads) > 4 else 0,
        ha="right" if len(heads) > 4 else "center",
    )
    ax.set_ylabel("per-gene PCC (mean over folds)")
    ax.set_title("Per-gene PCC of each head", fontsize=10)
    lo = min([c.min() for c in clean if c.size] + [-0.1])
    ax.set_ylim(lo - 0.05, 1.15)
    _save(fig, out_png)


def sweep_figure(param: str, points: pd.DataFrame, out_png) -> None:
    """``points``: columns value, head, PCC_A, PCC_A_std, PCC_H, PCC_H_std (one row per head), optionally
    ``<metric>_n_folds`` and ``<metric>_n_folds_total``: a point over fewer folds is annotated "k/n folds"."""
    pts = points.copy()
    numeric = pd.to_numeric(pts["value"], errors="coerce")
    fig, ax = pyplot().subplots(figsize=(5.0, 3.6), layout="constrained")
    if numeric.notna().all():
        pts["x"] = numeric
        pts = pts.sort_values("x")
        x = pts["x"].to_numpy(dtype=float)
        if (x > 0).all() and x.max() / max(x.min(), 1e-12) >= 20:
            ax.set_xscale("log")
    else:
        pts["x"] = np.arange(len(pts))
        x = pts["x"].to_numpy(dtype=float)
        ax.set_xticks(x, pts["value"].astype(str).tolist())
    for metric, marker in (("PCC_A", "o"), ("PCC_H", "s")):
        ax.errorbar(
            x,
            pts[metric].to_numpy(dtype=float),
            yerr=pts[f"{metric}_std"].to_numpy(dtype=float),
            marker=marker,
            capsize=3,
            label=metric.replace("_", "(") + ")",
        )
        if f"{metric}_n_folds" in pts and f"{metric}_n_folds_total" in pts:
            for xi, yi, k, n in zip(x, pts[metric], pts[f"{metric}_n_folds"], pts[f"{metric}_n_folds_total"]):
                if pd.notna(k) and pd.notna(n) and k < n and pd.notna(yi):
                    ax.annotate(
                        f"{int(k)}/{int(n)} folds", (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=7
                    )
    ax.set_xlabel(param)
    ax.set_ylabel("PCC (mean ± std over folds)")
    ax.set_title(f"Sweep over {param}", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, out_png)


def overview_figures(specs: dict, metrics_dir, out_dir) -> list[Path]:
    """``pcc_per_gene.png`` over all heads and ``sweep_<param>.png`` per swept parameter.

    ``specs``: head -> its report spec (``genedml.report.build.report_specs``)."""
    metrics_dir, out_dir = Path(metrics_dir), Path(out_dir)
    written = [out_dir / "pcc_per_gene.png"]
    pcc_distribution(
        {h: metrics_dir / h / "per_gene.tsv" for h in specs},
        {h: s.get("label", h) for h, s in specs.items()},
        written[0],
    )
    params = sorted({p for s in specs.values() for p in s.get("sweep", {})})
    for param in params:
        rows = []
        for head, spec in specs.items():
            if param not in spec.get("sweep", {}):
                continue
            summary = pd.read_csv(metrics_dir / head / "summary.tsv", sep="\t").set_index("metric")
            rows.append(
                {
                    "value": spec["sweep"][param],
                    "head": head,
                    **{
                        k: summary.loc[m, col]
                        for m in ("PCC_A", "PCC_H")
                        for k, col in (
                            (m, "mean"),
                            (f"{m}_std", "std"),
                            (f"{m}_n_folds", "n_folds"),
                            (f"{m}_n_folds_total", "n_folds_total"),
                        )
                        if col in summary.columns
                    },
                }
            )
        sweep_figure(param, pd.DataFrame(rows), out_dir / f"sweep_{param}.png")
        written.append(out_dir / f"sweep_{param}.png")
    return written
