"""Encoder registry (strict local weights, checksums) and the Zarr feature cache."""

import numpy as np
import pytest
import torch
import zarr

from genedml.embed import embed_sample
from genedml.encoders import RANDOM_INIT, build_encoder, sha256_file
from genedml.features import load_features
from genedml.hest import SamplePaths
from genedml.tiling import TileSpec, tile_sample

TINY_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 3}


def tiny_uni_weights(path):
    enc = build_encoder({"name": "uni", "allow_random_init": True, "model_kwargs": TINY_VIT, "init_seed": 7})
    torch.save(enc.model.state_dict(), path)
    return enc


def test_uni_loads_local_weights_strictly_and_records_checksum(tmp_path):
    weights = tmp_path / "pytorch_model.bin"
    ref = tiny_uni_weights(weights)
    enc = build_encoder({"name": "uni", "weights": str(weights), "model_kwargs": TINY_VIT, "init_seed": 1})
    assert enc.weights_sha256 == sha256_file(weights) != RANDOM_INIT
    x = torch.rand(2, 3, 224, 224)
    np.testing.assert_allclose(enc.model(x).numpy(), ref.model(x).numpy(), atol=1e-5)
    # UNI settings: 16 px patches, dynamic image size, CLS pooling, layer-scale
    assert enc.model.patch_embed.patch_size == (16, 16)
    assert enc.model(torch.rand(1, 3, 112, 112)).shape == (1, 48)


def test_uni_weights_checks(tmp_path, monkeypatch):
    weights = tmp_path / "w.bin"
    tiny_uni_weights(weights)
    with pytest.raises(ValueError, match="SHA-256"):
        build_encoder({"name": "uni", "weights": str(weights), "weights_sha256": "0" * 64, "model_kwargs": TINY_VIT})
    with pytest.raises(ValueError, match="do not match the architecture"):
        build_encoder({"name": "uni", "weights": str(weights), "model_kwargs": {**TINY_VIT, "depth": 3}})
    monkeypatch.delenv("GENEDML_UNI_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="GENEDML_UNI_WEIGHTS"):
        build_encoder({"name": "uni"})
    monkeypatch.setenv("GENEDML_UNI_WEIGHTS", str(weights))
    assert build_encoder({"name": "uni", "model_kwargs": TINY_VIT}).weights_sha256 == sha256_file(weights)


def test_random_init_is_the_same_network_in_every_process():
    a = build_encoder({"name": "resnet18", "allow_random_init": True})
    b = build_encoder({"name": "resnet18", "allow_random_init": True})
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(a.model(x), b.model(x))
    with pytest.raises(FileNotFoundError, match="allow_random_init"):
        build_encoder({"name": "resnet18"})


@pytest.fixture(scope="module")
def geometry(demo_hest, tmp_path_factory):
    out = tmp_path_factory.mktemp("geom") / "S1.npz"
    return tile_sample(SamplePaths.in_hest_dir(demo_hest, "S1"), TileSpec(32, 4.0, 5), out)


def test_embed_writes_complete_zarr_store(geometry, tmp_path):
    enc = build_encoder({"name": "resnet18", "allow_random_init": True})
    out = tmp_path / "S1.zarr"
    facts = embed_sample(geometry, enc, out, batch_size=200)
    group = zarr.open_group(str(out), mode="r")
    assert group.metadata.zarr_format == 3
    attrs = dict(group.attrs)
    assert attrs["complete"] and attrs["encoder"] == "resnet18" and attrs["weights_sha256"] == RANDOM_INIT
    assert attrs["tile_spec"]["tile_px"] == 32 and attrs["genedml_version"]
    f = load_features(out)
    n = geometry.n_spots
    assert f.local.shape == (n, 512) and f.neighbour.shape == (n, 25, 512)
    np.testing.assert_array_equal(f.barcodes, geometry.barcodes)
    np.testing.assert_array_equal(f.neighbour_mask, geometry.neighbour_mask)
    assert not f.neighbour[~f.neighbour_mask].any()  # masked tiles are zeros
    # the centre neighbour tile is the local crop itself
    inside = f.neighbour_mask[:, 12]
    np.testing.assert_array_equal(f.neighbour[inside, 12], f.local[inside])
    assert facts["encoder_calls"] == int(geometry.neighbour_mask.sum() + (~geometry.neighbour_mask[:, 12]).sum())


def test_interrupted_embedding_leaves_no_store(geometry, tmp_path):
    enc = build_encoder({"name": "resnet18", "allow_random_init": True})
    calls = {"n": 0}
    real_forward = enc.model.forward

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real_forward(x)

    enc.model.forward = failing
    out = tmp_path / "S1.zarr"
    with pytest.raises(RuntimeError, match="simulated"):
        embed_sample(geometry, enc, out, batch_size=50)
    assert list(tmp_path.iterdir()) == []
