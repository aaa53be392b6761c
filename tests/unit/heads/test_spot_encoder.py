"""The trainable spot-image branch of TRIPLEX and DKAN (spot_encoder resnet18): pixel views, weights, training."""

import json

import numpy as np
import pytest
import torch

from genedml.heads import head_class
from genedml.heads.torch_head import PIXEL_VIEWS, make_batch, make_mixed_batch, section_tensors
from genedml.networks.spot_encoder import SpotEncoder, dihedral_pixels
from genedml.tiles.views import dihedral
from support.sections import synthetic_section

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "triplex": {"size": "small", "encoder_dim": 16, "neighbour_heads": 2, "global_heads": 2, "fusion_heads": 2},
    "dkan": {"size": "small", "dim": 16, "heads": 2},
}
TRAIN = {"epochs": 2, "patience": 2, "batch_size": 32, "spot_encoder": "resnet18"}


def with_images(section, rng, px=32):
    section.features.spot_images = rng.integers(0, 256, (section.n_spots, px, px, 3), dtype=np.uint8)
    return section


@pytest.fixture(scope="module")
def sections():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 6))
    return [with_images(synthetic_section(n, rng, w, n=40), rng) for n in "ABC"]


def test_pixel_views_are_the_documented_dihedral_views():
    """Channels-first torch views agree with the numpy views of genedml.tiles.views, view by view."""
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (PIXEL_VIEWS, 6, 6, 3), dtype=np.uint8)
    views = np.arange(PIXEL_VIEWS)
    got = dihedral_pixels(torch.as_tensor(crops).permute(0, 3, 1, 2), views).permute(0, 2, 3, 1).numpy()
    for v in views:
        np.testing.assert_array_equal(got[v], dihedral(crops[v], v))
    assert dihedral_pixels(torch.as_tensor(crops), None) is not None


def test_training_batches_draw_a_view_per_spot_and_evaluation_keeps_the_identity(sections):
    st = section_tensors(sections[0], "cpu")
    rows = torch.arange(st.n_spots)
    evaluation = make_batch(st, rows)
    assert evaluation.pixel_views is None
    identity = st.spot_images.permute(0, 3, 1, 2)
    assert torch.equal(evaluation.spot_pixels, identity)
    training = make_batch(st, rows, np.random.default_rng(0))
    assert len(set(training.pixel_views.tolist())) > 1
    for i in range(3):
        expected = dihedral(sections[0].features.spot_images[i], int(training.pixel_views[i]))
        np.testing.assert_array_equal(training.spot_pixels[i].permute(1, 2, 0).numpy(), expected)
    other = section_tensors(sections[1], "cpu")
    mixed = make_mixed_batch([(st, rows[:4]), (other, rows[:3])], np.random.default_rng(0))
    assert mixed.spot_pixels.shape == (7, 3, 32, 32) and len(mixed.pixel_views) == 7


def test_weights_load_strictly_with_checksum_and_a_wrong_file_is_refused(tmp_path):
    source = SpotEncoder("resnet18")
    state = {**source.net.state_dict(), "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    target = SpotEncoder("resnet18")
    digest = target.load_weights(path)
    for k, v in source.net.state_dict().items():
        assert torch.equal(target.net.state_dict()[k], v)
    assert len(digest) == 64
    with pytest.raises(ValueError, match="SHA-256"):
        target.load_weights(path, "0" * 64)
    # a ResNet inside a larger model (e.g. a Lightning checkpoint with a projection head): the backbone is found
    wrapped = {f"model.resnet.{k}": v + 1 for k, v in source.net.state_dict().items()}
    torch.save({"state_dict": {**wrapped, "model.head.weight": torch.zeros(4, 4)}}, tmp_path / "wrapped.ckpt")
    target.load_weights(tmp_path / "wrapped.ckpt")
    assert torch.equal(target.net.conv1.weight, source.net.conv1.weight + 1)
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a resnet18"):
        target.load_weights(tmp_path / "other.pt")
    assert torch.equal(target.net.conv1.weight, source.net.conv1.weight + 1)  # a refused file changed nothing


@pytest.mark.parametrize("kind", ["triplex", "dkan"])
def test_head_trains_the_resnet_on_pixels_and_reloads(kind, sections, tmp_path):
    """The ResNet gets gradients in training, the images change the prediction, and a saved fold reloads."""
    cls = head_class(kind)
    params = {**TINY[kind], **TRAIN, "gene_text": "symbols"} if kind == "dkan" else {**TINY[kind], **TRAIN}
    head = cls(params, seed=0)
    facts = head.fit(sections[:2], sections[2:])
    assert facts["spot_encoder"] == {
        "arch": "resnet18",
        "weights": None,
        "weights_sha256": "random-init",
        "px": 32,
        "bytes_per_spot": 32 * 32 * 3,
    }
    spot = head.model.image.spot if kind == "triplex" else head.model.spot
    assert all(p.grad is not None for p in spot.parameters())  # trained end to end, not frozen
    test = sections[2]
    pred = head.predict(test)
    saved = test.features.spot_images.copy()
    test.features.spot_images = np.ascontiguousarray(saved[::-1])
    try:
        assert not np.allclose(head.predict(test), pred)  # the pixels are an input
    finally:
        test.features.spot_images = saved
    head.save(tmp_path)
    again = cls.load(tmp_path)
    np.testing.assert_allclose(again.predict(test), pred, rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "params.json").read_text())["spot_encoder"] == "resnet18"


def test_a_pixel_head_without_images_and_weights_on_a_frozen_branch_are_errors(sections):
    head = head_class("triplex")({**TINY["triplex"], **TRAIN}, seed=0)
    bare = synthetic_section("D", np.random.default_rng(3), np.random.default_rng(3).normal(size=(16, 6)), n=20)
    with pytest.raises(ValueError, match="spot images"):
        head.fit([bare], [])
    with pytest.raises(ValueError, match="spot_encoder_weights"):
        head_class("dkan").settings({"spot_encoder_weights": "/x.pt"})
    with pytest.raises(ValueError, match="unknown spot_encoder"):
        head_class("triplex").settings({"spot_encoder": "vit"})
