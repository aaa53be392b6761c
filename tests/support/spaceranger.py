"""Space Ranger ``outs/`` folders written from real Visium tissue (the squidpy crop in ../shared/data), for the
Space Ranger reader's tests: both positions formats, a 10x HDF5 matrix with integer counts, scale factors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

CROP = "squidpy_visium_crop"
PITCH_PX = 137.0  # centre-to-centre distance of neighbouring spots in the crop's image (100 µm)


def write_10x_h5(path: Path, counts, barcodes, gene_ids, gene_names) -> None:
    """A feature-barcode matrix in the 10x HDF5 layout (CSC over barcodes), as Space Ranger writes it."""
    import h5py
    import scipy.sparse as sp

    m = sp.csc_matrix(np.asarray(counts).T.astype(np.int32))  # genes x barcodes
    with h5py.File(path, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["library_ids"] = np.array([b"genedml-fixture"])
        f.attrs["chemistry_description"] = b"Spatial 3' v1"
        f.attrs["software_version"] = b"spaceranger-2.0.0 (written by genedml's tests)"
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=m.data)
        g.create_dataset("indices", data=m.indices.astype(np.int64))
        g.create_dataset("indptr", data=m.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array(m.shape, dtype=np.int32))
        feat = g.create_group("features")
        n = len(gene_ids)
        feat.create_dataset("id", data=np.array(gene_ids, dtype="S"))
        feat.create_dataset("name", data=np.array(gene_names, dtype="S"))
        feat.create_dataset("feature_type", data=np.array(["Gene Expression"] * n, dtype="S"))
        feat.create_dataset("genome", data=np.array(["mm10"] * n, dtype="S"))
        feat.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))


def write_spaceranger_outs(data_dir: Path, root: Path, header: bool = True, outside: int = 0) -> tuple[Path, Path]:
    """(outs folder, image) of the crop as Space Ranger output: integer counts (the crop's log1p values
    undone and rounded), hexagonal array coordinates from the spot lattice, ``spot_diameter_fullres`` for
    Space Ranger's theoretical 65 µm spot at the crop's pitch; ``header``: Space Ranger >= 2.0 ``tissue_positions.csv`` (else the
    headerless ``tissue_positions_list.csv``); the first ``outside`` spots marked ``in_tissue`` 0."""
    import anndata as ad
    import pandas as pd

    src = data_dir / CROP
    a = ad.read_h5ad(src / "test_data.h5ad")
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    counts = np.rint(np.expm1(x)).astype(np.int32)
    xy = np.asarray(a.obsm["spatial"], float)
    row = np.rint((xy[:, 1] - xy[:, 1].min()) / (PITCH_PX * np.sqrt(3) / 2)).astype(int)
    col = np.rint((xy[:, 0] - xy[:, 0].min()) / (PITCH_PX / 2)).astype(int)
    outs = root / "outs"
    (outs / "spatial").mkdir(parents=True)
    write_10x_h5(outs / "filtered_feature_bc_matrix.h5", counts, a.obs_names, a.var["gene_ids"], a.var_names)
    positions = pd.DataFrame(
        {
            "barcode": a.obs_names,
            "in_tissue": np.r_[np.zeros(outside, int), np.ones(a.n_obs - outside, int)],
            "array_row": row,
            "array_col": col,
            "pxl_row_in_fullres": xy[:, 1].astype(int),
            "pxl_col_in_fullres": xy[:, 0].astype(int),
        }
    )
    name = "tissue_positions.csv" if header else "tissue_positions_list.csv"
    positions.to_csv(outs / "spatial" / name, index=False, header=header)
    diameter = PITCH_PX * 65.0 / 100.0  # Space Ranger: the diameter of a theoretical 65 µm spot
    (outs / "spatial" / "scalefactors_json.json").write_text(
        f'{{"spot_diameter_fullres": {diameter}, "tissue_hires_scalef": 1.0, "fiducial_diameter_fullres": '
        f'{diameter * 1.6}, "tissue_lowres_scalef": 0.5}}'
    )
    for png in ("tissue_hires_image.png", "tissue_lowres_image.png"):  # scanpy's read_visium opens them
        shutil.copy(src / "spatial" / png, outs / "spatial" / png)
    image = root / "image.jpg"
    shutil.copy(src / "test_img.jpg", image)
    return outs, image


def write_visium_hd_outs(data_dir: Path, root: Path, bin_um: int = 16, window_um: float = 300.0) -> tuple[Path, Path]:
    """(outs folder, image) of a Visium HD sample over the crop's tissue: square ``bin_um`` bins in a
    ``window_um`` window at the image centre under ``binned_outputs/square_{bin:03d}um/``; each bin's counts are
    drawn (Poisson, seed 0) from the nearest real Visium spot's counts scaled by the bin's share of the spot's
    area; positions in ``tissue_positions.parquet``, ``microns_per_pixel`` in the scale factors."""
    import anndata as ad
    import pandas as pd
    from scipy.spatial import cKDTree

    src = data_dir / CROP
    a = ad.read_h5ad(src / "test_data.h5ad")
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    spot_counts = np.expm1(x)
    xy = np.asarray(a.obsm["spatial"], float)
    mpp = 100.0 / PITCH_PX
    from PIL import Image

    with Image.open(src / "test_img.jpg") as img:
        w, h = img.size
    side_px = bin_um / mpp
    n = int(window_um // bin_um)
    x0, y0 = w / 2 - n * side_px / 2, h / 2 - n * side_px / 2
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    centres = np.stack([x0 + (cols + 0.5) * side_px, y0 + (rows + 0.5) * side_px], 1)
    _, nearest = cKDTree(xy).query(centres)
    share = bin_um**2 / (np.pi * 27.5**2)
    counts = np.random.default_rng(0).poisson(spot_counts[nearest] * share).astype(np.int32)
    barcodes = [f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols)]
    base = root / "outs" / "binned_outputs" / f"square_{bin_um:03d}um"
    (base / "spatial").mkdir(parents=True)
    write_10x_h5(base / "filtered_feature_bc_matrix.h5", counts, barcodes, a.var["gene_ids"], a.var_names)
    pd.DataFrame(
        {
            "barcode": barcodes,
            "in_tissue": np.ones(len(barcodes), int),
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": centres[:, 1],
            "pxl_col_in_fullres": centres[:, 0],
        }
    ).to_parquet(base / "spatial" / "tissue_positions.parquet", index=False)
    (base / "spatial" / "scalefactors_json.json").write_text(
        f'{{"spot_diameter_fullres": {side_px}, "bin_size_um": {float(bin_um)}, "microns_per_pixel": {mpp}, '
        '"tissue_hires_scalef": 1.0, "tissue_lowres_scalef": 0.5}'
    )
    image = root / "image.jpg"
    shutil.copy(src / "test_img.jpg", image)
    return root / "outs", image
