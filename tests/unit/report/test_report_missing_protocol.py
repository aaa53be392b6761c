"""The report on a run's real files (predictions.h5ad, fold.json, evaluate's tables in tmp_path): a mean over
folds or sections with a missing value says so, and every row of this run names its protocol."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from genedml.evaluation.evaluate import evaluate_head
from genedml.report import build_report
from genedml.report.results import MeanOver, fold_protocol, head_protocol
from genedml.report.specs import report_specs
from genedml.report.tables import fmt_mean
from support.sections import synthetic_section

FOLDS = {0: ["S1", "S2"], 1: ["S3"], 2: ["S4"]}
PATIENTS = {"S1": "PA", "S2": "PA", "S3": "PB", "S4": "PC"}
HONEST = {"selection": "inner validation split of training patients", "protocol": "honest"}
REFERENCE = {"selection": "TEST fold (reference protocol, optimistic)", "protocol": "reference"}
LEGACY_REFERENCE = {"selection": "TEST fold (reference protocol, optimistic)"}  # fold.json before `protocol`


def make_run(tmp_path, heads: dict, edit=None):
    """A results folder: per head, per fold its predictions.h5ad and fold.json (``heads``: head -> the
    fold.json selection fields of each fold), then `evaluate_head`'s tables; folds.tsv, genes.tsv, a sheet."""
    import anndata as ad

    results = tmp_path / "results"
    rng = np.random.default_rng(3)
    w = rng.normal(size=(16, 5))
    for head, protocols in heads.items():
        paths = []
        for fold, samples in FOLDS.items():
            parts = []
            for sample in samples:
                section = synthetic_section(sample, rng, w, n=25, g=5)
                pred = section.targets + rng.normal(scale=0.5, size=section.targets.shape).astype(np.float32)
                if edit is not None:
                    edit(head, sample, section.targets, pred)
                parts.append(predictions_anndata(section, pred, fold, head))
            fold_dir = results / "heads" / head / f"fold{fold}"
            fold_dir.mkdir(parents=True)
            ad.concat(parts, merge="same", uns_merge="same").write_h5ad(fold_dir / "predictions.h5ad")
            record = {"head": head, "fold": fold, "test": samples, **protocols[fold]}
            (fold_dir / "fold.json").write_text(json.dumps(record))
            paths.append(fold_dir / "predictions.h5ad")
        evaluate_head(head, paths, results / "metrics" / head, n_top=3, recipe="log1p", heg_hvg="pooled")
    rows = [
        {"fold": f, "sample": s, "patient": PATIENTS[s], "split": "test" if s in FOLDS[f] else "train"}
        for f in FOLDS
        for s in PATIENTS
    ]
    (results / "folds").mkdir()
    pd.DataFrame(rows).to_csv(results / "folds" / "folds.tsv", sep="\t", index=False)
    (results / "genes").mkdir()
    pd.DataFrame({"gene": [f"g{i}" for i in range(5)]}).to_csv(results / "genes" / "genes.tsv", sep="\t", index=False)
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame({"sample": list(PATIENTS), "patient": list(PATIENTS.values()), "dataset": "demo"}).to_csv(
        sheet, sep="\t", index=False
    )
    return results, sheet


def predictions_anndata(section, pred, fold, head):
    from genedml.heads.train import predictions_anndata as write

    return write(section, pred, fold, head)


def report(tmp_path, results, sheet, reports: dict):
    """Build the report; ``reports``: head -> its config's ``report:`` key."""
    specs = report_specs({head: {"type": "ridge", "report": rep} for head, rep in reports.items()})
    doc = build_report(results, specs, sheet, "log1p", [], tmp_path / "site", tmp_path / "report.md", n_top=3)
    tables = {b[1].id: b[1] for b in doc.blocks if b[0] == "table"}
    return doc, tables, (tmp_path / "site" / "index.html").read_text()


def this_run(table1, model):
    frame = table1.frame
    i = frame.index[(frame["Source"] == "this run") & (frame["Model"] == model)][0]
    return frame.loc[i], table1.row_classes[frame.index.get_loc(i)]


def test_fmt_mean_is_the_one_convention():
    assert fmt_mean(MeanOver(0.5123, 0.03, 8, 8, 11, 11)) == "0.512 ± 0.030"
    assert fmt_mean(MeanOver(0.5123, 0.03, 7, 8, 10, 11)) == "0.512 ± 0.030 (7 of 8 folds, 10 of 11 sections)"
    assert fmt_mean(MeanOver(0.5123, 0.03, 8, 8, 10, 11)) == "0.512 ± 0.030 (10 of 11 sections)"
    assert fmt_mean(MeanOver(0.5123, float("nan"), 1, 2)) == "0.512 (1 of 2 folds)"
    assert fmt_mean(MeanOver(float("nan"), float("nan"), 0, 3, 0, 4)) == "n/a (0 of 3 folds, 0 of 4 sections)"
    assert tuple(MeanOver(0.5, 0.1, 2, 2)) == (0.5, 0.1)  # unpacks as mean, std


@pytest.mark.parametrize(
    "facts, kind",
    [
        ({"protocol": "honest", "selection": "TEST fold"}, "honest"),  # the field wins over the words
        ({"protocol": "reference"}, "reference"),
        (LEGACY_REFERENCE, "reference"),
        ({"selection": "inner validation split of training patients"}, "honest"),
        ({"selection": "none (no validation sections)"}, "honest"),
        ({}, "unknown"),
    ],
)
def test_fold_protocol_reads_the_field_then_the_selection_words(facts, kind):
    assert fold_protocol(facts) == kind


