"""Out-of-distribution (OOD) scores of a new slide's spots: how far each spot's embedding lies from the
training spots' embeddings, calibrated so that 1 means "as far as a typical held-out spot".

Reference (``build_reference``), per cross-validation fold:

- the training spots are the ``local`` embeddings of the fold's ``train`` and ``val`` samples; they are
  standardised with their own mean and std (std floored at 1e-6) and projected on their first
  ``min(pca, D, n)`` principal components (``pca`` 0: no projection);
- at most ``max_train_spots`` of them are kept (a random subset drawn with ``seed``, after the PCA fit);
- calibration: every spot of the fold's ``test`` samples gets the mean Euclidean distance to its ``k``
  nearest kept training spots; the median of those is the fold's scale (a few quantiles are kept for the
  report). A test sample is never in its own fold's training set.

One ``fold{k}.npz`` per fold (numbers only: loaded with ``allow_pickle=False``) and ``reference.json``
(folds, k, pca, the samples of each split, the scale per fold, the stores' encoder attributes), written
into a temporary folder beside the output and renamed into place.

Scores (``score_spots``): a spot's k-NN mean distance per fold divided by that fold's scale, and the mean
over folds. Distances are brute force, chunked over the query spots (a chunk x n_train block at a time, so
memory is flat in N). Measured for 20 000 training spots x 64 dims on 2 CPU cores (best of several runs,
per 100 000 query spots): sklearn ``NearestNeighbors(algorithm="brute")`` 8.8-12 s; the
``|a|^2 + |b|^2 - 2ab`` expansion in float32 with ``np.partition`` 10.9-15 s, with ``np.argpartition`` and an
exact float64 re-computation of the k chosen distances 15.6-46 s, in float64 with ``np.partition`` 56 s.
sklearn's brute force is used: as fast as the best expansion or faster, its distances agree with float64 to
3e-7 (the float32 expansion's to 2e-6), and its scores are bitwise the same for any chunk size. Scoring
100 000 spots against one fold of 20 000 took 17-24 s on a busy 2-core machine, with no rise in peak memory
over the reference's build (the query's own N x D float32 aside).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from genedml.atomic import atomic_path, write_json, write_tsv
from genedml.errors import InputError
from genedml.heads.predict import MATCHING_ATTRS, check_compatible
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STD_FLOOR = 1e-6
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
TRAIN_SPLITS = ("train", "val")
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class OODSpec(StageSpec):
    """The OOD reference's settings (config ``slides.ood``; defaults and allowed values in the schema)."""

    section: ClassVar[str] = "slides.ood"

    k: int  # neighbours of the kNN distance
    pca: int  # principal components of the standardised embeddings (0: none)
    max_train_spots: int  # training spots kept per fold
    seed: int  # of the random subset of training spots

    @classmethod
    def convert(cls, values: dict) -> dict:
        return {key: int(values[key]) for key in ("k", "pca", "max_train_spots", "seed")}


# ------------------------------------------------------------------------------------------- stores


