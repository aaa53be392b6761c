"""Convert a section of the legacy "ST" layout (the HER2ST repository, used by TRIPLEX and Gene-DML) to HEST-1k.

Input (the legacy ST release of the HER2ST / cSCC data, docs/data.md):
- ``ST-cnts/{section}.tsv.gz``: spots x genes raw counts, first column the spot id ``"{x}x{y}"`` (array
  coordinates), header row the gene symbols (first field empty);
- ``ST-spotfiles/{section}_selection.tsv``: ``x, y, [new_x, new_y,] pixel_x, pixel_y, [selected]``, spot centres
  in pixels of the full-resolution image;
- ``ST-imgs/{patient}/{section}/*.jpg``: the full-resolution H&E image (no resolution tag).

Output, as HEST ships a sample: ``wsis/{sample}.tif`` (pyramidal JPEG-tiled TIFF with the µm/px in its
resolution tags), ``st/{sample}.h5ad`` (X = raw integer counts, obs index = ``"{x}x{y}"``, ``array_row`` = x and
``array_col`` = y as HEST's own converter writes them for legacy ST (Visium ids: the reverse, so the column
is the doubled axis), ``obsm['spatial']`` = (pixel_x, pixel_y)) and ``metadata/{sample}.json``.

The pixel size comes from the caller (config) or is estimated from the spot pitch: an affine fit of the
pixel centres on the array coordinates gives pixels per grid step, and the grid step in µm is known
(legacy ST: 200 µm on a square grid; Visium: 100 µm between neighbours on a hexagonal grid, where a column
step is 50 µm and a row step 100·√3/2 µm). The estimate and its two axes are logged and recorded.
"""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

import genedml
from genedml.errors import InputError
from genedml.io.hest import check_spots_inside, free_outputs, write_sample
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

# (µm per array-column step, µm per array-row step, spot diameter µm, centre-to-centre pitch µm)
TECHNOLOGIES = {
    "st": {"name": "Spatial Transcriptomics", "col_um": 200.0, "row_um": 200.0, "spot_diameter": 100.0, "pitch": 200.0},
    "visium": {
        "name": "Visium",
        "col_um": 50.0,
        "row_um": 100.0 * np.sqrt(3) / 2,
        "spot_diameter": 55.0,
        "pitch": 100.0,
    },
}
PLAUSIBLE_MPP = (0.05, 50.0)


@dataclass(frozen=True)
class LegacyFiles:
    section: str
    counts: Path
    spots: Path
    image: Path

    @classmethod
    def find(cls, root: str | os.PathLike, section: str) -> LegacyFiles:
        """The three files of a section under a legacy-ST folder; errors name what is missing."""
        root = Path(root)
        counts = root / "ST-cnts" / f"{section}.tsv.gz"
        spots = root / "ST-spotfiles" / f"{section}_selection.tsv"
        for path, what in ((counts, "counts file"), (spots, "spot file")):
            if not path.exists():
                raise InputError(f"{what} not found", section, path)
        images = sorted(root.glob(f"ST-imgs/*/{section}/*.jpg"))
        if not images:
            raise InputError("no H&E image (ST-imgs/<patient>/<section>/*.jpg) found", section, root / "ST-imgs")
        if len(images) > 1:
            raise InputError(
                f"{len(images)} images for one section ({', '.join(p.name for p in images)}); "
                "pass the image explicitly",
                section,
                images[0].parent,
            )
        return cls(section, counts, spots, images[0])


