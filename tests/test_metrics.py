"""Metric functions against hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from genedml.metrics import evaluate_sections, pearson_per_gene, rank_genes, section_metrics, top_predictive_genes


def test_pearson_by_hand_and_constant_genes():
    truth = np.array([[1.0, 5.0, 2.0], [2.0, 5.0, 4.0], [3.0, 5.0, 6.0], [4.0, 5.0, 8.0]])
    pred = np.array([[2.0, 1.0, 1.0], [4.0, 2.0, 1.0], [6.0, 3.0, 1.0], [9.0, 4.0, 1.0]])
    r = pearson_per_gene(truth, pred)
    # gene 0 by hand: x = 1..4, y = 2,4,6,9
    x, y = np.arange(1, 5.0), np.array([2, 4, 6, 9.0])
    expected = ((x - x.mean()) * (y - y.mean())).sum() / np.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
    assert r[0] == pytest.approx(expected)
    assert np.isnan(r[1]) and np.isnan(r[2])  # constant truth, constant prediction
    m = section_metrics(truth, pred)
    assert m["PCC_A"] == pytest.approx(expected)  # NaN genes ignored
    assert m["MSE"] == pytest.approx(np.mean((pred - truth) ** 2))
    assert m["MAE"] == pytest.approx(np.mean(np.abs(pred - truth)))


def test_single_spot_section_has_no_correlation():
    m = section_metrics(np.array([[1.0, 2.0]]), np.array([[1.5, 2.5]]))
    assert np.isnan(m["PCC_A"]) and m["MSE"] == pytest.approx(0.25)


def test_ranks_average_over_folds_with_ties():
    per = pd.DataFrame({"f0": [0.9, 0.5, 0.5, np.nan], "f1": [0.1, 0.8, 0.7, 0.9]}, index=list("ABCD"))
    ranks = rank_genes(per)
    # fold 0: A=1, B=C=2.5 (tie), D=4 (NaN last); fold 1: D=1, B=2, C=3, A=4
    assert ranks.tolist() == [2.5, 2.25, 2.75, 2.5]
    assert top_predictive_genes(per, 2) == ["B", "A"]  # A and D tie at 2.5: input order decides
    assert top_predictive_genes(per, 2) == top_predictive_genes(per.copy(), 2)


def test_fold_aggregation_and_pcc_h():
    rng = np.random.default_rng(0)
    genes = ["g0", "g1", "g2"]
    sections = []
    for fold, sample in [(0, "a"), (0, "b"), (1, "c")]:
        t = rng.normal(size=(20, 3))
        p = t.copy()
        p[:, 1] = rng.normal(size=20)  # g1 is unpredictable
        p[:, 2] = -t[:, 2]  # g2 anti-correlated
        sections.append({"fold": fold, "sample": sample, "truth": t, "prediction": p})
    res = evaluate_sections(sections, genes, n_top=1)
    assert res["pcc_h_genes"] == ["g0"]
    pf = res["per_fold"].set_index("fold")
    assert pf.loc[0, "PCC_H"] == pytest.approx(1.0) and pf.loc[1, "PCC_H"] == pytest.approx(1.0)
    # fold PCC_A = mean over the fold's sections of the section means
    ps = res["per_section"].set_index("sample")
    assert pf.loc[0, "PCC_A"] == pytest.approx((ps.loc["a", "PCC_A"] + ps.loc["b", "PCC_A"]) / 2)
    s = res["summary"].set_index("metric")
    assert s.loc["PCC_A", "mean"] == pytest.approx(pf["PCC_A"].mean())
    assert s.loc["PCC_A", "std"] == pytest.approx(pf["PCC_A"].std(ddof=0))
    assert s.loc["PCC_A", "n_folds"] == 2
