"""Legacy-ST import (HER2ST repository layout -> HEST layout) on real HER2ST sections, and its bad input.

Real files: ../shared/data/her2st (skipped when absent). The full-size import of one section is shared by
the tests of this module; bad-input cases run on a small real crop (a window of section C3's JPEG with its
spots and counts), each with one file broken the way users break them.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import openslide
import pandas as pd
import pytest
from PIL import Image

from genedml.cli import main as genedml_main
from genedml.io.legacy_st import estimate_mpp
from support.real_crops import make_legacy_crop
from support.workflow import need_shared

pytestmark = pytest.mark.shared_data
Image.MAX_IMAGE_PIXELS = None


def her2st() -> Path:
    return need_shared("her2st", "ST-imgs")


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genedml.cli", *map(str, args)], capture_output=True, text=True)


# ------------------------------------------------------------------------------------ full-size import


@pytest.fixture(scope="module")
def imported_c3(tmp_path_factory):
    """Section C3 converted by the real CLI (whole 9,270 x 9,936 px JPEG)."""
    src = her2st().parent
    out = tmp_path_factory.mktemp("hest")
    proc = run_cli(
        "import-st", "--st-dir", src, "--section", "C3", "--out-dir", out, "--patient", "C", "--dataset", "her2st"
    )
    assert proc.returncode == 0, proc.stderr
    return src, out, proc.stderr


def test_import_writes_hest_layout_with_pixel_size_in_tiff_tags(imported_c3):
    src, out, log = imported_c3
    meta = json.loads((out / "metadata/C3.json").read_text())
    mpp = meta["pixel_size_um_estimated"]
    # HEST-1k's estimates for the HER2ST sections are 0.67-0.70 µm/px; the 200 µm pitch must land there
    assert 0.67 <= mpp <= 0.70
    assert meta["pixel_size_um_source"].startswith("estimated from the 200 µm spot pitch")
    assert "estimated from the 200 µm spot pitch" in log and "HEST-1k's estimate" in log
    assert meta["hest_id"] == "SPA140" and meta["patient"] == "C"
    slide = openslide.OpenSlide(str(out / "wsis/C3.tif"))
    assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-4)
    assert slide.level_count >= 4
    with Image.open(next((src / "ST-imgs/C/C3").glob("*.jpg"))) as jpg:
        assert slide.dimensions == jpg.size


def test_import_keeps_raw_counts_barcodes_and_positions(imported_c3):
    src, out, _ = imported_c3
    a = ad.read_h5ad(out / "st/C3.h5ad")
    counts = pd.read_csv(src / "ST-cnts/C3.tsv.gz", sep="\t", index_col=0)
    spots = pd.read_csv(src / "ST-spotfiles/C3_selection.tsv", sep="\t")
    spots.index = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"])]
    # every spot with counts and a position; spot-file rows without counts are dropped
    assert list(a.obs_names) == [b for b in counts.index if b in spots.index]
    assert a.n_obs == 180
    sub = counts.loc[a.obs_names, a.var_names]
    np.testing.assert_array_equal(a.X.toarray(), sub.to_numpy())
    assert np.issubdtype(a.X.dtype, np.integer)
    np.testing.assert_allclose(a.obsm["spatial"], spots.loc[a.obs_names, ["pixel_x", "pixel_y"]].to_numpy())
    # HEST's convention for legacy ST: the id's x is array_row, y array_col
    np.testing.assert_array_equal(a.obs["array_row"], spots.loc[a.obs_names, "x"])
    np.testing.assert_array_equal(a.obs["array_col"], spots.loc[a.obs_names, "y"])
    # what HEST's own loader (hest.read_HESTData) reads: a downscaled image and its scale factor in uns
    st = a.uns["spatial"]["ST"]
    small, factor = st["images"]["downscaled_fullres"], st["scalefactors"]["tissue_downscaled_fullres_scalef"]
    with openslide.OpenSlide(str(out / "wsis/C3.tif")) as slide:
        w, h = slide.dimensions
    assert max(small.shape[:2]) <= 1024 and small.shape[:2] == (round(h * factor), round(w * factor))
    # a HEST file without the columns: the "{x}x{y}" ids are read with the same convention
    from genedml.io.hest import array_coords

    bare = a.copy()
    del bare.obs["array_row"], bare.obs["array_col"]
    np.testing.assert_array_equal(array_coords(bare), array_coords(a))


def test_pipeline_crop_equals_the_jpeg_crop(imported_c3, tmp_path):
    """The local crop the pipeline reads at a spot (native resolution) is the JPEG's crop around pixel_x, pixel_y."""
    from genedml.io.slide import read_box
    from genedml.tiles.geometry import Geometry

    src, out, _ = imported_c3
    geom_path = tmp_path / "C3.npz"
    proc = run_cli(
        "tile",
        "--hest-dir",
        out,
        "--sample",
        "C3",
        "--out",
        geom_path,
        "--tile-px",
        224,
        "--target-mpp",
        "native",
        "--grid",
        5,
    )
    assert proc.returncode == 0, proc.stderr
    g = Geometry.load(geom_path)
    spots = pd.read_csv(src / "ST-spotfiles/C3_selection.tsv", sep="\t")
    spots.index = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"])]
    slide = openslide.OpenSlide(str(out / "wsis/C3.tif"))
    jpeg = Image.open(next((src / "ST-imgs/C/C3").glob("*.jpg")))
    errors, shifted = [], []
    for i in np.linspace(0, g.n_spots - 1, 12).astype(int):
        px, py = spots.loc[g.barcodes[i], ["pixel_x", "pixel_y"]]
        np.testing.assert_allclose(g.centres[i], [px, py])
        half = 224 * g.scale / 2
        crop = read_box(slide, g.centres[i][0] - half, g.centres[i][1] - half, 224, 224, g.scale).astype(float)
        left, top = int(np.floor(px - 112 + 0.5)), int(np.floor(py - 112 + 0.5))
        ref = np.asarray(jpeg.crop((left, top, left + 224, top + 224)).convert("RGB"), dtype=float)
        errors.append(np.abs(crop - ref).mean())
        off = np.asarray(jpeg.crop((left + 4, top, left + 228, top + 224)).convert("RGB"), dtype=float)
        shifted.append(np.abs(crop - off).mean())
    # JPEG re-encoding (quality 90) costs about one grey level on average; a 4 px shift costs far more
    assert max(errors) < 2.5, errors
    assert min(shifted) > 3 * max(errors), (errors, shifted)


