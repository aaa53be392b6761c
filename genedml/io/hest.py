"""Read one sample of a HEST-1k style folder: ``wsis/{id}.tif``, ``st/{id}.h5ad``, ``metadata/{id}.json``."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from genedml.errors import InputError
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".btf")
# µm/px an H&E scan can have (40x ~0.25, 20x ~0.5, legacy ST images ~1); slide tags outside it are not trusted
PLAUSIBLE_MPP = (0.1, 5.0)  # µm/px of H&E scans; HEST-1k v1.1 estimates 0.14-3.24
# tags and metadata further apart than this are reported (HEST's TIFFs carry tags 10x off, HEST issue #106)
MPP_DISAGREEMENT = 0.10


@dataclass(frozen=True)
class SamplePaths:
    sample: str
    slide: Path
    st: Path
    metadata: Path

    @classmethod
    def layout(cls, hest_dir: str | os.PathLike, sample: str, slide_suffix: str = ".tif") -> SamplePaths:
        """Where HEST-1k keeps a sample (the one place this layout is spelled out); ``sample`` may be a
        pattern such as ``{sample}`` for a Snakemake rule."""
        root = Path(hest_dir)
        return cls(
            sample,
            root / "wsis" / f"{sample}{slide_suffix}",
            root / "st" / f"{sample}.h5ad",
            root / "metadata" / f"{sample}.json",
        )

    @classmethod
    def in_hest_dir(cls, hest_dir: str | os.PathLike, sample: str) -> SamplePaths:
        """The sample's files in a HEST-1k folder; the slide may have any suffix OpenSlide reads."""
        paths = cls.layout(hest_dir, sample)
        if not paths.slide.exists():
            for suffix in SLIDE_SUFFIXES:
                found = cls.layout(hest_dir, sample, suffix)
                if found.slide.exists():
                    return found
        return paths

    def as_dict(self) -> dict[str, str]:
        return {"slide": str(self.slide), "st": str(self.st), "metadata": str(self.metadata)}


# side of the downscaled full-resolution image HEST keeps in a sample's .h5ad (at most, in pixels)
DOWNSCALED_PX = 1024


def hest_spatial_uns(image: np.ndarray, spot_diameter_px: float | None) -> dict:
    """``uns['spatial']`` as HEST's own loader (``hest.read_HESTData``) expects it: a downscaled copy of the
    full-resolution image under ``['ST']['images']['downscaled_fullres']`` and its scale factor."""
    from PIL import Image

    h, w = image.shape[:2]
    factor = min(1.0, DOWNSCALED_PX / max(h, w))
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    factors = {"tissue_downscaled_fullres_scalef": float(factor)}
    if spot_diameter_px:
        factors["spot_diameter_fullres"] = float(spot_diameter_px)
    return {"ST": {"images": {"downscaled_fullres": small}, "scalefactors": factors}}


def free_outputs(out_dir, sample: str, overwrite: bool) -> dict[str, Path]:
    """The slide, expression and metadata paths a converter writes for ``sample`` under ``out_dir``; existing
    ones are an error unless ``overwrite`` (checked before any input is read)."""
    paths = SamplePaths.layout(Path(out_dir), sample)
    outputs = {"slide": paths.slide, "st": paths.st, "metadata": paths.metadata}
    existing = [str(p) for p in outputs.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"output exists ({', '.join(existing)}); pass --overwrite to replace it", sample, existing[0])
    return outputs


def write_sample(outputs: dict, sample: str, image, mpp: float, quality: int, adata, meta: dict, spot_px) -> None:
    """Write a converted sample as HEST ships one: pyramidal TIFF (µm/px in its tags), the .h5ad with HEST's
    ``uns['spatial']`` (``hest_spatial_uns``; ``spot_px`` the spot diameter in pixels) and the metadata JSON,
    under temporary names renamed together, so a failure leaves none of them."""
    import contextlib

    from genedml.atomic import atomic_path, write_json
    from genedml.io.tiff import write_pyramidal_tiff

    adata.uns["spatial"] = hest_spatial_uns(image, spot_px)  # for HEST's own loader
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in outputs.items()}
        log.info("%s: writing pyramidal TIFF (%d x %d px, %.4f µm/px)", sample, image.shape[1], image.shape[0], mpp)
        write_pyramidal_tiff(tmp["slide"], image, mpp, quality=quality)
        adata.write_h5ad(tmp["st"])
        write_json(tmp["metadata"], meta)
    log.info("%s: %d spots x %d genes written to %s", sample, adata.n_obs, adata.n_vars, outputs["st"].parent.parent)


