"""A small synthetic dataset in the HEST-1k layout whose expression follows what the image shows.

Each section is a painted H&E-like tissue with three compartments (tumour, stroma, immune) that differ
in stain colour and in the density and size of nuclei. Spots sit on a Visium-like hexagonal grid
(100 µm pitch). Each gene's expected count is a log-linear function of the compartment fractions and
nuclear density under the spot, plus a per-patient offset, drawn with negative-binomial noise. A model
that reads the image therefore predicts expression clearly better than chance; one that ignores the
image (or scrambles spots) does not.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from genedml.atomic import atomic_path, write_json
from genedml.io.hest import SamplePaths
from genedml.io.tiff import write_pyramidal_tiff
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

# Marker-like symbols for the first genes so reports show familiar names; the rest are synthetic.
MARKER_GENES = [
    "ERBB2",
    "FASN",
    "GNAS",
    "KRT19",
    "KRT8",
    "EPCAM",
    "CD24",
    "MUC1",
    "ESR1",
    "GRB7",
    "COL1A1",
    "COL1A2",
    "COL3A1",
    "FN1",
    "SPARC",
    "DCN",
    "LUM",
    "POSTN",
    "VIM",
    "ACTA2",
    "PTPRC",
    "CD74",
    "HLA-DRA",
    "CD52",
    "IGKC",
    "IGHG3",
    "CXCL13",
    "LYZ",
    "CD3E",
    "MS4A1",
]
COMPARTMENTS = ("tumour", "stroma", "immune")
N_FACTORS = 4  # tumour, stroma, immune fractions and nuclear density


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:8], 16)


def gene_names(n_genes: int) -> list[str]:
    names = MARKER_GENES[:n_genes]
    names += [f"DEMO{i:04d}" for i in range(len(names), n_genes)]
    return names


def gene_programme(n_genes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shared across samples: per-gene baseline log-mean and loadings on the image factors."""
    rng = np.random.default_rng(_seed("programme", seed, n_genes))
    base = rng.normal(0.5, 0.8, n_genes)
    weights = np.zeros((n_genes, N_FACTORS))
    for g in range(n_genes):
        kind = g % 10
        if g < 30:  # the marker genes follow their compartment
            comp = [0] * 10 + [1] * 10 + [2] * 10
            weights[g, comp[g]] = rng.uniform(1.8, 3.0)
            weights[g, 3] = rng.normal(0.0, 0.3)
            base[g] += 1.5
        elif kind < 6:  # image-driven genes
            weights[g, :3] = rng.normal(0, 1.4, 3)
            weights[g, 3] = rng.normal(0, 0.6)
            base[g] += 0.8
        elif kind < 8:  # weakly image-driven
            weights[g, :3] = rng.normal(0, 0.4, 3)
        # the rest: expression does not depend on the image (housekeeping-like noise)
    return base, weights


def _smooth_field(rng, shape, n_blobs: int, sigma_frac: float) -> np.ndarray:
    """Sum of random Gaussian blobs on a coarse grid, normalised to [0, 1]."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros(shape, np.float32)
    sigma = sigma_frac * max(h, w)
    for _ in range(n_blobs):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        amp = rng.uniform(0.5, 1.0)
        field += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    field -= field.min()
    return field / max(field.max(), 1e-6)


def _hex_spots(width_um: float, height_um: float, pitch_um: float, margin_um: float):
    """Visium-like hexagonal grid: (array_row, array_col, x_um, y_um); columns use Visium's doubled index."""
    row_step = pitch_um * np.sqrt(3) / 2
    spots = []
    r = 0
    y = margin_um
    while y <= height_um - margin_um:
        offset = 0.0 if r % 2 == 0 else pitch_um / 2
        c = 0
        x = margin_um + offset
        while x <= width_um - margin_um:
            spots.append((r, 2 * c + (r % 2), x, y))
            c += 1
            x += pitch_um
        r += 1
        y += row_step
    return np.array(spots)


@dataclass(frozen=True)
class DemoSpec(StageSpec):
    """Settings of the synthetic sections (config ``demo``; defaults in the config schema)."""

    section: ClassVar[str] = "demo"

    seed: int
    n_genes: int
    width_um: float
    height_um: float
    mpp: float


PITCH_UM = 100.0  # Visium-like spot pitch
MEAN_LIBRARY = 6000.0  # mean counts per spot


def spot_lattice(spec: DemoSpec) -> np.ndarray:
    """Every spot position of a demo section's slide (the tissue then keeps some): ``_hex_spots`` rows."""
    return _hex_spots(spec.width_um, spec.height_um, PITCH_UM, margin_um=PITCH_UM * 0.6)


