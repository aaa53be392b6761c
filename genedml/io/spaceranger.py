"""Convert a user's Space Ranger Visium output to a HEST-1k layout sample (``data.source: spaceranger``).

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

The pixel size is HEST's rule for Visium: the spot is 55 µm across and Space Ranger reports its diameter in
full-resolution pixels (``spot_diameter_fullres``), so µm/px = 55 / spot_diameter_fullres; the metadata
says so (``pixel_size_um_source``). Spots the matrix has but the positions lack (or the reverse) are logged
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
from genedml.atomic import atomic_path, write_json
from genedml.errors import InputError
from genedml.io.hest import SamplePaths, check_raw_counts, check_spots_inside
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

VISIUM_SPOT_UM = 55.0  # spot diameter
VISIUM_PITCH_UM = 100.0  # centre-to-centre distance of neighbouring spots
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


@dataclass(frozen=True)
class SpaceRangerSpec(StageSpec):
    """How Space Ranger samples are converted (config ``data``: the TIFF's JPEG quality)."""

    section: ClassVar[str] = "data"
    keys: ClassVar[tuple[str, ...]] = ("jpeg_quality",)

    jpeg_quality: int


@dataclass(frozen=True)
class SpaceRangerFiles:
    """The files of one Space Ranger ``outs/`` folder and the full-resolution image."""

    outs: Path
    matrix: Path
    positions: Path
    scalefactors: Path
    image: Path

    @classmethod
    def find(cls, outs, image, sample: str) -> SpaceRangerFiles:
        outs = Path(outs)
        if not outs.is_dir():
            raise InputError("Space Ranger outs/ folder not found", sample, outs)
        spatial = outs / "spatial"
        positions = next(
            (p for p in (spatial / "tissue_positions.csv", spatial / "tissue_positions_list.csv") if p.exists()),
            None,
        )
        if positions is None:
            raise InputError(
                "no spatial/tissue_positions.csv (Space Ranger >= 2.0) or spatial/tissue_positions_list.csv",
                sample,
                spatial,
            )
        files = cls(
            outs, outs / "filtered_feature_bc_matrix.h5", positions, spatial / "scalefactors_json.json", Path(image)
        )
        for what, path in (
            ("count matrix", files.matrix),
            ("scale factors", files.scalefactors),
            ("image", files.image),
        ):
            if not path.exists():
                raise InputError(f"Space Ranger {what} not found", sample, path)
        return files


def read_positions(path: Path, sample: str) -> pd.DataFrame:
    """Spot positions indexed by barcode, from either Space Ranger format (with or without a header)."""
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


def pixel_size(scalefactors: Path, sample: str) -> tuple[float, float]:
    """(µm per full-resolution pixel, spot diameter in px) from ``spot_diameter_fullres`` and the 55 µm spot."""
    try:
        factors = json.loads(scalefactors.read_text())
        diameter = float(factors["spot_diameter_fullres"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"no usable spot_diameter_fullres ({type(exc).__name__}: {exc})", sample, scalefactors
        ) from None
    if not np.isfinite(diameter) or diameter <= 0:
        raise InputError(f"spot_diameter_fullres is {diameter}", sample, scalefactors)
    return VISIUM_SPOT_UM / diameter, diameter


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

    from genedml.io.tiff import write_pyramidal_tiff

    layout = SamplePaths.layout(Path(out_dir), sample)
    outputs = {"slide": layout.slide, "st": layout.st, "metadata": layout.metadata}
    existing = [str(p) for p in outputs.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"output exists ({', '.join(existing)}); pass --overwrite to replace it", sample, existing[0])
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
    mpp, diameter = pixel_size(files.scalefactors, sample)
    log.info("%s: decoding image %s", sample, files.image)
    image = read_full_image(files.image, sample)
    check_spots_inside(pixel, common, image.shape[1::-1], sample, files.positions, image=files.image)
    adata.obs = pd.DataFrame(
        {c: pos[c].to_numpy() for c in POSITION_COLUMNS[1:]}, index=pd.Index(common.astype(str), name=None)
    )
    adata.obs["in_tissue"] = adata.obs["in_tissue"].astype(np.int32)
    adata.obsm["spatial"] = pixel
    adata.var = adata.var[[c for c in ("gene_ids", "feature_types") if c in adata.var]]
    meta = {
        "id": sample,
        "patient": patient,
        "dataset_title": dataset,
        "st_technology": "Visium",
        "spot_diameter": VISIUM_SPOT_UM,
        "inter_spot_dist": VISIUM_PITCH_UM,
        "pixel_size_um_estimated": mpp,
        "pixel_size_um_source": f"{VISIUM_SPOT_UM:g} µm spot / spot_diameter_fullres {diameter:.3f} px (scalefactors)",
        "spots_under_tissue": int((adata.obs["in_tissue"] != 0).sum()),
        "nb_genes": int(adata.n_vars),
        "fullres_px_width": int(image.shape[1]),
        "fullres_px_height": int(image.shape[0]),
        "imported_from": {"spaceranger": str(files.outs), "image": str(files.image), "positions": files.positions.name},
        "genedml_version": genedml.__version__,
    }
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in outputs.items()}
        log.info("%s: writing pyramidal TIFF (%d x %d px, %.4f µm/px)", sample, image.shape[1], image.shape[0], mpp)
        write_pyramidal_tiff(tmp["slide"], image, mpp, quality=spec.jpeg_quality)
        adata.write_h5ad(tmp["st"])
        write_json(tmp["metadata"], meta)
    log.info("%s: %d spots x %d genes written to %s", sample, adata.n_obs, adata.n_vars, Path(out_dir))
    return meta
