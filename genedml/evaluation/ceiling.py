"""The per-gene ceiling: how predictable each gene is from the image embeddings, on training folds only.

For every gene, Geary's C of its targets on the k-nearest-neighbour graph of the spots' ``local``
embeddings (docs/report.md, "Per-gene ceiling")::

    C = (N - 1) * sum_ij w_ij (x_i - x_j)^2 / (2 W sum_i (x_i - mean)^2)

with w_ij = 1 when j is among the k nearest neighbours of i or i among those of j (the graph symmetrised,
self-pairs dropped) and W = sum_ij w_ij. C near 0: spots that lie close in embedding space have similar
values of the gene (the embeddings carry it); C near 1: no relation; above 1: neighbours differ more than
random pairs. The ceiling score is 1 - C. A gene constant over a fold's spots has no C there (NaN, noted).

Per fold (``fold_ceiling``), only the fold's non-test sections (split ``train`` and ``val``) are opened:
their spots are pooled, at most ``max_spots`` of them kept (a random subset, seeded with ``(seed, fold)``,
drawn before any embedding or target is read, so only the kept rows are kept in memory), the embeddings
centred and projected on their first ``pca`` principal components (fitted on those spots; ``pca`` 0 or
``pca`` >= the embedding width: no projection, which leaves every distance unchanged), and the graph built
with scikit-learn's ``NearestNeighbors`` (brute force, Euclidean). The table's score per gene is the mean
over the folds where the gene is not constant; the per-fold values and the spots each fold used are kept.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from genedml.atomic import write_tsv
from genedml.errors import InputError
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train", "val")  # the non-test splits of a fold plan: what the ceiling may read
SPLITS = ("train", "val", "test")
BLOCK_BYTES = 64 << 20  # working memory of one block of genes in ``gearys_c``


@dataclass(frozen=True)
class CeilingSpec(StageSpec):
    """The ceiling's settings (config ``ceiling``; defaults and allowed values in the schema)."""

    section: ClassVar[str] = "ceiling"

    k: int  # neighbours per spot
    pca: int  # principal components before the kNN (0: none)
    max_spots: int  # spots kept per fold
    seed: int  # of the random subset of spots

    @classmethod
    def convert(cls, values: dict) -> dict:
        return {key: int(values[key]) for key in ("k", "pca", "max_spots", "seed")}


# ------------------------------------------------------------------------------------------- Geary's C


