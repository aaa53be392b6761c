"""Encoder registry (strict local weights, checksums) and the Zarr feature cache."""

import numpy as np
import pytest
import torch
import zarr

from genedml.errors import InputError
from genedml.io.hest import SamplePaths
from genedml.tiles.embed import embed_sample
from genedml.tiles.encoders import RANDOM_INIT, build_encoder, sha256_file
from genedml.tiles.features import load_features
from genedml.tiles.geometry import TileSpec, tile_sample

TINY_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 3}
# without UNI's layer-scale (init_values=1e-5) a random-init ViT's output depends on the tile
VARIED_VIT = {**TINY_VIT, "init_values": None}


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
    return tile_sample(SamplePaths.in_hest_dir(demo_hest, "S1"), TileSpec.of(tile_px=32, target_mpp=4.0, grid=5), out)


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


def test_interrupted_embedding_leaves_nothing_that_looks_complete_and_resumes(geometry, tmp_path):
    cfg = {"name": "uni", "allow_random_init": True, "model_kwargs": VARIED_VIT}
    enc = build_encoder(cfg)
    out = tmp_path / "S1.zarr"
    small = 10_000  # 4 spots per unit of work (25 x 48 x 2 bytes a spot), so a crash falls between units
    fresh = embed_sample(geometry, enc, tmp_path / "fresh.zarr", batch_size=50, chunk_bytes=small, progress=False)
    calls = {"n": 0}
    real_forward = enc.model.forward

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return real_forward(x)

    enc.model.forward = failing
    with pytest.raises(RuntimeError, match="simulated"):
        embed_sample(geometry, enc, out, batch_size=50, chunk_bytes=small, progress=False)
    assert not out.exists()
    with pytest.raises(InputError, match="not found"):
        load_features(out)
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".S1.partial-")]
    assert len(partial) == 1 and not zarr.open_group(str(partial[0]), mode="r").attrs["complete"]
    with pytest.raises(InputError, match="incomplete"):
        load_features(partial[0])  # pointing at it by hand does not fool the loader either

    enc.model.forward = real_forward
    resumed = embed_sample(geometry, enc, out, batch_size=50, chunk_bytes=small, progress=False)
    assert resumed["encoder_calls"] == fresh["encoder_calls"]
    assert 0 < resumed["encoder_calls_this_run"] < fresh["encoder_calls"] - 100  # the written units were kept
    a, b = load_features(tmp_path / "fresh.zarr"), load_features(out)
    np.testing.assert_allclose(b.neighbour, a.neighbour, atol=2e-3, rtol=1e-2)
    np.testing.assert_allclose(b.local, a.local, atol=2e-3, rtol=1e-2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S1.zarr", "fresh.zarr"]


def test_partial_store_of_other_settings_is_discarded_not_resumed(geometry, tmp_path):
    enc = build_encoder({"name": "uni", "allow_random_init": True, "model_kwargs": VARIED_VIT})
    real_forward = enc.model.forward
    enc.model.forward = lambda x: (_ for _ in ()).throw(RuntimeError("simulated crash"))
    out = tmp_path / "S1.zarr"
    with pytest.raises(RuntimeError):
        embed_sample(geometry, enc, out, batch_size=50, chunk_bytes=10_000, progress=False)
    enc.model.forward = real_forward
    other = build_encoder({"name": "uni", "allow_random_init": True, "model_kwargs": VARIED_VIT, "init_seed": 3})
    facts = embed_sample(geometry, other, out, batch_size=50, chunk_bytes=10_000, progress=False)
    assert facts["encoder_calls_this_run"] == facts["encoder_calls"]  # nothing reused from the other encoder
    assert [p.name for p in tmp_path.iterdir()] == ["S1.zarr"]
