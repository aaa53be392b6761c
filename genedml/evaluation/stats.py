"""The statistics behind an honest comparison of heads (docs/statistics.md says each one in words).

- ``patient_bootstrap``: a percentile interval for the mean of a per-section metric, resampling PATIENTS
  with replacement (each drawn patient brings every one of its sections): sections of one patient are not
  independent, so the patient is the unit of resampling. The statistic of a resample is the mean over
  the resample's sections (a section-weighted mean, the same number as the estimate on the original data);
  sections without a value (NaN: a PCC that is undefined because a prediction is constant) are left out,
  never counted as 0, and a patient none of whose sections has a value is left out of the resampling.
- ``paired_patient_bootstrap``: the same for the difference ``a - b`` of two heads on the same sections,
  the same resampled patients for both (the interval of a difference, e.g. the optimism gap). Only the
  sections where both have a value count.
- ``wilcoxon_paired``: the two-sided Wilcoxon signed-rank test on paired values (NaN pairs dropped,
  zero differences dropped before ranking: Wilcoxon's original handling, ``zero_method='wilcox'``), with
  the matched-pairs rank-biserial correlation r = (R+ - R-) / (R+ + R-) computed on the same ranks.
- ``holm``: Holm's step-down adjustment of a family of p-values.
- ``seed_spread``: n, mean, sd (ddof 1), min and max of one number over seed replicates.

Everything is numpy / scipy; the random draws come from ``numpy.random.default_rng(seed)``, so an interval
is the same on every run with the same seed.
"""

from __future__ import annotations

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
SEED = 0
EXACT_MAX_N = 50  # the exact null distribution of W up to this many non-zero differences without ties


def _by_patient(values, patients) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per patient with at least one value: its name (sorted), the sum and the count of its values;
    and the number of sections given (NaN included)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    p = np.asarray(patients).astype(str).ravel()
    if v.shape != p.shape:
        raise ValueError(f"{v.size} values but {p.size} patients")
    ok = ~np.isnan(v)
    names, inverse = np.unique(p[ok], return_inverse=True)
    sums = np.bincount(inverse, weights=v[ok], minlength=names.size)
    counts = np.bincount(inverse, minlength=names.size).astype(np.float64)
    return names, sums, counts, int(v.size)


def bootstrap_replicates(values, patients, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """The ``n_boot`` resampled means (patients drawn with replacement, each with all its sections;
    NaN sections left out). Empty when no section has a value."""
    _, sums, counts, _ = _by_patient(values, patients)
    if sums.size == 0 or n_boot <= 0:
        return np.empty(0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sums.size, size=(int(n_boot), sums.size))
    return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)