def read_local(path, sample: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(local (N, D) float32, barcodes (N,), attrs) of a feature store: only what the scores need (not the
    neighbour embeddings ``load_features`` gathers, N x 25 x D floats in grid mode)."""
    from genedml.tiles.features import _open_complete

    group, attrs = _open_complete(path, sample)
    local = np.asarray(group["local"][:], dtype=np.float32)
    barcodes = np.array(group["barcodes"][:].tolist(), dtype=str)
    if local.ndim != 2 or len(local) != len(barcodes):
        raise InputError(f"local embeddings of shape {local.shape} for {len(barcodes)} barcodes", sample, path)
    if not np.isfinite(local).all():
        raise InputError(f"{int((~np.isfinite(local)).sum())} non-finite local embedding value(s)", sample, path)
    return local, barcodes, attrs


def encoder_attrs(attrs: dict) -> dict:
    """The attributes that say how a store was made (those two stores must share)."""
    return {k: attrs[k] for k in MATCHING_ATTRS if k in attrs}


# ------------------------------------------------------------------------------------------- one fold


@dataclass
class FoldReference:
    """One fold's space (standardise, project) and its kept training spots."""

    fold: int
    mean: np.ndarray  # (D,) float64
    std: np.ndarray  # (D,) float64, floored
    components: np.ndarray  # (P, D) float64; P = 0: no projection
    pca_mean: np.ndarray  # (D,) float64 mean of the standardised training spots (0 up to rounding)
    train: np.ndarray  # (n, P or D) float32
    k: int
    scale: float = 1.0  # median k-NN mean distance of the fold's held-out spots
    quantile_levels: np.ndarray | None = None
    quantiles: np.ndarray | None = None
    n_train_total: int = 0
    n_calibration: int = 0

    def transform(self, local: np.ndarray) -> np.ndarray:
        z = (np.asarray(local, dtype=np.float64) - self.mean) / self.std
        if len(self.components):
            z = (z - self.pca_mean) @ self.components.T
        return z.astype(np.float32)

    def neighbours(self):
        from sklearn.neighbors import NearestNeighbors

        return NearestNeighbors(n_neighbors=self.k, algorithm="brute").fit(self.train)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            format_version=np.int64(FORMAT_VERSION),
            fold=np.int64(self.fold),
            mean=self.mean,
            std=self.std,
            pca_components=self.components,
            pca_mean=self.pca_mean,
            train=self.train.astype(np.float32),
            k=np.int64(self.k),
            scale=np.float64(self.scale),
            quantile_levels=np.asarray(self.quantile_levels, dtype=np.float64),
            quantiles=np.asarray(self.quantiles, dtype=np.float64),
            n_train_total=np.int64(self.n_train_total),
            n_calibration=np.int64(self.n_calibration),
        )

    @classmethod
    def load(cls, path: Path) -> FoldReference:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    fold=int(z["fold"]),
                    mean=z["mean"],
                    std=z["std"],
                    components=z["pca_components"],
                    pca_mean=z["pca_mean"],
                    train=z["train"],
                    k=int(z["k"]),
                    scale=float(z["scale"]),
                    quantile_levels=z["quantile_levels"],
                    quantiles=z["quantiles"],
                    n_train_total=int(z["n_train_total"]),
                    n_calibration=int(z["n_calibration"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"not a readable OOD fold reference ({type(exc).__name__}: {exc})", None, path) from None


def fit_fold(
    fold: int, train_parts: list[np.ndarray], k: int, pca: int, max_train_spots: int, seed: int
) -> FoldReference:
    """Standardise and project the training spots (parts: one (n_i, D) array per sample, never
    concatenated whole) and keep a random subset of them."""
    n = int(sum(len(p) for p in train_parts))
    d = int(train_parts[0].shape[1])
    mean = sum(p.sum(0, dtype=np.float64) for p in train_parts) / n
    var = sum(((p - mean) ** 2).sum(0) for p in train_parts) / n  # two passes: no cancellation
    std = np.maximum(np.sqrt(var), STD_FLOOR)
    n_comp = min(pca, d, n) if pca else 0
    pca_mean = np.zeros(d)
    components = np.zeros((0, d))
    if n_comp:
        cov = sum(((p - mean) / std).T @ ((p - mean) / std) for p in train_parts) / n  # (D, D) float64
        # the right singular vectors of the standardised data: those of its (symmetric) covariance
        _, _, vt = np.linalg.svd(cov, hermitian=True)
        components = vt[:n_comp]
        signs = np.sign(components[np.arange(n_comp), np.abs(components).argmax(1)])
        components = components * np.where(signs == 0, 1.0, signs)[:, None]  # a fixed sign per component
    keep = np.arange(n)
    if n > max_train_spots:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_train_spots, replace=False))
    offsets = np.cumsum([0] + [len(p) for p in train_parts])
    rows = [
        train_parts[i][keep[(keep >= offsets[i]) & (keep < offsets[i + 1])] - offsets[i]]
        for i in range(len(train_parts))
    ]
    ref = FoldReference(fold, mean, std, components, pca_mean, np.zeros((0, 0), np.float32), min(k, len(keep)))
    ref.train = ref.transform(np.concatenate(rows))
    ref.n_train_total = n
    return ref