def read_counts(path: str | os.PathLike, sample: str):
    """(barcodes, genes, CSR int32 counts). Checks ids, numbers and raw-count values."""
    import scipy.sparse as sp

    from genedml.io.hest import check_raw_counts

    path = Path(path)
    if not path.exists():
        raise InputError("counts file not found", sample, path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
        frame = pd.read_csv(path, sep="\t", header=None, skiprows=1, index_col=0, dtype={0: str}, low_memory=False)
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        raise InputError(f"cannot read the counts table ({type(exc).__name__}: {exc})", sample, path) from exc
    genes = header[1:]
    if frame.empty or not genes:
        raise InputError("counts table has no spots or no genes", sample, path)
    if frame.shape[1] != len(genes):
        raise InputError(f"header names {len(genes)} genes but rows have {frame.shape[1]} values", sample, path)
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"counts table has non-numeric values ({exc})", sample, path) from exc
    if np.isnan(values).any():
        rows = frame.index[np.isnan(values).any(1)][:3].tolist()
        raise InputError(
            f"counts table has empty or NaN values (spots {', '.join(map(str, rows))}); raw counts expected",
            sample,
            path,
        )
    check_raw_counts(values, sample, path)
    barcodes = pd.Index(frame.index.astype(str).str.strip(), name="barcode")
    dup = barcodes[barcodes.duplicated()].unique()
    if len(dup):
        raise InputError(f"{len(dup)} duplicate barcodes (spot ids), e.g. {', '.join(dup[:3])}", sample, path)
    genes = pd.Index(genes)
    dup_genes = genes[genes.duplicated()].unique().tolist()
    if dup_genes:
        log.warning(
            "%s: gene symbols repeated in %s: %s; made unique with suffixes -1, -2, ...",
            sample,
            path,
            ", ".join(dup_genes[:10]),
        )
    return barcodes, genes, sp.csr_matrix(values.astype(np.int32))


def read_spot_file(path: str | os.PathLike, sample: str) -> pd.DataFrame:
    """Spot table indexed by ``"{x}x{y}"``: x, y, pixel_x, pixel_y (selected spots only when ``selected`` exists)."""
    path = Path(path)
    if not path.exists():
        raise InputError("spot file not found", sample, path)
    try:
        spots = pd.read_csv(path, sep="\t")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"cannot read the spot file ({type(exc).__name__}: {exc})", sample, path) from exc
    need = ["x", "y", "pixel_x", "pixel_y"]
    missing = [c for c in need if c not in spots.columns]
    if missing:
        raise InputError(f"spot file lacks column(s) {', '.join(missing)} (needs {', '.join(need)})", sample, path)
    for col in need + (["selected"] if "selected" in spots else []):
        if not pd.api.types.is_numeric_dtype(spots[col]) or spots[col].isna().any():
            raise InputError(f"spot file column {col!r} has empty or non-numeric values", sample, path)
    if "selected" in spots:
        spots = spots[spots["selected"] == 1]
    if not np.all(np.equal(np.mod(spots[["x", "y"]].to_numpy(float), 1), 0)):
        raise InputError("spot file columns x, y must be integer array coordinates", sample, path)
    spots = spots.copy()
    spots["x"] = spots["x"].astype(int)
    spots["y"] = spots["y"].astype(int)
    spots.index = pd.Index([f"{x}x{y}" for x, y in zip(spots["x"], spots["y"])], name="barcode")
    dup = spots.index[spots.index.duplicated()].unique()
    if len(dup):
        raise InputError(f"spot file lists {len(dup)} spots twice, e.g. {', '.join(dup[:3])}", sample, path)
    return spots