def check_spots_inside(centres: np.ndarray, barcodes, dims: tuple[int, int], sample: str, path, image="") -> None:
    """Fail, naming the sample and up to three spots, when a spot centre lies outside the ``dims`` (w, h) image."""
    w, h = dims
    outside = (centres[:, 0] < 0) | (centres[:, 1] < 0) | (centres[:, 0] >= w) | (centres[:, 1] >= h)
    if outside.any():
        idx = np.flatnonzero(outside)[:3]
        examples = ", ".join(f"{barcodes[i]} at ({centres[i, 0]:.0f}, {centres[i, 1]:.0f})" for i in idx)
        where = f"the {w} x {h} px image" + (f" {image}" if image else "")
        raise InputError(f"{int(outside.sum())} spot centres lie outside {where}, e.g. {examples}", sample, path)


def load_metadata(path: str | os.PathLike, sample: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError("metadata JSON not found", sample, path)
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"metadata is not valid JSON ({exc})", sample, path) from exc
    if not isinstance(meta, dict):
        raise InputError("metadata JSON must be an object", sample, path)
    return meta


def metadata_mpp(meta: dict) -> float | None:
    """µm/px from HEST metadata: ``pixel_size_um_estimated`` first, then ``pixel_size_um_embedded``."""
    for key in ("pixel_size_um_estimated", "pixel_size_um_embedded"):
        value = meta.get(key)
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(value) and value > 0:
            return value
    return None


def resolve_mpp(meta: dict, slide, sample: str, slide_path, metadata_path=None) -> tuple[float, str]:
    """Pixel size of level 0 and where it came from: the metadata's when it is plausible for H&E
    (``PLAUSIBLE_MPP``, else an error), else the slide's resolution tags when they are; fails clearly when
    nothing usable states it. (``genedml.io.pixel_size.check_pixel_size`` then checks it against the spots.)

    The two are compared when both exist: HEST's pyramidal TIFFs write pixels per cm where pixels per mm are
    meant, so OpenSlide reports a tenth of the real µm/px (0.069 for 0.69). A disagreement of more than 10% is
    logged as a warning naming both values and the one used (the metadata's)."""
    from genedml.io.slide import tiff_mpp

    stated, tags = metadata_mpp(meta), tiff_mpp(slide)
    lo, hi = PLAUSIBLE_MPP
    if stated is not None and not lo <= stated <= hi:
        estimated = metadata_mpp({"pixel_size_um_estimated": meta.get("pixel_size_um_estimated")})
        key = "pixel_size_um_estimated" if estimated is not None else "pixel_size_um_embedded"
        raise InputError(
            f"the metadata's {key} says {stated:.4g} µm/px, which is not plausible for H&E ({lo}-{hi} µm/px; "
            f"40x scans are ~0.25, 20x ~0.5, legacy ST images ~0.7-1; a 10x error or a 72-dpi default "
            f"(352.8 µm/px) gives tiles of a fraction of a pixel or of millimetres)"
            + (f"; the slide's resolution tags say {tags:.4g} µm/px" if tags is not None else "")
            + f'. Set "pixel_size_um_estimated" (µm per level-0 pixel of {Path(slide_path).name}) in '
            f"metadata/{sample}.json to the slide's real pixel size (or data.mpp for a legacy ST import)",
            sample,
            metadata_path if metadata_path is not None else slide_path,
        )
    if stated is not None:
        if tags is not None and abs(tags - stated) > MPP_DISAGREEMENT * stated:
            log.warning(
                "%s: the slide's resolution tags say %.4g µm/px but the metadata says %.4g µm/px (%.1fx); using "
                "the metadata's (%s). HEST's TIFFs carry tags 10x off; if the metadata is wrong, fix "
                "pixel_size_um_estimated in it",
                sample,
                tags,
                stated,
                tags / stated,
                slide_path,
            )
        return stated, "metadata"
    if tags is not None:
        if not lo <= tags <= hi:
            raise InputError(
                f"the metadata states no pixel size and the slide's resolution tags say {tags:.4g} µm/px, which "
                f"is not plausible for H&E ({lo}-{hi} µm/px; HEST's TIFFs carry tags 10x off). Set "
                f'"pixel_size_um_estimated" (µm per level-0 pixel) in metadata/{sample}.json',
                sample,
                slide_path,
            )
        return tags, "slide tags"
    raise InputError(
        "no pixel size: metadata has no pixel_size_um_estimated and the slide has no resolution tags "
        "(set it in metadata/{id}.json)",
        sample,
        slide_path,
    )