def undirected_edges(neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The symmetrised kNN graph's edges (a < b, each once) from the (N, k) neighbour rows; entries < 0 and
    self-pairs are ignored."""
    nb = np.asarray(neighbours, dtype=np.int64)
    if nb.ndim != 2:
        raise ValueError(f"neighbours must be (N, k), got shape {nb.shape}")
    n = len(nb)
    if nb.size and nb.max() >= n:
        raise ValueError(f"neighbour index {int(nb.max())} out of range for {n} spots")
    i = np.repeat(np.arange(n, dtype=np.int64), nb.shape[1])
    j = nb.ravel()
    keep = (j >= 0) & (j != i)
    a, b = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    codes = np.unique(a * n + b)
    return codes // n, codes % n


def gearys_c(values: np.ndarray, neighbours: np.ndarray, block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """Geary's C of every column of ``values`` (N, G) on the symmetrised graph of ``neighbours`` (N, k):
    (G,) float64, NaN for a constant column (or a graph without edges). Computed over the graph's E
    undirected edges, a block of genes at a time (``block_bytes``: about E x block x 8 bytes), as
    C = (N - 1) * S / (2 E SS), S the sum over edges of (x_a - x_b)^2 and SS the sum of squared deviations
    (the formula of the module doc with W = 2E and each edge counted in both directions)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) != len(neighbours):
        raise ValueError(f"values {x.shape} and neighbours {np.shape(neighbours)} must have the same rows")
    if not np.isfinite(x).all():
        raise ValueError(f"{int((~np.isfinite(x)).sum())} non-finite value(s)")
    n, g = x.shape
    out = np.full(g, np.nan)
    a, b = undirected_edges(neighbours)
    if n < 2 or len(a) == 0 or g == 0:
        return out
    block = int(max(1, block_bytes // (8 * max(len(a), n))))
    for lo in range(0, g, block):
        v = x[:, lo : lo + block]
        constant = np.ptp(v, axis=0) == 0
        dev = v - v.mean(axis=0)
        ss = np.einsum("ng,ng->g", dev, dev)
        diff = v[a] - v[b]
        s = np.einsum("eg,eg->g", diff, diff)
        ok = ~constant & (ss > 0)
        part = np.full(v.shape[1], np.nan)
        part[ok] = (n - 1) * s[ok] / (2.0 * len(a) * ss[ok])
        out[lo : lo + block] = part
    return out


def knn_graph(embeddings: np.ndarray, k: int) -> np.ndarray:
    """(N, k') indices of each spot's k' = min(k, N - 1) nearest other spots (Euclidean, brute force); a
    duplicate of a spot may stand where the spot itself is listed first, so self is removed by index."""
    from sklearn.neighbors import NearestNeighbors

    z = np.asarray(embeddings, dtype=np.float32)
    n = len(z)
    k = min(int(k), n - 1)
    if k < 1:
        return np.zeros((n, 0), dtype=np.int64)
    idx = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(z).kneighbors(z, return_distance=False)
    is_self = idx == np.arange(n)[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")  # the others first, in distance order
    return np.take_along_axis(idx, order, axis=1)[:, :k].astype(np.int64)


def project(embeddings: np.ndarray, pca: int) -> np.ndarray:
    """The embeddings centred and projected on their first ``pca`` principal components (fitted on them);
    ``pca`` 0 or at least the width: only centred (a rotation would leave every distance as it is)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0)
    n, d = x.shape
    n_comp = min(int(pca), d, n)
    if not pca or n_comp >= d:
        return x.astype(np.float32)
    # principal axes = eigenvectors of the (D, D) scatter matrix: deterministic, and cheap for N >> D
    _, vectors = np.linalg.eigh(x.T @ x)
    return (x @ vectors[:, ::-1][:, :n_comp]).astype(np.float32)


# ------------------------------------------------------------------------------------------- one fold


def _target_spots(path, sample: str) -> int:
    """Spots of a targets .h5ad, from its metadata (no matrix read)."""
    import anndata as ad

    if not Path(path).exists():
        raise InputError("targets file not found (rule targets writes it)", sample, path)
    try:
        data = ad.read_h5ad(path, backed="r")
    except Exception as exc:
        raise InputError(f"cannot read the targets ({type(exc).__name__}: {exc})", sample, path) from exc
    try:
        return int(data.n_obs)
    finally:
        data.file.close()


def _section_rows(sample: str, features_path, targets_path, genes: list[str], rows: np.ndarray):
    """(local (n, D) float32, targets (n, G) float64) of spots ``rows`` of a section (rows of its targets
    file; the embeddings aligned to them by barcode, as ``genedml.heads.train.load_section``)."""
    import anndata as ad

    from genedml.evaluation.ood import read_local

    local, barcodes, _ = read_local(features_path, sample)
    tgt = ad.read_h5ad(targets_path)
    columns = pd.Index(tgt.var_names).get_indexer(genes)
    if (columns < 0).any():
        missing = [g for g, c in zip(genes, columns) if c < 0]
        raise InputError(
            f"the targets lack {len(missing)} of the {len(genes)} genes (e.g. {missing[:3]}); were they made "
            "with another gene list?",
            sample,
            targets_path,
        )
    pos = pd.Index(barcodes).get_indexer(tgt.obs_names[rows])
    if (pos < 0).any():
        missing = tgt.obs_names[rows][pos < 0][:3].tolist()
        raise InputError(
            f"{int((pos < 0).sum())} spots with targets have no features (e.g. {missing}); "
            "were features and targets made from different files?",
            sample,
            features_path,
        )
    x = tgt.X[rows]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    y = np.asarray(x[:, columns], dtype=np.float64)
    if not np.isfinite(y).all():
        raise InputError(f"{int((~np.isfinite(y)).sum())} non-finite target value(s)", sample, targets_path)
    return local[pos], y


def fold_ceiling(
    fold: int,
    samples: list[str],
    features: dict,
    targets: dict,
    genes: list[str],
    spec: CeilingSpec,
    spot_counts: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Geary's C (G,) of every gene over the pooled spots of ``samples`` (a fold's non-test sections), and
    the fold's facts (spots in all, spots used, sections, PCA width, k, edges). ``spot_counts``: a cache of
    each section's spot count, shared between folds."""
    t0 = time.perf_counter()
    counts = spot_counts if spot_counts is not None else {}
    for s in samples:
        if s not in counts:
            counts[s] = _target_spots(targets[s], s)
    sizes = np.array([counts[s] for s in samples], dtype=np.int64)
    n_total = int(sizes.sum())
    keep = np.arange(n_total)
    if n_total > spec.max_spots:
        rng = np.random.default_rng((spec.seed, int(fold)))
        keep = np.sort(rng.choice(n_total, spec.max_spots, replace=False))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    parts_x, parts_y = [], []
    for i, s in enumerate(samples):
        rows = keep[(keep >= offsets[i]) & (keep < offsets[i + 1])] - offsets[i]
        if len(rows) == 0:
            continue  # no spot of this section drawn: never opened
        x, y = _section_rows(s, features[s], targets[s], genes, rows)
        parts_x.append(x)
        parts_y.append(y)
    facts = {"n_spots_total": n_total, "n_spots": len(keep), "sections": len(samples)}
    if len(keep) < 2:
        log.warning("fold %d: %d spot(s) in its non-test sections: no Geary's C", fold, len(keep))
        return np.full(len(genes), np.nan), {**facts, "pca": 0, "k": 0, "edges": 0}
    dims = {x.shape[1] for x in parts_x}
    if len(dims) != 1:
        raise InputError(f"fold {fold}: the sections' embeddings differ in width ({sorted(dims)}): mixed encoders?")
    z = project(np.concatenate(parts_x), spec.pca)
    y = np.concatenate(parts_y)
    del parts_x, parts_y
    neighbours = knn_graph(z, spec.k)
    c = gearys_c(y, neighbours)
    facts.update(pca=int(z.shape[1]), k=int(neighbours.shape[1]), edges=len(undirected_edges(neighbours)[0]))
    log.info(
        "fold %d: %d of %d spots from %d non-test section(s); %d dims; k=%d, %d edges; median C %.3f "
        "(%d constant gene(s)); %.1f s",
        fold,
        facts["n_spots"],
        n_total,
        len(samples),
        facts["pca"],
        facts["k"],
        facts["edges"],
        float(np.nanmedian(c)) if np.isfinite(c).any() else float("nan"),
        int(np.isnan(c).sum()),
        time.perf_counter() - t0,
    )
    return c, facts


# ------------------------------------------------------------------------------------------- all folds


def _index_paths(inputs_index) -> tuple[dict, dict, str | None]:
    if isinstance(inputs_index, (str, os.PathLike)):
        from genedml.pipeline.training_inputs import read_training_inputs

        index, where = read_training_inputs(inputs_index), str(inputs_index)
    else:
        index, where = inputs_index, None
    if "features" not in index or "targets" not in index:
        raise InputError("the training-inputs index needs features and targets columns", None, where)
    return index["features"], index["targets"], where


def ceiling_table(fold_plan: pd.DataFrame, inputs_index, genes: list[str], spec: CeilingSpec) -> pd.DataFrame:
    """One row per gene: gene, ceiling_score (1 - gearys_c), gearys_c (mean over the folds where the gene
    varies), n_folds, gearys_c_fold{k} and n_spots_fold{k} per fold, note. ``inputs_index``: the
    training-inputs index (a path, or ``{kind: {sample: path}}``); only each fold's non-test sections are
    read."""
    features, targets, where = _index_paths(inputs_index)
    genes = list(genes)
    if not genes:
        raise InputError("no genes to score")
    unknown = sorted(set(fold_plan["split"]) - set(SPLITS))
    if unknown:
        raise InputError(f"fold plan has unknown split(s) {unknown}; expected {', '.join(SPLITS)}")
    counts: dict = {}
    per_fold: dict[int, np.ndarray] = {}
    n_spots: dict[int, int] = {}
    folds = sorted(int(f) for f in fold_plan["fold"].unique())
    for fold in folds:
        rows = fold_plan[(fold_plan["fold"] == fold) & fold_plan["split"].isin(TRAIN_SPLITS)]
        samples = list(dict.fromkeys(rows["sample"].astype(str)))
        for s in samples:
            for kind, paths in (("features", features), ("targets", targets)):
                if s not in paths:
                    raise InputError(f"fold {fold}: no {kind} for this section in the training-inputs index", s, where)
        per_fold[fold], facts = fold_ceiling(fold, samples, features, targets, genes, spec, counts)
        n_spots[fold] = facts["n_spots"]
    values = np.stack([per_fold[f] for f in folds], axis=1) if folds else np.zeros((len(genes), 0))
    defined = ~np.isnan(values)
    n_folds = defined.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = np.where(n_folds > 0, np.nansum(values, axis=1) / np.maximum(n_folds, 1), np.nan)
    notes = []
    for g in range(len(genes)):
        missing = [f for f, ok in zip(folds, defined[g]) if not ok]
        if not missing:
            notes.append("")
        elif len(missing) == len(folds):
            notes.append("constant over the non-test spots of every fold: no score")
        else:
            notes.append(f"constant over the non-test spots of fold(s) {', '.join(map(str, missing))}: left out")
    table = pd.DataFrame({"gene": genes, "ceiling_score": 1.0 - mean_c, "gearys_c": mean_c, "n_folds": n_folds})
    for i, f in enumerate(folds):
        table[f"gearys_c_fold{f}"] = values[:, i]
    for f in folds:
        table[f"n_spots_fold{f}"] = n_spots[f]
    table["note"] = notes
    if any(notes):
        log.warning("%d gene(s) constant over some fold's non-test spots (column note)", sum(bool(n) for n in notes))
    return table


def read_genes(path) -> list[str]:
    """The genes of a gene table (rule select_genes: a ``gene`` column) or of a one-symbol-a-line list."""
    from genedml.study.genes import read_gene_list, text_encoding

    path = Path(path)
    if not path.exists():
        raise InputError("gene table not found (rule select_genes writes it)", None, path)
    head = path.read_text(encoding=text_encoding(path)).split("\n", 1)[0]
    if "\t" in head:
        table = pd.read_csv(path, sep="\t", dtype=str, encoding=text_encoding(path))
        if "gene" not in table.columns:
            raise InputError(f"gene table without a gene column (columns {list(table.columns)})", None, path)
        return table["gene"].tolist()
    return read_gene_list(path)


def write_ceiling(fold_plan: pd.DataFrame, inputs_index, genes: list[str], spec: CeilingSpec, out) -> pd.DataFrame:
    table = ceiling_table(fold_plan, inputs_index, genes, spec)
    write_tsv(out, table)
    log.info("ceiling of %d genes over %d fold(s) written to %s", len(table), len(fold_columns(table)), out)
    return table


def fold_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("gearys_c_fold")]


# ------------------------------------------------------------------------------------------- figure


def ceiling_figure(ceiling_tsv, per_gene_by_key: dict, labels: dict | None, out_png) -> dict:
    """Per key (a head, or a head x encoder), the genes' ceiling score (x) against their mean PCC over folds
    (y, ``mean_pcc`` of the head's ``per_gene.tsv``), one panel each with the Spearman correlation in its
    title. Returns ``{key: {"spearman": rho, "genes": n}}``."""
    from scipy.stats import spearmanr

    from genedml.evaluation.figures import _save, pyplot

    labels = labels or {}
    ceiling = pd.read_csv(ceiling_tsv, sep="\t")
    if not {"gene", "ceiling_score"} <= set(ceiling.columns):
        raise InputError("not a ceiling table: needs columns gene and ceiling_score", None, ceiling_tsv)
    if not per_gene_by_key:
        raise InputError("no per-gene tables to draw against the ceiling", None, ceiling_tsv)
    keys = list(per_gene_by_key)
    ncols = min(len(keys), 4)
    nrows = -(-len(keys) // ncols)
    fig, axes = pyplot().subplots(
        nrows,
        ncols,
        figsize=(3.4 * ncols + 0.6, 3.2 * nrows + 0.5),
        squeeze=False,
        sharex=True,
        sharey=True,  # one scale: the heads compare at a glance
        layout="constrained",
    )
    out: dict = {}
    for ax, key in zip(axes.ravel(), keys):
        path = per_gene_by_key[key]
        per_gene = pd.read_csv(path, sep="\t")
        if not {"gene", "mean_pcc"} <= set(per_gene.columns):
            raise InputError("per-gene table without gene and mean_pcc columns", None, path)
        both = ceiling[["gene", "ceiling_score"]].merge(per_gene[["gene", "mean_pcc"]], on="gene", how="inner")
        both = both.dropna()
        x, y = both["ceiling_score"].to_numpy(float), both["mean_pcc"].to_numpy(float)
        rho = float(spearmanr(x, y).statistic) if len(both) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
        out[key] = {"spearman": rho, "genes": len(both)}
        ax.scatter(x, y, s=8, alpha=0.6, color="tab:blue", linewidths=0)
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")
        rho_text = "n/a" if np.isnan(rho) else f"{rho:.2f}"
        ax.set_title(f"{labels.get(key, key)}\nSpearman ρ = {rho_text} ({len(both)} genes)", fontsize=9)
        ax.tick_params(labelsize=7, labelbottom=True)
        log.info("%s: Spearman %s over %d genes", key, rho_text, len(both))
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    fig.supxlabel(
        "ceiling score (1 − Geary's C of the targets on the embeddings' kNN graph, training folds)", fontsize=8
    )
    fig.supylabel("mean PCC over folds (held-out sections)", fontsize=8)
    fig.suptitle("Per-gene ceiling vs achieved PCC", fontsize=10)
    _save(fig, out_png)
    return out