def read_image(path: str | os.PathLike, sample: str) -> np.ndarray:
    """Decode the whole H&E image as (H, W, 3) uint8; a truncated or unreadable file is an InputError."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputError("image not found", sample, path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # another library may have switched this on; a cut file must fail here
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing to decode images silently padded")
    Image.MAX_IMAGE_PIXELS = None  # whole-slide images are large on purpose
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB") if img.mode != "RGB" else img.copy()
    except UnidentifiedImageError as exc:
        raise InputError("not an image Pillow can read (expected a JPEG)", sample, path) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image cannot be decoded, the file may be truncated ({exc})", sample, path) from exc
    return np.asarray(rgb)


def estimate_mpp(array_xy: np.ndarray, pixel_xy: np.ndarray, technology: str) -> dict:
    """µm per pixel from spot centres and their array coordinates (``array_xy`` = (column, row) steps).

    Fits ``pixel = A @ array + t`` by least squares; the µm/px is ``sqrt(col_um * row_um / |det A|)`` (rotation
    and flips do not matter), with the per-axis values ``col_um / |A col|`` and ``row_um / |A row|`` beside.
    """
    tech = TECHNOLOGIES[technology]
    array_xy = np.asarray(array_xy, dtype=float)
    pixel_xy = np.asarray(pixel_xy, dtype=float)
    design = np.column_stack([array_xy, np.ones(len(array_xy))])
    if len(array_xy) < 3 or np.linalg.matrix_rank(design) < 3:
        raise ValueError("need at least 3 spots that are not on one line to fit the spot grid")
    coef, *_ = np.linalg.lstsq(design, pixel_xy, rcond=None)
    a = coef[:2]  # row 0: pixels per column step, row 1: pixels per row step
    det = abs(np.linalg.det(a))
    if det <= 0:
        raise ValueError("spot centres do not follow the array coordinates (degenerate fit)")
    residual = pixel_xy - design @ coef
    return {
        "mpp": float(np.sqrt(tech["col_um"] * tech["row_um"] / det)),
        "mpp_columns": float(tech["col_um"] / np.linalg.norm(a[0])),
        "mpp_rows": float(tech["row_um"] / np.linalg.norm(a[1])),
        "pitch_um": tech["pitch"],
        "technology": technology,
        "n_spots": int(len(array_xy)),
        "residual_px_rms": float(np.sqrt((residual**2).sum(1).mean())),
    }


@dataclass(frozen=True)
class ImportSpec(StageSpec):
    """How legacy-ST sections are converted (config ``data``: its spot grid and the TIFF's JPEG quality;
    ``data.mpp`` is per sample and given to ``import_section`` directly)."""

    section: ClassVar[str] = "data"
    keys: ClassVar[tuple[str, ...]] = ("technology", "jpeg_quality")

    technology: str  # the spot grid (TECHNOLOGIES)
    jpeg_quality: int


def import_section(
    files: LegacyFiles,
    out_dir: str | os.PathLike,
    spec: ImportSpec,
    sample: str | None = None,
    patient: str | None = None,
    dataset: str | None = None,
    mpp: float | None = None,
    overwrite: bool = False,
) -> dict:
    """Convert one legacy-ST section into ``out_dir`` in the HEST-1k layout; returns the metadata written.

    Everything is read and checked before anything is written; the three outputs are written under
    temporary names and renamed together, so a failure leaves none of them.
    """
    sample = sample or files.section
    outputs = free_outputs(out_dir, sample, overwrite)

    common, genes, counts, spots = _spots_with_counts(files, sample)
    pixel = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    log.info("%s: decoding image %s", sample, files.image)
    image = read_image(files.image, sample)
    check_spots_inside(pixel, common, image.shape[1::-1], sample, files.spots, image=files.image)
    mpp_value, source, fit = _pixel_size(spots[["x", "y"]].to_numpy(float), pixel, spec.technology, mpp, files, sample)
    adata = _section_anndata(common, genes, counts, spots, pixel, spec.technology)
    meta = {
        "id": sample,
        "subseries": files.section,
        "patient": patient or "",
        "dataset_title": dataset or "",
        "organ": "",  # not in the legacy files
        **_technology_facts(spec.technology),
        "pixel_size_um_estimated": mpp_value,
        "pixel_size_um_source": source,
        "pixel_size_fit": fit,
        "spots_under_tissue": int(adata.n_obs),
        "nb_genes": int(adata.n_vars),
        "fullres_px_width": int(image.shape[1]),
        "fullres_px_height": int(image.shape[0]),
        "hest_id": _hest_id(dataset, files.section, sample),
        "imported_from": {"counts": str(files.counts), "spots": str(files.spots), "image": str(files.image)},
        "genedml_version": genedml.__version__,
    }
    spot_px = TECHNOLOGIES[spec.technology]["spot_diameter"] / mpp_value
    write_sample(outputs, sample, image, mpp_value, spec.jpeg_quality, adata, meta, spot_px)
    return meta


def _spots_with_counts(files: LegacyFiles, sample: str):
    """The spots that have both counts and a position: (barcodes, genes, counts, spot rows), aligned."""
    log.info("%s: reading counts %s", sample, files.counts)
    barcodes, genes, counts = read_counts(files.counts, sample)
    spots = read_spot_file(files.spots, sample)
    common = barcodes[barcodes.isin(spots.index)]
    only_counts = barcodes[~barcodes.isin(spots.index)]
    only_spots = spots.index[~spots.index.isin(barcodes)]
    if only_counts.size:
        log.warning(
            "%s: %d spots have counts but no position in %s (dropped), e.g. %s",
            sample,
            only_counts.size,
            files.spots,
            ", ".join(only_counts[:3]),
        )
    if only_spots.size:
        log.info(
            "%s: %d selected spots of the spot file have no counts (dropped), e.g. %s",
            sample,
            only_spots.size,
            ", ".join(only_spots[:3]),
        )
    if common.empty:
        raise InputError(
            f"no spot id of the counts table ({', '.join(barcodes[:3])}, ...) is in the spot file "
            f"({', '.join(spots.index[:3])}, ...)",
            sample,
            files.spots,
        )
    return common, genes, counts[barcodes.get_indexer(common)], spots.loc[common]


def _pixel_size(array_xy, pixel, technology: str, mpp, files: LegacyFiles, sample: str):
    """(µm/px, where it came from, the spot-pitch fit or None): the configured value, else the fit."""
    fit = None
    try:
        fit = estimate_mpp(array_xy, pixel, technology)
    except ValueError as exc:
        if mpp is None:
            raise InputError(
                f"no pixel size: none configured (data.mpp / --mpp) and it cannot be estimated from "
                f"the spot pitch ({exc})",
                sample,
                files.spots,
            ) from exc
    if mpp is not None:
        if not float(mpp) > 0:
            raise InputError(f"configured pixel size must be positive, got {mpp}", sample)
        if fit:
            log.info(
                "%s: pixel size %.4f µm/px from the configuration (the spot pitch would give %.4f)",
                sample,
                float(mpp),
                fit["mpp"],
            )
        return float(mpp), "configured", fit
    value = fit["mpp"]
    lo, hi = PLAUSIBLE_MPP
    if not lo <= value <= hi:
        raise InputError(
            f"no usable pixel size: the spot pitch gives {value:.4g} µm/px, outside {lo}-{hi}; "
            "are the array coordinates and technology right? set data.mpp",
            sample,
            files.spots,
        )
    log.info(
        "%s: pixel size %.4f µm/px estimated from the %.0f µm spot pitch over %d spots "
        "(columns %.4f, rows %.4f, fit residual %.1f px rms)",
        sample,
        value,
        fit["pitch_um"],
        fit["n_spots"],
        fit["mpp_columns"],
        fit["mpp_rows"],
        fit["residual_px_rms"],
    )
    if abs(fit["mpp_columns"] - fit["mpp_rows"]) > 0.1 * value:
        log.warning(
            "%s: the two grid axes disagree by more than 10%% (%.4f vs %.4f µm/px): wrong technology, or "
            "an anisotropic image? set data.mpp to override",
            sample,
            fit["mpp_columns"],
            fit["mpp_rows"],
        )
    return value, f"estimated from the {fit['pitch_um']:.0f} µm spot pitch", fit


def _technology_facts(technology: str) -> dict:
    tech = TECHNOLOGIES[technology]
    return {"st_technology": tech["name"], "inter_spot_dist": tech["pitch"], "spot_diameter": tech["spot_diameter"]}


def _section_anndata(barcodes, genes, counts, spots, pixel, technology: str):
    """Raw counts with HEST's obs columns and ``obsm['spatial']`` (level-0 px). Legacy ST: HEST's converter
    writes the id's x as ``array_row`` and y as ``array_col``, and so does this (sources ``hest`` and
    ``legacy_st`` then agree). Visium ids keep x, the axis that steps by 2 along a row, as ``array_col``, the
    Visium convention the hexagonal neighbours read."""
    import anndata as ad

    row, col = ("x", "y") if technology == "st" else ("y", "x")

    obs = pd.DataFrame(
        {
            "in_tissue": 1,
            "array_row": spots[row].to_numpy(np.int32),
            "array_col": spots[col].to_numpy(np.int32),
            "pxl_col_in_fullres": pixel[:, 0],
            "pxl_row_in_fullres": pixel[:, 1],
        },
        index=pd.Index(barcodes.astype(str), name=None),
    )
    var_names = ad.utils.make_index_unique(pd.Index(genes.astype(str)), join="-")  # repeats were reported
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=var_names))
    adata.obsm["spatial"] = pixel
    return adata


def _hest_id(dataset: str | None, section: str, sample: str) -> str | None:
    """HEST-1k's id of a known dataset's section (None otherwise); logs HEST's pixel size for comparison."""
    hest = _hest_facts(dataset, section)
    if hest is None:
        return None
    if not pd.isna(hest.get("hest_pixel_size_um")):
        log.info(
            "%s: HEST-1k's estimate for section %s (%s) is %s µm/px",
            sample,
            section,
            hest["hest_id"],
            hest["hest_pixel_size_um"],
        )
    return hest["hest_id"]


def _hest_facts(dataset: str | None, section: str):
    if not dataset:
        return None
    from genedml.io.datasets import canonical, lookup

    try:
        return lookup(canonical(dataset), section)
    except InputError:
        return None
