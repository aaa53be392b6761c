"""HEST-shaped pseudo-spot samples (Xenium and other binned data: a square lattice, no array coordinates in
obs): the lattice is read from the pixel centres and drives tiling, label smoothing and the global grid."""

import anndata as ad
import numpy as np
import pytest

from genedml.io.hest import array_coords, square_lattice
from genedml.networks.context import grid_positions
from genedml.study.targets import TargetSpec, build_sample_targets
from genedml.tiles.geometry import TileSpec, tile_sample
from support.pseudo_spots import PITCH_UM, write_xenium_like


@pytest.fixture
def xenium_like(demo_hest, tmp_path):
    """Demo section S1's slide with 55 µm square pseudo-spots over it (``support.pseudo_spots``)."""
    return write_xenium_like(demo_hest, "S1", tmp_path / "hest")


def test_the_square_lattice_is_read_from_the_pixel_centres(xenium_like):
    paths, (rows, cols) = xenium_like
    a = ad.read_h5ad(paths.st)
    rc = array_coords(a, "S1")
    assert rc.min() == 0 and tuple(rc.max(0) + 1) == (rows, cols) and len(np.unique(rc, axis=0)) == len(rc)
    np.testing.assert_array_equal(grid_positions(rc, a.obsm["spatial"], "S1"), rc)  # the global encoder's grid
    # a hexagonal layout is not taken for a square one
    hexagonal = np.array([[c * 2 + (r % 2), r * np.sqrt(3)] for r in range(4) for c in range(4)], float)
    assert square_lattice(hexagonal) is None


def test_tiles_and_smoothed_labels_follow_the_lattice(xenium_like, tmp_path):
    paths, _ = xenium_like
    g = tile_sample(paths, TileSpec.of(tile_px=32, target_mpp=2.0), tmp_path / "g.npz")
    assert g.audit_facts()["technology"] == "Xenium" and g.audit_facts()["spot_pitch_um"] == PITCH_UM
    genes = ad.read_h5ad(paths.st).var_names[:5].tolist()
    build_sample_targets(paths.st, "S1", genes, TargetSpec.of(recipe="reference"), tmp_path / "t.h5ad")
    t = ad.read_h5ad(tmp_path / "t.h5ad")
    rc = t.obsm["array_coords"]
    # an interior pseudo-spot: the mean of its 3 x 3 block of log10(1 + 1e4 c / sum over the chosen genes)
    counts = t.layers["counts"].astype(float)
    lib = counts.sum(1, keepdims=True)
    y = np.log10(1 + 1e4 * counts / np.where(lib > 0, lib, 1))
    i = int(np.flatnonzero((rc[:, 0] == 2) & (rc[:, 1] == 2))[0])
    block = (np.abs(rc[:, 0] - 2) <= 1) & (np.abs(rc[:, 1] - 2) <= 1) & (lib[:, 0] > 0)
    assert block.sum() == 9
    np.testing.assert_allclose(t.X[i], y[block].mean(0), rtol=1e-5, atol=1e-6)
