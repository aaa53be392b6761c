"""BLEEP-style head: the contrastive loss and nearest-neighbour prediction on known cases, save/load."""

import numpy as np
import pytest
import torch

from genedml.evaluation.metrics import nanmean, pearson_per_gene
from genedml.heads import head_class
from genedml.heads.torch_head import make_batch, section_tensors
from genedml.networks.bleep_net import BLEEP, knn_predict
from genedml.networks.losses import bleep_loss
from support.sections import synthetic_section

pytestmark = pytest.mark.usefixtures("one_thread")


def test_knn_returns_the_matched_spots_expression():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(30, 8, generator=g)
    values = torch.randn(30, 5, generator=g)
    # k = 1 on a reference spot's own embedding returns exactly that spot's expression
    torch.testing.assert_close(knn_predict(keys[[3, 17]], keys, values, k=1), values[[3, 17]])
    # cosine similarity: the scale of the query does not matter
    torch.testing.assert_close(knn_predict(5 * keys[[3]], keys, values, k=1), values[[3]])
    # k = everything is the reference mean; k larger than the reference is clipped to it
    torch.testing.assert_close(knn_predict(keys[:2], keys, values, k=1000), values.mean(0).expand(2, -1))
    # k = 2: the mean of the spot and its nearest other spot
    sim = torch.nn.functional.normalize(keys, dim=1) @ torch.nn.functional.normalize(keys, dim=1).T
    second = sim[4].argsort(descending=True)[1]
    torch.testing.assert_close(knn_predict(keys[[4]], keys, values, k=2)[0], (values[4] + values[second]) / 2)
    # weighted at a very high temperature approaches the plain mean
    torch.testing.assert_close(
        knn_predict(keys[:3], keys, values, 5, "weighted", 1e6),
        knn_predict(keys[:3], keys, values, 5, "mean"),
        atol=1e-4,
        rtol=0,
    )
    with pytest.raises(RuntimeError, match="empty"):
        knn_predict(keys[:1], keys[:0], values[:0], k=1)


def test_bleep_loss_prefers_aligned_pairs():
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1) * 4
    aligned = bleep_loss(img, img.clone()).item()
    shuffled = bleep_loss(img, img[torch.randperm(16, generator=g)]).item()
    assert aligned < shuffled
    # a hand-worked case: two spots, T = 1, un-normalised (BLEEP's defaults)
    i, x = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0], [0.0, 1.0]])
    logits = x @ i.T
    soft = np.exp((i @ i.T + x @ x.T) / 2)
    soft /= soft.sum(1, keepdims=True)

    def ce(lg, tg):
        return -(tg * (lg - np.log(np.exp(lg).sum(1, keepdims=True)))).sum(1)

    want = ((ce(logits, soft) + ce(logits.T, soft.T)) / 2).mean()
    got = bleep_loss(torch.tensor(i, dtype=torch.float32), torch.tensor(x, dtype=torch.float32)).item()
    assert got == pytest.approx(want, rel=1e-5)
    # with identical spots, soft targets are uniform and the loss is log(B)
    same = torch.ones(4, 3)
    assert bleep_loss(same, same, normalize=True).item() == pytest.approx(np.log(4), rel=1e-5)


@pytest.fixture(scope="module")
def sections():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 6))
    return [synthetic_section(f"s{i}", rng, w) for i in range(4)]


PARAMS = {"dim": 32, "epochs": 30, "k": 10, "batch_size": 64, "patience": 30, "lr": 3e-3}


def test_bleep_trains_predicts_from_training_spots_and_reloads(sections, tmp_path):
    cls = head_class("bleep")
    head = cls(PARAMS, seed=0)
    facts = head.fit(sections[:2], [sections[2]])
    n_train = sum(s.n_spots for s in sections[:2])
    assert facts["reference_spots"] == n_train  # the reference set is the training spots
    pred = head.predict(sections[3])
    assert nanmean(pearson_per_gene(sections[3].targets, pred)) > 0.5
    assert head.history[-1]["contrastive"] < head.history[0]["contrastive"]
    head.save(tmp_path)
    back = cls.load(tmp_path)  # the reference travels with the model
    np.testing.assert_allclose(back.predict(sections[3]), pred, atol=1e-5)
    # k = 1: every prediction is one training spot's measured expression
    one = cls.load(tmp_path)
    one.params["k"] = 1
    one.model = one.build_model(one.dims)
    one.model.load_state_dict(back.model.state_dict())
    train_y = np.concatenate([s.targets for s in sections[:2]])
    p1 = one.predict(sections[3])
    dist = ((p1[:, None, :] - train_y[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(dist, 0.0, atol=1e-8)
    # on a training spot, k = 1 returns that spot's own expression for most spots
    own = one.predict(sections[0])
    assert np.mean(np.all(np.isclose(own, sections[0].targets, atol=1e-6), axis=1)) > 0.5


def test_reference_options(sections):
    head = head_class("bleep")(
        {
            **PARAMS,
            "epochs": 2,
            "reference": "train_val",
            "aggregate": "weighted",
            "features": ["local", "neighbour_mean"],
        },
        seed=0,
    )
    facts = head.fit(sections[:2], [sections[2]])
    assert facts["reference_spots"] == sum(s.n_spots for s in sections[:3])
    with pytest.raises(ValueError, match="reference"):
        head_class("bleep")({"reference": "test"})


def test_bleep_network_shapes(sections):
    net = BLEEP(in_dim=32, n_genes=6, dim=8, dropout=0.0, norm="layer", k=3, n_reference=10)
    batch = make_batch(section_tensors(sections[0], "cpu"), torch.arange(5))
    views = torch.cat([batch.local, batch.local], 1)
    assert net.embed_image(views).shape == (5, 8)
    assert net.expression(batch.targets).shape == (5, 8)
    assert net(views).shape == (5, 6)  # the mean expression of 3 of the 10 (zero) reference spots
    assert net.ref_keys.shape == (10, 8) and net.ref_values.shape == (10, 6)
