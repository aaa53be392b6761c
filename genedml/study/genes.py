"""Choose the genes to predict: a fixed list, or the top N over the training samples by total raw counts
(``genes.rank: total_counts``, the default) or by normalised dispersion (``rank: dispersion``,
HEST-Benchmark's highly variable genes, ``normalised_dispersion``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from genedml.errors import InputError
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)


BOM = "\ufeff"
# byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one)
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def text_encoding(path: str | Path) -> str:
    """The encoding to read a user's text file (gene list, TSV) with: ``utf-16`` / ``utf-32`` when it starts
    with their byte-order mark (Excel's "Unicode text"), else ``utf-8-sig`` (UTF-8, a leading BOM dropped)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8-sig")


def read_text(path: str | Path, what: str = "text file") -> str:
    """A user's text file as str, whatever byte-order mark it has (see ``text_encoding``): BOMs are dropped
    wherever they are (files concatenated with a BOM each), so the first symbol is never lost. Bytes that are
    not text in that encoding are an ``InputError`` naming the file."""
    encoding = text_encoding(path)
    try:
        text = Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not {encoding.replace('-sig', '')} text (undecodable byte at position {exc.start}); "
            "save it as UTF-8",
            None,
            path,
        ) from exc
    return text.replace(BOM, "")


def read_gene_list(path: str | Path) -> list[str]:
    """Symbols of a gene list file (one per line, ``#`` comments); ``genedml:her2st_250`` etc. name the
    lists shipped with genedml (see ``genedml.io.datasets.gene_list_path``). UTF-8 with or without a
    byte-order mark, or UTF-16/32 with one."""
    from genedml.io.datasets import gene_list_path

    path = gene_list_path(path)
    if not path.exists():
        raise InputError("gene list file not found", None, path)
    lines = (line.strip() for line in read_text(path, "gene list").splitlines())
    genes = [g for g in lines if g and not g.startswith("#")]
    if not genes:
        raise InputError("gene list is empty", None, path)
    seen = set()
    return [g for g in genes if not (g in seen or seen.add(g))]


