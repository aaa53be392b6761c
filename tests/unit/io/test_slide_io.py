"""Pyramidal TIFF writing, OpenSlide reading and spot-centred crops."""

import numpy as np
import openslide
import pytest

from genedml.errors import InputError
from genedml.io.slide import open_slide, read_crop, tiff_mpp
from genedml.io.tiff import write_pyramidal_tiff


@pytest.fixture(scope="module")
def gradient_slide(tmp_path_factory):
    rng = np.random.default_rng(0)
    h, w = 1300, 1700
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx % 256), (yy % 256), ((xx + yy) // 8) % 256], -1).astype(np.uint8)
    img[::7, ::5] = rng.integers(0, 255, img[::7, ::5].shape)
    path = tmp_path_factory.mktemp("slide") / "grad.tif"
    write_pyramidal_tiff(path, img, mpp=0.5, compression="zlib", min_level_size=200)
    return path, img


def test_openslide_reads_pyramid_and_pixel_size(gradient_slide):
    path, img = gradient_slide
    slide = openslide.OpenSlide(str(path))
    assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert slide.dimensions == (img.shape[1], img.shape[0])
    assert slide.level_count >= 3
    assert slide.level_downsamples[1] == pytest.approx(2.0, rel=1e-3)
    assert tiff_mpp(slide) == pytest.approx(0.5, rel=1e-6)
    region = np.asarray(slide.read_region((100, 200), 0, (64, 48)))[..., :3]
    np.testing.assert_array_equal(region, img[200:248, 100:164])


def test_native_crop_is_pixel_exact(gradient_slide):
    path, img = gradient_slide
    slide = open_slide(path, "grad")
    crop = read_crop(slide, (500.0, 400.0), 64, 1.0)
    np.testing.assert_array_equal(crop, img[368:432, 468:532])


def test_downscaled_crop_comes_from_the_pyramid(gradient_slide):
    path, img = gradient_slide
    slide = open_slide(path, "grad")
    crop = read_crop(slide, (800.0, 600.0), 50, 2.0)  # 100 level-0 px -> 50 px, read from level 1
    assert crop.shape == (50, 50, 3)
    box = img[550:650, 750:850].astype(float).reshape(50, 2, 50, 2, 3).mean((1, 3))
    assert np.abs(crop.astype(float) - box).max() <= 1.0
    # a non-integer scale resamples: the mean colour is kept
    crop = read_crop(slide, (800.0, 600.0), 40, 2.5)
    assert crop.shape == (40, 40, 3)
    assert crop[..., 1].mean() == pytest.approx(img[550:650, 750:850, 1].mean(), abs=4)


def test_crop_outside_image_is_black(gradient_slide):
    path, _ = gradient_slide
    slide = open_slide(path, "grad")
    crop = read_crop(slide, (5.0, 5.0), 40, 1.0)
    assert np.all(crop[:10, :10] == 0)
    assert crop[30, 30].any()


def test_unreadable_slide_names_sample_and_file(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(InputError) as err:
        open_slide(bad, "SPA1")
    assert "SPA1" in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(InputError, match="not found"):
        open_slide(tmp_path / "missing.tif", "SPA2")


def test_truncated_tiff_is_reported(gradient_slide, tmp_path):
    path, _ = gradient_slide
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError) as err:
        slide = open_slide(cut, "CUT")
        read_crop(slide, (800.0, 600.0), 256, 1.0)
        slide.read_region((0, 0), 0, slide.dimensions)
    assert "CUT" in str(err.value)
