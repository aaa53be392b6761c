"""Dihedral views of the local crop (encoder.local_views) and the lazy per-view token maps."""

import numpy as np
import openslide
import pytest
import torch
import zarr

from genedml.errors import InputError
from genedml.io.hest import SamplePaths
from genedml.io.slide import read_crop
from genedml.tiles.embed import embed_sample
from genedml.tiles.encoders import EncoderSpec, build_encoder
from genedml.tiles.features import TokenMaps, load_features
from genedml.tiles.geometry import TileSpec, tile_sample
from genedml.tiles.views import VIEW_NAMES, dihedral

pytestmark = pytest.mark.usefixtures("one_thread")

VARIED_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 3, "init_values": None}
FORMAT2_ARRAYS = {"local", "neighbour", "neighbour_mask", "barcodes", "spatial", "array_coords", "local_tokens"}


def tiny_vit(**extra):
    return build_encoder({"name": "uni", "allow_random_init": True, "model_kwargs": VARIED_VIT, **extra})


def expected_views(crop):
    """The documented order, written out independently of genedml.tiles.views."""
    rots = [np.rot90(crop, k) for k in range(4)]
    return rots + [np.fliplr(r) for r in rots]


def encode(enc, crops):
    """The encoder as the engine runs it (pixels normalised, fp32 on CPU), on crops (K, H, W, 3) uint8."""
    x = torch.as_tensor(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(enc.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(enc.std).view(1, 3, 1, 1) * 255
    with torch.inference_mode():
        return enc.model((x - mean) / std).numpy()


@pytest.fixture(scope="module")
def geometries(demo_hest, tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    paths = SamplePaths.in_hest_dir(demo_hest, "S1")
    return {
        mode: tile_sample(
            paths, TileSpec.of(tile_px=32, target_mpp=4.0, grid=5, neighbour_mode=mode), root / f"{mode}.npz"
        )
        for mode in ("centred", "grid")
    }


@pytest.fixture(scope="module")
def stores(geometries, tmp_path_factory):
    """Per mode: the same sample embedded with 1 view and with 8 views, both with tokens."""
    root = tmp_path_factory.mktemp("view_stores")
    out = {}
    for mode, g in geometries.items():
        for v in (1, 8):
            path = root / f"{mode}-{v}.zarr"
            facts = embed_sample(
                g, tiny_vit(cache_local_tokens=True, local_views=v), path, batch_size=64, progress=False
            )
            out[mode, v] = (path, facts)
    return out


def test_views_are_the_dihedral_transforms_of_the_pixel_crop(geometries, stores):
    assert list(VIEW_NAMES) == ["identity", "rot90", "rot180", "rot270"] + [
        "hflip",
        "hflip_rot90",
        "hflip_rot180",
        "hflip_rot270",
    ]
    crop = np.arange(2 * 3 * 3).reshape(2, 3, 3)  # non-square: the axes are the image's (rows, cols)
    for v, want in enumerate(expected_views(crop)):
        np.testing.assert_array_equal(dihedral(crop, v), want)
    enc = tiny_vit()
    for mode, g in geometries.items():
        path, facts = stores[mode, 8]
        f = load_features(path)
        assert f.local_views.shape == (g.n_spots, 8, 48) and f.local_views.dtype == np.float32
        assert f.attrs["local_view_names"] == list(VIEW_NAMES) and f.attrs["genedml_features_version"] == 3
        np.testing.assert_array_equal(f.local_views[:, 0], f.local)  # view 0 is the local embedding
        # 7 more encoder calls a spot than one view; the neighbour tiles are the same (not augmented)
        assert facts["encoder_calls"] == stores[mode, 1][1]["encoder_calls"] + 7 * g.n_spots
        np.testing.assert_array_equal(f.neighbour, load_features(stores[mode, 1][0]).neighbour)
        slide = openslide.OpenSlide(g.slide_path)
        px, grid = g.spec.tile_px, g.spec.grid
        for i in (0, g.n_spots // 2, g.n_spots - 1):
            if mode == "centred":  # the centre tile of the spot's window read
                window = read_crop(slide, g.centres[i], px * grid, g.scale)
                crop = window[2 * px : 3 * px, 2 * px : 3 * px]
            else:
                crop = read_crop(slide, g.centres[i], px, g.scale)
            want = encode(enc, np.stack(expected_views(crop[..., :3])))
            np.testing.assert_allclose(f.local_views[i], want, atol=5e-3, rtol=1e-2)
            # per-view tokens: their CLS is the view's embedding
            tokens = f.token_maps().read(np.full(8, i), np.arange(8)).astype(np.float32)
            np.testing.assert_array_equal(tokens[:, 0], f.local_views[i])


def test_one_view_store_is_format_2_unchanged(geometries, stores):
    g = geometries["centred"]
    path, _ = stores["centred", 1]
    group = zarr.open_group(str(path), mode="r")
    assert set(group.array_keys()) == FORMAT2_ARRAYS
    n_tok = group["local_tokens"].shape[1]
    assert group["local_tokens"].shape == (g.n_spots, n_tok, 48) and group["local_tokens"].shards is None
    f = load_features(path)
    assert f.local_views is None and f.attrs["local_view_names"] == ["identity"]
    # the identity view of an 8-view store is the one-view store's local embedding
    np.testing.assert_allclose(load_features(stores["centred", 8][0]).local, f.local, atol=2e-3, rtol=1e-2)
    # a different view count is a different encoder identity: it re-embeds, never resumes the other
    assert tiny_vit(local_views=4).identity() != tiny_vit().identity()
    with pytest.raises(ValueError, match="local_views"):
        EncoderSpec.from_config({"name": "uni", "local_views": 2})


def test_format_2_store_still_loads(stores, tmp_path):
    import shutil

    old = tmp_path / "old.zarr"
    shutil.copytree(stores["grid", 1][0], old)
    group = zarr.open_group(str(old), mode="r+")
    group.attrs["genedml_features_version"] = 2
    del group.attrs["local_view_names"]
    del group.attrs["local_views"]
    f = load_features(old)
    assert f.local_views is None and f.token_maps().n_views == 1
    rows = np.array([3, 1, 3])
    np.testing.assert_array_equal(f.token_maps().read(rows), group["local_tokens"][:][rows])
    with pytest.raises(InputError, match="view 2"):
        f.token_maps().read(rows, np.array([0, 2, 0]))


def test_token_maps_are_lazy_and_follow_subset(stores, tmp_path):
    import shutil

    path = tmp_path / "lazy.zarr"
    shutil.copytree(stores["grid", 8][0], path)
    f = load_features(path)
    assert isinstance(f.local_tokens, zarr.Array) and not isinstance(f.local_tokens, np.ndarray)
    full = zarr.open_group(str(path), mode="r")["local_tokens"]
    assert full.chunks == (1, 1, *full.shape[2:])  # one view of one spot per read
    sub = f.subset(np.array([5, 2, 7]))
    assert sub.local_tokens is f.local_tokens  # a row mapping, no copy
    maps = sub.token_maps()
    assert isinstance(maps, TokenMaps) and maps.shape == (3, *full.shape[2:])
    got = maps.read(np.array([2, 0, 0]), np.array([6, 1, 3]))
    np.testing.assert_array_equal(got, np.stack([full[7, 6], full[5, 1], full[5, 3]]))
    np.testing.assert_array_equal(sub.local_views[:, 4], f.local_views[[5, 2, 7], 4])
    # loading never reads the token data: with it corrupt the features load, and only a read fails, naming it
    for chunk in (path / "local_tokens" / "c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"not a shard")
    g = load_features(path)
    with pytest.raises(InputError, match="token maps") as err:
        g.token_maps().read(np.array([0]), np.array([1]))
    assert "lazy.zarr" in str(err.value) and "S1" in str(err.value)


def test_interrupted_view_embedding_resumes(geometries, tmp_path):
    g = geometries["centred"]
    enc = tiny_vit(cache_local_tokens=True, local_views=4)
    small = 20_000  # 8 spots per unit of work
    fresh = embed_sample(g, enc, tmp_path / "fresh.zarr", batch_size=50, chunk_bytes=small, progress=False)
    real = enc.model.forward_features
    calls = {"n": 0}

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("simulated crash")
        return real(x)

    enc.model.forward_features = failing
    with pytest.raises(RuntimeError, match="simulated"):
        embed_sample(g, enc, tmp_path / "S1.zarr", batch_size=50, chunk_bytes=small, progress=False)
    enc.model.forward_features = real
    resumed = embed_sample(g, enc, tmp_path / "S1.zarr", batch_size=50, chunk_bytes=small, progress=False)
    assert 0 < resumed["encoder_calls_this_run"] < fresh["encoder_calls"]
    a, b = load_features(tmp_path / "fresh.zarr"), load_features(tmp_path / "S1.zarr")
    np.testing.assert_allclose(b.local_views, a.local_views, atol=2e-3, rtol=1e-2)
    rows = np.arange(a.n_spots)
    views = rows % 4
    np.testing.assert_allclose(
        b.token_maps().read(rows, views).astype(np.float32),
        a.token_maps().read(rows, views).astype(np.float32),
        atol=2e-3,
        rtol=1e-2,
    )


def test_bench_embed_measures_views_and_tokens(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "embed.json"
    cmd = [sys.executable, "-m", "genedml", "bench", "embed", "--visium-demo", "--demo-size-um", "500", "400"]
    cmd += ["--visium-tiles", '{"tile_px": 32, "target_mpp": 4.0}', "--work-dir", str(tmp_path / "work")]
    cmd += ["--out", str(out), "--num-workers", "0", "--threads", "1", "--modes", "grid", "--no-compression"]
    cmd += ["--local-views", "4", "--tokens", "on"]  # one run more than the baseline, the mode's own run
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    v = json.loads(out.read_text())["local_branch"]["variants"]
    base, both = v["1 views, tokens off"], v["4 views, tokens on"]
    assert sorted(v) == ["1 views, tokens off", "4 views, tokens on"]
    assert both["encoder_calls"] == base["encoder_calls"] + 3 * base["spots"]
    assert base["calls_ratio"] == 1.0 and both["calls_ratio"] > 1 and both["bytes_ratio"] > 4
    assert both["local_branch_bytes_per_spot"] > 4 * base["local_branch_bytes_per_spot"]
    assert "local branch (grid mode" in proc.stdout and "local-branch bytes/spot" in proc.stdout
