"""One cross-validation fold of the Gene-DML head on demo sections, through the real stages.

Real pyramidal TIFFs -> tiles -> embeddings (random-init ResNet-18, one grid of tiles per slide) -> targets
-> ``train_fold``; the ridge baseline runs on the same fold and its PCC(A) is reported beside Gene-DML's.
"""

import json

import anndata as ad
import numpy as np
import pytest

from genedml.evaluation.metrics import nanmean, pearson_per_gene
from genedml.heads.ridge import RidgeHead
from genedml.heads.train import TrainingError, train_fold
from genedml.io.demo import DemoSpec, make_section
from genedml.io.hest import SamplePaths
from genedml.study.targets import TargetSpec, build_sample_targets
from genedml.tiles.embed import embed_sample
from genedml.tiles.encoders import build_encoder
from genedml.tiles.geometry import TileSpec, tile_sample

SECTIONS = [("S1", "PA"), ("S2", "PA"), ("S3", "PB"), ("S4", "PB"), ("S5", "PC")]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_fold(tmp_path_factory):
    root = tmp_path_factory.mktemp("gdml_fold")
    encoder = build_encoder({"name": "resnet18", "allow_random_init": True})
    features, targets = {}, {}
    genes = None
    for sample, patient in SECTIONS:
        make_section(sample, patient, root, DemoSpec.of(width_um=1400, height_um=1000, n_genes=60))
        paths = SamplePaths.in_hest_dir(root, sample)
        geometry = tile_sample(
            paths, TileSpec.of(tile_px=32, target_mpp=4.0, grid=5, neighbour_mode="grid"), root / f"{sample}.npz"
        )
        embed_sample(geometry, encoder, root / f"{sample}.zarr", batch_size=256, progress=False)
        if genes is None:
            genes = ad.read_h5ad(paths.st).var_names[:40].tolist()
        build_sample_targets(paths.st, sample, genes, TargetSpec.of(), root / f"{sample}.h5ad")
        features[sample], targets[sample] = root / f"{sample}.zarr", root / f"{sample}.h5ad"
    folds = root / "folds.tsv"
    rows = [
        ("train", "S1", "PA"),
        ("train", "S2", "PA"),
        ("val", "S5", "PC"),
        ("test", "S3", "PB"),
        ("test", "S4", "PB"),
    ]
    folds.write_text("fold\tsample\tpatient\tsplit\n" + "".join(f"0\t{s}\t{p}\t{k}\n" for k, s, p in rows))
    return root, folds, features, targets


def fold_scores(out_dir, train_mean=None):
    pred = ad.read_h5ad(out_dir / "predictions.h5ad")
    per_section = []
    for sample in ("S3", "S4"):
        part = pred[pred.obs["sample"] == sample]
        truth, p = np.asarray(part.layers["truth"]), np.asarray(part.X)
        mse = float(((truth - p) ** 2).mean())
        mean_mse = None if train_mean is None else float(((truth - train_mean) ** 2).mean())
        per_section.append((nanmean(pearson_per_gene(truth, p)), mse, mean_mse))
    return [float(np.mean([s[i] for s in per_section])) if per_section[0][i] is not None else None for i in range(3)]


@pytest.fixture(scope="module")
def trained(demo_fold):
    root, folds, features, targets = demo_fold
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gdml = {"type": "genedml", "epochs": 25, "patience": 25}
        train_fold("genedml", gdml, folds, 0, features, targets, root / "genedml")
        ridge = {"type": "ridge", "alphas": [1, 100, 10000], "pca": 32, "features": ["local", "neighbour_mean"]}
        train_fold("ridge", ridge, folds, 0, features, targets, root / "ridge")
    finally:
        torch.set_num_threads(threads)
    return demo_fold


