"""Convert a user's Space Ranger Visium / Visium HD output to a HEST-1k layout sample (``data.source: spaceranger``).

Input, per sample (sample-sheet columns ``spaceranger`` and ``image``):
- the ``outs/`` folder of ``spaceranger count``: ``filtered_feature_bc_matrix.h5`` (read with scanpy's
  ``read_10x_h5``), ``spatial/tissue_positions.csv`` (Space Ranger >= 2.0, with a header) or
  ``spatial/tissue_positions_list.csv`` (older, no header; columns barcode, in_tissue, array_row, array_col,
  pxl_row_in_fullres, pxl_col_in_fullres), ``spatial/scalefactors_json.json``;
- the full-resolution H&E image given to Space Ranger (TIFF / BigTIFF / SVS / anything OpenSlide opens,
  or a JPEG / PNG).

Output, as HEST ships a sample: ``wsis/{sample}.tif`` (a pyramidal TIFF with the µm/px in its tags),
``st/{sample}.h5ad`` (raw integer counts, obs ``in_tissue``, ``array_row``, ``array_col`` and the full-res
pixel columns, ``obsm['spatial']`` = (pxl_col, pxl_row) level-0 px) and ``metadata/{sample}.json``.

Visium HD (``data.hd_bin_um: 2 | 8 | 16``): the same files under ``binned_outputs/square_{bin:03d}um/``, the
positions in ``tissue_positions.parquet``; µm/px is the scale factors' ``microns_per_pixel`` (else the bin
size over ``spot_diameter_fullres``, which is the bin's side in pixels). ``data.hd_pseudo_spot_um`` pools
k x k bins (k = round(side / bin)) into square pseudo-spots: counts summed, positions averaged, array
coordinates ``(row // k, col // k)``, ``in_tissue`` when any bin is, ``obs['n_bins']`` the bins pooled.

The pixel size of Visium comes from the spot lattice, as HEST estimates it: neighbouring spots of one array
row (columns two apart) are 100 µm apart, so µm/px = 100 / their median distance in full-resolution pixels.
Space Ranger's ``spot_diameter_fullres`` is the diameter of a theoretical 65 µm spot (not the 55 µm of the
printed spot), so 65 / spot_diameter_fullres is the fallback for a lattice too small to measure, and a
disagreement of the two beyond 5% is logged; the metadata says which was used (``pixel_size_um_source``). Spots the matrix has but the positions lack (or the reverse) are logged
and left out; ``in_tissue`` is kept, and ``data.in_tissue`` decides later which spots take part.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

import genedml
from genedml.errors import InputError
from genedml.io.hest import check_raw_counts, check_spots_inside, free_outputs, write_sample
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

VISIUM_SPOT_UM = 55.0  # spot diameter
# what Space Ranger's spot_diameter_fullres measures: a theoretical 65 µm spot (the 55 µm spot and a margin)
SCALEFACTOR_SPOT_UM = 65.0
VISIUM_PITCH_UM = 100.0  # centre-to-centre distance of neighbouring spots
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


@dataclass(frozen=True)
class SpaceRangerSpec(StageSpec):
    """How Space Ranger samples are converted (config ``data``: the TIFF's JPEG quality)."""

    section: ClassVar[str] = "data"
    keys: ClassVar[tuple[str, ...]] = ("jpeg_quality", "hd_bin_um", "hd_pseudo_spot_um")

    jpeg_quality: int
    hd_bin_um: int | None  # Visium HD bin size (None: Visium)
    hd_pseudo_spot_um: float | None  # Visium HD: side of the pooled pseudo-spots (None: the bins)

    @property
    def pool(self) -> int:
        """Bins per side of a pseudo-spot (1: no pooling)."""
        if self.hd_bin_um is None or self.hd_pseudo_spot_um is None:
            return 1
        return max(1, int(round(self.hd_pseudo_spot_um / self.hd_bin_um)))


HD_POSITIONS = "tissue_positions.parquet"


@dataclass(frozen=True)
class SpaceRangerFiles:
    """The files of one Space Ranger ``outs/`` folder and the full-resolution image."""

    outs: Path
    matrix: Path
    positions: Path
    scalefactors: Path
    image: Path

    @classmethod
    def find(cls, outs, image, sample: str, hd_bin_um: int | None = None) -> SpaceRangerFiles:
        """The files of a Visium sample, or of a Visium HD sample's bins of ``hd_bin_um`` µm."""
        outs = Path(outs)
        if not outs.is_dir():
            raise InputError("Space Ranger outs/ folder not found", sample, outs)
        base = outs if hd_bin_um is None else outs / "binned_outputs" / f"square_{int(hd_bin_um):03d}um"
        if not base.is_dir():
            raise InputError(f"no {hd_bin_um} µm bins (Visium HD binned_outputs) here", sample, base)
        spatial = base / "spatial"
        names = (HD_POSITIONS,) if hd_bin_um is not None else ("tissue_positions.csv", "tissue_positions_list.csv")
        positions = next((spatial / n for n in names if (spatial / n).exists()), None)
        if positions is None:
            raise InputError(f"no spatial/{' or spatial/'.join(names)}", sample, spatial)
        matrix, factors = base / "filtered_feature_bc_matrix.h5", spatial / "scalefactors_json.json"
        files = cls(base, matrix, positions, factors, Path(image))
        for what, path in (
            ("count matrix", files.matrix),
            ("scale factors", files.scalefactors),
            ("image", files.image),
        ):
            if not path.exists():
                raise InputError(f"Space Ranger {what} not found", sample, path)
        return files


def read_positions(path: Path, sample: str) -> pd.DataFrame:
    """Spot positions indexed by barcode, from any Space Ranger format: CSV with or without a header, or
    Visium HD's parquet."""
    if path.suffix == ".parquet":
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own types for a broken file
            raise InputError(f"cannot read the positions ({type(exc).__name__}: {exc})", sample, path) from None
        has_header = True
    else:
        with open(path) as fh:
            first = fh.readline()
        has_header = first.split(",")[0].strip() == "barcode"
        table = pd.read_csv(path, header=0 if has_header else None)
    if not has_header:
        if table.shape[1] != len(POSITION_COLUMNS):
            raise InputError(
                f"expected {len(POSITION_COLUMNS)} columns without a header, found {table.shape[1]}", sample, path
            )
        table.columns = POSITION_COLUMNS
    missing = [c for c in POSITION_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"positions lack column(s) {', '.join(missing)}", sample, path)
    table["barcode"] = table["barcode"].astype(str)
    if table["barcode"].duplicated().any():
        raise InputError("positions list a barcode twice", sample, path)
    return table.set_index("barcode")[POSITION_COLUMNS[1:]]


def lattice_pitch_px(positions: pd.DataFrame) -> tuple[float, int] | None:
    """(median centre-to-centre distance in px of spots that neighbour in one array row, pairs measured) on
    Visium's hexagonal array (columns two apart in a row are 100 µm apart); None with fewer than 3 pairs."""
    frame = positions[["array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]].astype(float)
    frame = frame.sort_values(["array_row", "array_col"])
    same_row = frame["array_row"].diff() == 0
    step = frame["array_col"].diff()
    dist = np.hypot(frame["pxl_row_in_fullres"].diff(), frame["pxl_col_in_fullres"].diff())
    pairs = dist[same_row & (step == 2)].to_numpy()
    if len(pairs) < 3:
        return None
    return float(np.median(pairs)), len(pairs)


def pixel_size(
    scalefactors: Path, sample: str, hd_bin_um: int | None = None, positions: pd.DataFrame | None = None
) -> tuple[float, str]:
    """(µm per full-resolution pixel, how it was found). Visium: 100 µm over the lattice pitch of
    ``positions`` (module doc), else 65 µm over ``spot_diameter_fullres``; Visium HD: ``microns_per_pixel``,
    else the bin size over ``spot_diameter_fullres`` (the bin's side in px)."""
    try:
        factors = json.loads(scalefactors.read_text())
        if hd_bin_um is None:
            diameter = factors.get("spot_diameter_fullres")
            from_diameter = SCALEFACTOR_SPOT_UM / float(diameter) if diameter else None
            lattice = lattice_pitch_px(positions) if positions is not None else None
            if lattice is not None:
                value = VISIUM_PITCH_UM / lattice[0]
                source = f"100 µm spot pitch / {lattice[0]:.2f} px (median of {lattice[1]} neighbouring spot pairs)"
                if from_diameter and abs(from_diameter / value - 1) > 0.05:
                    log.warning(
                        "%s: the spot lattice gives %.4g µm/px but %g µm / spot_diameter_fullres (%s) gives %.4g; "
                        "using the lattice's",
                        sample,
                        value,
                        SCALEFACTOR_SPOT_UM,
                        scalefactors,
                        from_diameter,
                    )
            else:
                value = SCALEFACTOR_SPOT_UM / float(factors["spot_diameter_fullres"])
                source = f"{SCALEFACTOR_SPOT_UM:g} µm / spot_diameter_fullres {float(diameter):.3f} px (scalefactors)"
        elif factors.get("microns_per_pixel"):
            value, source = float(factors["microns_per_pixel"]), "microns_per_pixel (scalefactors)"
        else:
            diameter = float(factors["spot_diameter_fullres"])
            size = float(hd_bin_um)
            what = f"{size:g} µm {'spot' if hd_bin_um is None else 'bin'}"
            value, source = size / diameter, f"{what} / spot_diameter_fullres {diameter:.3f} px (scalefactors)"
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise InputError(f"no usable pixel size ({type(exc).__name__}: {exc})", sample, scalefactors) from None
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"the scale factors give {value} µm/px", sample, scalefactors)
    return value, source


def pool_bins(adata, k: int):
    """Visium HD bins pooled k x k into square pseudo-spots: counts summed, positions averaged, array
    coordinates (row // k, col // k), ``in_tissue`` when any pooled bin is, ``n_bins`` the bins pooled."""
    import anndata as ad
    import scipy.sparse as sp

    obs = adata.obs
    keys = np.stack([obs["array_row"].to_numpy() // k, obs["array_col"].to_numpy() // k], 1)
    groups, index = np.unique(keys, axis=0, return_inverse=True)
    index = np.asarray(index).ravel()
    onehot = sp.csr_matrix((np.ones(len(index)), (index, np.arange(len(index)))), shape=(len(groups), len(index)))
    n_bins = np.asarray(onehot.sum(1)).ravel()
    counts = sp.csr_matrix(onehot @ sp.csr_matrix(adata.X)).astype(np.int32)
    spatial = (onehot @ np.asarray(adata.obsm["spatial"], float)) / n_bins[:, None]
    in_tissue = (onehot @ (obs["in_tissue"].to_numpy() != 0).astype(float)) > 0
    pooled = ad.AnnData(
        X=counts,
        obs=pd.DataFrame(
            {
                "in_tissue": in_tissue.astype(np.int32),
                "array_row": groups[:, 0].astype(np.int32),
                "array_col": groups[:, 1].astype(np.int32),
                "pxl_row_in_fullres": spatial[:, 1],
                "pxl_col_in_fullres": spatial[:, 0],
                "n_bins": n_bins.astype(np.int32),
            },
            index=pd.Index([f"p{k}_{r:05d}_{c:05d}" for r, c in groups], name=None),
        ),
        var=adata.var.copy(),
    )
    pooled.obsm["spatial"] = spatial
    return pooled


def read_full_image(path: Path, sample: str) -> np.ndarray:
    """The whole full-resolution image as (H, W, 3) uint8: level 0 through OpenSlide when it opens the file
    (TIFF, BigTIFF, SVS, ...), else through Pillow (JPEG, PNG)."""
    from genedml.io.legacy_st import read_image

    if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        try:
            import openslide

            with contextlib.closing(openslide.OpenSlide(str(path))) as slide:
                w, h = slide.dimensions
                return np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"))
        except openslide.OpenSlideUnsupportedFormatError:
            pass
        except openslide.OpenSlideError as exc:
            raise InputError(f"the image cannot be decoded ({exc})", sample, path) from None
    return read_image(path, sample)


def import_spaceranger(
    files: SpaceRangerFiles,
    out_dir,
    sample: str,
    spec: SpaceRangerSpec,
    patient: str = "",
    dataset: str = "",
    overwrite: bool = False,
) -> dict:
    """Convert one Space Ranger sample into ``out_dir`` in the HEST-1k layout; returns the metadata written.
    Everything is read and checked first; the three outputs are renamed into place together."""
    import scanpy as sc

    outputs = free_outputs(out_dir, sample, overwrite)
    log.info("%s: reading %s", sample, files.matrix)
    try:
        adata = sc.read_10x_h5(str(files.matrix))
    except Exception as exc:  # h5py and scanpy raise many types for a file that is not a 10x matrix
        raise InputError(
            f"not a 10x feature-barcode matrix ({type(exc).__name__}: {exc})", sample, files.matrix
        ) from None
    adata.var_names_make_unique()
    check_raw_counts(adata.X, sample, files.matrix)
    adata.X = adata.X.astype(np.int32)  # scanpy reads the counts as float32; they are integers (checked)
    positions = read_positions(files.positions, sample)
    common = adata.obs_names[adata.obs_names.isin(positions.index)]
    if common.empty:
        raise InputError(
            f"no barcode of the matrix ({', '.join(adata.obs_names[:3])}, ...) is in {files.positions.name}",
            sample,
            files.positions,
        )
    dropped = adata.n_obs - len(common)
    if dropped:
        log.warning("%s: %d barcodes of the matrix have no position (left out)", sample, dropped)
    adata = adata[common].copy()
    pos = positions.loc[common]
    pixel = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    mpp, mpp_source = pixel_size(files.scalefactors, sample, spec.hd_bin_um, pos)
    log.info("%s: decoding image %s", sample, files.image)
    image = read_full_image(files.image, sample)
    check_spots_inside(pixel, common, image.shape[1::-1], sample, files.positions, image=files.image)
    adata.obs = pd.DataFrame(
        {c: pos[c].to_numpy() for c in POSITION_COLUMNS[1:]}, index=pd.Index(common.astype(str), name=None)
    )
    adata.obs["in_tissue"] = adata.obs["in_tissue"].astype(np.int32)
    adata.obsm["spatial"] = pixel
    adata.var = adata.var[[c for c in ("gene_ids", "feature_types") if c in adata.var]]
    if spec.hd_bin_um is None:
        technology, diameter, pitch = "Visium", VISIUM_SPOT_UM, VISIUM_PITCH_UM
    else:
        side = float(spec.hd_bin_um * spec.pool)
        technology, diameter, pitch = "Visium HD", side, side
        if spec.pool > 1:
            bins = adata.n_obs
            adata = pool_bins(adata, spec.pool)
            log.info(
                "%s: %d bins of %d µm pooled %d x %d into %d pseudo-spots of %g µm",
                sample,
                bins,
                spec.hd_bin_um,
                spec.pool,
                spec.pool,
                adata.n_obs,
                side,
            )
    meta = {
        "id": sample,
        "patient": patient,
        "dataset_title": dataset,
        "organ": "",
        "st_technology": technology,
        "spot_diameter": diameter,
        "inter_spot_dist": pitch,
        "hd_bin_um": spec.hd_bin_um,
        "hd_bins_pooled": spec.pool if spec.hd_bin_um is not None else None,
        "pixel_size_um_estimated": mpp,
        "pixel_size_um_source": mpp_source,
        "spots_under_tissue": int((adata.obs["in_tissue"] != 0).sum()),
        "nb_genes": int(adata.n_vars),
        "fullres_px_width": int(image.shape[1]),
        "fullres_px_height": int(image.shape[0]),
        "imported_from": {"spaceranger": str(files.outs), "image": str(files.image), "positions": files.positions.name},
        "genedml_version": genedml.__version__,
    }
    write_sample(outputs, sample, image, mpp, spec.jpeg_quality, adata, meta, diameter / mpp)
    return meta
