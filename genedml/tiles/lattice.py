"""Virtual spots: a spot lattice of a spatial-transcriptomics technology laid over a bare slide's tissue
(config ``slides.lattice``).

The lattice covers the whole slide in level-0 pixels and is centred on it:

- ``hex`` (Visium): rows ``pitch * sqrt(3) / 2`` apart, every other row shifted by ``pitch / 2``, so each
  spot's six neighbours are ``pitch`` away. Array coordinates are Space Ranger's: ``array_col`` steps by 2
  along a row and odd rows hold the odd columns, so row neighbours are 2 columns apart;
- ``square`` (legacy ST): rows and columns ``pitch`` apart, consecutive ``array_row`` / ``array_col``.

A spot is kept when its disc (diameter ``spot_um``) lies inside the slide, its centre is on tissue and at
least ``min_tissue`` of the disc lies in the tissue mask: the disc is sampled at a grid of points (at least
two per mask pixel across it, 7 to 21 across), each looked up in the nearest mask pixel. A spot is placed
by its centre (its crops are centred there), so one whose centre is on glass is never kept, even where a
concave tissue edge covers most of its disc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from genedml.pipeline.spec import StageSpec

# technology -> (pitch µm, spot diameter µm, layout)
TECHNOLOGIES = {
    "visium": (100.0, 55.0, "hex"),
    "st": (200.0, 100.0, "square"),
}
# points per disc diameter the tissue coverage is sampled with (at least; more when the disc spans more mask px)
MIN_DISC_SAMPLES = 7
MAX_DISC_SAMPLES = 21


@dataclass(frozen=True)
class LatticeSpec(StageSpec):
    """The virtual-spot lattice settings (config ``slides.lattice``; defaults and allowed values in the schema).

    ``technology`` may be ``auto`` in the config: the caller resolves it to the training run's technology
    (``technology_of_metadata`` on a training sample's metadata; the CLI's ``--training-metadata``) and passes
    it to ``resolve`` / ``virtual_spots`` explicitly."""

    section: ClassVar[str] = "slides.lattice"

    technology: str  # auto | visium | st | custom
    pitch_um: float | None  # custom: centre-to-centre distance
    spot_um: float | None  # custom: spot diameter
    layout: str  # custom: hex | square
    min_tissue: float  # a spot is kept when this fraction of its disc is tissue

    @classmethod
    def convert(cls, values: dict) -> dict:
        def number(v):
            return None if v is None else float(v)

        return {
            **values,
            "pitch_um": number(values["pitch_um"]),
            "spot_um": number(values["spot_um"]),
            "min_tissue": float(values["min_tissue"]),
        }

    def resolve(self, technology: str | None = None) -> tuple[float, float, str]:
        """(pitch µm, spot diameter µm, layout) of ``technology`` (default: the spec's)."""
        technology = technology or self.technology
        if technology == "auto":
            raise ValueError(
                "slides.lattice.technology 'auto' must be resolved (to the training run's technology) before "
                "the lattice is made; give visium, st or custom"
            )
        if technology in TECHNOLOGIES:
            return TECHNOLOGIES[technology]
        if technology != "custom":
            raise ValueError(f"slides.lattice.technology {technology!r}: expected visium, st or custom")
        missing = [k for k in ("pitch_um", "spot_um") if getattr(self, k) is None]
        if missing:
            raise ValueError(
                f"slides.lattice.technology custom needs {' and '.join('slides.lattice.' + k for k in missing)}"
            )
        if self.layout not in ("hex", "square"):
            raise ValueError(f"slides.lattice.layout {self.layout!r}: expected hex or square")
        return float(self.pitch_um), float(self.spot_um), self.layout


def technology_of_metadata(meta: dict, sample: str | None = None, path=None) -> str:
    """The lattice (visium or st) of a training sample's HEST metadata (``st_technology``), what
    ``technology: auto`` means; an InputError when it is neither."""
    import re

    from genedml.errors import InputError

    stated = str(meta.get("st_technology") or "")
    key = re.sub(r"[^a-z]", "", stated.lower()).removeprefix("virtual")
    if key == "visium":
        return "visium"
    if key in ("st", "spatialtranscriptomics", "legacyst"):
        return "st"
    raise InputError(
        f"slides.lattice.technology auto: the training run's st_technology {stated!r} is neither Visium nor "
        "Spatial Transcriptomics; set slides.lattice.technology to visium, st or custom (pitch_um, spot_um)",
        sample,
        path,
    )


@dataclass
class VirtualSpots:
    """Spots of a lattice on a slide, in level-0 pixels."""

    spatial: np.ndarray  # (N, 2) float, (x, y) level-0 px
    array_row: np.ndarray  # (N,) int
    array_col: np.ndarray  # (N,) int
    barcodes: np.ndarray  # (N,) str, "{row}x{col}"
    tissue: np.ndarray  # (N,) float: fraction of each disc in the tissue mask
    pitch_um: float
    spot_um: float
    layout: str
    technology: str
    n_candidates: int = 0  # lattice nodes whose disc lies inside the slide

    def __len__(self) -> int:
        return len(self.spatial)


def lattice_nodes(
    width: float, height: float, pitch_px: float, spot_px: float, layout: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy (N, 2), array_row, array_col) of every node whose disc (diameter ``spot_px``) lies inside a
    ``width`` x ``height`` image, the lattice centred on it."""
    r = spot_px / 2.0
    free_w, free_h = width - 2 * r, height - 2 * r
    if free_w < 0 or free_h < 0:
        empty = np.zeros(0, np.int64)
        return np.zeros((0, 2)), empty, empty
    if layout == "hex":
        dy, dx = pitch_px * np.sqrt(3.0) / 2.0, pitch_px / 2.0  # dx: one array column
        n_rows = int(np.floor(free_h / dy)) + 1
        n_cols = int(np.floor(free_w / dx)) + 1  # half-pitch columns
    elif layout == "square":
        dy = dx = pitch_px
        n_rows, n_cols = int(np.floor(free_h / dy)) + 1, int(np.floor(free_w / dx)) + 1
    else:
        raise ValueError(f"layout must be hex or square, got {layout!r}")
    y0 = r + (free_h - (n_rows - 1) * dy) / 2.0
    x0 = r + (free_w - (n_cols - 1) * dx) / 2.0
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    if layout == "hex":  # Space Ranger: even rows hold even columns, odd rows odd ones
        keep = (rows + cols) % 2 == 0
        rows, cols = rows[keep], cols[keep]
    xy = np.stack([x0 + cols * dx, y0 + rows * dy], 1)
    return xy, rows, cols


def disc_offsets(diameter: float, n: int) -> np.ndarray:
    """(K, 2) offsets of an ``n`` x ``n`` grid of points inside a disc of ``diameter`` (centred cells)."""
    t = (np.arange(n) + 0.5) / n - 0.5
    u, v = np.meshgrid(t, t, indexing="ij")
    inside = u**2 + v**2 <= 0.25
    return np.stack([u[inside], v[inside]], 1) * diameter


def on_mask(mask: np.ndarray, downsample: tuple[float, float], xy: np.ndarray) -> np.ndarray:
    """Whether each level-0 point ``xy`` falls on a True pixel of ``mask`` (nearest mask pixel)."""
    h, w = mask.shape
    ix = np.clip((xy[:, 0] / downsample[0]).astype(np.int64), 0, w - 1)
    iy = np.clip((xy[:, 1] / downsample[1]).astype(np.int64), 0, h - 1)
    return mask[iy, ix]


def disc_coverage(mask: np.ndarray, downsample: tuple[float, float], xy: np.ndarray, diameter: float) -> np.ndarray:
    """Fraction of each disc (centre ``xy`` level-0 px, ``diameter`` level-0 px) that lies in ``mask``
    (level-0 px per mask px: ``downsample``), from a grid of points in the disc (nearest mask pixel)."""
    dx, dy = downsample
    across = diameter / min(dx, dy)  # mask px across a disc
    n = int(np.clip(np.ceil(across) * 2, MIN_DISC_SAMPLES, MAX_DISC_SAMPLES))
    offsets = disc_offsets(diameter, n)
    h, w = mask.shape
    fractions = np.empty(len(xy))
    for start in range(0, len(xy), 20_000):  # bounded memory: 20k spots x K points at a time
        part = xy[start : start + 20_000]
        px = part[:, None, 0] + offsets[None, :, 0]
        py = part[:, None, 1] + offsets[None, :, 1]
        ix = np.clip((px / dx).astype(np.int64), 0, w - 1)
        iy = np.clip((py / dy).astype(np.int64), 0, h - 1)
        fractions[start : start + len(part)] = mask[iy, ix].mean(1)
    return fractions


def virtual_spots(mask, mpp: float, spec: LatticeSpec, technology: str | None = None) -> VirtualSpots:
    """The lattice's spots on the tissue of ``mask`` (a ``genedml.tiles.tissue.TissueMask``) of a slide of
    ``mpp`` µm per level-0 pixel; ``technology``: visium, st or custom (default: the spec's, not ``auto``)."""
    technology = technology or spec.technology
    pitch_um, spot_um, layout = spec.resolve(technology)
    dx, dy = mask.downsample
    h, w = mask.mask.shape
    width, height = mask.dimensions if mask.dimensions != (0, 0) else (w * dx, h * dy)
    xy, rows, cols = lattice_nodes(width, height, pitch_um / mpp, spot_um / mpp, layout)
    cover = disc_coverage(mask.mask, (dx, dy), xy, spot_um / mpp)
    keep = (cover >= spec.min_tissue) & on_mask(mask.mask, (dx, dy), xy)  # and the centre on tissue
    rows, cols = rows[keep], cols[keep]
    return VirtualSpots(
        spatial=xy[keep],
        array_row=rows.astype(np.int64),
        array_col=cols.astype(np.int64),
        barcodes=np.array([f"{r}x{c}" for r, c in zip(rows, cols)], dtype=object),
        tissue=cover[keep],
        pitch_um=float(pitch_um),
        spot_um=float(spot_um),
        layout=layout,
        technology=technology,
        n_candidates=int(len(xy)),
    )