def test_genedml_fold_beats_the_mean_predictor(trained, capsys):
    root, folds, features, targets = trained
    train_mean = np.concatenate([ad.read_h5ad(targets[s]).X for s in ("S1", "S2")]).mean(0)
    pcc, mse, mean_mse = fold_scores(root / "genedml", train_mean)
    ridge_pcc, ridge_mse, _ = fold_scores(root / "ridge")
    facts = json.loads((root / "genedml/fold.json").read_text())
    with capsys.disabled():
        print(
            f"\ndemo fold 0: genedml PCC(A) {pcc:.3f} MSE {mse:.4f} | ridge PCC(A) {ridge_pcc:.3f} MSE {ridge_mse:.4f} | "
            f"training-mean MSE {mean_mse:.4f} | best epoch {facts['fit']['best_epoch']}"
        )
    assert mse < mean_mse  # better than predicting the training mean for every spot
    assert pcc > 0.2  # the mean predictor has no correlation at all
    assert (root / "genedml/history.csv").exists() and (root / "genedml/model.pt").exists()
    assert facts["selection"] == "inner validation split of training patients"
    assert facts["protocol"] == "honest" and facts["val"] == ["S5"] and facts["train"] == ["S1", "S2"]


def test_reference_protocol_trains_on_every_non_test_patient_and_selects_on_the_test_fold(trained, tmp_path):
    root, folds, features, targets = trained
    ridge = {"type": "ridge", "alphas": [1, 100, 10000], "pca": 32, "protocol": "reference"}
    train_fold("ridge", ridge, folds, 0, features, targets, tmp_path / "ridge")
    facts = json.loads((tmp_path / "ridge/fold.json").read_text())
    assert facts["protocol"] == "reference"
    assert facts["selection"] == "TEST fold (reference protocol, optimistic)"
    assert facts["train"] == ["S1", "S2", "S5"] and facts["val"] == [] and facts["test"] == ["S3", "S4"]
    # the penalty was chosen on the test sections, and the model was not refitted on them
    head = RidgeHead.load(tmp_path / "ridge", ridge)
    scores = {float(a): v for a, v in facts["fit"]["val_pcc_by_alpha"].items()}
    assert max(scores, key=scores.get) == head.alpha
    assert facts["fit"]["n_train_spots"] == sum(ad.read_h5ad(targets[s]).n_obs for s in ("S1", "S2", "S5"))


def test_a_non_finite_target_stops_training_naming_head_fold_and_epoch(demo_fold, tmp_path):
    root, folds, features, targets = demo_fold
    bad = ad.read_h5ad(targets["S1"])
    bad.X[0, 0] = np.inf
    bad.write_h5ad(tmp_path / "S1.h5ad")
    with pytest.raises(TrainingError, match="head 'gdml', fold 0: genedml: non-finite training loss at epoch 0"):
        train_fold(
            "gdml",
            {"type": "genedml", "epochs": 2},
            folds,
            0,
            features,
            {**targets, "S1": tmp_path / "S1.h5ad"},
            tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


def test_predict_applies_the_fold_models_to_a_section_without_counts(trained, tmp_path):
    from genedml.cli import main

    root, folds, features, targets = trained
    out = tmp_path / "new" / "S3.h5ad"

    def predict(features_path, out_path) -> int:
        """`genedml predict` of section S3 with the trained genedml fold models."""
        return main(
            [
                "predict",
                "--head",
                "genedml",
                "--models",
                str(root / "genedml"),
                "--sample",
                "S3",
                "--features",
                str(features_path),
                "--reference-features",
                str(features["S1"]),
                "--out",
                str(out_path),
            ]
        )

    rc = predict(features["S3"], out)
    assert rc == 0
    pred = ad.read_h5ad(out)
    held_out = ad.read_h5ad(root / "genedml/predictions.h5ad")
    held_out = held_out[held_out.obs["sample"] == "S3"]
    assert list(pred.var_names) == list(held_out.var_names)
    assert list(pred.obs_names) == held_out.obs["barcode"].tolist()
    # the fold model predicts what training wrote for its held-out section; X is the mean over fold models
    np.testing.assert_allclose(pred.layers["fold0"], np.asarray(held_out.X), atol=1e-5)
    np.testing.assert_allclose(pred.X, pred.layers["fold0"])
    assert list(pred.uns["genedml"]["folds"]) == [0] and pred.obsm["spatial"].shape == (pred.n_obs, 2)
    # features from another encoder are refused with the sample named, and nothing is written
    import zarr

    other = tmp_path / "other.zarr"
    import shutil

    shutil.copytree(features["S3"], other)
    zarr.open_group(str(other), mode="r+").attrs["encoder"] = "uni"
    bad = tmp_path / "bad.h5ad"
    rc = predict(other, bad)
    assert rc == 2 and not bad.exists()