def knn_mean_distance(ref: FoldReference, local: np.ndarray, chunk: int = 4096, nn=None, what: str = "") -> np.ndarray:
    """(N,) float64: mean Euclidean distance of each query spot to its k nearest training spots of ``ref``,
    chunk query spots at a time."""
    n = len(local)
    out = np.empty(n, np.float64)
    nn = nn if nn is not None else ref.neighbours()
    t0 = last = time.perf_counter()
    for lo in range(0, n, max(1, int(chunk))):
        hi = min(n, lo + max(1, int(chunk)))
        dist, _ = nn.kneighbors(ref.transform(local[lo:hi]), n_neighbors=ref.k)
        out[lo:hi] = dist.mean(1)
        if time.perf_counter() - last >= LOG_EVERY_S and hi < n:
            last = time.perf_counter()
            log.info("%sfold %d: %d / %d spots scored (%.1f s)", what, ref.fold, hi, n, last - t0)
    return out


# ------------------------------------------------------------------------------------------- reference


def _fold_splits(folds: pd.DataFrame) -> dict[int, dict[str, list[str]]]:
    missing = {"fold", "sample", "split"} - set(folds.columns)
    if missing:
        raise InputError(f"the folds table lacks column(s) {sorted(missing)}")
    out = {}
    for fold, rows in folds.groupby("fold", sort=True):
        splits = {
            s: sorted(rows.loc[rows["split"] == s, "sample"].astype(str).unique()) for s in ("train", "val", "test")
        }
        train = set(splits["train"]) | set(splits["val"])
        leaked = sorted(train & set(splits["test"]))
        if leaked:  # the calibration must be held out: a test sample in its own fold's training set is a bug
            raise InputError(f"fold {fold}: test sample(s) {leaked} are also in the fold's train/val split")
        if not train:
            raise InputError(f"fold {fold} has no train or val samples to build the OOD reference from")
        if not splits["test"]:
            raise InputError(f"fold {fold} has no test samples to calibrate the OOD scores on")
        out[int(fold)] = splits
    return out


