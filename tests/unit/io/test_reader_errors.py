"""The readers of a user's files say what is wrong: a slide OpenSlide does not recognise (what the file is and
how to convert it) and a section's .h5ad (missing, empty, not HDF5, duplicate gene symbols)."""

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from genedml.errors import InputError
from genedml.io.hest import load_st, read_st
from genedml.io.slide import open_slide

RNG = np.random.default_rng(0)


def rgb(h=300, w=400):
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------- slides


def open_error(path) -> str:
    with pytest.raises(InputError) as err:
        open_slide(path, "S1")
    assert err.value.sample == "S1" and err.value.path == str(path)
    message = str(err.value)
    assert "sample 'S1'" in message and str(path) in message
    return message


def test_strip_tiff_says_strips_and_how_to_convert(tmp_path):
    path = tmp_path / "S1.tif"
    tifffile.imwrite(path, rgb(), photometric="rgb")  # strips, no tiles, no pyramid
    with tifffile.TiffFile(path) as tif:
        assert not tif.pages[0].is_tiled
    message = open_error(path)
    assert "a TIFF with strips, not tiles, and 1 level (400 x 300 px)" in message
    assert "vips tiffsave" in message and "--tile --pyramid" in message
    assert "Unsupported or missing image file" not in message


def test_strip_tiff_with_reduced_pages_counts_its_levels(tmp_path):
    path = tmp_path / "S1.tif"
    image = rgb(512, 512)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, photometric="rgb", subfiletype=0)
        tif.write(image[::2, ::2], photometric="rgb", subfiletype=1)
    assert "a TIFF with strips, not tiles, and 2 levels (512 x 512 px)" in open_error(path)


def test_jpeg_renamed_tif_says_jpeg_and_how_to_convert(tmp_path):
    path = tmp_path / "S1.tif"
    Image.fromarray(rgb()).save(path, format="JPEG", quality=90)
    message = open_error(path)
    assert "the file is a JPEG image (named .tif)" in message
    assert "vips tiffsave" in message and "write_pyramidal_tiff" in message


def test_png_and_non_image_are_told_apart(tmp_path):
    png = tmp_path / "S1.tif"
    Image.fromarray(rgb()).save(png, format="PNG")
    assert "a PNG image (named .tif)" in open_error(png)
    junk = tmp_path / "S2.tif"
    junk.write_bytes(b"<html>404 not found</html>")
    message = open_error(junk)
    assert "not an image file" in message and "download or copy the slide again" in message
    assert "vips" not in message
    empty = tmp_path / "S3.tif"
    empty.write_bytes(b"")
    assert "empty (0 bytes)" in open_error(empty)


def test_tiled_pyramidal_tiff_still_opens(tmp_path):
    from genedml.io.tiff import write_pyramidal_tiff

    path = tmp_path / "S1.tif"
    write_pyramidal_tiff(path, rgb(1100, 1100), 0.5, min_level_size=256)
    slide = open_slide(path, "S1")
    assert slide.level_count > 1


# ------------------------------------------------------------------------------------------ expression


def write_st(path, genes, n=4):
    with warnings.catch_warnings():  # anndata warns about duplicate symbols, written here on purpose
        warnings.filterwarnings("ignore", message="Variable names are not unique")
        a = ad.AnnData(
            X=np.arange(n * len(genes), dtype=np.int32).reshape(n, len(genes)),
            var=pd.DataFrame(index=genes),
            obs=pd.DataFrame(index=[f"b{i}" for i in range(n)]),
        )
        a.obsm["spatial"] = np.arange(2 * n, dtype=float).reshape(n, 2)
        a.write_h5ad(path)
    return path


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "expression file (.h5ad) is empty (0 bytes)"),
        (b"\x00" * 100, "is not an HDF5 file"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n", "Git LFS pointer"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "gzip-compressed"),
    ],
)
def test_broken_h5ad_is_named(tmp_path, content, needle):
    path = tmp_path / "S1.h5ad"
    path.write_bytes(content)
    for reader in (read_st, load_st):
        with pytest.raises(InputError) as err:
            reader(path, "S1")
        assert err.value.sample == "S1" and err.value.path == str(path)
        assert needle in str(err.value)


def test_missing_h5ad_and_folder(tmp_path):
    with pytest.raises(InputError, match=r"sample 'S1'.*not found"):
        load_st(tmp_path / "S1.h5ad", "S1")
    (tmp_path / "S2.h5ad").mkdir()
    with pytest.raises(InputError, match=r"sample 'S2'.*is a folder"):
        load_st(tmp_path / "S2.h5ad", "S2")


def test_no_spatial_is_named(tmp_path):
    path = write_st(tmp_path / "S1.h5ad", ["A", "B"])
    a = ad.read_h5ad(path)
    del a.obsm["spatial"]
    a.write_h5ad(path)
    with pytest.raises(InputError, match=r"sample 'S1', file .*S1.h5ad: obsm\['spatial'\]"):
        load_st(path, "S1")


def test_duplicate_symbols_are_renamed_scanpy_way_with_a_warning(tmp_path, caplog):
    path = write_st(tmp_path / "S1.h5ad", ["A", "B", "A", "C", "B", "A"])
    with caplog.at_level(logging.WARNING, logger="genedml.io.hest"):
        adata = load_st(path, "S1")
    assert adata.var_names.tolist() == ["A", "B", "A-1", "C", "B-1", "A-2"]
    np.testing.assert_array_equal(adata[:, "A-1"].X.ravel(), np.arange(4) * 6 + 2)  # columns stay aligned
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"sample 'S1', file {path}: 2 gene symbol(s) occur more than once")
    assert "(3 columns renamed)" in message and "A (3x), B (2x)" in message and "A-1" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genedml.io.hest"):
        unique = read_st(write_st(tmp_path / "S2.h5ad", ["A", "B"]), "S2")
    assert unique.var_names.tolist() == ["A", "B"] and not caplog.records
