"""The spot-image store (rule spot_images): the embed stage's local crops as uint8 pixels, read back aligned."""

import numpy as np
import openslide
import pytest
import zarr

from genedml.errors import InputError
from genedml.io.hest import SamplePaths
from genedml.io.slide import read_crop
from genedml.tiles.geometry import TileSpec, tile_sample
from genedml.tiles.spot_images import SpotImageSpec, load_spot_images, write_spot_images


@pytest.fixture(scope="module")
def geometry(demo_hest, tmp_path_factory):
    paths = SamplePaths.in_hest_dir(demo_hest, "S1")
    return tile_sample(paths, TileSpec.of(tile_px=32, target_mpp=4.0), tmp_path_factory.mktemp("g") / "S1.npz")


@pytest.fixture(scope="module")
def store(geometry, tmp_path_factory):
    out = tmp_path_factory.mktemp("spot_images") / "S1.zarr"
    facts = write_spot_images(geometry, SpotImageSpec.of(px=48), out)
    return out, facts


def test_each_image_is_the_local_tile_resampled(geometry, store):
    """Same centre and the same square on the tissue as the embed stage's local crop, at px pixels."""
    out, facts = store
    images = load_spot_images(out, "S1")
    assert images.images.shape == (geometry.n_spots, 48, 48, 3) and images.images.dtype == np.uint8
    assert list(images.barcodes) == list(geometry.barcodes.astype(str))
    assert facts["crop_um"] == pytest.approx(32 * 4.0, rel=1e-3)  # tile_px x target_mpp
    slide = openslide.OpenSlide(geometry.slide_path)
    for i in (0, geometry.n_spots // 2, geometry.n_spots - 1):
        expected = read_crop(slide, geometry.centres[i], 48, geometry.tile0 / 48)
        np.testing.assert_array_equal(images.images[i], expected)
    # uint8 at 48 px: 6912 bytes a spot before compression; the facts count the bytes on disk
    assert 0 < facts["bytes_per_spot"] < 2 * 48 * 48 * 3


def test_images_follow_the_features_spot_order_and_missing_spots_are_an_error(store):
    out, _ = store
    images = load_spot_images(out, "S1")
    order = images.barcodes[::-1][:5]
    np.testing.assert_array_equal(images.aligned(order), images.images[::-1][:5])
    with pytest.raises(InputError, match="no spot image") as err:
        images.aligned(np.array(["not-a-spot", *order]))
    assert "S1" in str(err.value) and str(out) in str(err.value)


def test_an_unfinished_store_is_refused_and_a_failed_write_leaves_nothing(geometry, store, tmp_path):
    out, _ = store
    copy = tmp_path / "copy.zarr"
    group = zarr.open_group(str(copy), mode="w", zarr_format=3)
    group.create_array("images", shape=(2, 8, 8, 3), dtype="uint8")
    with pytest.raises(InputError, match="incomplete"):
        load_spot_images(copy, "S1")
    with pytest.raises(InputError, match="not found"):
        load_spot_images(tmp_path / "absent.zarr", "S1")
    broken = geometry.__class__(**{**geometry.__dict__, "slide_path": str(tmp_path / "missing.tif")})
    target = tmp_path / "never.zarr"
    with pytest.raises(InputError, match="slide image not found"):
        write_spot_images(broken, SpotImageSpec.of(px=32), target)
    assert not target.exists() and not list(tmp_path.glob(".never*"))


def test_px_below_the_schema_minimum_is_refused():
    with pytest.raises(ValueError):
        SpotImageSpec.of(px=8)
