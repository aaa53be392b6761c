"""The field's metrics, computed exactly as the papers describe them (docs/method.md, "Protocol and metrics").

Every number starts per held-out test section:
- per-gene Pearson r across that section's spots (NaN for a gene that is constant in truth or prediction,
  and for every gene when the section has fewer than two spots);
- PCC(A): NaN-aware mean of the per-gene r over all genes;
- PCC(H): NaN-aware mean over the top-N "highly predictive" genes. The genes are chosen once per head
  as TRIPLEX's code does: rank genes by their PCC in each fold (a fold's per-gene PCC is the mean over
  its sections), average the ranks over folds, keep the N best. Rank 1 = highest PCC; NaN ranks last;
  ties share the average rank; genes with equal mean rank keep the gene-list order, so the choice is
  deterministic. PCCs are compared at 12 decimals, so that rounding noise (an affine copy of a gene, the
  order in which sections are averaged) cannot reorder genes;
- HEG / HVG: mean r over N genes chosen from the TRUE expression (the labels), by one of two rules
  (``HEG_HVG``, config ``report.heg_hvg``; ties keep the gene-list order in both):
  ``pooled`` (DKAN's evaluation notebook, which Gene-DML's Table 1 follows): ONE set for the whole run,
  from the labels of every evaluated spot pooled over all sections (every test section of every fold):
  HEG = the N genes with the highest mean label; HVG = the N genes with the highest variance after each
  spot's label vector is divided by its sum (spots whose labels sum to 0 have no composition and are left
  out of the variance, and counted). ``per_section`` (BLEEP's evaluation code): each section's own N genes
  with the highest mean / variance (ddof 0) of its own truth. Either way the mean r is taken per section,
  as PCC(A) is (the variance's ddof never changes which genes are chosen);
- MSE and MAE over all spots and genes of the section.
A fold's value is the NaN-aware mean over its sections; the reported value is the mean ± std over folds
(std with ddof=0, numpy's default, as the reference code).

Nothing is averaged silently: every section counts the genes whose r is undefined
(``n_genes_undefined_r``), every fold counts its sections and, per metric, the sections that have a value
(``n_<metric>``), and the summary counts the folds and sections behind each mean (``n_folds`` of
``n_folds_total``, ``n_sections`` of ``n_sections_total``). Predictions and truth must be finite
(``nonfinite_counts``; ``evaluate_sections`` refuses anything else).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from genedml.errors import NonFiniteError

SECTION_METRICS = ("PCC_A", "PCC_H", "HEG", "HVG", "MSE", "MAE")
HEG_HVG = ("pooled", "per_section")  # how HEG / HVG genes are chosen (module doc; schema report.heg_hvg)
RANK_DECIMALS = 12  # PCCs equal to 12 decimals tie when genes are ranked


def pearson_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(G,) Pearson r between columns; NaN where either column is constant or there are < 2 spots."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shape mismatch: truth {y_true.shape} vs prediction {y_pred.shape}")
    if y_true.ndim != 2:
        raise ValueError(f"expected a (spots, genes) matrix, got shape {y_true.shape}")
    if y_true.shape[0] < 2:
        return np.full(y_true.shape[1], np.nan)
    a = y_true - y_true.mean(0)
    b = y_pred - y_pred.mean(0)
    ss_a, ss_b = (a * a).sum(0), (b * b).sum(0)
    n = y_true.shape[0]
    # a constant column leaves only rounding noise after centring: treat it as zero variance
    flat_a = ss_a <= n * (1e-10 * np.abs(y_true).max(0)) ** 2
    flat_b = ss_b <= n * (1e-10 * np.abs(y_pred).max(0)) ** 2
    flat = flat_a | flat_b
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(flat, np.nan, (a * b).sum(0) / np.sqrt(np.where(flat, 1.0, ss_a * ss_b)))
    return np.clip(r, -1.0, 1.0)


def nonfinite_counts(matrix) -> dict | None:
    """None when every value of the (spots, genes) matrix is finite; else the counts of NaN and inf values
    and of the spots (rows) and genes (columns) that hold any, with the matrix's shape."""
    m = np.asarray(matrix, dtype=np.float64)
    bad = ~np.isfinite(m)
    if not bad.any():
        return None
    bad2 = bad.reshape(m.shape[0], -1) if m.ndim != 2 else bad
    return {
        "n_nan": int(np.isnan(m).sum()),
        "n_inf": int(np.isinf(m).sum()),
        "spots": (int(bad2.any(1).sum()), int(bad2.shape[0])),
        "genes": (int(bad2.any(0).sum()), int(bad2.shape[1])),
    }


