"""A bare H&E slide (no spatial transcriptomics) as a positions-only sample the pipeline can tile, embed
and predict: tissue detection (``genedml.tiles.tissue``), a lattice of virtual spots on the tissue
(``genedml.tiles.lattice``), then the HEST-layout files the tile stage reads.

- the ``.h5ad``: no genes (X an empty spots x 0 float32 matrix, which ``load_st(require_counts=False)``
  accepts), ``obs`` with ``in_tissue`` (1), ``array_row``, ``array_col``; ``obsm['spatial']`` the centres
  in level-0 px; ``uns['spatial'][sample]`` the thumbnail as scanpy's 'hires' image with its scale factors,
  so ``scanpy.pl.spatial(adata, library_id=sample)`` draws the spots on the slide;
- the metadata JSON: HEST's keys (``st_technology`` "virtual visium", ``inter_spot_dist`` = the lattice
  pitch, ``spot_diameter``, ``pixel_size_um_estimated``), so ``genedml.io.pixel_size.check_pixel_size``
  finds the pitch it expects, plus the tissue facts and where the slide came from;
- a QC PNG: the thumbnail, the mask's outline and every virtual spot.

The µm/px is the one given (the slides TSV's ``mpp`` column) or else the slide's own
(``openslide.mpp-x``), and must be plausible for H&E (``PLAUSIBLE_MPP``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from genedml.errors import InputError
from genedml.tiles.lattice import LatticeSpec, VirtualSpots, virtual_spots
from genedml.tiles.tissue import TissueMask, TissueSpec, detect_tissue

log = logging.getLogger(__name__)

QC_MAX_PX = 1600  # longest side of the QC image


def slide_mpp(slide, sample: str, path, mpp: float | None = None) -> tuple[float, str]:
    """(µm per level-0 pixel, where it came from): ``mpp`` when given, else the slide's tags; either must be
    plausible for H&E, else an InputError says to give ``mpp`` in the slides TSV."""
    from genedml.io.hest import PLAUSIBLE_MPP
    from genedml.io.slide import tiff_mpp

    lo, hi = PLAUSIBLE_MPP
    fix = (
        f"give the slide's µm per level-0 pixel in the `mpp` column of the slides TSV (slides.list) or with "
        f"--mpp (40x scans are ~0.25, 20x ~0.5; H&E is {lo}-{hi} µm/px)"
    )
    if mpp is not None:
        value = float(mpp)
        if not (np.isfinite(value) and lo <= value <= hi):
            raise InputError(
                f"the given mpp {value:.4g} µm/px is not plausible for H&E ({lo}-{hi} µm/px)", sample, path
            )
        return value, "given (slides TSV mpp)"
    tags = tiff_mpp(slide)
    if tags is None:
        raise InputError(
            f"the slide states no pixel size (no resolution tags, no openslide.mpp-x): {fix}", sample, path
        )
    if not lo <= tags <= hi:
        raise InputError(
            f"the slide's resolution tags say {tags:.4g} µm/px, which is not plausible for H&E: {fix}", sample, path
        )
    return tags, "slide tags (openslide.mpp-x)"


def spots_anndata(spots: VirtualSpots, tissue: TissueMask, sample: str, mpp: float):
    """The positions-only AnnData of the virtual spots (module doc)."""
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame(
        {
            "in_tissue": np.ones(len(spots), np.int64),
            "array_row": spots.array_row.astype(np.int64),
            "array_col": spots.array_col.astype(np.int64),
            "tissue_coverage": spots.tissue.astype(np.float32),  # fraction of the spot's disc on tissue
        },
        index=pd.Index([str(b) for b in spots.barcodes], name="barcode"),
    )
    adata = ad.AnnData(X=np.zeros((len(spots), 0), np.float32), obs=obs)
    adata.obsm["spatial"] = np.asarray(spots.spatial, np.float64)
    adata.uns["spatial"] = {
        sample: {
            "images": {"hires": tissue.thumbnail},
            "scalefactors": {
                "tissue_hires_scalef": float(2.0 / (tissue.downsample[0] + tissue.downsample[1])),
                "spot_diameter_fullres": float(spots.spot_um / mpp),
            },
            "metadata": {"source": "genedml virtual spots on a bare slide", "technology": spots.technology},
        }
    }
    return adata


def write_qc_png(path, tissue: TissueMask, spots: VirtualSpots, mpp: float, title: str = "") -> None:
    """The thumbnail with the mask's outline (green) and every virtual spot (a circle of its diameter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import EllipseCollection
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from genedml.atomic import atomic_path

    h, w = tissue.mask.shape
    shrink = min(1.0, QC_MAX_PX / max(h, w))
    dpi = 100
    fig = plt.figure(figsize=(w * shrink / dpi, h * shrink / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(tissue.thumbnail, interpolation="antialiased")
    edge = np.zeros((h, w, 4), np.float32)
    edge[find_boundaries(tissue.mask, mode="thick")] = (0.0, 0.8, 0.0, 1.0)
    ax.imshow(edge, interpolation="nearest")
    xy = spots.spatial / np.asarray(tissue.downsample)  # thumbnail px
    d = spots.spot_um / mpp / tissue.downsample[0]
    ax.add_collection(
        EllipseCollection(
            np.full(len(xy), d),
            np.full(len(xy), d),
            np.zeros(len(xy)),
            units="xy",
            offsets=xy,
            offset_transform=ax.transData,
            facecolors="none",
            edgecolors="#1f3cff",
            linewidths=max(0.3, min(1.0, d * shrink / 10)),
        )
    )
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    if title:
        ax.text(8, 8, title, va="top", ha="left", fontsize=8, color="black", backgroundcolor=(1, 1, 1, 0.7))
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    # 256 colours: a photograph's PNG shrinks 3-5x (a 1600 px thumbnail stays well under 2 MB)
    small = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    with atomic_path(path) as tmp:
        small.save(tmp, format="PNG")


def import_bare_slide(
    slide_path: str | os.PathLike,
    sample: str,
    out_st: str | os.PathLike,
    out_metadata: str | os.PathLike,
    out_qc: str | os.PathLike,
    tissue: TissueSpec,
    lattice: LatticeSpec,
    technology: str | None = None,
    mpp: float | None = None,
) -> dict:
    """Detect the tissue of ``slide_path``, lay the ``technology`` lattice (visium, st, custom; default:
    ``lattice.technology``) over it and write the sample's .h5ad, metadata JSON and QC PNG (module doc);
    returns the metadata."""
    import genedml
    from genedml.atomic import atomic_path, write_json
    from genedml.io.slide import open_slide

    slide_path = Path(slide_path)
    technology = technology or lattice.technology
    try:
        pitch_um, spot_um, layout = lattice.resolve(technology)
    except ValueError as exc:
        raise InputError(str(exc), sample, slide_path) from None
    slide = open_slide(slide_path, sample)
    try:
        mpp_value, source = slide_mpp(slide, sample, slide_path, mpp)
        mask = detect_tissue(slide, mpp_value, tissue, sample, slide_path)
        dims = slide.dimensions
    finally:
        slide.close()
    spots = virtual_spots(mask, mpp_value, lattice, technology)
    if len(spots) == 0:
        raise InputError(
            f"no {technology} spot ({spot_um:g} µm, {pitch_um:g} µm apart) has its centre and "
            f"{lattice.min_tissue:g} of its disc (slides.lattice.min_tissue) on the {mask.area_mm2:.3g} mm² of "
            "tissue found",
            sample,
            slide_path,
        )
    adata = spots_anndata(spots, mask, sample, mpp_value)
    meta = {
        "id": sample,
        "st_technology": f"virtual {technology}",
        "virtual_spots": True,
        "lattice_layout": layout,
        "inter_spot_dist": pitch_um,
        "spot_diameter": spot_um,
        "pixel_size_um_estimated": mpp_value,
        "pixel_size_um_source": source,
        "spots_under_tissue": int(len(spots)),
        "n_spots": int(len(spots)),
        "lattice_nodes_in_slide": int(spots.n_candidates),
        "min_tissue": lattice.min_tissue,
        "nb_genes": 0,
        "fullres_px_width": int(dims[0]),
        "fullres_px_height": int(dims[1]),
        "area_mm2": round(mask.area_mm2, 6),
        "tissue_fraction": round(mask.tissue_fraction, 6),
        "threshold": round(mask.threshold, 6),
        "n_objects": mask.n_objects,
        "tissue_settings": tissue.to_config(),
        "imported_from": {"slide": str(slide_path)},
        "genedml_version": genedml.__version__,
    }
    title = (
        f"{sample}: {len(spots)} virtual {technology} spots ({pitch_um:g} µm {layout}), tissue "
        f"{mask.area_mm2:.2f} mm² ({100 * mask.tissue_fraction:.1f}%), {mpp_value:.4g} µm/px"
    )
    with contextlib.ExitStack() as stack:  # the three outputs appear together or not at all
        tmp_st = stack.enter_context(atomic_path(out_st))
        tmp_meta = stack.enter_context(atomic_path(out_metadata))
        tmp_qc = stack.enter_context(atomic_path(out_qc))
        adata.write_h5ad(tmp_st)
        write_json(tmp_meta, meta)
        write_qc_png(tmp_qc, mask, spots, mpp_value, title)
    log.info("%s; written to %s", title, out_st)
    return meta