def make_section(sample: str, patient: str, out_dir: str | Path, spec: DemoSpec | None = None) -> dict:
    """Write ``wsis/{sample}.tif``, ``st/{sample}.h5ad`` and ``metadata/{sample}.json`` under ``out_dir``."""
    spec = spec or DemoSpec.from_config({})
    rng = np.random.default_rng(_seed("section", spec.seed, sample))
    shape = (int(round(spec.height_um / spec.mpp)), int(round(spec.width_um / spec.mpp)))
    label, dens, in_tissue = _tissue_maps(rng, shape)
    image = _paint(rng, label, dens, in_tissue, spec.mpp)
    grid, xy, factors = _spot_factors(label, dens, in_tissue, spec)
    counts = _expression(rng, factors, spec, patient)
    adata = _spot_table(rng, grid, xy, factors, counts, spec, patient)

    paths = SamplePaths.layout(out_dir, sample)
    write_pyramidal_tiff(paths.slide, image, mpp=spec.mpp)
    with atomic_path(paths.st) as tmp:
        adata.write_h5ad(tmp)
    meta = {
        "id": sample,
        "patient": patient,
        "dataset_title": "genedml synthetic demo",
        "subseries": sample,
        "organ": "synthetic",
        "species": "synthetic",
        "st_technology": "Visium",
        "pixel_size_um_estimated": spec.mpp,
        "pixel_size_um_embedded": spec.mpp,
        "spot_diameter": 55.0,
        "inter_spot_dist": PITCH_UM,
        "spots_under_tissue": int(adata.n_obs),
        "fullres_px_width": shape[1],
        "fullres_px_height": shape[0],
        "license": "CC0 (generated by genedml)",
    }
    write_json(paths.metadata, meta)
    log.info(
        "%s (patient %s): %d x %d px, %d spots, %d genes",
        sample,
        patient,
        shape[1],
        shape[0],
        adata.n_obs,
        spec.n_genes,
    )
    return meta


