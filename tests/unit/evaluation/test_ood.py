"""OOD scores on real feature stores holding embeddings of a known distribution.

Training and held-out sections are drawn from N(0, I): by construction the held-out spots' scores have
median 1 in their own fold, a fresh section from the same distribution scores about 1, and a section shifted
by several standard deviations scores far above 1.
"""

import inspect
import json
import logging

import numpy as np
import pandas as pd
import pytest

from genedml.errors import InputError
from genedml.evaluation.ood import OODSpec, build_reference, read_local, score_sample, score_spots, summarize
from genedml.pipeline import schema
from genedml.study.folds import read_folds
from support.feature_stores import write_feature_store

D, N_SPOTS = 16, 300
SETTINGS = {"k": 10, "pca": 8, "max_train_spots": 500, "seed": 0}
FOLD_ROWS = [  # fold, sample, patient, split
    (0, "A", "PA", "train"),
    (0, "B", "PB", "train"),
    (0, "C", "PC", "val"),
    (0, "D", "PD", "test"),
    (0, "E", "PE", "test"),
    (1, "C", "PC", "train"),
    (1, "D", "PD", "train"),
    (1, "E", "PE", "val"),
    (1, "A", "PA", "test"),
    (1, "B", "PB", "test"),
]


def write_folds(path, rows):
    pd.DataFrame(rows, columns=["fold", "sample", "patient", "split"]).to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood")
    rng = np.random.default_rng(1)
    features = {s: write_feature_store(root / f"{s}.zarr", s, rng.normal(size=(N_SPOTS, D))) for s in "ABCDE"}
    extra = {
        "fresh": write_feature_store(root / "fresh.zarr", "fresh", rng.normal(size=(N_SPOTS, D))),
        "shifted": write_feature_store(root / "shifted.zarr", "shifted", rng.normal(size=(N_SPOTS, D)) + 6.0),
        "other": write_feature_store(
            root / "other.zarr", "other", rng.normal(size=(N_SPOTS, D)), encoder="uni", weights_sha256="1" * 64
        ),
    }
    folds_tsv = write_folds(root / "folds.tsv", FOLD_ROWS)
    facts = build_reference(read_folds(folds_tsv), features, root / "reference", **SETTINGS)
    return root, root / "reference", features, extra, folds_tsv, facts


