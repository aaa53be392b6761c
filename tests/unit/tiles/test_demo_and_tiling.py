"""The demo dataset (HEST layout, image-driven counts) and spot geometry."""

import json

import anndata as ad
import numpy as np
import openslide
import pytest

from genedml.errors import InputError
from genedml.io.hest import SamplePaths, load_st
from genedml.tiles.geometry import Geometry, TileSpec, compute_geometry, neighbour_offsets, tile_sample


def test_demo_sample_is_hest_layout(demo_hest):
    paths = SamplePaths.in_hest_dir(demo_hest, "S1")
    slide = openslide.OpenSlide(str(paths.slide))
    assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    assert slide.level_count >= 2
    meta = json.loads(paths.metadata.read_text())
    assert meta["patient"] == "PA" and meta["pixel_size_um_estimated"] == 0.5
    adata = load_st(paths.st, "S1")  # validates raw integer counts, unique barcodes, spatial
    assert adata.X.dtype.kind == "i" and adata.n_obs > 20
    xy = adata.obsm["spatial"]
    w, h = slide.dimensions
    assert (xy[:, 0] > 0).all() and (xy[:, 0] < w).all() and (xy[:, 1] < h).all()


def test_demo_expression_follows_the_image(demo_hest):
    """Marker genes track the painted compartments: image-driven, not noise."""
    adata = ad.read_h5ad(demo_hest / "st" / "S3.h5ad")
    lib = adata.X.sum(1, keepdims=True)
    norm = np.log1p(1e4 * adata.X / lib)
    tumour = adata.obs["demo_fraction_tumour"].to_numpy()
    stroma = adata.obs["demo_fraction_stroma"].to_numpy()
    r_tumour = np.corrcoef(norm[:, adata.var_names.get_loc("ERBB2")], tumour)[0, 1]
    r_stroma = np.corrcoef(norm[:, adata.var_names.get_loc("COL1A1")], stroma)[0, 1]
    assert r_tumour > 0.5 and r_stroma > 0.5


def test_neighbour_tiles_are_row_major():
    off = neighbour_offsets(5)
    assert off.shape == (25, 2)
    np.testing.assert_array_equal(off[0], [-2, -2])  # top-left
    np.testing.assert_array_equal(off[4], [2, -2])  # top-right: columns vary fastest
    np.testing.assert_array_equal(off[12], [0, 0])  # centre = local crop
    np.testing.assert_array_equal(off[24], [2, 2])


def test_geometry_scale_and_border_mask():
    spec = TileSpec.of(tile_px=100, target_mpp=1.0, grid=5, min_inside=0.5)
    centres = np.array([[1000.0, 1000.0], [60.0, 1000.0]])
    g = compute_geometry("S", ["a", "b"], centres, [[0, 0], [0, 1]], (2000, 2000), 0.5, spec)
    assert g.scale == pytest.approx(2.0)  # 1 µm/px crops from a 0.5 µm/px slide
    assert g.neighbour_mask[0].all()
    # spot b sits 60 px from the left edge; tiles are 200 level-0 px wide: columns 0-1 are outside
    mask = g.neighbour_mask[1].reshape(5, 5)
    assert not mask[:, :2].any() and mask[:, 2:].all()
    assert g.local_inside[1] == pytest.approx(160 / 200)


def test_native_scale_geometry():
    spec = TileSpec.of(tile_px=224, target_mpp="native")
    g = compute_geometry("S", ["a"], np.array([[500.0, 500.0]]), [[0, 0]], (4000, 4000), 0.69, spec)
    assert g.scale == 1.0
    np.testing.assert_allclose(g.neighbour_centres[0, 0], [500 - 448, 500 - 448])


def test_spot_outside_image_is_an_error():
    spec = TileSpec.of(tile_px=64, target_mpp="native")
    with pytest.raises(InputError) as err:
        compute_geometry(
            "SPA9",
            ["in", "out"],
            np.array([[10.0, 10.0], [5000.0, 10.0]]),
            [[0, 0], [0, 1]],
            (1000, 1000),
            0.5,
            spec,
            slide_path="/x/SPA9.tif",
        )
    msg = str(err.value)
    assert "SPA9" in msg and "/x/SPA9.tif" in msg and "outside" in msg and "out at (5000" in msg


def test_tile_sample_roundtrip(demo_hest, tmp_path):
    out = tmp_path / "S2.npz"
    g = tile_sample(SamplePaths.in_hest_dir(demo_hest, "S2"), TileSpec.of(tile_px=32, target_mpp=4.0, grid=5), out)
    back = Geometry.load(out)
    assert back.n_spots == g.n_spots and back.scale == pytest.approx(8.0)
    np.testing.assert_array_equal(back.neighbour_mask, g.neighbour_mask)
    assert back.mpp_source == "metadata"
    assert list(tmp_path.iterdir()) == [out]  # no temporary leftovers
