"""Read one sample of a HEST-1k style folder: ``wsis/{id}.tif``, ``st/{id}.h5ad``, ``metadata/{id}.json``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genedml.errors import InputError

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".btf")


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


def resolve_mpp(meta: dict, slide, sample: str, slide_path) -> tuple[float, str]:
    """Pixel size of level 0 and where it came from; fails clearly when nothing states it."""
    from genedml.io.slide import tiff_mpp

    mpp = metadata_mpp(meta)
    if mpp is not None:
        return mpp, "metadata"
    mpp = tiff_mpp(slide)
    if mpp is not None:
        return mpp, "slide tags"
    raise InputError(
        "no pixel size: metadata has no pixel_size_um_estimated and the slide has no resolution tags "
        "(set it in metadata/{id}.json)",
        sample,
        slide_path,
    )


def load_st(path: str | os.PathLike, sample: str, require_counts: bool = True):
    """Read and validate a sample's AnnData: spatial centres, unique barcodes, raw integer counts."""
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise InputError("expression file (.h5ad) not found", sample, path)
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # h5py / anndata raise many types for a broken file
        raise InputError(f"cannot read .h5ad ({type(exc).__name__}: {exc})", sample, path) from exc
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
    dupg = adata.var_names[adata.var_names.duplicated()]
    if len(dupg):
        adata.var_names_make_unique()
    if require_counts:
        check_raw_counts(adata.X, sample, path)
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


def array_coords(adata) -> np.ndarray:
    """(N, 2) integer (row, col) grid positions: ``array_row/array_col``, else parsed ``"{x}x{y}"`` ids."""
    obs = adata.obs
    if "array_row" in obs and "array_col" in obs:
        return np.stack([obs["array_row"].to_numpy(), obs["array_col"].to_numpy()], 1).astype(np.int32)
    try:
        xy = np.array([[float(v) for v in str(b).split("x")] for b in adata.obs_names])
        return np.stack([xy[:, 1], xy[:, 0]], 1).round().astype(np.int32)
    except ValueError:
        return np.full((adata.n_obs, 2), -1, dtype=np.int32)