def _tissue_maps(rng, shape):
    """Per pixel: the compartment (label), the nuclear density and the tissue mask, painted coarse."""
    H, W = shape
    coarse = (max(8, H // 32), max(8, W // 32))  # fields are painted coarse, then upsampled
    fields = np.stack([_smooth_field(rng, coarse, 6, 0.12) for _ in COMPARTMENTS])
    fields[0] *= 1.15  # a little more tumour, as in the sections the papers use
    density = _smooth_field(rng, coarse, 5, 0.15)
    tissue = _smooth_field(rng, coarse, 3, 0.35)
    yy, xx = np.mgrid[0 : coarse[0], 0 : coarse[1]]
    ellipse = ((yy - coarse[0] / 2) / (coarse[0] * 0.52)) ** 2 + ((xx - coarse[1] / 2) / (coarse[1] * 0.52)) ** 2
    tissue_mask = (1.0 - ellipse + 0.4 * tissue) > 0.55

    def up(a):
        return np.asarray(Image.fromarray(a.astype(np.float32)).resize((W, H), Image.Resampling.BILINEAR))

    label = np.argmax(np.stack([up(f) for f in fields]), axis=0).astype(np.uint8)
    return label, up(density), up(tissue_mask.astype(np.float32)) > 0.5


def _paint(rng, label, dens, in_tissue, mpp: float) -> np.ndarray:
    """The H&E-like RGB image: background, compartment cytoplasm colours, then nuclei."""
    H, W = label.shape
    palette = np.array([[214, 150, 200], [236, 168, 190], [222, 175, 205]], np.uint8)
    img = np.where(in_tissue[..., None], palette[label], np.array([242, 240, 238], np.uint8)).astype(np.uint8)
    noise = rng.normal(0, 6, (H // 4 + 1, W // 4 + 1, 3))
    noise = np.asarray(Image.fromarray(np.clip(noise + 128, 0, 255).astype(np.uint8)).resize((W, H)))
    img = np.clip(img.astype(np.int16) + noise.astype(np.int16) - 128, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)
    area_mm2 = (H * mpp / 1000) * (W * mpp / 1000)
    # nuclei per mm² at full density, radius (µm) and colour per compartment
    nuclei = {0: (5200, 4.5, (88, 48, 138)), 1: (1100, 3.0, (120, 70, 150)), 2: (7000, 2.8, (58, 28, 105))}
    n_try = int(7000 * area_mm2 * 1.3)
    ys = rng.integers(0, H, n_try)
    xs = rng.integers(0, W, n_try)
    u = rng.uniform(0, 1, n_try)
    for y, x, p in zip(ys, xs, u):
        if not in_tissue[y, x]:
            continue
        comp = int(label[y, x])
        per_mm2, radius_um, colour = nuclei[comp]
        keep = per_mm2 / 7000 * (0.35 + 0.65 * dens[y, x])
        if p > keep:
            continue
        r = radius_um / mpp * rng.uniform(0.8, 1.25)
        elong = rng.uniform(1.6, 2.6) if comp == 1 else rng.uniform(1.0, 1.3)
        angle = rng.uniform(0, np.pi)
        rx, ry = r * elong, r / elong**0.5
        dx, dy = abs(rx * np.cos(angle)) + abs(ry * np.sin(angle)), abs(rx * np.sin(angle)) + abs(ry * np.cos(angle))
        shade = tuple(int(c + rng.normal(0, 10)) for c in colour)
        draw.ellipse((x - dx, y - dy, x + dx, y + dy), fill=shade)
    return np.asarray(canvas.filter(ImageFilter.GaussianBlur(radius=0.8)))


def _spot_factors(label, dens, in_tissue, spec: DemoSpec):
    """The spots under tissue (grid rows, pixel centres) and their image factors over a 100 µm disk."""
    H, W = label.shape
    mpp = spec.mpp
    grid = spot_lattice(spec)
    px = grid[:, 2] / mpp
    py = grid[:, 3] / mpp
    keep = in_tissue[py.astype(int).clip(0, H - 1), px.astype(int).clip(0, W - 1)]
    grid, px, py = grid[keep], px[keep], py[keep]
    radius = int(50 / mpp)
    disk_y, disk_x = np.mgrid[-radius : radius + 1 : 4, -radius : radius + 1 : 4]
    disk = disk_y**2 + disk_x**2 <= radius**2
    oy, ox = disk_y[disk], disk_x[disk]
    factors = np.zeros((len(px), N_FACTORS))
    for i, (x, y) in enumerate(zip(px.astype(int), py.astype(int))):
        sy = np.clip(y + oy, 0, H - 1)
        sx = np.clip(x + ox, 0, W - 1)
        inside = in_tissue[sy, sx]
        lab = label[sy, sx][inside]
        for c in range(3):
            factors[i, c] = np.mean(lab == c) if lab.size else 0.0
        factors[i, 3] = dens[sy, sx][inside].mean() if lab.size else 0.0
    factors[:, 3] = (factors[:, 3] - 0.5) * 2.0
    return grid, np.stack([px, py], 1), factors


def _expression(rng, factors, spec: DemoSpec, patient: str) -> np.ndarray:
    """Negative-binomial counts around a log-linear function of the image factors and a patient offset."""
    base, weights = gene_programme(spec.n_genes, spec.seed)
    prng = np.random.default_rng(_seed("patient", spec.seed, patient))
    patient_offset = prng.normal(0, 0.25, spec.n_genes)
    log_mu = base[None] + patient_offset[None] + factors @ weights.T
    rel = np.exp(log_mu)
    rel /= rel.sum(1, keepdims=True)
    library = MEAN_LIBRARY * np.exp(0.35 * factors[:, 3] + rng.normal(0, 0.25, len(factors)))
    mu = rel * library[:, None]
    dispersion = 6.0
    return rng.poisson(rng.gamma(dispersion, mu / dispersion)).astype(np.int32)


def _spot_table(rng, grid, xy, factors, counts, spec: DemoSpec, patient: str):
    """The section's AnnData in HEST's form: raw counts, obs columns, ``obsm['spatial']``."""
    import anndata as ad
    import pandas as pd

    letters = np.array(list("ACGT"))
    barcodes = ["".join(letters[rng.integers(0, 4, 16)]) + "-1" for _ in range(len(xy))]
    obs = pd.DataFrame(
        {
            "in_tissue": np.ones(len(xy), dtype=int),
            "array_row": grid[:, 0].astype(int),
            "array_col": grid[:, 1].astype(int),
            "pxl_col_in_fullres": xy[:, 0],
            "pxl_row_in_fullres": xy[:, 1],
        },
        index=pd.Index(barcodes, name="barcode"),
    )
    for c, name in enumerate(COMPARTMENTS):
        obs[f"demo_fraction_{name}"] = factors[:, c]
    var = pd.DataFrame(index=pd.Index(gene_names(spec.n_genes), name="gene"))
    adata = ad.AnnData(X=counts, obs=obs, var=var)
    adata.obsm["spatial"] = xy
    adata.uns["genedml_demo"] = {"seed": int(spec.seed), "patient": patient}
    return adata
