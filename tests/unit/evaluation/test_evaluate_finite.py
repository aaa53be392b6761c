"""`evaluate_head` on real predictions.h5ad files: non-finite predictions or truth fail naming the head, the
fold, the section and the file, and write nothing; constant genes are counted, not an error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genedml.errors import InputError, NonFiniteError
from genedml.evaluation.evaluate import evaluate_head
from genedml.heads.train import predictions_anndata
from support.sections import synthetic_section

GENES = 6


def write_predictions(tmp_path, head="ridge", folds=((0, ["S1", "S2"]), (1, ["S3"]), (2, ["S4"])), edit=None):
    """One predictions.h5ad per fold, as `genedml train` writes it: X = prediction, layers truth and
    prediction, obs sample / patient / fold / barcode. ``edit(sample, truth, prediction)`` may change a
    section's matrices in place (after the prediction is made, before the file is written)."""
    import anndata as ad

    rng = np.random.default_rng(7)
    w = rng.normal(size=(16, GENES))
    paths = []
    for fold, samples in folds:
        parts = []
        for sample in samples:
            section = synthetic_section(sample, rng, w, n=30, g=GENES)
            pred = section.targets + rng.normal(scale=0.5, size=section.targets.shape).astype(np.float32)
            if edit is not None:
                edit(sample, section.targets, pred)
            parts.append(predictions_anndata(section, pred, fold, head))
        path = tmp_path / "heads" / head / f"fold{fold}" / "predictions.h5ad"
        path.parent.mkdir(parents=True)
        ad.concat(parts, merge="same", uns_merge="same").write_h5ad(path)
        paths.append(path)
    return paths


def run(tmp_path, paths, head="ridge"):
    return evaluate_head(
        head, paths, tmp_path / "metrics" / head, n_top=3, recipe="log1p", heg_hvg="pooled", export_dir=None
    )


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_prediction_fails_naming_head_fold_and_section(tmp_path, value, kind):
    def edit(sample, truth, pred):
        if sample == "S3":
            pred[[2, 5], 1] = value
            pred[5, 4] = value

    paths = write_predictions(tmp_path, edit=edit)
    with pytest.raises(NonFiniteError) as err:
        run(tmp_path, paths)
    e = err.value
    assert isinstance(e, InputError)
    assert (e.head, e.fold, e.sample, e.path) == ("ridge", 1, "S3", str(paths[1]))
    message = str(e)
    for part in ("head 'ridge'", "fold 1", "sample 'S3'", str(paths[1]), "prediction (X)"):
        assert part in message
    counts = "3 NaN, 0 inf" if kind == "NaN" else "0 NaN, 3 inf"
    assert f"3 non-finite value(s) ({counts}) in 2 of 30 spots and 2 of {GENES} genes" in message
    # layers['prediction'] holds the same values: listed too, and nothing was written
    assert "also prediction (layers['prediction']) of 'S3' (fold 1)" in message
    assert not (tmp_path / "metrics").exists()


def test_non_finite_prediction_layer_alone_fails(tmp_path):
    import anndata as ad

    paths = write_predictions(tmp_path)
    a = ad.read_h5ad(paths[2])
    a.layers["prediction"][0, 0] = np.nan  # X stays finite: the exported layer would still carry the NaN
    a.write_h5ad(paths[2])
    with pytest.raises(
        NonFiniteError, match=r"fold 2: prediction \(layers\['prediction'\]\) holds 1 non-finite"
    ) as err:
        run(tmp_path, paths)
    assert err.value.sample == "S4"
    assert not (tmp_path / "metrics").exists()


def test_non_finite_truth_is_an_input_error_naming_the_section(tmp_path):
    def edit(sample, truth, pred):
        if sample == "S2":
            truth[0, :] = np.nan

    paths = write_predictions(tmp_path, edit=edit)
    with pytest.raises(InputError, match=r"sample 'S2'.*fold 0: truth \(layers\['truth'\]\) holds 6 non-finite") as err:
        run(tmp_path, paths)
    assert f"1 of 30 spots and {GENES} of {GENES} genes" in str(err.value)
    assert not (tmp_path / "metrics").exists()


def test_constant_genes_are_counted_not_an_error(tmp_path):
    def edit(sample, truth, pred):
        if sample == "S1":
            truth[:, 2] = 1.5  # constant truth: r undefined
        if sample in ("S1", "S3"):
            pred[:, 4] = 0.0  # constant prediction: r undefined

    out = tmp_path / "metrics" / "ridge"
    summary = run(tmp_path, write_predictions(tmp_path, edit=edit)).set_index("metric")
    per_section = pd.read_csv(out / "per_section.tsv", sep="\t").set_index("sample")
    assert per_section["n_genes_undefined_r"].to_dict() == {"S1": 2, "S2": 0, "S3": 1, "S4": 0}
    assert per_section["PCC_A"].notna().all()
    per_fold = pd.read_csv(out / "per_fold.tsv", sep="\t").set_index("fold")
    assert per_fold["n_sections"].tolist() == [2, 1, 1] and per_fold["n_PCC_A"].tolist() == [2, 1, 1]
    assert per_fold["n_genes_undefined_r"].tolist() == [2, 1, 0]
    assert summary.loc["PCC_A", "n_genes_undefined_r"] == 2  # genes 2 and 4
    assert np.isnan(summary.loc["MSE", "n_genes_undefined_r"])
    assert summary.loc["PCC_A", ["n_folds", "n_folds_total", "n_sections", "n_sections_total"]].tolist() == [3, 3, 4, 4]
    per_gene = pd.read_csv(out / "per_gene.tsv", sep="\t").set_index("gene")
    assert per_gene["sections_undefined_r"].tolist() == [0, 0, 1, 0, 2, 0]
    written = pd.read_csv(out / "summary.tsv", sep="\t")
    assert {"n_folds_total", "n_sections", "n_sections_total", "n_genes_undefined_r"} <= set(written.columns)


def test_a_fold_without_pcc_is_counted_in_the_summary(tmp_path):
    """Every gene constant in fold 2's only section: its PCC is undefined, the fold drops out of the PCC means
    and the summary says so (2 of 3 folds, 3 of 4 sections) instead of only a smaller n_folds."""

    def edit(sample, truth, pred):
        if sample == "S4":
            pred[:] = 0.25

    summary = run(tmp_path, write_predictions(tmp_path, edit=edit)).set_index("metric")
    assert summary.loc["PCC_A", ["n_folds", "n_folds_total", "n_sections", "n_sections_total"]].tolist() == [2, 3, 3, 4]
    assert summary.loc["MSE", ["n_folds", "n_folds_total", "n_sections", "n_sections_total"]].tolist() == [3, 3, 4, 4]
    assert summary.loc["PCC_A", "n_genes_undefined_r"] == GENES


def test_evaluate_sections_refuses_non_finite_matrices_too():
    from genedml.evaluation.metrics import evaluate_sections

    truth = np.arange(12.0).reshape(4, 3)
    pred = truth.copy()
    pred[1, 2] = np.inf
    with pytest.raises(NonFiniteError, match=r"sample 'a'.*fold 3: prediction holds 1 non-finite value\(s\)"):
        evaluate_sections(
            [{"sample": "a", "fold": 3, "truth": truth, "prediction": pred}], ["g0", "g1", "g2"], 1, "pooled"
        )
