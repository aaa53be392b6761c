"""Grid neighbour mode (one tile lattice per slide), the local token cache and the embedding benchmark."""

import json
import subprocess
import sys

import numpy as np
import openslide
import pytest
import zarr

from genedml.errors import InputError
from genedml.io.hest import SamplePaths
from genedml.tiles.embed import embed_sample
from genedml.tiles.encoders import build_encoder
from genedml.tiles.features import load_features, open_local_tokens
from genedml.tiles.geometry import Geometry, TileSpec, compute_geometry, tile_sample

VARIED_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 3, "init_values": None}


def tiny_vit(**extra):
    return build_encoder({"name": "uni", "allow_random_init": True, "model_kwargs": VARIED_VIT, **extra})


def hex_spots(width, height, pitch, margin):
    rows = np.arange(margin, height - margin, pitch * np.sqrt(3) / 2)
    xy = [(x + (pitch / 2) * (r % 2), y) for r, y in enumerate(rows) for x in np.arange(margin, width - margin, pitch)]
    return np.array(xy)


def test_grid_geometry_shares_tiles_and_bounds_the_shift(tmp_path):
    centres = hex_spots(3000, 2500, 200.0, 300)  # Visium-like: 100 µm pitch at 0.5 µm/px
    n = len(centres)
    dims = (3000, 2500)
    for stride in (1.0, 0.5):
        spec = TileSpec.of(tile_px=224, target_mpp=0.5, grid=5, neighbour_mode="grid", grid_stride=stride)
        g = compute_geometry("V", [f"s{i}" for i in range(n)], centres, np.zeros((n, 2)), dims, 0.5, spec)
        # each spot's neighbourhood: 25 lattice nodes one tile apart around the node nearest to it
        assert np.abs(g.misalignment).max() <= stride * 224 / 2 + 1e-9
        expected = (
            centres[:, None, :]
            + g.misalignment[:, None, :]
            + np.array([[(k % 5 - 2) * 224, (k // 5 - 2) * 224] for k in range(25)])[None]
        )
        np.testing.assert_allclose(g.neighbour_centres, expected, atol=1e-6)
        used = g.neighbour_index >= 0
        np.testing.assert_array_equal(used, g.neighbour_mask)
        np.testing.assert_allclose(g.grid_nodes[g.neighbour_index[used]], g.neighbour_centres[used], atol=1e-6)
        assert len(np.unique(g.neighbour_index[used])) == len(g.grid_nodes)  # every node is used
        assert len(g.grid_nodes) < int(g.neighbour_mask.sum()) / 4  # neighbours share tiles
        g.save(tmp_path / f"g{stride}.npz")
        back = Geometry.load(tmp_path / f"g{stride}.npz")
        np.testing.assert_array_equal(back.neighbour_index, g.neighbour_index)
        assert back.spec == spec and back.grid_origin == pytest.approx(g.grid_origin)


def test_grid_offset_option_places_the_lattice():
    spec = TileSpec.of(tile_px=100, target_mpp="native", grid=3, neighbour_mode="grid", grid_offset=[0.5, 0.5])
    g = compute_geometry("S", ["a"], np.array([[430.0, 260.0]]), [[0, 0]], (1000, 1000), 0.5, spec)
    # tiles start at the image corner: node centres at 50, 150, 250, ...; nearest to (430, 260) is (450, 250)
    np.testing.assert_allclose(g.neighbour_centres[0, 4], [450, 250])
    np.testing.assert_allclose(g.misalignment[0], [20, -10])
    with pytest.raises(ValueError, match="1/k"):
        TileSpec.of(neighbour_mode="grid", grid_stride=0.3)
    with pytest.raises(ValueError, match="neighbour_mode"):
        TileSpec.of(neighbour_mode="shared")
    assert TileSpec.from_config({"neighbour_mode": "grid", "grid_offset": "0.5, 0.25"}).grid_offset == (0.5, 0.25)


@pytest.fixture(scope="module")
def lattice(demo_hest):
    """Spots on a square lattice whose pitch is two native 32 px tiles: it coincides with the tile grid."""
    slide = str(SamplePaths.in_hest_dir(demo_hest, "S2").slide)
    w, h = openslide.OpenSlide(slide).dimensions
    xs, ys = np.meshgrid(np.arange(150.0, 800, 64.0), np.arange(130.0, 640, 96.0))  # 60 spots
    return slide, (w, h), np.stack([xs.ravel(), ys.ravel()], 1)


def test_grid_equals_centred_where_the_lattice_coincides(lattice, tmp_path):
    slide, dims, centres = lattice
    enc = tiny_vit()
    out = {}
    for mode in ("centred", "grid"):
        spec = TileSpec.of(tile_px=32, target_mpp="native", grid=5, neighbour_mode=mode)
        g = compute_geometry(
            "L",
            [f"s{i}" for i in range(len(centres))],
            centres,
            np.zeros((len(centres), 2)),
            dims,
            0.5,
            spec,
            slide_path=slide,
        )
        facts = embed_sample(g, enc, tmp_path / f"{mode}.zarr", batch_size=96, progress=False)
        out[mode] = (facts, load_features(tmp_path / f"{mode}.zarr"))
    (fc, c), (fg, gr) = out["centred"], out["grid"]
    assert fg["misalignment_um_mean"] == 0 and fg["locals_reused_from_grid"] == len(centres)
    assert fc["encoder_calls"] > 2 * fg["encoder_calls"]
    np.testing.assert_array_equal(gr.neighbour_mask, c.neighbour_mask)
    assert c.neighbour.std(0).mean() > 0.05  # the encoder does tell tiles apart
    np.testing.assert_array_equal(gr.neighbour, c.neighbour)
    np.testing.assert_array_equal(gr.local, c.local)
    # a block of spots read alone equals those rows of the whole store, in both modes
    for mode, (_, whole) in out.items():
        block = load_features(tmp_path / f"{mode}.zarr", rows=slice(13, 41))
        np.testing.assert_array_equal(block.neighbour, whole.neighbour[13:41])
        np.testing.assert_array_equal(block.local, whole.local[13:41])
        np.testing.assert_array_equal(block.neighbour_mask, whole.neighbour_mask[13:41])
        assert block.barcodes.tolist() == whole.barcodes[13:41].tolist()


@pytest.fixture(scope="module")
def grid_geometry(demo_hest, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "S1.npz"
    spec = TileSpec.of(tile_px=32, target_mpp=4.0, grid=5, neighbour_mode="grid", grid_stride=0.5)
    return tile_sample(SamplePaths.in_hest_dir(demo_hest, "S1"), spec, out)


def test_grid_store_layout_loader_and_worker_processes(grid_geometry, tmp_path):
    g = grid_geometry
    enc = tiny_vit()
    facts = embed_sample(g, enc, tmp_path / "w0.zarr", batch_size=40, num_workers=0, progress=False)
    embed_sample(g, enc, tmp_path / "w2.zarr", batch_size=40, num_workers=2, progress=False)
    store = zarr.open_group(str(tmp_path / "w0.zarr"), mode="r")
    assert store.attrs["neighbour_mode"] == "grid" and store.attrs["tile_spec"]["grid_stride"] == 0.5
    assert "neighbour" not in store and store["grid_tiles"].shape == (len(g.grid_nodes), 48)
    assert facts["encoder_calls"] == len(g.grid_nodes) + g.n_spots - facts["locals_reused_from_grid"]
    f = load_features(tmp_path / "w0.zarr")
    assert f.neighbour.shape == (g.n_spots, 25, 48) and f.local.shape == (g.n_spots, 48)
    index = store["neighbour_index"][:]
    tiles = store["grid_tiles"][:].astype(np.float32)
    i, k = np.argwhere(index >= 0)[7]
    np.testing.assert_array_equal(f.neighbour[i, k], tiles[index[i, k]])
    assert not f.neighbour[index < 0].any()
    # data-loader workers open the slide themselves and read the same pixels
    f2 = load_features(tmp_path / "w2.zarr")
    np.testing.assert_allclose(f2.neighbour, f.neighbour, atol=2e-3, rtol=1e-2)
    np.testing.assert_allclose(f2.local, f.local, atol=2e-3, rtol=1e-2)


def test_local_token_cache(grid_geometry, tmp_path):
    enc = tiny_vit(cache_local_tokens=True)
    facts = embed_sample(grid_geometry, enc, tmp_path / "tok.zarr", batch_size=64, progress=False)
    tokens = open_local_tokens(tmp_path / "tok.zarr")
    f = load_features(tmp_path / "tok.zarr")
    n_tok = 1 + (32 // 16) ** 2  # CLS + patch tokens (197 at 224 px)
    assert tokens.shape == (grid_geometry.n_spots, n_tok, 48) and tokens.dtype == np.float16
    assert facts["local_tokens"] == n_tok and facts["locals_reused_from_grid"] == 0
    np.testing.assert_array_equal(tokens[:, 0].astype(np.float32), f.local)  # the CLS token is the local embedding
    embed_sample(grid_geometry, tiny_vit(), tmp_path / "plain.zarr", batch_size=64, progress=False)
    with pytest.raises(InputError, match="cache_local_tokens"):
        open_local_tokens(tmp_path / "plain.zarr")
    with pytest.raises(ValueError, match="token"):
        resnet = build_encoder({"name": "resnet18", "allow_random_init": True, "cache_local_tokens": True})
        embed_sample(grid_geometry, resnet, tmp_path / "r.zarr", progress=False)


def test_bench_embed_writes_both_modes(tmp_path):
    out = tmp_path / "embed.json"
    cmd = [
        sys.executable,
        "-m",
        "genedml",
        "bench",
        "embed",
        "--visium-demo",
        "--demo-size-um",
        "700",
        "600",
        "--visium-tiles",
        '{"tile_px": 32, "target_mpp": 4.0}',
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "--batch-size",
        "128",
        "--num-workers",
        "0",
        "--threads",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["encoder"]["name"] == "uni" and len(result["slides"]) == 1
    for mode in ("centred", "grid"):
        m = result["modes"][mode]
        assert {"encoder_calls", "spots", "wall_s", "peak_rss_mb", "tiles_per_s", "bytes_per_spot"} <= set(m)
    assert result["modes"]["centred"]["spots"] == result["modes"]["grid"]["spots"]
    assert result["ratios"]["encoder_calls_centred_over_grid"] > 1
    assert result["compression"]["codecs"]["none"]["ratio"] == pytest.approx(1.0, abs=0.05)
    assert "calls/spot" in proc.stdout and "centred/grid" in proc.stdout
    help_text = subprocess.run(
        [sys.executable, "-m", "genedml", "bench", "embed", "--help"], capture_output=True, text=True
    ).stdout
    assert "--her2st" in help_text and "--visium-demo" in help_text and "HER2ST" in help_text