def test_head_protocol_mixed_is_not_one_of_them():
    assert head_protocol([HONEST, HONEST]) == "honest"
    assert head_protocol([REFERENCE, LEGACY_REFERENCE]) == "reference"
    assert head_protocol([HONEST, REFERENCE]) == "mixed"
    assert head_protocol([]) == "unknown"


def test_missing_fold_value_is_flagged_in_table1_and_the_summary(tmp_path):
    """Every gene constant in fold 2's only section (S4): its PCC is undefined, so PCC(A) is the mean of
    2 of 3 folds; the report says so in Table 1 and in the metrics table, MSE is over all folds."""

    def edit(head, sample, truth, pred):
        if sample == "S4":
            pred[:] = 0.5

    results, sheet = make_run(tmp_path, {"ridge": [HONEST] * 3}, edit)
    doc, tables, page = report(tmp_path, results, sheet, {"ridge": {}})
    row, cls = this_run(tables["table1"], "ridge")
    assert row["PCC(A)"].endswith(" (2 of 3 folds, 3 of 4 sections)") and " ± " in row["PCC(A)"]
    assert row["PCC(H)"].endswith(" (2 of 3 folds, 3 of 4 sections)")
    assert "of" not in row["MSE"] and " ± " in row["MSE"]  # every fold has an MSE
    assert row["Model selection"] == "inner validation" and cls == "this-run group-start"
    assert "only k of the n folds" in tables["table1"].caption
    metrics = tables["metrics"].frame.iloc[0]
    assert metrics["PCC(A)"].endswith("(2 of 3 folds, 3 of 4 sections)") and metrics["Folds"] == 3
    assert metrics["Genes with undefined r"] == 5 and metrics["Sections"] == 4
    section_frame = tables["per-section-ridge"].frame.set_index("sample")
    assert section_frame.loc["S4", "genes with undefined r"] == 5 and np.isnan(section_frame.loc["S4", "PCC(A)"])
    # both renderings show it; the note stays in a right-aligned number cell
    assert "(2 of 3 folds, 3 of 4 sections)" in (tmp_path / "report.md").read_text()
    assert '<td class="num">' + row["PCC(A)"] + "</td>" in page


def test_a_missing_section_value_is_flagged_even_when_every_fold_has_one(tmp_path):
    def edit(head, sample, truth, pred):
        if sample == "S2":  # fold 0 keeps S1's PCC
            pred[:] = 0.5

    results, sheet = make_run(tmp_path, {"ridge": [HONEST] * 3}, edit)
    _, tables, _ = report(tmp_path, results, sheet, {"ridge": {}})
    row, _ = this_run(tables["table1"], "ridge")
    assert row["PCC(A)"].endswith(" (3 of 4 sections)") and "folds" not in row["PCC(A)"]  # every fold has one


def test_complete_values_carry_no_note(tmp_path):
    results, sheet = make_run(tmp_path, {"ridge": [HONEST] * 3})
    _, tables, _ = report(tmp_path, results, sheet, {"ridge": {}})
    row, _ = this_run(tables["table1"], "ridge")
    assert all("(" not in row[c] for c in ("MSE", "MAE", "PCC(A)", "PCC(H)"))
    assert "only k of the n folds" not in tables["table1"].caption


def test_reference_and_mixed_protocols_are_labelled_everywhere(tmp_path):
    heads = {
        "ridge": [HONEST] * 3,
        "genedml": [REFERENCE] * 3,
        "legacy": [LEGACY_REFERENCE] * 3,  # fold.json without `protocol`: read from `selection`
        "mixed": [HONEST, REFERENCE, HONEST],
        "sweep-a": [REFERENCE] * 3,
        "abl": [HONEST] * 3,
    }
    results, sheet = make_run(tmp_path, heads)
    specs = {name: {} for name in ("ridge", "genedml", "legacy", "mixed")}
    specs |= {"sweep-a": {"sweep": {"k": 9}}, "abl": {"ablation": "w/o x"}}
    doc, tables, page = report(tmp_path, results, sheet, specs)
    ref_label = "test fold (reference protocol, optimistic)"
    t1 = tables["table1"]
    for model, label, optimistic in [
        ("ridge", "inner validation", False),
        ("genedml", ref_label, True),
        ("legacy", ref_label, True),
        ("mixed", "mixed: honest in folds 0, 2; test fold (optimistic) in fold 1", True),
    ]:
        row, cls = this_run(t1, model)
        assert row["Model selection"] == label
        assert ("optimistic" in cls.split()) is optimistic
    assert "optimistic and do not compare" in t1.caption
    assert '<tr class="this-run optimistic">' in page
    metrics = tables["metrics"].frame.set_index("Config key")["Model selection"]
    assert metrics["genedml"] == ref_label and metrics["mixed"].startswith("mixed: ")
    sweep = tables["sweep-k"]
    assert sweep.frame["Model selection"].tolist() == [ref_label] and sweep.row_classes == ["this-run optimistic"]
    assert tables["ablation"].frame["Model selection"].tolist() == ["inner validation"]
    assert tables["per-section-genedml"].caption.startswith(f"Model selection: {ref_label}.")
    facts = tables["protocol"].frame.set_index("Head")
    assert facts.loc["mixed", "Folds per protocol"] == "honest 2, reference 1"
    assert facts.loc["legacy", "Protocol"] == ref_label
    notes = [b[1] for b in doc.blocks if b[0] == "p" and b[2] == "note"]
    assert any("genedml, legacy, sweep-a select their model on the TEST fold" in n for n in notes)
    assert any("mixed mix protocols" in n for n in notes)