def gene_totals(st_paths: dict[str, Path], spots=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per gene: total counts and fraction of spots expressing it, per sample (genes x samples), over the
    spots ``spots`` keeps (``genedml.io.hest.SpotFilterSpec``; None: the schema's default)."""
    stats = gene_stats(st_paths, spots)
    return stats["totals"], stats["detected"]


def gene_stats(st_paths: dict[str, Path], spots=None, squares: bool = False) -> dict:
    """``gene_totals``' two tables (``totals``, ``detected``), the spots per sample (``n_spots``, a Series)
    and, with ``squares``, the per-sample sums of squared counts (``squares``, genes x samples): what the
    pooled mean and variance of every gene over all spots need, one section in memory at a time."""
    import scipy.sparse as sp

    from genedml.io.hest import SpotFilterSpec, load_st, tissue_spots

    spots = spots or SpotFilterSpec.from_config({})
    totals, detected, sq, n_spots = {}, {}, {}, {}
    for sample, path in st_paths.items():
        # the one reader of a section's .h5ad: validated, duplicate symbols renamed as for the targets
        adata = tissue_spots(load_st(path, sample, require_counts=True), spots, sample, path)
        x = adata.X
        totals[sample] = pd.Series(np.asarray(x.sum(0)).ravel(), index=adata.var_names)
        nz = (x > 0).sum(0)
        detected[sample] = pd.Series(np.asarray(nz).ravel(), index=adata.var_names) / max(adata.n_obs, 1)
        n_spots[sample] = adata.n_obs
        if squares:
            xf = x.astype(np.float64)
            s2 = xf.multiply(xf).sum(0) if sp.issparse(xf) else np.square(np.asarray(xf)).sum(0)
            sq[sample] = pd.Series(np.asarray(s2).ravel(), index=adata.var_names)
    out = {"totals": pd.DataFrame(totals), "detected": pd.DataFrame(detected), "n_spots": pd.Series(n_spots)}
    if squares:
        out["squares"] = pd.DataFrame(sq)
    return out


def normalised_dispersion(total: np.ndarray, sum_sq: np.ndarray, n: int, n_bins: int = 20) -> np.ndarray:
    """Per gene, the normalised dispersion of its raw counts over ``n`` spots, from the sums of counts and
    of squared counts (HEST-Benchmark's highly-variable-gene statistic, scanpy's ``seurat`` flavour on
    log1p counts, which undoes the log): the dispersion is log(variance / mean) (variance with n - 1; a
    zero mean counted as 1e-12, a zero variance as undefined); the genes are cut into ``n_bins``
    equal-width bins of log1p(mean) and each dispersion is z-scored within its bin. A bin of one gene gives
    it 1; an undefined dispersion stays NaN (ranked last)."""
    total, sum_sq = np.asarray(total, dtype=np.float64), np.asarray(sum_sq, dtype=np.float64)
    if n < 2:
        return np.full(total.shape, np.nan)
    mean = total / n
    var = np.maximum(sum_sq - n * mean**2, 0.0) / (n - 1)
    mean = np.where(mean == 0, 1e-12, mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = var / mean
        disp = np.log(np.where(disp == 0, np.nan, disp))
    log_mean = np.log1p(mean)
    if len(log_mean) == 0:
        return disp
    bins = pd.cut(log_mean, bins=n_bins)
    grouped = pd.Series(disp).groupby(bins, observed=True)
    centre, spread = grouped.transform("mean").to_numpy(), grouped.transform("std").to_numpy()
    alone = pd.Series(disp).groupby(bins, observed=True).transform("count").to_numpy() <= 1
    # a bin with one defined dispersion: its std is undefined; the gene's z is taken to be 1 (as scanpy)
    centre, spread = np.where(alone, 0.0, centre), np.where(alone, disp, spread)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (disp - centre) / spread


# how the top n_top genes are ranked without a list, and where min_spot_fraction applies (the schema's enums)
RANKS = ("total_counts", "dispersion")
FRACTION_SCOPES = ("mean", "every_sample")


@dataclass(frozen=True)
class GeneSpec(StageSpec):
    """Which genes to predict (config ``genes``; defaults and allowed values in the config schema)."""

    section: ClassVar[str] = "genes"

    list: str | None  # a gene list file or a built-in list name; None = the top n_top
    n_top: int
    min_spot_fraction: float
    missing: str  # what to do with listed genes a sample lacks
    rank: str  # without a list: rank by total_counts | dispersion (normalised dispersion, HEST-Benchmark's)
    min_spot_fraction_in: str  # min_spot_fraction of the samples' mean fraction | of every_sample's own


def select_genes(st_paths: dict[str, Path], spec: GeneSpec, spots=None) -> tuple[list[str], pd.DataFrame]:
    """Return the chosen genes and a table (gene, total_counts, spot_fraction, samples_with_gene).

    With ``gene_list`` the list's order is kept; genes missing from any sample are reported by name and
    either dropped from all samples (``missing='drop'``) or raise (``missing='fail'``). Without a list the
    genes present in every sample are ranked by total raw counts, optionally keeping only genes detected
    in at least ``min_spot_fraction`` of spots (the refactored TRIPLEX uses 0.1): on average over the
    samples (``min_spot_fraction_in: mean``) or in every sample (``every_sample``, HEST-Benchmark's 10 %).
    ``rank: dispersion`` ranks the qualifying genes by ``normalised_dispersion`` over all their spots
    pooled instead (HEST-Benchmark's 50 genes; the table gains a ``normalised_dispersion`` column).
    """
    n_top, gene_list, min_spot_fraction, missing = spec.n_top, spec.list, spec.min_spot_fraction, spec.missing
    if spec.rank not in RANKS:
        raise ValueError(f"genes.rank must be one of {' | '.join(RANKS)}, not {spec.rank!r}")
    if spec.min_spot_fraction_in not in FRACTION_SCOPES:
        raise ValueError(
            f"genes.min_spot_fraction_in must be one of {' | '.join(FRACTION_SCOPES)}, not {spec.min_spot_fraction_in!r}"
        )
    by_dispersion = gene_list is None and spec.rank == "dispersion"
    stats = gene_stats(st_paths, spots, squares=by_dispersion)
    totals, detected = stats["totals"], stats["detected"]
    present_all = totals.notna().all(axis=1)
    table = pd.DataFrame(
        {
            "gene": totals.index,
            "total_counts": totals.fillna(0).sum(1).to_numpy(),
            "spot_fraction": detected.fillna(0).mean(1).to_numpy(),
            "samples_with_gene": totals.notna().sum(1).to_numpy(),
        }
    )
    if gene_list is not None:
        wanted = read_gene_list(gene_list)
        available = set(totals.index[present_all])
        absent = [g for g in wanted if g not in available]
        if absent:
            where = {
                g: [s for s in totals.columns if g not in totals.index or pd.isna(totals.at[g, s])] for g in absent
            }
            detail = "; ".join(f"{g} (missing in {', '.join(v) if v else 'all'})" for g, v in list(where.items())[:20])
            msg = f"{len(absent)} of {len(wanted)} listed genes are not in every sample: {detail}"
            if missing == "fail" or len(absent) == len(wanted):
                what = "no listed gene is present in the samples" if len(absent) == len(wanted) else msg
                raise InputError(what, None, gene_list)
            log.warning("%s -- dropped from all samples (genes.missing: drop)", msg)
        genes = [g for g in wanted if g in available]
    else:
        if spec.min_spot_fraction_in == "every_sample":
            fraction_ok = (detected.fillna(0).min(1) >= min_spot_fraction).to_numpy()
        else:
            fraction_ok = (table["spot_fraction"] >= min_spot_fraction).to_numpy()
        cand = table[present_all.to_numpy() & fraction_ok]
        if by_dispersion:
            # over the qualifying genes only (their bins of mean expression), every spot of every sample pooled
            n = int(stats["n_spots"].sum())
            sum_sq = stats["squares"].fillna(0).sum(1).reindex(cand["gene"]).to_numpy()
            cand = cand.assign(normalised_dispersion=normalised_dispersion(cand["total_counts"].to_numpy(), sum_sq, n))
            key = cand["normalised_dispersion"].fillna(-np.inf)
            cand = cand.assign(_key=key).sort_values(["_key", "gene"], ascending=[False, True], kind="mergesort")
            cand = cand.drop(columns="_key")
            table = table.merge(cand[["gene", "normalised_dispersion"]], on="gene", how="left")
        else:
            cand = cand.sort_values(["total_counts", "gene"], ascending=[False, True], kind="mergesort")
        genes = cand["gene"].head(n_top).tolist()
        if len(genes) < n_top:
            log.warning("only %d genes qualify (asked for %d)", len(genes), n_top)
    table = table.set_index("gene").loc[genes].reset_index()
    table.insert(0, "rank", np.arange(1, len(genes) + 1))
    return genes, table
