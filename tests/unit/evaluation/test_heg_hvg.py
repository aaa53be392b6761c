"""HEG / HVG under both definitions (``report.heg_hvg``), against hand-computed gene sets and means.

``pooled`` (DKAN's evaluation notebook, followed by Gene-DML's Table 1): one set for the run from the labels
of every evaluated spot; HEG by mean label, HVG by the variance of the spot-normalised labels.
``per_section`` (BLEEP's code): each section's own genes by the mean / variance of its own truth."""

import json

import numpy as np
import pandas as pd
import pytest

from genedml.evaluation.metrics import HEG_HVG, evaluate_sections, pooled_gene_sets
from genedml.pipeline import schema

GENES = ["g0", "g1", "g2", "g3"]

# Three sections of two spots. g0 is half of every spot's labels: the most expressed gene, and the most
# variable one in raw labels (library size), but constant once each spot is divided by its sum.
TRUTH = {
    "a": np.array([[4.0, 0.0, 3.0, 1.0], [8.0, 4.0, 2.0, 2.0]]),  # sums 8, 16
    "b": np.array([[2.0, 2.0, 0.0, 0.0], [4.0, 2.0, 1.0, 1.0]]),  # sums 4, 8; g1 constant: r undefined
    "c": np.array([[4.0, 0.0, 2.0, 2.0], [2.0, 1.0, 0.0, 1.0]]),  # sums 8, 4
}
# With two spots r is +1 or -1 (the sign of truth change x prediction change), NaN for a constant gene.
PRED = {
    "a": np.array([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, -1.0, -1.0]]),  # r = +1, -1, +1, -1
    "b": np.array([[0.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 1.0, 1.0]]),  # r = -1, NaN, +1, +1
    "c": np.array([[0.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 1.0, -1.0]]),  # r = +1, +1, -1, +1
}
FOLD = {"a": 0, "b": 0, "c": 1}


def _sections():
    return [{"sample": k, "fold": FOLD[k], "truth": TRUTH[k], "prediction": PRED[k]} for k in TRUTH]


def test_the_definitions_are_the_schema_choices():
    assert list(HEG_HVG) == schema.choices("report.heg_hvg")
    assert schema.with_defaults("report", {}, ("heg_hvg",))["heg_hvg"] == "pooled"


def test_pooled_gene_sets_by_hand():
    got = pooled_gene_sets(list(TRUTH.values()), n_top=2)
    # pooled means over the 6 spots: g0 24/6, g1 9/6, g2 8/6, g3 7/6
    assert got["mean"] == pytest.approx([4.0, 1.5, 8 / 6, 7 / 6])
    assert [GENES[i] for i in got["heg_idx"]] == ["g0", "g1"]
    # spot-normalised labels: g0 is 0.5 everywhere (variance 0); g1 = 0, .25, .5, .25, 0, .25;
    # g2 = .375, .125, 0, .125, .25, 0; g3 = .125, .125, 0, .125, .25, .25 (variance, ddof 0, written out)
    by_hand = [0.0, 0.177083333 / 6, 0.106770833 / 6, 0.044270833 / 6]
    assert got["normalised_variance"] == pytest.approx(by_hand, abs=1e-9)
    assert [GENES[i] for i in got["hvg_idx"]] == ["g1", "g2"]
    # raw pooled variance would have chosen g0 first (4.0 > 1.92 > 1.22 > 0.47): normalising matters
    raw = np.concatenate(list(TRUTH.values())).var(0)
    assert [GENES[i] for i in np.argsort(-raw)[:2]] == ["g0", "g1"]
    assert got["n_spots"] == 6 and got["n_spots_zero_sum"] == 0


def test_pooled_gene_sets_leave_out_spots_without_labels():
    truth = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    got = pooled_gene_sets([truth], n_top=3)
    # the empty spot counts in the means (4/3, 4/3, 0) but has no composition: variances over 2 spots
    assert got["mean"] == pytest.approx([4 / 3, 4 / 3, 0.0])
    assert got["normalised_variance"] == pytest.approx([0.0625, 0.0625, 0.0])
    assert got["n_spots_zero_sum"] == 1
    assert got["hvg_idx"].tolist() == [0, 1, 2]  # g0 and g1 tie: gene order decides