def _not_hdf5(path: Path) -> str:
    """What a file that should be an .h5ad but is not HDF5 looks like, from its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the .h5ad itself (fetch it with `git lfs pull`)"
    if head.startswith(b"\x1f\x8b"):
        return "is gzip-compressed; decompress it (gunzip) to an .h5ad first"
    if head.startswith(b"PK\x03\x04"):
        return "is a ZIP archive, not an .h5ad; unpack it first"
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return "is an HTML page (a failed download?), not an .h5ad"
    return f"is not an HDF5 file (it starts with {head[:16]!r}); a truncated or failed download? fetch it again"


def read_st(path: str | os.PathLike, sample: str):
    """Read a user's section expression file (.h5ad) the one way every stage reads it.

    Fails with an ``InputError`` naming the sample and the file when it is missing, a folder, empty (0 bytes),
    not HDF5 or unreadable. Duplicate gene symbols in ``var`` are renamed the scanpy way
    (``var_names_make_unique``: GENE, GENE-1, ...) with a warning, so gene choice, targets and tiles all see
    the same names. Files genedml writes itself (targets, predictions) are read with plain anndata."""
    import warnings

    import anndata as ad
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError("expression file (.h5ad) not found", sample, path)
    if path.is_dir():
        raise InputError("expression file is a folder (a Zarr store?), not an .h5ad file", sample, path)
    if path.stat().st_size == 0:
        raise InputError(
            "expression file (.h5ad) is empty (0 bytes): an interrupted download or copy? fetch it again",
            sample,
            path,
        )
    if not h5py.is_hdf5(path):
        raise InputError(f"expression file (.h5ad) {_not_hdf5(path)}", sample, path)
    try:
        with warnings.catch_warnings():  # duplicate symbols are handled (and reported) below
            warnings.filterwarnings("ignore", message="Variable names are not unique")
            adata = ad.read_h5ad(path)
    except Exception as exc:  # h5py / anndata raise many types for a broken file
        raise InputError(f"cannot read .h5ad ({type(exc).__name__}: {exc})", sample, path) from exc
    names = adata.var_names
    if names.has_duplicates:
        counts = names.value_counts()
        dup = counts[counts > 1]
        first = [str(g) for g in names[names.duplicated(keep="first")].unique()[:5]]
        adata.var_names_make_unique()
        log.warning(
            "sample %r, file %s: %d gene symbol(s) occur more than once in var (%d columns renamed), e.g. %s; "
            "renamed the scanpy way (var_names_make_unique: %s, %s-1, ...) in every stage",
            sample,
            path,
            len(dup),
            int((dup - 1).sum()),
            ", ".join(f"{g} ({int(counts[g])}x)" for g in first),
            first[0],
            first[0],
        )
    return adata


def load_st(path: str | os.PathLike, sample: str, require_counts: bool = True):
    """Read (``read_st``) and validate a sample's AnnData: spatial centres, unique barcodes, raw integer
    counts; duplicate gene symbols are renamed (GENE, GENE-1, ...)."""
    path = Path(path)
    adata = read_st(path, sample)
    if "spatial" not in adata.obsm:
        raise InputError("obsm['spatial'] (spot centres in level-0 pixels) is missing", sample, path)
    spatial = np.asarray(adata.obsm["spatial"], dtype=float)
    if spatial.ndim != 2 or spatial.shape[1] < 2 or not np.all(np.isfinite(spatial[:, :2])):
        raise InputError("obsm['spatial'] must be (spots, 2) finite pixel coordinates", sample, path)
    if adata.n_obs == 0:
        raise InputError("no spots", sample, path)
    dup = adata.obs_names[adata.obs_names.duplicated()]
    if len(dup):
        raise InputError(f"{len(dup)} duplicate barcodes, e.g. {', '.join(map(str, dup[:3].tolist()))}", sample, path)
    if require_counts:
        check_raw_counts(adata.X, sample, path)
    return adata


@dataclass(frozen=True)
class SpotFilterSpec(StageSpec):
    """Which spots of a section take part (config ``data.in_tissue``): the same for the tile, gene, target and
    prediction stages, so that features and targets always hold the same spots."""

    section: ClassVar[str] = "data"
    keys: ClassVar[tuple[str, ...]] = ("in_tissue",)

    in_tissue: str  # only | all


def tissue_spots(adata, spots: SpotFilterSpec, sample: str, path):
    """The spots ``spots`` keeps: with ``in_tissue: only`` those whose ``obs['in_tissue']`` is not 0 (all spots
    when the column is absent). Logs how many were left out; none left is an input error."""
    if spots.in_tissue == "all" or "in_tissue" not in adata.obs:
        return adata
    flag = adata.obs["in_tissue"].to_numpy()
    try:
        keep = flag.astype(float) != 0
    except (TypeError, ValueError):
        raise InputError(f"obs['in_tissue'] must be 0/1, found values like {flag[:3].tolist()}", sample, path) from None
    if not keep.any():
        raise InputError(
            f"all {len(keep)} spots have in_tissue 0 (outside the tissue); set data.in_tissue: all to use them",
            sample,
            path,
        )
    if not keep.all():
        log.info(
            "%s: %d of %d spots are outside the tissue (in_tissue 0) and left out (data.in_tissue: only)",
            sample,
            int((~keep).sum()),
            len(keep),
        )
        return adata[keep].copy()
    return adata


def check_raw_counts(matrix, sample: str, path) -> None:
    import scipy.sparse as sp

    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)):
        raise InputError("counts contain NaN or infinite values; raw counts expected", sample, path)
    if values.min() < 0:
        raise InputError("counts contain negative values; raw integer counts expected", sample, path)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise InputError(
            "counts are not integers (normalised or log values?); raw integer counts expected", sample, path
        )


def array_coords(adata, sample: str = "") -> np.ndarray:
    """(N, 2) integer (row, col) grid positions: ``array_row/array_col``; else parsed ``"{x}x{y}"`` ids with
    HEST's convention for legacy ST (its converter writes the id's ``x`` as ``array_row``, ``y`` as
    ``array_col``); else, for pseudo-spots on a square lattice (Xenium and other binned samples), the lattice
    read from the pixel centres (``square_lattice``); else -1 (no grid)."""
    obs = adata.obs
    if "array_row" in obs and "array_col" in obs:
        return np.stack([obs["array_row"].to_numpy(), obs["array_col"].to_numpy()], 1).astype(np.int32)
    try:
        xy = np.array([[float(v) for v in str(b).split("x")] for b in adata.obs_names])
        return np.stack([xy[:, 0], xy[:, 1]], 1).round().astype(np.int32)
    except ValueError:
        pass
    lattice = square_lattice(np.asarray(adata.obsm["spatial"], float)[:, :2]) if "spatial" in adata.obsm else None
    if lattice is not None:
        log.info("%s: no array coordinates; the spots lie on a square lattice, whose (row, col) are used", sample)
        return lattice
    return np.full((adata.n_obs, 2), -1, dtype=np.int32)


def square_lattice(xy: np.ndarray, tolerance: float = 0.2) -> np.ndarray | None:
    """(row, col) of spot centres that lie on an axis-aligned square lattice of their nearest-spot pitch (each
    within ``tolerance`` pitches of a node, one spot a node), else None (a hexagonal or irregular layout)."""
    if len(xy) < 2:
        return None
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    pitch = float(np.median(d[:, 1]))
    if not pitch > 0:
        return None
    steps = (xy - xy.min(0)) / pitch
    nodes = np.rint(steps)
    if np.abs(steps - nodes).max() > tolerance:
        return None
    rc = nodes[:, ::-1].astype(np.int32)  # (row, col) = (y, x)
    return rc if len(np.unique(rc, axis=0)) == len(rc) else None