def test_reference_files_splits_and_defaults(study):
    root, ref, features, _, _, facts = study
    assert sorted(p.name for p in ref.iterdir()) == ["fold0.npz", "fold1.npz", "reference.json"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folder left beside it
    on_disk = json.loads((ref / "reference.json").read_text())
    assert on_disk["folds"]["0"]["test"] == ["D", "E"] and on_disk["folds"]["1"]["train"] == ["C", "D"]
    assert on_disk["folds"]["0"]["val"] == ["C"] and on_disk["k"] == 10 and on_disk["pca"] == 8
    assert on_disk["encoder_attrs"]["encoder"] == "test-encoder" and on_disk["encoder_attrs"]["embed_dim"] == D
    assert on_disk["folds"]["0"]["n_train_spots"] == 3 * N_SPOTS and on_disk["folds"]["0"]["n_train_kept"] == 500
    with np.load(ref / "fold0.npz", allow_pickle=False) as z:
        assert z["train"].dtype == np.float32 and z["train"].shape == (500, 8)
        assert z["pca_components"].shape == (8, D) and z["mean"].shape == (D,) and z["std"].shape == (D,)
        assert float(z["scale"]) == pytest.approx(on_disk["folds"]["0"]["scale"])
        assert z["quantiles"][list(z["quantile_levels"]).index(0.5)] == pytest.approx(float(z["scale"]))
    # the function's defaults are the config schema's (slides.ood)
    signature = inspect.signature(build_reference).parameters
    assert {k: signature[k].default for k in SETTINGS} == OODSpec.from_config().to_config()


def test_known_answer_held_out_fresh_and_shifted(study):
    _, ref, features, extra, _, _ = study
    held_out = np.concatenate([read_local(features[s])[0] for s in "DE"])
    per_fold, score = score_spots(ref, held_out, folds=[0])
    assert per_fold.shape == (1, 2 * N_SPOTS) and per_fold.dtype == np.float32
    assert np.median(score) == pytest.approx(1.0, abs=1e-5)  # the calibration set, by construction
    _, fresh = score_spots(ref, read_local(extra["fresh"])[0])
    assert np.median(fresh) == pytest.approx(1.0, rel=0.15)
    _, shifted = score_spots(ref, read_local(extra["shifted"])[0])
    assert np.median(shifted) > 3 and shifted.min() > 2


def test_chunking_does_not_change_the_scores(study):
    _, ref, _, extra, _, _ = study
    local = np.concatenate([read_local(extra["fresh"])[0], read_local(extra["shifted"])[0]])
    small = score_spots(ref, local, chunk=7)
    whole = score_spots(ref, local, chunk=4096)
    for a, b in zip(small, whole):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_summary_and_warning_for_a_mostly_ood_section(study, tmp_path, caplog):
    _, ref, _, extra, _, _ = study
    with caplog.at_level(logging.WARNING):
        summary = score_sample(ref, extra["shifted"], "shifted", tmp_path / "s.tsv", tmp_path / "s.json", 2.0, 0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("shifted" in m and "mostly out of distribution" in m for m in warnings)
    written = json.loads((tmp_path / "s.json").read_text())
    assert written["mostly_ood"] and summary["mostly_ood"] and written["fraction_above"] == 1.0
    table = pd.read_csv(tmp_path / "s.tsv", sep="\t")
    assert list(table.columns) == ["barcode", "score", "score_fold0", "score_fold1"] and len(table) == N_SPOTS
    np.testing.assert_allclose(table["score"], table[["score_fold0", "score_fold1"]].mean(1), rtol=1e-5)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fresh = score_sample(ref, extra["fresh"], "fresh", tmp_path / "f.tsv", tmp_path / "f.json", 2.0, 0.5)
    assert not fresh["mostly_ood"] and not [r for r in caplog.records if r.levelno == logging.WARNING]
    s = summarize(np.array([0.5, 1.0, 3.0, 4.0]), threshold=2.0, warn_fraction=0.5)
    assert s["n"] == 4 and s["median"] == 2.0 and s["fraction_above"] == 0.5 and not s["mostly_ood"]


def test_another_encoders_store_is_refused_naming_both(study, tmp_path):
    root, ref, features, extra, folds_tsv, _ = study
    with pytest.raises(InputError) as err:
        score_sample(ref, extra["other"], "other", tmp_path / "o.tsv", tmp_path / "o.json")
    message = str(err.value)
    assert "'other'" in message and str(extra["other"]) in message and str(ref) in message and "uni" in message
    assert not (tmp_path / "o.tsv").exists() and not (tmp_path / "o.json").exists()
    mixed = {**features, "E": extra["other"]}
    with pytest.raises(InputError, match="one encoder"):
        build_reference(read_folds(folds_tsv), mixed, tmp_path / "mixed", **SETTINGS)
    assert not (tmp_path / "mixed").exists()


def test_a_test_sample_in_its_folds_training_set_is_refused(study, tmp_path):
    _, _, features, _, _, _ = study
    leaky = write_folds(tmp_path / "leaky.tsv", [*FOLD_ROWS, (0, "D", "PD", "train")])
    with pytest.raises(InputError, match="fold 0.*'D'"):
        build_reference(read_folds(leaky), features, tmp_path / "leaky", **SETTINGS)


def test_held_out_only_uses_the_folds_that_held_the_sample_out(study, tmp_path):
    _, _, features, _, folds_tsv, _ = study
    # every training spot kept and k = 1: a fold that trained on a section finds each of its spots itself
    ref = tmp_path / "ref"
    build_reference(read_folds(folds_tsv), features, ref, k=1, pca=8, max_train_spots=1000, seed=0)
    score_sample(ref, features["A"], "A", tmp_path / "a.tsv", tmp_path / "a.json")
    table = pd.read_csv(tmp_path / "a.tsv", sep="\t")
    assert json.loads((tmp_path / "a.json").read_text())["folds"] == [0, 1]
    assert (table["score_fold0"] < 1e-3).all()  # fold 0 trained on A
    assert table["score_fold1"].median() == pytest.approx(1.0, rel=0.15)  # half of fold 1's calibration set
    score_sample(ref, features["A"], "A", tmp_path / "h.tsv", tmp_path / "h.json", held_out_only=True)
    held = pd.read_csv(tmp_path / "h.tsv", sep="\t")
    assert json.loads((tmp_path / "h.json").read_text())["folds"] == [1]
    assert list(held.columns) == ["barcode", "score", "score_fold1"]
    np.testing.assert_allclose(held["score"], table["score_fold1"], rtol=1e-5)
    # a section no fold holds out is scored by every fold
    score_sample(ref, features["A"], "new", tmp_path / "n.tsv", tmp_path / "n.json", held_out_only=True)
    assert json.loads((tmp_path / "n.json").read_text())["folds"] == [0, 1]


def test_cli_end_to_end(study, tmp_path):
    from genedml.cli import build_parser, main

    _, _, features, extra, folds_tsv, _ = study
    pairs = [f"{s}={p}" for s, p in features.items()]
    out = tmp_path / "ref"
    flags = ["--k", "5", "--pca", "0", "--max-train-spots", "400", "--seed", "3"]
    assert main(["ood-reference", "--folds", str(folds_tsv), "--features", *pairs, "--out", str(out), *flags]) == 0
    facts = json.loads((out / "reference.json").read_text())
    assert (facts["k"], facts["pca"], facts["max_train_spots"], facts["seed"]) == (5, 0, 400, 3)
    with np.load(out / "fold1.npz", allow_pickle=False) as z:
        assert z["train"].shape == (400, D) and z["pca_components"].shape == (0, D)

    def score(sample, path, *more):
        tsv, js = tmp_path / f"{sample}.tsv", tmp_path / f"{sample}.json"
        argv = ["ood-score", "--reference", str(out), "--features", str(path), "--sample", sample]
        return main([*argv, "--out-tsv", str(tsv), "--out-json", str(js), *more]), tsv, js

    rc, tsv, js = score("shifted", extra["shifted"], "--threshold", "3", "--warn-fraction", "0.9")
    assert rc == 0 and len(pd.read_csv(tsv, sep="\t")) == N_SPOTS
    summary = json.loads(js.read_text())
    assert summary["threshold"] == 3.0 and summary["warn_fraction"] == 0.9 and summary["mostly_ood"]
    rc, _, js = score("A", features["A"], "--held-out-only")
    assert rc == 0 and json.loads(js.read_text())["folds"] == [1]
    rc, tsv, js = score("other", extra["other"])
    assert rc == 2 and not tsv.exists() and not js.exists()
    assert score("fresh", extra["fresh"], "--warn-fraction", "1.5")[0] == 2  # outside the schema's range
    # the flags' defaults are the config schema's
    args = build_parser().parse_args(
        ["ood-score", "--reference", "r", "--features", "f", "--sample", "s"] + ["--out-tsv", "t", "--out-json", "j"]
    )
    slides = schema.with_defaults("slides", {}, ("ood_threshold", "ood_warn_fraction"))
    assert (args.threshold, args.warn_fraction) == (slides["ood_threshold"], slides["ood_warn_fraction"])
