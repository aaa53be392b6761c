"""Bad input: a clear error naming sample, file and problem, exit code 2, and no partial output."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import tifffile

GENEDML = [sys.executable, "-m", "genedml.cli"]


def genedml(*args):
    return subprocess.run([*GENEDML, *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def hest_copy(demo_hest, tmp_path):
    root = tmp_path / "hest"
    shutil.copytree(demo_hest, root)
    return root


def tile(root, sample, out):
    return genedml("tile", "--hest-dir", root, "--sample", sample, "--out", out, "--tile-px", 32, "--target-mpp", 2)


def assert_clean_failure(proc, out: Path, *needles):
    assert proc.returncode == 2, proc.stderr
    for needle in needles:
        assert str(needle) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def rewrite_st(path, edit):
    a = ad.read_h5ad(path)
    a = edit(a)
    a.write_h5ad(path)


def test_missing_spatial(hest_copy, tmp_path):
    def drop(a):
        del a.obsm["spatial"]
        return a

    rewrite_st(hest_copy / "st/S1.h5ad", drop)
    out = tmp_path / "out" / "S1.npz"
    out.parent.mkdir()
    assert_clean_failure(tile(hest_copy, "S1", out), out, "S1", "S1.h5ad", "obsm['spatial']")


def test_duplicate_barcodes(hest_copy, tmp_path):
    def dup(a):
        names = a.obs_names.to_numpy().copy()
        names[1] = names[0]
        a.obs_names = names
        return a

    rewrite_st(hest_copy / "st/S2.h5ad", dup)
    out = tmp_path / "S2.npz"
    assert_clean_failure(tile(hest_copy, "S2", out), out, "S2", "duplicate barcodes")


@pytest.mark.parametrize("value,needle", [(-3, "negative"), (0.5, "not integers")])
def test_counts_must_be_raw(hest_copy, tmp_path, value, needle):
    def corrupt(a):
        x = a.X.astype(np.float32)
        x[0, 0] = value
        a.X = x
        return a

    rewrite_st(hest_copy / "st/S3.h5ad", corrupt)
    genes = tmp_path / "genes.tsv"
    genes.write_text("rank\tgene\n1\tERBB2\n")
    out = tmp_path / "S3.h5ad"
    proc = genedml("targets", "--sample", "S3", "--st", hest_copy / "st/S3.h5ad", "--genes", genes, "--out", out)
    assert_clean_failure(proc, out, "S3", "S3.h5ad", needle)


def test_no_pixel_size_anywhere(hest_copy, tmp_path):
    meta_path = hest_copy / "metadata/S4.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("pixel_size_um_estimated")
    meta.pop("pixel_size_um_embedded")
    meta_path.write_text(json.dumps(meta))
    with tifffile.TiffFile(hest_copy / "wsis/S4.tif") as tif:
        image = tif.pages[0].asarray()
    tifffile.imwrite(hest_copy / "wsis/S4.tif", image, tile=(256, 256), photometric="rgb")  # no resolution tags
    out = tmp_path / "S4.npz"
    assert_clean_failure(tile(hest_copy, "S4", out), out, "S4", "no pixel size")


def _tags_ten_times_off(root, sample, drop_metadata: bool) -> float:
    """Rewrite the sample's slide with resolution tags saying a tenth of the metadata's µm/px, as HEST's TIFFs do
    (pixels per cm written where pixels per mm are meant); return the metadata's µm/px."""
    from genedml.io.tiff import write_pyramidal_tiff

    meta_path = root / f"metadata/{sample}.json"
    meta = json.loads(meta_path.read_text())
    mpp = float(meta["pixel_size_um_estimated"])
    if drop_metadata:
        meta.pop("pixel_size_um_estimated")
        meta.pop("pixel_size_um_embedded", None)
        meta_path.write_text(json.dumps(meta))
    with tifffile.TiffFile(root / f"wsis/{sample}.tif") as tif:
        image = tif.pages[0].asarray()
    write_pyramidal_tiff(root / f"wsis/{sample}.tif", image, mpp=mpp / 10)
    return mpp


def test_slide_tags_ten_times_off_are_reported_and_the_metadata_wins(hest_copy, tmp_path):
    from genedml.tiles.geometry import Geometry

    mpp = _tags_ten_times_off(hest_copy, "S1", drop_metadata=False)
    out = tmp_path / "S1.npz"
    proc = tile(hest_copy, "S1", out)
    assert proc.returncode == 0, proc.stderr
    assert "S1" in proc.stderr and f"{mpp / 10:.4g} µm/px" in proc.stderr and f"{mpp:.4g} µm/px" in proc.stderr
    assert "using the metadata's" in proc.stderr
    g = Geometry.load(out)
    assert g.slide_mpp == pytest.approx(mpp) and g.mpp_source == "metadata"


def test_implausible_slide_tags_without_metadata_are_an_error(hest_copy, tmp_path):
    mpp = _tags_ten_times_off(hest_copy, "S2", drop_metadata=True)
    out = tmp_path / "S2.npz"
    assert mpp / 10 < 0.1  # the demo's 0.5 µm/px read as 0.05: below any H&E scan's
    assert_clean_failure(tile(hest_copy, "S2", out), out, "S2", "not plausible for H&E", "pixel_size_um_estimated")


def test_missing_and_unreadable_slide(hest_copy, tmp_path):
    (hest_copy / "wsis/S1.tif").unlink()
    out = tmp_path / "S1.npz"
    assert_clean_failure(tile(hest_copy, "S1", out), out, "S1", "not found")
    (hest_copy / "wsis/S1.tif").write_bytes(b"not a tiff at all")
    assert_clean_failure(tile(hest_copy, "S1", out), out, "S1", "S1.tif")


def test_spots_outside_image(hest_copy, tmp_path):
    def move(a):
        a.obsm["spatial"] = a.obsm["spatial"] + 1e6
        return a

    rewrite_st(hest_copy / "st/S2.h5ad", move)
    out = tmp_path / "S2.npz"
    assert_clean_failure(tile(hest_copy, "S2", out), out, "S2", "outside")