def build_reference(
    folds: pd.DataFrame,
    features: dict,
    out_dir,
    k: int = 10,
    pca: int = 64,
    max_train_spots: int = 20000,
    seed: int = 0,
) -> dict:
    """Write the OOD reference (``fold{k}.npz`` per fold and ``reference.json``) to ``out_dir``; return
    reference.json's content. ``folds``: the folds table (``read_folds``) or its path; ``features``: sample ->
    feature store."""
    if not isinstance(folds, pd.DataFrame):
        from genedml.study.folds import read_folds

        folds = read_folds(folds)
    if k < 1 or pca < 0 or max_train_spots < 1:
        raise InputError(f"OOD settings out of range: k={k}, pca={pca}, max_train_spots={max_train_spots}")
    splits = _fold_splits(folds)
    needed = sorted({s for sp in splits.values() for part in sp.values() for s in part})
    missing = [s for s in needed if s not in features]
    if missing:
        raise InputError(f"no feature store given for sample(s) {missing} of the folds table")
    local, attrs_of, first = {}, None, None
    for sample in needed:
        x, _, attrs = read_local(features[sample], sample)
        if first is None:
            attrs_of, first = attrs, sample
        else:
            try:
                check_compatible(attrs, attrs_of, sample, features[sample])
            except InputError as exc:
                raise InputError(
                    f"{exc.problem}; the stores of one OOD reference must come from one encoder (compared with "
                    f"sample {first!r}, {features[first]})",
                    sample,
                    features[sample],
                ) from None
            if x.shape[1] != local[first].shape[1]:
                raise InputError(
                    f"embedding width {x.shape[1]}, but {local[first].shape[1]} in sample {first!r}",
                    sample,
                    features[sample],
                )
        local[sample] = x
    facts = {
        "genedml_ood_version": FORMAT_VERSION,
        "k": int(k),
        "pca": int(pca),
        "max_train_spots": int(max_train_spots),
        "seed": int(seed),
        "std_floor": STD_FLOOR,
        "quantile_levels": list(QUANTILES),
        "encoder_attrs": encoder_attrs(attrs_of),
        "features": {s: str(features[s]) for s in needed},
        "folds": {},
    }
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for fold, sp in splits.items():
            t0 = time.perf_counter()
            train_samples = sorted(set(sp["train"]) | set(sp["val"]))
            ref = fit_fold(fold, [local[s] for s in train_samples], k, pca, max_train_spots, seed)
            held_out = np.concatenate([local[s] for s in sp["test"]])
            dist = knn_mean_distance(ref, held_out, what="calibration ")
            ref.scale = float(np.median(dist))
            if not ref.scale > 0:
                raise InputError(
                    f"fold {fold}: the held-out spots' median k-NN distance is {ref.scale} (identical embeddings?)"
                )
            ref.quantile_levels = np.asarray(QUANTILES)
            ref.quantiles = np.quantile(dist, QUANTILES)
            ref.n_calibration = len(dist)
            ref.save(tmp / f"fold{fold}.npz")
            facts["folds"][str(fold)] = {
                "train": sp["train"],
                "val": sp["val"],
                "test": sp["test"],
                "scale": ref.scale,
                "quantiles": {f"q{round(q * 100)}": float(v) for q, v in zip(QUANTILES, ref.quantiles)},
                "n_train_spots": ref.n_train_total,
                "n_train_kept": len(ref.train),
                "n_calibration_spots": ref.n_calibration,
                "k": ref.k,
                "dims": int(ref.train.shape[1]),
            }
            log.info(
                "OOD reference fold %d: %d of %d training spots kept, %d dims; held-out median k-NN distance %.4g "
                "(%d spots, %.1f s)",
                fold,
                len(ref.train),
                ref.n_train_total,
                ref.train.shape[1],
                ref.scale,
                ref.n_calibration,
                time.perf_counter() - t0,
            )
        write_json(tmp / "reference.json", facts)
    return facts


def read_reference(reference_dir) -> dict:
    path = Path(reference_dir) / "reference.json"
    if not path.exists():
        raise InputError("no OOD reference here (reference.json is missing; run ood-reference)", None, reference_dir)
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------- scores


