"""data.in_tissue: spots HEST / Space Ranger mark outside the tissue take no part, in every stage alike."""

import shutil
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

from genedml.errors import InputError
from genedml.io.hest import SamplePaths, SpotFilterSpec
from genedml.study.genes import GeneSpec, select_genes
from genedml.study.targets import TargetSpec, build_sample_targets
from genedml.tiles.geometry import Geometry, TileSpec, tile_sample

OUTSIDE = 5


@pytest.fixture
def section(demo_hest, tmp_path):
    """S1 with its first OUTSIDE spots marked outside the tissue (in_tissue 0); (paths, their barcodes)."""
    root = tmp_path / "hest"
    shutil.copytree(demo_hest, root)
    paths = SamplePaths.in_hest_dir(root, "S1")
    a = ad.read_h5ad(paths.st)
    a.obs["in_tissue"] = np.r_[np.zeros(OUTSIDE, int), np.ones(a.n_obs - OUTSIDE, int)]
    a.write_h5ad(paths.st)
    return paths, a.obs_names[:OUTSIDE].tolist(), a.n_obs


def test_tile_genes_and_targets_leave_out_the_same_spots(section, tmp_path):
    paths, outside, n = section
    spec = TileSpec.of(tile_px=32, target_mpp=2.0)
    g = tile_sample(paths, spec, tmp_path / "g.npz")
    assert g.n_spots == n - OUTSIDE and not set(outside) & set(g.barcodes)
    genes = ad.read_h5ad(paths.st).var_names[:3].tolist()
    build_sample_targets(paths.st, "S1", genes, TargetSpec.of(), tmp_path / "t.h5ad")
    t = ad.read_h5ad(tmp_path / "t.h5ad")
    assert list(t.obs_names) == list(g.barcodes)  # features and targets hold the same spots
    everything = SpotFilterSpec.of(in_tissue="all")
    assert tile_sample(paths, spec, tmp_path / "all.npz", everything).n_spots == n
    _, only = select_genes({"S1": paths.st}, GeneSpec.of(n_top=5))
    _, every = select_genes({"S1": paths.st}, GeneSpec.of(n_top=5), everything)
    assert (only["total_counts"] <= every["total_counts"]).all()


def test_the_tile_log_counts_the_spots_left_out(section, tmp_path):
    paths, _, n = section
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genedml.cli",
            "tile",
            "--sample",
            "S1",
            "--slide",
            str(paths.slide),
            "--st",
            str(paths.st),
            "--metadata",
            str(paths.metadata),
            "--out",
            str(tmp_path / "g.npz"),
            "--tile-px",
            "32",
            "--target-mpp",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{OUTSIDE} of {n} spots are outside the tissue" in proc.stderr
    assert Geometry.load(tmp_path / "g.npz").n_spots == n - OUTSIDE


def test_a_section_with_no_spot_in_tissue_is_an_error(section, tmp_path):
    paths, _, _ = section
    a = ad.read_h5ad(paths.st)
    a.obs["in_tissue"] = 0
    a.write_h5ad(paths.st)
    with pytest.raises(InputError, match="in_tissue 0") as err:
        tile_sample(paths, TileSpec.of(tile_px=32, target_mpp=2.0), tmp_path / "g.npz")
    assert "S1" in str(err.value) and "data.in_tissue: all" in str(err.value) and not (tmp_path / "g.npz").exists()
