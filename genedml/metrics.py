"""The field's metrics, computed exactly as the papers describe them.

Per test section: per-gene Pearson r across that section's spots (NaN for a gene that is constant in
truth or prediction, or when the section has fewer than two spots), MSE and MAE over all spots and
genes. A fold's value is the NaN-aware mean over its sections; the reported value is the mean ± std over
folds (std with ddof=0, as numpy's default, which the reference code uses).
PCC(A): mean over all genes. PCC(H): mean over the top-N "highly predictive" genes, chosen by ranking
genes by PCC within each fold, averaging the ranks over folds, and keeping the N best (ties broken by
gene order, so the choice is deterministic). HEG / HVG (DKAN): mean PCC over the N genes with the highest
mean / variance of the true expression over all test spots.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def pearson_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(G,) Pearson r between columns; NaN where either column is constant or there are < 2 spots."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shape mismatch: truth {y_true.shape} vs prediction {y_pred.shape}")
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


def nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or np.all(np.isnan(x)):
        return float("nan")
    return float(np.nanmean(x))


def section_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Per-gene PCC plus MSE / MAE over all entries for one section."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    pcc = pearson_per_gene(y_true, y_pred)
    err = y_pred - y_true
    return {
        "pcc_per_gene": pcc,
        "PCC_A": nanmean(pcc),
        "MSE": float(np.mean(err**2)),
        "MAE": float(np.mean(np.abs(err))),
        "n_spots": int(y_true.shape[0]),
    }


def rank_genes(fold_gene_pcc: pd.DataFrame) -> pd.Series:
    """Mean rank of each gene over folds (rank 1 = highest PCC in a fold; NaN ranks last, ties averaged).

    ``fold_gene_pcc``: genes x folds. Returns the mean rank per gene, in the input's gene order.
    """
    from scipy.stats import rankdata

    ranks = []
    for col in fold_gene_pcc.columns:
        v = fold_gene_pcc[col].to_numpy(dtype=float)
        key = np.where(np.isnan(v), np.inf, -v)  # best first, NaN last
        ranks.append(rankdata(key, method="average"))
    return pd.Series(np.mean(ranks, axis=0), index=fold_gene_pcc.index)


def top_predictive_genes(fold_gene_pcc: pd.DataFrame, n: int = 50) -> list[str]:
    """The n genes with the best mean rank over folds; ties keep the input gene order."""
    mean_rank = rank_genes(fold_gene_pcc)
    order = np.argsort(mean_rank.to_numpy(), kind="stable")
    return [mean_rank.index[i] for i in order[: min(n, len(order))]]


def summarise(per_fold: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean ± std over folds (ddof=0) of each metric; NaN folds ignored."""
    rows = []
    for m in metrics:
        v = per_fold[m].to_numpy(dtype=float)
        v = v[~np.isnan(v)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rows.append(
                {"metric": m, "mean": float(np.mean(v)) if v.size else np.nan,
                 "std": float(np.std(v)) if v.size else np.nan, "n_folds": int(v.size)}
            )
    return pd.DataFrame(rows)


def evaluate_sections(sections: list[dict], genes: list[str], n_top: int = 50) -> dict:
    """Aggregate per-section results into the tables the report needs.

    ``sections``: dicts with ``sample``, ``fold``, ``truth`` (N, G) and ``prediction`` (N, G).
    Returns per_section, per_fold, per_gene (genes x folds PCC plus mean rank) and summary DataFrames,
    and the PCC(H), HEG and HVG gene lists.
    """
    sec_rows, gene_cols = [], {}
    for s in sections:
        m = section_metrics(s["truth"], s["prediction"])
        sec_rows.append({"fold": s["fold"], "sample": s["sample"], "n_spots": m["n_spots"],
                         "PCC_A": m["PCC_A"], "MSE": m["MSE"], "MAE": m["MAE"]})
        gene_cols[(s["fold"], s["sample"])] = m["pcc_per_gene"]
    per_section = pd.DataFrame(sec_rows)
    folds = sorted(per_section["fold"].unique())
    # fold-level per-gene PCC = NaN-aware mean over the fold's sections
    fold_gene = {}
    for f in folds:
        stack = np.stack([v for (ff, _), v in gene_cols.items() if ff == f])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fold_gene[f] = np.nanmean(stack, axis=0)
    fold_gene = pd.DataFrame(fold_gene, index=pd.Index(genes, name="gene"))
    fold_gene.columns = [f"fold{f}" for f in folds]
    hpg = top_predictive_genes(fold_gene, n_top)
    truth_all = np.concatenate([s["truth"] for s in sections])
    mean_expr = pd.Series(truth_all.mean(0), index=genes)
    var_expr = pd.Series(truth_all.var(0), index=genes)
    heg = mean_expr.sort_values(ascending=False, kind="mergesort").index[:n_top].tolist()
    hvg = var_expr.sort_values(ascending=False, kind="mergesort").index[:n_top].tolist()

    fold_rows = []
    for f, col in zip(folds, fold_gene.columns):
        sec = per_section[per_section["fold"] == f]
        fold_rows.append({
            "fold": f,
            "n_sections": len(sec),
            "PCC_A": nanmean(sec["PCC_A"]),
            "PCC_H": nanmean(fold_gene.loc[hpg, col]),
            "HEG": nanmean(fold_gene.loc[heg, col]),
            "HVG": nanmean(fold_gene.loc[hvg, col]),
            "MSE": nanmean(sec["MSE"]),
            "MAE": nanmean(sec["MAE"]),
        })
    per_fold = pd.DataFrame(fold_rows)
    summary = summarise(per_fold, ["PCC_A", "PCC_H", "HEG", "HVG", "MSE", "MAE"])
    per_gene = fold_gene.copy()
    per_gene["mean_pcc"] = fold_gene.mean(1, skipna=True)
    per_gene["mean_rank"] = rank_genes(fold_gene)
    per_gene["in_PCC_H"] = per_gene.index.isin(hpg)
    per_gene["mean_expression"] = mean_expr
    per_gene["variance"] = var_expr
    return {"per_section": per_section, "per_fold": per_fold, "per_gene": per_gene.reset_index(),
            "summary": summary, "pcc_h_genes": hpg, "heg_genes": heg, "hvg_genes": hvg}