def nanmean(x) -> float:
    """Mean ignoring NaN; NaN (not a warning) when nothing is left."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or np.all(np.isnan(x)):
        return float("nan")
    return float(np.nanmean(x))


def top_by_value(values, n: int) -> np.ndarray:
    """Indices of the n largest values, largest first; NaN last; ties keep the input order."""
    v = np.asarray(values, dtype=np.float64)
    key = np.where(np.isnan(v), np.inf, -v)
    return np.argsort(key, kind="stable")[: min(n, v.size)]


def pooled_gene_sets(truths: list, n_top: int) -> dict:
    """DKAN's HEG / HVG genes: ONE set from the labels of every spot of ``truths`` (a list of (N, G)
    matrices, pooled). HEG: the ``n_top`` genes with the highest mean label; HVG: the ``n_top`` genes with
    the highest variance (ddof 0) of the spot-normalised labels (each spot's vector divided by its sum;
    spots summing to 0 are left out). Returns ``heg_idx``, ``hvg_idx`` (column indices, best first),
    ``mean`` and ``normalised_variance`` (per gene), ``n_spots`` and ``n_spots_zero_sum``."""
    pooled = np.concatenate([np.asarray(t, dtype=np.float64) for t in truths])
    total = pooled.sum(1)
    keep = total != 0
    composition = pooled[keep] / total[keep, None]
    variance = composition.var(0) if keep.any() else np.full(pooled.shape[1], np.nan)
    mean = pooled.mean(0)
    return {
        "heg_idx": top_by_value(mean, n_top),
        "hvg_idx": top_by_value(variance, n_top),
        "mean": mean,
        "normalised_variance": variance,
        "n_spots": int(pooled.shape[0]),
        "n_spots_zero_sum": int((~keep).sum()),
    }


def section_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_top: int, hpg_idx=None, heg_idx=None, hvg_idx=None
) -> dict:
    """All metrics of one held-out section.

    ``hpg_idx``: column indices of the highly predictive genes (chosen across folds); without it
    PCC_H is NaN. ``heg_idx`` / ``hvg_idx``: the HEG / HVG genes chosen for the whole run (``pooled``);
    without them they are chosen from this section's own truth (``per_section``).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    pcc = pearson_per_gene(y_true, y_pred)
    err = y_pred - y_true
    heg = top_by_value(y_true.mean(0), n_top) if heg_idx is None else np.asarray(heg_idx, dtype=int)
    # population variance (ddof=0), as np.var in BLEEP's evaluation
    hvg = top_by_value(y_true.var(0), n_top) if hvg_idx is None else np.asarray(hvg_idx, dtype=int)
    return {
        "pcc_per_gene": pcc,
        "PCC_A": nanmean(pcc),
        "PCC_H": nanmean(pcc[np.asarray(hpg_idx, dtype=int)]) if hpg_idx is not None else float("nan"),
        "HEG": nanmean(pcc[heg]),
        "HVG": nanmean(pcc[hvg]),
        "MSE": float(np.mean(err**2)),
        "MAE": float(np.mean(np.abs(err))),
        "n_spots": int(y_true.shape[0]),
        "n_genes_undefined_r": int(np.isnan(pcc).sum()),
        "heg_idx": heg,
        "hvg_idx": hvg,
    }


def rank_genes(fold_gene_pcc: pd.DataFrame) -> pd.Series:
    """Mean rank of each gene over folds (rank 1 = highest PCC in a fold; NaN ranks last, ties averaged).

    ``fold_gene_pcc``: genes x folds. Returns the mean rank per gene, in the input's gene order.
    """
    ranks = []
    for col in fold_gene_pcc.columns:
        v = np.round(fold_gene_pcc[col].to_numpy(dtype=float), RANK_DECIMALS)
        key = np.where(np.isnan(v), np.inf, -v)  # best first, NaN last
        # pandas' average ranks are scipy's rankdata(method="average"), without importing scipy.stats (2 s)
        ranks.append(pd.Series(key).rank(method="average").to_numpy())
    return pd.Series(np.mean(ranks, axis=0), index=fold_gene_pcc.index)


def top_predictive_genes(fold_gene_pcc: pd.DataFrame, n: int = 50) -> list[str]:
    """The n genes with the best mean rank over folds; equal mean ranks keep the input gene order."""
    mean_rank = rank_genes(fold_gene_pcc)
    order = np.argsort(mean_rank.to_numpy(), kind="stable")
    return [mean_rank.index[i] for i in order[: min(n, len(order))]]


R_METRICS = ("PCC_A", "PCC_H", "HEG", "HVG")  # means of per-gene r: genes with undefined r are left out


