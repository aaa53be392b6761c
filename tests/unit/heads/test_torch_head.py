"""The shared neural-head training loop, through the ST-Net-style MLP head."""

import numpy as np
import pandas as pd
import pytest

from genedml.evaluation.metrics import nanmean, pearson_per_gene
from genedml.heads import head_class
from support.sections import synthetic_section


@pytest.fixture
def sections():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 6))
    return [synthetic_section(f"s{i}", rng, w) for i in range(4)]


def test_mlp_head_learns_and_keeps_the_best_epoch(sections, tmp_path):
    cls = head_class("stnet")
    head = cls({"hidden": 0, "epochs": 40, "lr": 1e-2, "batch_size": 64, "patience": 40}, seed=1)
    facts = head.fit(sections[:2], [sections[2]])
    pred = head.predict(sections[3])
    assert nanmean(pearson_per_gene(sections[3].targets, pred)) > 0.9
    hist = pd.DataFrame(head.history)
    assert {"epoch", "loss", "mse", "selection_pcc", "lr"} <= set(hist.columns)
    assert facts["best_selection_pcc"] == pytest.approx(hist["selection_pcc"].max())
    head.save(tmp_path)
    back = cls.load(tmp_path)
    np.testing.assert_allclose(back.predict(sections[3]), pred, atol=1e-5)
    assert (tmp_path / "history.csv").exists()


def test_training_is_reproducible_and_stops_early(sections):
    cls = head_class("stnet")
    params = {"hidden": 8, "epochs": 30, "lr": 1e-2, "batch_size": 32, "patience": 2}
    a = cls(params, seed=3)
    a.fit(sections[:2], [sections[2]])
    b = cls(params, seed=3)
    b.fit(sections[:2], [sections[2]])
    np.testing.assert_allclose(a.predict(sections[3]), b.predict(sections[3]), atol=1e-6)
    # a validation set that cannot improve (pure noise targets) triggers early stopping
    rng = np.random.default_rng(5)
    noise = synthetic_section("n", rng, np.zeros((16, 6)), noise=1.0)
    c = cls(params, seed=3)
    c.fit(sections[:2], [noise])
    assert len(c.history) < 30


def test_a_non_finite_loss_stops_training_naming_the_epoch(sections):
    from genedml.heads.torch_head import NonFiniteLoss

    bad = sections[1]
    bad.targets = bad.targets.copy()
    bad.targets[3, 2] = np.nan
    head = head_class("stnet")({"epochs": 3}, seed=0)
    with pytest.raises(NonFiniteLoss, match="stnet: non-finite training loss at epoch 0"):
        head.fit(sections[:2], [sections[2]])


def test_the_old_selection_key_names_its_replacement():
    for kind in ("stnet", "genedml"):
        with pytest.raises(ValueError, match="selection was replaced by `protocol"):
            head_class(kind)({"selection": "test_fold"})
