"""Pyramidal TIFF writing, OpenSlide reading and the one region reader (level-0 boxes, spot-centred crops)."""

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from genedml.errors import InputError
from genedml.io.slide import crop_corner, open_slide, read_box, read_crop, tiff_mpp
from genedml.io.tiff import pyramid_levels, write_pyramidal_tiff


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


@pytest.fixture(scope="module")
def levels(gradient_slide):
    """The slide's pyramid levels as written (zlib is lossless: OpenSlide returns exactly these pixels)."""
    return pyramid_levels(gradient_slide[1], min_size=200)


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


def test_box_copy_is_pixel_exact_at_native_and_reduced_levels(gradient_slide, levels):
    path, img = gradient_slide
    slide = open_slide(path, "grad")
    box = read_box(slide, 100.0, 200.0, 64, 48, 1.0)  # width and height differ: (h, w, 3)
    assert box.shape == (48, 64, 3) and box.dtype == np.uint8
    np.testing.assert_array_equal(box, img[200:248, 100:164])
    # scale 2 and 4 are pyramid downsamples: the level's pixels are copied, not interpolated
    np.testing.assert_array_equal(read_box(slide, 800.0, 600.0, 50, 40, 2.0), levels[1][300:340, 400:450])
    np.testing.assert_array_equal(read_box(slide, 800.0, 600.0, 30, 20, 4.0), levels[2][150:170, 200:230])
    # the centred-crop form is the same reader around a centre
    x0, y0 = crop_corner((532.0, 424.0), 64, 1.0)
    assert (x0, y0) == (500.0, 392.0)
    np.testing.assert_array_equal(read_crop(slide, (532.0, 424.0), 64, 1.0), read_box(slide, 500.0, 392.0, 64, 64, 1.0))


def test_box_corner_snaps_to_the_nearest_level_pixel(gradient_slide, levels):
    path, img = gradient_slide
    slide = open_slide(path, "grad")
    # native: a corner within half a pixel of a whole pixel is moved onto it, a half pixel rounds up
    np.testing.assert_array_equal(read_box(slide, 100.4, 199.6, 32, 32, 1.0), img[200:232, 100:132])
    np.testing.assert_array_equal(read_box(slide, 100.5, 200.49, 32, 32, 1.0), img[200:232, 101:133])
    # level 1 (scale 2): the grid is every 2 level-0 px; 751 is half a level pixel past 750 and rounds up
    np.testing.assert_array_equal(read_box(slide, 751.0, 600.0, 20, 20, 2.0), levels[1][300:320, 376:396])
    np.testing.assert_array_equal(read_box(slide, 750.9, 600.0, 20, 20, 2.0), levels[1][300:320, 375:395])
    np.testing.assert_array_equal(read_box(slide, 749.1, 599.1, 20, 20, 2.0), levels[1][300:320, 375:395])


def test_box_resampled_from_the_reduced_level(gradient_slide, levels):
    path, _ = gradient_slide
    slide = open_slide(path, "grad")
    for x0, y0, out_w, out_h, scale, level in [
        (800.3, 600.7, 40, 30, 2.5, 1),
        (1200.9, 400.1, 37, 41, 2.5, 1),
        (800.3, 600.7, 33, 47, 5.0, 2),
        (400.0, 200.0, 25, 25, 1.5, 0),
    ]:
        box = read_box(slide, x0, y0, out_w, out_h, scale)
        assert box.shape == (out_h, out_w, 3)
        down = 2.0**level
        # a direct bilinear resize of the sub-pixel box from that level's pixels, over the window the reader
        # reads (whole level-0 corner, two level pixels of margin): the same pixels
        left, top = int(np.floor(x0)), int(np.floor(y0))
        lx, ly = int(left / down), int(top / down)
        window = levels[level][
            ly : ly + int(np.ceil(out_h * scale / down)) + 2, lx : lx + int(np.ceil(out_w * scale / down)) + 2
        ]
        ox, oy = (x0 - left) / down, (y0 - top) / down
        ref = Image.fromarray(np.ascontiguousarray(window)).resize(
            (out_w, out_h),
            Image.Resampling.BILINEAR,
            box=(ox, oy, ox + out_w * scale / down, oy + out_h * scale / down),
        )
        np.testing.assert_array_equal(box, np.asarray(ref))
        # resizing the whole level instead differs only at the border, where the window clips the filter
        # (and by float rounding of the filter's taps, a grey level at most)
        whole = Image.fromarray(levels[level]).resize(
            (out_w, out_h),
            Image.Resampling.BILINEAR,
            box=(x0 / down, y0 / down, (x0 + out_w * scale) / down, (y0 + out_h * scale) / down),
        )
        assert np.abs(box.astype(int) - np.asarray(whole))[1:-1, 1:-1].max() <= 1


def test_box_partly_outside_the_image_is_black_there(gradient_slide):
    path, img = gradient_slide
    slide = open_slide(path, "grad")
    h, w = img.shape[:2]
    box = read_box(slide, -10.3, -20.7, 40, 40, 1.0)  # corner snaps to (-10, -21)
    assert not box[:21].any() and not box[:, :10].any()
    np.testing.assert_array_equal(box[21:, 10:], img[0:19, 0:30])
    box = read_box(slide, w - 16.0, h - 8.0, 32, 32, 1.0)  # past the right and bottom edges
    assert not box[8:].any() and not box[:, 16:].any()
    np.testing.assert_array_equal(box[:8, :16], img[h - 8 :, w - 16 :])
    box = read_box(slide, -50.2, 100.6, 40, 40, 2.5)  # resampled: black outside, image inside
    assert not box[:, :15].any() and box[:, 25:].all(axis=-1).mean() > 0.5


def test_broken_slide_fails_the_read_instead_of_returning_pixels(gradient_slide, tmp_path):
    path, img = gradient_slide
    with tifffile.TiffFile(path) as tif:  # level-0 tiles are 256 px, 7 to a row: tile 7 is row 1, column 0
        offset, count = tif.pages[0].dataoffsets[7], tif.pages[0].databytecounts[7]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\xff" * count
    broken = tmp_path / "broken_tile.tif"
    broken.write_bytes(bytes(data))
    slide = open_slide(broken, "BROKEN")  # opening reads only the smallest level, which is intact
    np.testing.assert_array_equal(read_box(slide, 0.0, 0.0, 64, 64, 1.0), img[:64, :64])
    with pytest.raises(openslide.OpenSlideError, match="Decoding error"):
        read_box(slide, 10.0, 300.0, 64, 64, 1.0)
