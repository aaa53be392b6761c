"""`predict` reads a section a block of spots at a time and resumes an interrupted run: the blocks give the
whole section's predictions, the std layer is the folds' spread, and finished blocks are reused."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from genedml.errors import InputError
from genedml.heads import Section
from genedml.heads.predict import predict_sample
from genedml.heads.ridge import RidgeHead
from genedml.tiles.features import load_features
from support.feature_stores import write_feature_store

GENES = ["G0", "G1", "G2"]


def fold_model(folder, fold: int, store, seed: int):
    """A ridge fold model trained on ``store``'s spots, saved as the train step saves one."""
    feats = load_features(store)
    rng = np.random.default_rng(seed)
    targets = (feats.local[:, :3] @ rng.normal(size=(3, 3)) + rng.normal(0, 0.1, (feats.n_spots, 3))).astype(np.float32)
    head = RidgeHead({"type": "ridge", "alphas": [1.0]}, seed=seed)
    head.fit([Section("T", "P", feats, targets, GENES)], [])
    folder.mkdir(parents=True)
    head.save(folder)
    (folder / "fold.json").write_text(json.dumps({"type": "ridge", "fold": fold}))
    ad.AnnData(np.zeros((1, 3), np.float32), var=pd.DataFrame(index=GENES)).write_h5ad(folder / "predictions.h5ad")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("blocks")
    rng = np.random.default_rng(0)
    train = write_feature_store(root / "T.zarr", "T", rng.normal(size=(80, 8)))
    new = write_feature_store(root / "N.zarr", "N", rng.normal(size=(50, 8)))
    models = [fold_model(root / f"fold{k}", k, train, seed=k) for k in range(3)]
    return root, train, new, models


def test_blocks_equal_the_whole_section_and_std_is_the_folds_spread(setup, tmp_path):
    _, train, new, models = setup
    whole = predict_sample("ridge", models, "N", new, tmp_path / "whole.h5ad", reference_features=train)
    blocks = predict_sample("ridge", models, "N", new, tmp_path / "blocks.h5ad", block_spots=7)
    np.testing.assert_allclose(blocks, whole, rtol=1e-6, atol=1e-6)
    adata = ad.read_h5ad(tmp_path / "blocks.h5ad")
    stack = np.stack([adata.layers[f"fold{k}"] for k in range(3)])
    np.testing.assert_allclose(adata.layers["std"], stack.std(0), rtol=1e-5, atol=1e-7)
    assert adata.layers["std"].mean() > 0
    assert adata.obs_names.tolist() == [f"N-{i}" for i in range(50)]
    assert not list(tmp_path.glob(".*.partial"))  # the finished blocks are cleaned up


def test_an_interrupted_run_resumes_from_its_finished_blocks(setup, tmp_path, monkeypatch, caplog):
    _, _, new, models = setup
    out = tmp_path / "N.h5ad"
    calls = {"n": 0}
    original = RidgeHead.predict

    def crash_on_third_block(self, section):
        calls["n"] += 1
        if calls["n"] > 2 * len(models):  # two blocks of three fold models, then the "kill"
            raise KeyboardInterrupt
        return original(self, section)

    monkeypatch.setattr(RidgeHead, "predict", crash_on_third_block)
    with pytest.raises(KeyboardInterrupt):
        predict_sample("ridge", models, "N", new, out, block_spots=10)
    assert not out.exists() and len(list((tmp_path / ".N.h5ad.partial").glob("block*.npz"))) == 2
    monkeypatch.setattr(RidgeHead, "predict", original)
    caplog.set_level("INFO")
    resumed = predict_sample("ridge", models, "N", new, out, block_spots=10)
    assert "resuming: 2 of 5 blocks" in caplog.text
    fresh = predict_sample("ridge", models, "N", new, tmp_path / "fresh.h5ad", block_spots=10)
    np.testing.assert_allclose(resumed, fresh, rtol=1e-6, atol=1e-7)


def test_a_store_from_another_encoder_is_refused(setup, tmp_path):
    root, train, _, models = setup
    other = write_feature_store(tmp_path / "O.zarr", "O", np.zeros((5, 8)), encoder="another-encoder")
    with pytest.raises(InputError, match="another-encoder"):
        predict_sample("ridge", models, "O", other, tmp_path / "O.h5ad", reference_features=train)
