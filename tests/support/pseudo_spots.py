"""HEST-shaped pseudo-spot samples (Xenium-like: a square lattice of 55 µm pseudo-spots, no array coordinates
in obs) over the demo sections' slides, for the pseudo-spot tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

PITCH_UM = 55.0


def write_xenium_like(demo_hest: Path, sample: str, root: Path) -> tuple:
    """Copy demo section ``sample`` into the HEST folder ``root`` with its spots replaced by 55 µm square
    pseudo-spots (counts drawn, seed 0, from the nearest demo spot), ids that are not array positions and
    Xenium metadata; returns (SamplePaths, lattice shape (rows, cols))."""
    import anndata as ad
    import pandas as pd
    from scipy.spatial import cKDTree

    from genedml.io.hest import SamplePaths

    src = SamplePaths.in_hest_dir(demo_hest, sample)
    paths = SamplePaths.layout(root, sample)
    for kind in ("wsis", "st", "metadata"):
        (root / kind).mkdir(parents=True, exist_ok=True)
    shutil.copy(src.slide, paths.slide)
    meta = json.loads(src.metadata.read_text())
    mpp = float(meta["pixel_size_um_estimated"])
    spots = ad.read_h5ad(src.st)
    xy = np.asarray(spots.obsm["spatial"], float)
    pitch = PITCH_UM / mpp
    lo, hi = xy.min(0) + pitch, xy.max(0) - pitch
    gx, gy = np.meshgrid(np.arange(lo[0], hi[0], pitch), np.arange(lo[1], hi[1], pitch))
    centres = np.stack([gx.ravel(), gy.ravel()], 1)
    _, nearest = cKDTree(xy).query(centres)
    x = spots.X.toarray() if hasattr(spots.X, "toarray") else np.asarray(spots.X)
    counts = np.random.default_rng(0).poisson(x[nearest] * 0.3).astype(np.int32)
    pseudo = ad.AnnData(
        X=counts,
        obs=pd.DataFrame({"in_tissue": 1}, index=[f"ps{i}" for i in range(len(centres))]),
        var=spots.var.copy(),
    )
    pseudo.obsm["spatial"] = centres
    pseudo.write_h5ad(paths.st)
    meta.update({"id": sample, "st_technology": "Xenium", "spot_diameter": PITCH_UM, "inter_spot_dist": PITCH_UM})
    paths.metadata.write_text(json.dumps(meta))
    return paths, gx.shape