def test_pooled_heg_hvg_by_hand():
    res = evaluate_sections(_sections(), GENES, n_top=2, heg_hvg="pooled")
    assert res["heg_hvg"] == "pooled"
    assert res["heg_genes"] == ["g0", "g1"] and res["hvg_genes"] == ["g1", "g2"]
    assert res["pooled"] == {"n_spots": 6, "n_spots_zero_sum": 0}
    ps = res["per_section"].set_index("sample")
    # HEG = mean r over g0, g1: a (1 - 1) / 2, b -1 (g1 undefined), c (1 + 1) / 2
    assert ps["HEG"].to_dict() == pytest.approx({"a": 0.0, "b": -1.0, "c": 1.0})
    # HVG = mean r over g1, g2: a (-1 + 1) / 2, b 1 (g1 undefined), c (1 - 1) / 2
    assert ps["HVG"].to_dict() == pytest.approx({"a": 0.0, "b": 1.0, "c": 0.0})
    pf = res["per_fold"].set_index("fold")
    assert pf.loc[0, "HEG"] == pytest.approx(-0.5) and pf.loc[1, "HEG"] == pytest.approx(1.0)
    assert pf.loc[0, "HVG"] == pytest.approx(0.5) and pf.loc[1, "HVG"] == pytest.approx(0.0)
    s = res["summary"].set_index("metric")
    assert (s.loc["HEG", "mean"], s.loc["HEG", "std"]) == pytest.approx((0.25, 0.75))
    assert (s.loc["HVG", "mean"], s.loc["HVG", "std"]) == pytest.approx((0.25, 0.25))
    assert s.loc["HEG", "heg_hvg"] == "pooled" and s.loc["HVG", "heg_hvg"] == "pooled"
    assert s.loc["PCC_A", "heg_hvg"] is None  # recorded where it applies only
    assert s.loc["HEG", "n_folds"] == 2 and s.loc["HEG", "n_sections"] == 3  # counts as before
    pg = res["per_gene"].set_index("gene")
    assert pg["sections_HEG"].tolist() == [3, 3, 0, 0] and pg["sections_HVG"].tolist() == [0, 3, 3, 0]
    assert pg.loc["g0", "normalised_variance"] == pytest.approx(0.0)


def test_per_section_heg_hvg_by_hand():
    res = evaluate_sections(_sections(), GENES, n_top=2, heg_hvg="per_section")
    assert res["heg_hvg"] == "per_section" and "pooled" not in res
    # own means: a 6, 2, 2.5, 1.5; b 3, 2, .5, .5; c 3, .5, 1, 1.5
    assert res["heg_genes"] == {"a": ["g0", "g2"], "b": ["g0", "g1"], "c": ["g0", "g3"]}
    # own variances: a 4, 4, .25, .25; b 1, 0, .25, .25; c 1, .25, 1, .25 (ties: gene order)
    assert res["hvg_genes"] == {"a": ["g0", "g1"], "b": ["g0", "g2"], "c": ["g0", "g2"]}
    ps = res["per_section"].set_index("sample")
    assert ps["HEG"].to_dict() == pytest.approx({"a": 1.0, "b": -1.0, "c": 1.0})
    assert ps["HVG"].to_dict() == pytest.approx({"a": 0.0, "b": 0.0, "c": 0.0})
    s = res["summary"].set_index("metric")
    assert (s.loc["HEG", "mean"], s.loc["HEG", "std"]) == pytest.approx((0.5, 0.5))
    assert (s.loc["HVG", "mean"], s.loc["HVG", "std"]) == pytest.approx((0.0, 0.0))
    assert s.loc["HVG", "heg_hvg"] == "per_section"
    # PCC(A) and PCC(H) do not depend on the HEG / HVG definition
    pooled = evaluate_sections(_sections(), GENES, n_top=2, heg_hvg="pooled")
    for m in ("PCC_A", "PCC_H", "MSE", "MAE"):
        assert res["per_section"][m].tolist() == pytest.approx(pooled["per_section"][m].tolist(), nan_ok=True)


