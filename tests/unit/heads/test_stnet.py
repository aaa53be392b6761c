"""ST-Net-style head: linear probe vs MLP, feature views (training itself is in test_torch_head.py)."""

import numpy as np
import pytest
import torch

from genedml.heads import head_class
from genedml.heads.base import neighbour_mean
from genedml.heads.inputs import batch_views
from genedml.heads.torch_head import make_batch, section_tensors
from support.sections import synthetic_section

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def section():
    rng = np.random.default_rng(0)
    s = synthetic_section("s", rng, rng.normal(size=(16, 6)), n=40)
    s.features.neighbour = rng.normal(size=s.features.neighbour.shape).astype(np.float32)
    s.features.neighbour_mask[:, ::3] = False
    return s


def _linear_widths(model):
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]


def test_linear_probe_and_mlp_shapes():
    dims = {"local_dim": 16, "neighbour_tiles": 25, "n_genes": 6}
    assert _linear_widths(head_class("stnet")({"hidden": 0}).build_model(dims)) == [(16, 6)]
    assert _linear_widths(head_class("stnet")({"hidden": [32, 8]}).build_model(dims)) == [(16, 32), (32, 8), (8, 6)]
    two_views = head_class("stnet")({"hidden": 0, "features": ["local", "neighbour_mean"]}).build_model(dims)
    assert _linear_widths(two_views) == [(32, 6)]
    with pytest.raises(ValueError, match="feature view"):
        head_class("stnet")({"features": ["tokens"]})
    with pytest.raises(ValueError, match=">= 0"):
        head_class("stnet")({"hidden": -1})


def test_batch_views_match_the_numpy_views(section):
    st = section_tensors(section, "cpu")
    batch = make_batch(st, torch.arange(5, 15))
    x = batch_views(batch, ["local", "neighbour_mean", "global_mean"]).numpy()
    np.testing.assert_allclose(x[:, :16], section.features.local[5:15])
    np.testing.assert_allclose(x[:, 16:32], neighbour_mean(section.features)[5:15], atol=1e-6)
    np.testing.assert_allclose(x[:, 32:], np.repeat(section.features.local.mean(0, keepdims=True), 10, 0), atol=1e-6)


def test_linear_probe_fits_a_linear_map():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(16, 6))
    secs = [synthetic_section(f"t{i}", rng, w, noise=0.01) for i in range(3)]
    params = {"hidden": 0, "epochs": 60, "lr": 3e-2, "batch_size": 60, "patience": 60}
    head = head_class("stnet")({**params, "input_norm": "none"}, seed=0)
    head.fit(secs[:2], [secs[2]])
    np.testing.assert_allclose(head.model.net[-1].weight.detach().numpy(), w.T, atol=0.15)
    # standardised inputs: the same map once the training statistics are folded back in
    std = head_class("stnet")({**params, "input_norm": "standard"}, seed=0)
    std.fit(secs[:2], [secs[2]])
    norm = std.model.net[0]
    x = np.concatenate([s.features.local for s in secs[:2]])
    np.testing.assert_allclose(norm.mean.numpy(), x.mean(0), atol=1e-5)
    np.testing.assert_allclose(norm.std.numpy(), x.std(0, ddof=1), rtol=1e-4)
    folded = std.model.net[-1].weight.detach().numpy() / norm.std.numpy()
    np.testing.assert_allclose(folded, w.T, atol=0.15)
    with pytest.raises(ValueError, match="input_norm"):
        head_class("stnet")({"input_norm": "batch"})


def test_stnet_network_maps_views_to_genes():
    from genedml.networks.stnet_net import STNet

    net = STNet(in_dim=32, n_genes=6, widths=[8, 4], dropout=0.0, norm="standard")
    assert net(torch.randn(5, 32)).shape == (5, 6)
    assert net.norm is net.net[0] and net.output is net.net[-1]
    assert net.output.in_features == 4