def score_spots(reference_dir, local: np.ndarray, folds=None, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(per_fold (F, N) float32, score (N,) float32): each spot's k-NN mean distance to each fold's
    training spots over that fold's scale, and its mean over the folds (``folds``: fold ids; None: all)."""
    facts = read_reference(reference_dir)
    fold_ids = sorted(int(f) for f in facts["folds"]) if folds is None else [int(f) for f in folds]
    unknown = [f for f in fold_ids if str(f) not in facts["folds"]]
    if unknown or not fold_ids:
        raise InputError(f"fold(s) {unknown or fold_ids} not in the OOD reference", None, reference_dir)
    local = np.asarray(local, dtype=np.float32)
    if local.ndim != 2:
        raise InputError(f"local embeddings must be (N, D), got {local.shape}", None, reference_dir)
    per_fold = np.empty((len(fold_ids), len(local)), np.float32)
    for i, fold in enumerate(fold_ids):
        ref = FoldReference.load(Path(reference_dir) / f"fold{fold}.npz")
        if local.shape[1] != len(ref.mean):
            raise InputError(
                f"embeddings of width {local.shape[1]}, the OOD reference's are {len(ref.mean)}", None, reference_dir
            )
        per_fold[i] = knn_mean_distance(ref, local, chunk) / ref.scale
    return per_fold, per_fold.mean(0).astype(np.float32)


def summarize(score: np.ndarray, threshold: float = 2.0, warn_fraction: float = 0.5) -> dict:
    """Median, 90th percentile and fraction above ``threshold`` of a slide's scores; ``mostly_ood`` when that
    fraction exceeds ``warn_fraction``."""
    score = np.asarray(score, dtype=np.float64)
    n = len(score)
    frac = float((score > threshold).mean()) if n else 0.0
    return {
        "n": int(n),
        "median": float(np.median(score)) if n else None,
        "q90": float(np.quantile(score, 0.9)) if n else None,
        "threshold": float(threshold),
        "fraction_above": frac,
        "warn_fraction": float(warn_fraction),
        "mostly_ood": bool(frac > warn_fraction),
    }


def score_sample(
    reference_dir,
    features_path,
    sample: str,
    out_tsv,
    out_json,
    threshold: float = 2.0,
    warn_fraction: float = 0.5,
    held_out_only: bool = False,
) -> dict:
    """Score one section's spots; write the per-spot TSV (barcode, score, score_fold{k}...) and the JSON
    summary; return the summary. ``held_out_only``: a sample that is a test sample of some folds is scored
    by those folds only (a fold that trained on it would score it ~0)."""
    facts = read_reference(reference_dir)
    local, barcodes, attrs = read_local(features_path, sample)
    try:
        check_compatible(attrs, facts.get("encoder_attrs", {}), sample, features_path)
    except InputError as exc:
        raise InputError(
            f"{exc.problem.replace('in training', 'in the reference')}: the OOD reference {reference_dir} was built "
            f"from other features ({facts.get('encoder_attrs')})",
            sample,
            features_path,
        ) from None
    all_folds = sorted(int(f) for f in facts["folds"])
    test_of = [f for f in all_folds if sample in facts["folds"][str(f)]["test"]]
    trained_in = [f for f in all_folds if sample in facts["folds"][str(f)]["train"] + facts["folds"][str(f)]["val"]]
    folds = test_of if held_out_only and test_of else all_folds
    if set(trained_in) & set(folds):
        log.warning(
            "%s: a training sample of OOD reference fold(s) %s, whose scores of it are biased low%s",
            sample,
            sorted(set(trained_in) & set(folds)),
            "" if held_out_only else " (--held-out-only scores a held-out sample by the folds that held it out)",
        )
    per_fold, score = score_spots(reference_dir, local, folds)
    table = pd.DataFrame({"barcode": barcodes, "score": score})
    for fold, row in zip(folds, per_fold):
        table[f"score_fold{fold}"] = row
    summary = summarize(score, threshold, warn_fraction)
    write_tsv(out_tsv, table)
    write_json(
        out_json,
        {
            "sample": sample,
            **summary,
            "folds": folds,
            "held_out_only": bool(held_out_only),
            "reference": str(reference_dir),
            "features": str(features_path),
            "per_fold_median": {str(f): float(np.median(r)) if len(r) else None for f, r in zip(folds, per_fold)},
        },
    )
    log.info(
        "%s: OOD score median %s, q90 %s; %.1f%% of %d spots above %g (folds %s)",
        sample,
        _fmt(summary["median"]),
        _fmt(summary["q90"]),
        100 * summary["fraction_above"],
        summary["n"],
        threshold,
        folds,
    )
    if summary["mostly_ood"]:
        log.warning(
            "%s: mostly out of distribution: %.0f%% of its %d spots score above %g (more than %.0f%%); its "
            "predictions are extrapolations from unlike training tissue",
            sample,
            100 * summary["fraction_above"],
            summary["n"],
            threshold,
            100 * warn_fraction,
        )
    return summary


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"