def test_pooled_sets_do_not_depend_on_section_order():
    secs = _sections()
    first = evaluate_sections(secs, GENES, n_top=2, heg_hvg="pooled")
    again = evaluate_sections(list(reversed(secs)), GENES, n_top=2, heg_hvg="pooled")
    assert first["heg_hvg"] == "pooled"  # the default, as the schema's
    assert (again["heg_genes"], again["hvg_genes"]) == (first["heg_genes"], first["hvg_genes"])


def test_unknown_definition_is_refused():
    with pytest.raises(ValueError, match="heg_hvg"):
        evaluate_sections(_sections(), GENES, n_top=2, heg_hvg="dkan")


@pytest.mark.parametrize("heg_hvg", HEG_HVG)
def test_evaluate_head_records_the_definition(tmp_path, heg_hvg):
    from test_evaluate_finite import write_predictions

    from genedml.evaluation.evaluate import evaluate_head

    paths = write_predictions(tmp_path)
    out = tmp_path / "metrics" / "ridge"
    summary = evaluate_head("ridge", paths, out, n_top=3, recipe="log1p", heg_hvg=heg_hvg)
    sets = json.loads((out / "gene_sets.json").read_text())
    assert sets["heg_hvg"] == heg_hvg and sets["n_top"] == 3
    if heg_hvg == "pooled":
        assert isinstance(sets["HEG"], list) and len(sets["HEG"]) == 3 and sets["pooled"]["n_spots"] == 120
    else:
        assert sorted(sets["HEG"]) == ["S1", "S2", "S3", "S4"] and "pooled" not in sets
    rows = summary.set_index("metric")
    assert rows.loc["HEG", "heg_hvg"] == heg_hvg
    written = pd.read_csv(out / "summary.tsv", sep="\t").set_index("metric")
    assert written.loc["HVG", "heg_hvg"] == heg_hvg and pd.isna(written.loc["MSE", "heg_hvg"])


def _head(name: str, gene_sets: dict):
    from genedml.report.results import HeadResults

    summary = pd.DataFrame({"metric": ["HEG", "HVG"], "mean": [0.2, 0.3], "std": [0.01, 0.02], "n_folds": 2})
    folds = [{"fold": 0, "protocol": "honest"}, {"fold": 1, "protocol": "honest"}]
    per_fold = pd.DataFrame({"fold": [0, 1], "HEG": [0.19, 0.21], "HVG": [0.28, 0.32]})
    return HeadResults(name, {}, summary, per_fold, pd.DataFrame(), pd.DataFrame(), gene_sets, folds, {})


def test_report_tables_name_the_definition():
    """The metric tables' caption says which HEG / HVG genes the numbers average (gene_sets.json)."""
    from genedml.report.tables import heg_hvg_note, metrics_table

    pooled = _head("ridge", {"n_top": 50, "heg_hvg": "pooled", "HEG": ["g0"], "HVG": ["g1"]})
    legacy = _head("old", {"n_top": 50, "HEG": {"S1": ["g0"]}, "HVG": {"S1": ["g1"]}})  # before the field
    caption = metrics_table([pooled]).caption
    assert caption.startswith("HEG / HVG: DKAN's pooled gene sets (one set for the whole run")
    assert "the 50 genes with the highest mean label" in caption
    assert legacy.heg_hvg == "per_section" and _head("x", {}).heg_hvg is None
    assert heg_hvg_note([legacy], short=True) == "HEG / HVG: per-section gene sets (BLEEP's code)."
    both = metrics_table([pooled, legacy]).caption
    assert "DKAN's pooled gene sets for ridge; per-section gene sets (BLEEP's code) for old" in both
    assert "do not compare" in both
    assert heg_hvg_note([_head("x", {})]) == ""