@pytest.mark.parametrize("technology,mpp", [("st", 0.69), ("visium", 0.2737)])
def test_pixel_size_from_the_spot_pitch(technology, mpp):
    """A rotated, jittered grid of known pixel size: square 200 µm (legacy ST) or hexagonal 100 µm (Visium)."""
    rng = np.random.default_rng(0)
    if technology == "st":
        cols, rows = np.meshgrid(np.arange(2, 30), np.arange(3, 25))
        um = np.stack([cols.ravel() * 200.0, rows.ravel() * 200.0], 1)
    else:  # Visium: odd rows are shifted by one column; columns step 2 between neighbours
        rows, cols = np.meshgrid(np.arange(0, 40), np.arange(0, 60, 2), indexing="ij")
        cols = cols + (rows % 2)
        um = np.stack([cols.ravel() * 50.0, rows.ravel() * 100.0 * np.sqrt(3) / 2], 1)
    theta = np.deg2rad(1.5)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pixel = um @ rot.T / mpp + [350.0, 420.0] + rng.normal(0, 3.0, um.shape)
    fit = estimate_mpp(np.stack([cols.ravel(), rows.ravel()], 1), pixel, technology)
    assert fit["mpp"] == pytest.approx(mpp, rel=2e-3)
    assert fit["mpp_columns"] == pytest.approx(mpp, rel=5e-3) and fit["mpp_rows"] == pytest.approx(mpp, rel=5e-3)
    with pytest.raises(ValueError, match="3 spots"):
        estimate_mpp(np.array([[0, 0], [1, 0]]), np.array([[0.0, 0.0], [290.0, 0.0]]), "st")


# ------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def mini_legacy(tmp_path_factory):
    """A real crop of C3: a 1,600 px window of the JPEG with its ~25 spots and the 250 listed genes."""
    root = tmp_path_factory.mktemp("legacy")
    assert make_legacy_crop(her2st().parent, "C3", root) >= 15
    return root


@pytest.fixture
def legacy(mini_legacy, tmp_path):
    root = tmp_path / "legacy"
    shutil.copytree(mini_legacy, root)
    return root


def import_st(capsys, root, out, *extra):
    code = genedml_main(
        ["import-st", "--st-dir", str(root), "--section", "C3", "--out-dir", str(out), *map(str, extra)]
    )
    return code, capsys.readouterr().err


def assert_failed_cleanly(code, err, out: Path, *needles):
    assert code == 2, err
    for needle in needles:
        assert str(needle) in err, err
    assert "Traceback" not in err
    left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not left, left  # no output, not even a temporary file


def test_mini_crop_imports(legacy, tmp_path, capsys):
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert code == 0, err
    a = ad.read_h5ad(tmp_path / "out/st/C3.h5ad")
    assert a.n_obs >= 15 and a.n_vars == 250
    # a second import refuses to overwrite what is there unless asked
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert code == 2 and "--overwrite" in err
    code, err = import_st(capsys, legacy, tmp_path / "out", "--overwrite", "--mpp", "0.7")
    assert code == 0, err
    assert json.loads((tmp_path / "out/metadata/C3.json").read_text())["pixel_size_um_source"] == "configured"


@pytest.mark.parametrize(
    "name,needle", [("ST-imgs/C/C3/HE.jpg", "truncated"), ("ST-cnts/C3.tsv.gz", "cannot read the counts table")]
)
def test_truncated_file(legacy, tmp_path, capsys, name, needle):
    path = legacy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert_failed_cleanly(code, err, tmp_path / "out", "'C3'", path, needle)


