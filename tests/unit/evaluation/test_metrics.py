"""Metric functions against hand-computed values (docs/method.md, "Protocol and metrics")."""

import numpy as np
import pandas as pd
import pytest

from genedml.evaluation.metrics import (
    evaluate_sections,
    pearson_per_gene,
    rank_genes,
    section_metrics,
    top_by_value,
    top_predictive_genes,
)


def _r(x, y):
    """Pearson r written out, independent of the implementation under test."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx, dy = x - x.mean(), y - y.mean()
    return (dx * dy).sum() / np.sqrt((dx * dx).sum() * (dy * dy).sum())


def test_pearson_by_hand_and_constant_genes():
    truth = np.array([[1.0, 5.0, 2.0], [2.0, 5.0, 4.0], [3.0, 5.0, 6.0], [4.0, 5.0, 8.0]])
    pred = np.array([[2.0, 1.0, 1.0], [4.0, 2.0, 1.0], [6.0, 3.0, 1.0], [9.0, 4.0, 1.0]])
    r = pearson_per_gene(truth, pred)
    # gene 0 by hand: x = 1..4, y = 2,4,6,9 -> r = 11.5 / sqrt(5 * 26.75)
    assert r[0] == pytest.approx(11.5 / np.sqrt(5 * 26.75))
    assert np.isnan(r[1]) and np.isnan(r[2])  # constant truth, constant prediction
    m = section_metrics(truth, pred, n_top=50)
    assert m["PCC_A"] == pytest.approx(r[0])  # NaN genes ignored by the mean
    assert m["MSE"] == pytest.approx(np.mean((pred - truth) ** 2))
    assert m["MAE"] == pytest.approx(np.mean(np.abs(pred - truth)))


def test_constant_gene_survives_rounding_noise():
    truth = np.full((5, 1), 0.1) + np.array([[0.0], [1e-17], [0.0], [-1e-17], [0.0]])
    pred = np.arange(5.0).reshape(5, 1)
    assert np.isnan(pearson_per_gene(truth, pred)[0])


def test_single_spot_section_has_no_correlation():
    m = section_metrics(np.array([[1.0, 2.0]]), np.array([[1.5, 2.5]]), n_top=50)
    assert np.isnan(m["PCC_A"]) and np.isnan(m["HEG"]) and np.isnan(m["HVG"])
    assert m["MSE"] == pytest.approx(0.25) and m["MAE"] == pytest.approx(0.5)


def test_heg_and_hvg_come_from_the_sections_own_truth():
    # 4 spots, 4 genes. Means: g0 10, g1 1, g2 5, g3 5; variances: g1 6.5, the others 0.5 each.
    truth = np.array([[9.0, -2.0, 4.0, 5.0], [11.0, 4.0, 6.0, 4.0], [10.0, -1.0, 5.0, 6.0], [10.0, 3.0, 5.0, 5.0]])
    pred = np.array([[1.0, 4.0, 1.0, 2.0], [2.0, 1.0, 3.0, 1.0], [3.0, 3.0, 2.0, 4.0], [4.0, 2.0, 2.0, 3.0]])
    m = section_metrics(truth, pred, n_top=2)
    assert m["heg_idx"].tolist() == [0, 2]  # g2 and g3 tie on the mean: gene order decides
    assert m["hvg_idx"].tolist() == [1, 0]  # g0, g2, g3 tie on the variance: gene order decides
    r = [_r(truth[:, j], pred[:, j]) for j in range(4)]
    assert m["HEG"] == pytest.approx((r[0] + r[2]) / 2)
    assert m["HVG"] == pytest.approx((r[1] + r[0]) / 2)


def test_top_by_value_ties_and_nan():
    assert top_by_value([0.5, np.nan, 0.9, 0.5], 4).tolist() == [2, 0, 3, 1]


def test_ranks_average_over_folds_with_ties():
    per = pd.DataFrame({"f0": [0.9, 0.5, 0.5, np.nan], "f1": [0.1, 0.8, 0.7, 0.9]}, index=list("ABCD"))
    ranks = rank_genes(per)
    # fold 0: A=1, B=C=2.5 (tie), D=4 (NaN last); fold 1: D=1, B=2, C=3, A=4
    assert ranks.tolist() == [2.5, 2.25, 2.75, 2.5]
    assert top_predictive_genes(per, 2) == ["B", "A"]  # A and D tie at 2.5: gene order decides
    # the choice does not depend on the order of the fold columns
    assert top_predictive_genes(per[["f1", "f0"]], 2) == ["B", "A"]


def _sections():
    """Two folds by hand: fold 0 = sections a, b; fold 1 = c and a single-spot section d."""
    t_a = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [3.0, 4.0, 0.0], [4.0, 3.0, 0.0]])
    p_a = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0], [5.0, 4.0, 4.0]])
    t_b = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 1.0], [2.0, 2.0, 2.0]])
    p_b = np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 2.0], [0.0, 2.0, 3.0]])
    t_c = np.array([[1.0, 1.0, 2.0], [2.0, 3.0, 1.0], [3.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    p_c = np.array([[1.0, 2.0, 1.0], [2.0, 1.0, 2.0], [3.0, 4.0, 3.0], [4.0, 3.0, 4.0]])
    t_d, p_d = np.array([[1.0, 1.0, 1.0]]), np.array([[2.0, 2.0, 2.0]])
    return [
        {"fold": 0, "sample": "a", "truth": t_a, "prediction": p_a},
        {"fold": 0, "sample": "b", "truth": t_b, "prediction": p_b},
        {"fold": 1, "sample": "c", "truth": t_c, "prediction": p_c},
        {"fold": 1, "sample": "d", "truth": t_d, "prediction": p_d},
    ]


def test_evaluation_by_hand():
    secs = _sections()
    res = evaluate_sections(secs, ["g0", "g1", "g2"], n_top=1, heg_hvg="per_section")
    r = {
        s["sample"]: [
            (
                _r(s["truth"][:, j], s["prediction"][:, j])
                if s["truth"].shape[0] > 1 and np.ptp(s["truth"][:, j]) > 0
                else np.nan
            )
            for j in range(3)
        ]
        for s in secs
    }
    # section a: g2 is constant in truth -> NaN; PCC(A) = mean of g0, g1
    ps = res["per_section"].set_index("sample")
    assert ps.loc["a", "PCC_A"] == pytest.approx((r["a"][0] + r["a"][1]) / 2)
    assert np.isnan(ps.loc["d", "PCC_A"]) and ps.loc["d", "n_spots"] == 1
    # per-fold per-gene PCC: fold 0 = mean of a and b (NaN ignored); fold 1 = c only (d has no PCC)
    pg = res["per_gene"].set_index("gene")
    assert pg.loc["g0", "fold0"] == pytest.approx((r["a"][0] + r["b"][0]) / 2)
    assert pg.loc["g2", "fold0"] == pytest.approx(r["b"][2])
    assert pg.loc["g1", "fold1"] == pytest.approx(r["c"][1])
    # PCC(H) gene: the best mean rank over the two folds
    f0 = [pg.loc[g, "fold0"] for g in ("g0", "g1", "g2")]
    f1 = [r["c"][j] for j in range(3)]
    mean_rank = (pd.Series(f0).rank(ascending=False) + pd.Series(f1).rank(ascending=False)) / 2
    best = ["g0", "g1", "g2"][int(np.argmin(mean_rank.to_numpy()))]
    assert res["pcc_h_genes"] == [best]
    j = ["g0", "g1", "g2"].index(best)
    assert ps.loc["a", "PCC_H"] == pytest.approx(r["a"][j])
    # fold value = mean over the fold's sections (the single-spot section contributes nothing to PCC)
    pf = res["per_fold"].set_index("fold")
    assert pf.loc[0, "PCC_A"] == pytest.approx((ps.loc["a", "PCC_A"] + ps.loc["b", "PCC_A"]) / 2)
    assert pf.loc[1, "PCC_A"] == pytest.approx(ps.loc["c", "PCC_A"])
    assert pf.loc[1, "MSE"] == pytest.approx((ps.loc["c", "MSE"] + 1.0) / 2)  # d's MSE is 1
    # reported = mean ± std (ddof 0) over folds
    s = res["summary"].set_index("metric")
    for metric in ("PCC_A", "PCC_H", "HEG", "HVG", "MSE", "MAE"):
        assert s.loc[metric, "mean"] == pytest.approx(pf[metric].mean())
        assert s.loc[metric, "std"] == pytest.approx(pf[metric].std(ddof=0))
    assert s.loc["PCC_A", "n_folds"] == 2
    # per-gene-per-section table holds every section's r
    pgs = res["per_gene_section"].set_index("gene")
    assert pgs.loc["g1", "b"] == pytest.approx(r["b"][1]) and np.isnan(pgs.loc["g2", "a"])
    assert res["heg_genes"]["c"] == ["g0"]  # c's truth means are all 2.5: gene order decides
    assert res["heg_genes"]["b"] == ["g2"] and res["hvg_genes"]["b"] == ["g0"]  # b's variances all 2/3


def test_pcc_h_choice_is_deterministic():
    secs = _sections()
    genes = ["g0", "g1", "g2"]
    first = evaluate_sections(secs, genes, n_top=2, heg_hvg="pooled")["pcc_h_genes"]
    assert evaluate_sections(list(reversed(secs)), genes, n_top=2, heg_hvg="pooled")["pcc_h_genes"] == first
    # two genes with the same PCC in every fold tie: the one listed first in the gene list is chosen
    rng = np.random.default_rng(1)
    tied = []
    for fold in (0, 1):
        t = rng.normal(size=(12, 3))
        t[:, 1] = 2 * t[:, 0] + 1  # g1 is an affine copy of g0: identical r
        p = t + rng.normal(scale=0.3, size=t.shape)
        p[:, 1] = p[:, 0]
        p[:, 2] = rng.normal(size=12)  # g2 unpredictable
        tied.append({"fold": fold, "sample": f"s{fold}", "truth": t, "prediction": p})
    assert evaluate_sections(tied, ["g0", "g1", "g2"], n_top=1, heg_hvg="pooled")["pcc_h_genes"] == ["g0"]
    swapped = [{**s, "truth": s["truth"][:, [1, 0, 2]], "prediction": s["prediction"][:, [1, 0, 2]]} for s in tied]
    assert evaluate_sections(swapped, ["g1", "g0", "g2"], n_top=1, heg_hvg="pooled")["pcc_h_genes"] == ["g1"]