def _interval(values, patients, n_boot: int, level: float, seed: int) -> dict:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    names, sums, counts, n_total = _by_patient(values, patients)
    n_sections = int(counts.sum())
    out = {
        "estimate": float(sums.sum() / n_sections) if n_sections else float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "level": float(level),
        "n_patients": int(names.size),
        "n_sections": n_sections,
        "n_sections_total": n_total,
        "n_boot": 0,
        "note": "",
    }
    if n_sections == 0:
        out["note"] = "no section has a value" if n_total else "no sections"
        return out
    reps = bootstrap_replicates(values, patients, n_boot, seed)
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(reps, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    out.update(ci_low=float(low), ci_high=float(high), n_boot=int(reps.size))
    notes = []
    if names.size == 1:
        notes.append("one patient: the interval is degenerate")
    if n_sections < n_total:
        notes.append(f"{n_total - n_sections} of {n_total} sections have no value (left out, not 0)")
    out["note"] = "; ".join(notes)
    return out


def patient_bootstrap(values, patients, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED) -> dict:
    """Percentile interval of the mean of per-section ``values`` by a patient-level bootstrap.

    ``patients``: the patient of each section (same length). Returns ``estimate`` (the mean over the
    sections with a value, on the original data), ``ci_low``, ``ci_high`` (the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` percentiles of the resampled means, numpy's linear interpolation), ``level``,
    ``n_patients`` and ``n_sections`` (those with a value), ``n_sections_total``, ``n_boot`` (resamples
    drawn; 0 when nothing has a value, and then every number is NaN) and ``note``."""
    return _interval(values, patients, n_boot, level, seed)


def paired_patient_bootstrap(a, b, patients, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED) -> dict:
    """Interval of mean(a - b) over the sections where both have a value, resampling patients (the same
    patients, hence the same sections, for both). ``a``, ``b``, ``patients`` are aligned per section.
    Returns what ``patient_bootstrap`` returns, for the difference."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values of different lengths: {a.size} and {b.size}")
    return _interval(a - b, patients, n_boot, level, seed)  # NaN in either -> the pair is left out


def wilcoxon_paired(a, b=None) -> dict:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` (or of ``a`` alone, the differences).

    Pairs with a NaN are dropped (``n``); zero differences are then dropped too (``n_zero``; Wilcoxon's
    ``zero_method='wilcox'``) and the rest ranked by absolute value (ties share the average rank).
    ``W`` = min(R+, R-), scipy's two-sided statistic; ``p_value`` from the exact null distribution when
    at most 50 differences are left and their absolute values have no ties, else the normal approximation
    with the tie correction (``method``). ``effect_r``: the matched-pairs rank-biserial correlation
    (R+ - R-) / (R+ + R-), in [-1, 1], > 0 when ``a`` tends to be larger. ``median_diff`` / ``mean_diff``
    over the ``n`` pairs (zeros included). Fewer than two non-zero differences: p is NaN and ``note``
    says why (every difference zero: ``effect_r`` = 0, neither side is larger); no exception."""
    from scipy.stats import rankdata, wilcoxon

    d = np.asarray(a, dtype=np.float64).ravel()
    if b is not None:
        b = np.asarray(b, dtype=np.float64).ravel()
        if b.shape != d.shape:
            raise ValueError(f"paired values of different lengths: {d.size} and {b.size}")
        d = d - b
    d = d[~np.isnan(d)]
    nz = d[d != 0]
    out = {
        "n": int(d.size),
        "n_zero": int(d.size - nz.size),
        "W": float("nan"),
        "rank_sum_pos": float("nan"),
        "rank_sum_neg": float("nan"),
        "p_value": float("nan"),
        "method": "",
        "effect_r": float("nan"),
        "median_diff": float(np.median(d)) if d.size else float("nan"),
        "mean_diff": float(np.mean(d)) if d.size else float("nan"),
        "note": "",
    }
    if d.size == 0:
        out["note"] = "no pair has both values"
        return out
    if nz.size == 0:
        out.update(W=0.0, rank_sum_pos=0.0, rank_sum_neg=0.0, effect_r=0.0)
        out["note"] = f"all {d.size} differences are zero: no test, no effect"
        return out
    ranks = rankdata(np.abs(nz), method="average")
    r_pos, r_neg = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    out.update(
        W=min(r_pos, r_neg),
        rank_sum_pos=r_pos,
        rank_sum_neg=r_neg,
        effect_r=(r_pos - r_neg) / (r_pos + r_neg),
    )
    if out["n_zero"]:
        out["note"] = f"{out['n_zero']} zero difference(s) dropped before ranking"
    if nz.size < 2:
        out["note"] = "; ".join(x for x in (out["note"], "fewer than 2 non-zero differences: no test") if x)
        return out
    ties = np.unique(np.abs(nz)).size < nz.size
    method = "exact" if nz.size <= EXACT_MAX_N and not ties else "approx"
    res = wilcoxon(nz, zero_method="wilcox", correction=False, alternative="two-sided", method=method)
    out.update(W=float(res.statistic), p_value=float(res.pvalue), method=method)
    return out


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order. NaN p-values stay NaN and are not
    counted in the family size m; adjusted p = max over the first k sorted of (m - j + 1) p_(j), at most 1."""
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def seed_spread(values) -> dict:
    """n (values that are not NaN), mean, sd (ddof 1; NaN with fewer than two), min and max over seeds."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"n": 0, "mean": float("nan"), "sd": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
        "min": float(v.min()),
        "max": float(v.max()),
    }