def summarise(
    per_fold: pd.DataFrame, metrics, per_section: pd.DataFrame | None = None, n_genes_undefined_r: int | None = None
) -> pd.DataFrame:
    """Mean ± std over folds (ddof=0) of each metric; NaN folds are left out of the mean and counted.

    Columns: ``metric, mean, std, n_folds`` (folds with a value), ``n_folds_total``, and, given the
    per-section table, ``n_sections`` (sections with a value), ``n_sections_total`` and
    ``n_genes_undefined_r`` (given: the genes whose r is undefined in at least one section; on the
    r-based metrics' rows only)."""
    rows = []
    for m in metrics:
        v = per_fold[m].to_numpy(dtype=float)
        n_total = int(v.size)
        v = v[~np.isnan(v)]
        row = {
            "metric": m,
            "mean": float(np.mean(v)) if v.size else np.nan,
            "std": float(np.std(v)) if v.size else np.nan,
            "n_folds": int(v.size),
            "n_folds_total": n_total,
        }
        if per_section is not None:
            sv = per_section[m].to_numpy(dtype=float)
            row["n_sections"] = int(np.sum(~np.isnan(sv)))
            row["n_sections_total"] = int(sv.size)
        if n_genes_undefined_r is not None:
            row["n_genes_undefined_r"] = n_genes_undefined_r if m in R_METRICS else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _fold_mean(stack: list[np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN genes stay NaN
        return np.nanmean(np.stack(stack), axis=0)


def evaluate_sections(sections: list[dict], genes: list[str], n_top: int, heg_hvg: str) -> dict:
    """Aggregate per-section results into the tables the report needs.

    ``sections``: dicts with ``sample``, ``fold``, ``truth`` (N, G) and ``prediction`` (N, G), optionally
    ``head`` and ``path`` (named in the error when a matrix holds NaN or inf: ``NonFiniteError``).
    ``heg_hvg``: how the HEG / HVG genes are chosen (``HEG_HVG``, module doc): ``pooled`` over every spot of
    ``sections``, or ``per_section``.
    Returns DataFrames ``per_section`` (one row per section, every metric), ``per_fold``, ``summary``
    (``heg_hvg`` on the HEG and HVG rows), ``per_gene`` (per-fold PCC, mean PCC, mean rank, PCC(H)
    membership, pooled mean / variance / spot-normalised variance, in how many sections the gene counted
    as HEG / HVG) and ``per_gene_section`` (PCC of every gene in every section), plus ``heg_hvg`` and the
    gene sets: ``pcc_h_genes`` (list) and ``heg_genes`` / ``hvg_genes`` (a list when pooled, else per
    section: sample -> list), and, when pooled, ``pooled`` (``n_spots``, ``n_spots_zero_sum``).
    """
    if not sections:
        raise ValueError("no sections to evaluate")
    if heg_hvg not in HEG_HVG:
        raise ValueError(f"heg_hvg must be one of {', '.join(HEG_HVG)}, not {heg_hvg!r}")
    genes = list(genes)
    for s in sections:
        if np.shape(s["truth"])[1] != len(genes):
            raise ValueError(f"section {s['sample']}: {np.shape(s['truth'])[1]} genes, expected {len(genes)}")
        for what in ("prediction", "truth"):
            bad = nonfinite_counts(s[what])
            if bad is not None:  # a NaN would drop out of every mean without a trace
                raise NonFiniteError(what, s["sample"], s.get("path"), s.get("head"), int(s["fold"]), **bad)
    # a fixed section order (fold, sample) makes every mean independent of the order sections arrive in
    sections = sorted(sections, key=lambda s: (int(s["fold"]), str(s["sample"])))
    chosen = {}
    pooled = None
    if heg_hvg == "pooled":  # one set from every evaluated spot (DKAN)
        pooled = pooled_gene_sets([s["truth"] for s in sections], n_top)
        chosen = {"heg_idx": pooled["heg_idx"], "hvg_idx": pooled["hvg_idx"]}
    results = [section_metrics(s["truth"], s["prediction"], n_top=n_top, **chosen) for s in sections]
    folds = sorted({int(s["fold"]) for s in sections})

    # per-fold per-gene PCC = NaN-aware mean over the fold's sections; PCC(H) genes from their ranks
    fold_gene = pd.DataFrame(
        {
            f"fold{f}": _fold_mean([r["pcc_per_gene"] for s, r in zip(sections, results) if int(s["fold"]) == f])
            for f in folds
        },
        index=pd.Index(genes, name="gene"),
    )
    hpg = top_predictive_genes(fold_gene, n_top)
    hpg_idx = np.array([genes.index(g) for g in hpg], dtype=int)

    per_section, per_fold = _section_and_fold_tables(sections, results, folds, hpg_idx)
    per_gene = _per_gene_table(fold_gene, hpg, sections, results)
    undefined = np.stack([np.isnan(r["pcc_per_gene"]) for r in results])  # sections x genes
    summary = summarise(per_fold, SECTION_METRICS, per_section, int(undefined.any(0).sum()))
    summary["heg_hvg"] = [heg_hvg if m in ("HEG", "HVG") else None for m in summary["metric"]]
    if pooled is not None:
        heg_genes = [genes[i] for i in pooled["heg_idx"]]
        hvg_genes = [genes[i] for i in pooled["hvg_idx"]]
    else:
        heg_genes = {s["sample"]: [genes[i] for i in r["heg_idx"]] for s, r in zip(sections, results)}
        hvg_genes = {s["sample"]: [genes[i] for i in r["hvg_idx"]] for s, r in zip(sections, results)}
    per_gene_section = pd.DataFrame(
        {s["sample"]: r["pcc_per_gene"] for s, r in zip(sections, results)}, index=pd.Index(genes, name="gene")
    )
    return {
        "per_section": per_section,
        "per_fold": per_fold,
        "per_gene": per_gene.reset_index(),
        "per_gene_section": per_gene_section.reset_index(),
        "summary": summary,
        "heg_hvg": heg_hvg,
        "pcc_h_genes": hpg,
        "heg_genes": heg_genes,
        "hvg_genes": hvg_genes,
        **(
            {"pooled": {"n_spots": pooled["n_spots"], "n_spots_zero_sum": pooled["n_spots_zero_sum"]}}
            if pooled is not None
            else {}
        ),
    }


def _section_and_fold_tables(sections: list[dict], results: list[dict], folds: list[int], hpg_idx) -> tuple:
    """Every metric of every section (PCC(H) over the run's PCC(H) genes), and their means per fold."""
    rows = []
    for s, r in zip(sections, results):
        r["PCC_H"] = nanmean(r["pcc_per_gene"][hpg_idx])
        rows.append(
            {
                "fold": int(s["fold"]),
                "sample": s["sample"],
                "n_spots": r["n_spots"],
                "n_genes_undefined_r": r["n_genes_undefined_r"],
                **{m: r[m] for m in SECTION_METRICS},
            }
        )
    per_section = pd.DataFrame(rows)
    fold_rows = []
    for f in folds:
        sec = per_section[per_section["fold"] == f]
        undefined = np.stack([np.isnan(r["pcc_per_gene"]) for s, r in zip(sections, results) if int(s["fold"]) == f])
        fold_rows.append(
            {
                "fold": f,
                "n_sections": len(sec),
                **{m: nanmean(sec[m]) for m in SECTION_METRICS},
                # how many sections each mean is over, and the genes left out of some section's r means
                **{f"n_{m}": int(sec[m].notna().sum()) for m in SECTION_METRICS},
                "n_genes_undefined_r": int(undefined.any(0).sum()),
            }
        )
    return per_section, pd.DataFrame(fold_rows)


def _per_gene_table(fold_gene: pd.DataFrame, hpg: list[str], sections: list[dict], results: list[dict]):
    """Per gene: per-fold PCC, mean PCC and rank, PCC(H) membership, pooled mean / variance / spot-normalised
    variance (DKAN's HVG key), HEG / HVG counts (sections whose mean counted the gene)."""
    n_genes = len(fold_gene)
    truth_all = np.concatenate([np.asarray(s["truth"], dtype=np.float64) for s in sections])
    per_gene = fold_gene.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_gene["mean_pcc"] = np.nanmean(fold_gene.to_numpy(), axis=1) if fold_gene.shape[1] else np.nan
    per_gene["mean_rank"] = rank_genes(fold_gene)
    per_gene["in_PCC_H"] = per_gene.index.isin(hpg)
    per_gene["mean_expression"] = truth_all.mean(0)
    per_gene["variance"] = truth_all.var(0)
    per_gene["normalised_variance"] = pooled_gene_sets([truth_all], 0)["normalised_variance"]
    per_gene["sections_HEG"] = np.bincount(np.concatenate([r["heg_idx"] for r in results]), minlength=n_genes)
    per_gene["sections_HVG"] = np.bincount(np.concatenate([r["hvg_idx"] for r in results]), minlength=n_genes)
    per_gene["sections_undefined_r"] = np.sum([np.isnan(r["pcc_per_gene"]) for r in results], axis=0).astype(int)
    return per_gene