def test_image_that_is_not_a_jpeg(legacy, tmp_path, capsys):
    jpg = legacy / "ST-imgs/C/C3/HE.jpg"
    jpg.write_text("<html>403 Forbidden</html>")
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert_failed_cleanly(code, err, tmp_path / "out", "'C3'", jpg, "not an image")


def test_missing_files(legacy, mini_legacy, tmp_path, capsys):
    spot_file = legacy / "ST-spotfiles/C3_selection.tsv"
    spot_file.unlink()
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert_failed_cleanly(code, err, tmp_path / "out", "'C3'", spot_file, "spot file not found")
    shutil.copy(mini_legacy / "ST-spotfiles/C3_selection.tsv", spot_file)
    shutil.rmtree(legacy / "ST-imgs")
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert_failed_cleanly(code, err, tmp_path / "out", "'C3'", legacy / "ST-imgs", "no H&E image")


def _edit_counts(root: Path, edit):
    path = root / "ST-cnts/C3.tsv.gz"
    frame = pd.read_csv(path, sep="\t", index_col=0)
    frame = edit(frame)
    frame.to_csv(path, sep="\t")
    return path


@pytest.mark.parametrize("value,needle", [(-2, "negative"), (2.5, "not integers"), ("x1", "non-numeric")])
def test_counts_must_be_raw_integers(legacy, tmp_path, capsys, value, needle):
    def corrupt(f):
        f = f.astype(object)
        f.iloc[1, 3] = value
        return f

    path = _edit_counts(legacy, corrupt)
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert_failed_cleanly(code, err, tmp_path / "out", "'C3'", path, needle)


def test_duplicate_barcodes(legacy, tmp_path, capsys):
    path = _edit_counts(legacy, lambda f: pd.concat([f, f.iloc[:1]]))
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert_failed_cleanly(code, err, tmp_path / "out", "'C3'", path, "duplicate barcodes")


def test_spots_outside_the_image(legacy, tmp_path, capsys):
    path = legacy / "ST-spotfiles/C3_selection.tsv"
    spots = pd.read_csv(path, sep="\t")
    spots.loc[0, "pixel_x"] += 5000
    spots.to_csv(path, sep="\t", index=False)
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert_failed_cleanly(code, err, tmp_path / "out", "'C3'", "outside the 1600 x 1600 px image")


def test_no_pixel_size_anywhere(legacy, tmp_path, capsys):
    """Spots on one line cannot give the pitch, and no pixel size is configured."""
    path = legacy / "ST-spotfiles/C3_selection.tsv"
    spots = pd.read_csv(path, sep="\t")
    row = spots["y"].mode()[0]
    spots[spots["y"] == row].to_csv(path, sep="\t", index=False)
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert_failed_cleanly(code, err, tmp_path / "out", "'C3'", "no pixel size", "--mpp")
    # the same file imports once the pixel size is given
    code, err = import_st(capsys, legacy, tmp_path / "out", "--mpp", "0.69")
    assert code == 0, err


def test_gene_list_with_no_overlap(legacy, tmp_path, capsys):
    code, err = import_st(capsys, legacy, tmp_path / "hest")
    assert code == 0, err
    genes = tmp_path / "mouse_genes.txt"
    genes.write_text("Actb\nGapdh\nMbp\n")
    out = tmp_path / "genes" / "genes.tsv"
    proc = run_cli("genes", "--st", tmp_path / "hest/st/C3.h5ad", "--samples", "C3", "--list", genes, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert "no listed gene" in proc.stderr and str(genes) in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_truncated_tiff_through_the_reader(legacy, tmp_path, capsys):
    code, err = import_st(capsys, legacy, tmp_path / "hest")
    assert code == 0, err
    tif = tmp_path / "hest/wsis/C3.tif"
    data = tif.read_bytes()
    tif.write_bytes(data[: len(data) // 3])
    out = tmp_path / "tiles" / "C3.npz"
    code = genedml_main(
        [
            "tile",
            "--hest-dir",
            str(tmp_path / "hest"),
            "--sample",
            "C3",
            "--out",
            str(out),
            "--tile-px",
            "32",
            "--target-mpp",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert_failed_cleanly(code, err, out.parent, "'C3'", tif)


def test_counts_header_repeats(legacy, tmp_path, capsys, caplog):
    """Repeated gene symbols are kept (made unique) and reported, not silently merged."""
    path = legacy / "ST-cnts/C3.tsv.gz"
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    header = lines[0].split("\t")
    header[2] = header[1]
    lines[0] = "\t".join(header)
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    code, err = import_st(capsys, legacy, tmp_path / "out")
    assert code == 0, err
    assert f"gene symbols repeated in {path}: {header[1]}" in caplog.text
    a = ad.read_h5ad(tmp_path / "out/st/C3.h5ad")
    assert a.var_names.is_unique and f"{header[1]}-1" in a.var_names
