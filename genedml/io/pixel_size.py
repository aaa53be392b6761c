"""Cross-check a slide's pixel size (µm/px) against its spots: a wrong µm/px fails here, not silently later.

The spots of every spatial-transcriptomics technology sit on a lattice of known pitch (centre-to-centre
distance). The median nearest-neighbour distance of the spot centres (level-0 px) times the µm/px used must
give that pitch; a metadata value 10x off (HEST's TIFF tags in pixels per cm), a 72-dpi default copied into
the metadata or a wrong ``data.mpp`` does not. The expected pitch is, in this order:

- the metadata's ``inter_spot_dist`` (HEST's column; genedml's importers write it too). When the metadata's
  ``spot_diameter`` is larger than it, the spots would overlap: the two are taken to be swapped (HEST's
  metadata for the 2k-array ST sections says 110 µm apart and 150 µm wide, the array's spots are 110 µm wide
  and 150 µm apart) and the nearer of the two is used. HEST's Visium HD metadata states the 2 µm bin while
  its .h5ad holds pooled bins, so for Visium HD the distance is used only when genedml's Space Ranger import
  wrote it (``hd_bin_um`` in the metadata);
- else the technology's: legacy Spatial Transcriptomics 200 µm (100 µm spots, square grid), Visium 100 µm
  (55 µm spots, hexagonal grid);
- else (Visium HD bins and Xenium pseudo-spots whose size the metadata does not state, any other technology)
  nothing is checked, and the reason is logged at info level; so it is with fewer than ``MIN_SPOTS`` spots.

The median nearest-neighbour distance is robust to the gaps of a tissue section (only spots under tissue,
holes, a few stray spots): most spots keep a lattice neighbour. ``PITCH_TOLERANCE`` is loose enough for
real slides (spot-detection jitter, slightly anisotropic scans, HEST's own estimates) and still catches a
factor of 2 or 10.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genedml.errors import InputError

log = logging.getLogger(__name__)

# measured / expected pitch allowed: symmetric in log scale (1 / 1.4 ~ 0.71); a 2x or 10x error is outside
PITCH_TOLERANCE = (0.7, 1.4)
# fewer spots than this: no check (their nearest neighbours say little about the lattice)
MIN_SPOTS = 10
# nearest neighbours are measured for at most this many spots (a random, seeded subset; Visium HD has millions)
MAX_QUERIED = 50_000
# centre-to-centre µm by technology, when the metadata does not state it (keys: lower case, letters only)
TECHNOLOGY_PITCH_UM = {
    "spatialtranscriptomics": ("Spatial Transcriptomics", 200.0),
    "legacyst": ("Spatial Transcriptomics", 200.0),
    "st": ("Spatial Transcriptomics", 200.0),
    "visium": ("Visium", 100.0),
}


@dataclass(frozen=True)
class PitchCheck:
    """What was compared: the spots' median nearest-neighbour distance and the pitch their technology has."""

    sample: str
    mpp: float
    n_spots: int
    measured_px: float
    expected_um: float
    technology: str
    basis: str  # where the expected pitch came from

    @property
    def measured_um(self) -> float:
        return self.measured_px * self.mpp

    @property
    def ratio(self) -> float:
        return self.measured_um / self.expected_um

    @property
    def implied_mpp(self) -> float:
        """The µm/px that would make the measured pitch the expected one."""
        return self.expected_um / self.measured_px


def positive(value) -> float | None:
    """``value`` as a finite positive float, else None (a metadata field that is absent, empty or 0)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _tech_key(technology: str) -> str:
    return re.sub(r"[^a-z]", "", technology.lower())


def median_nn_px(centres: np.ndarray, seed: int = 0) -> float:
    """Median distance (px) from each spot centre to its nearest other centre (one at the same place is skipped)."""
    from scipy.spatial import cKDTree

    xy = np.asarray(centres, float)[:, :2]
    if len(xy) < 2:
        return float("nan")
    query = xy
    if len(xy) > MAX_QUERIED:
        query = xy[np.random.default_rng(seed).choice(len(xy), MAX_QUERIED, replace=False)]
    d, _ = cKDTree(xy).query(query, k=min(4, len(xy)))
    d = np.where(d[:, 1:] > 0, d[:, 1:], np.inf).min(1)  # the nearest other centre (a repeated one is skipped)
    d = d[np.isfinite(d)]
    return float(np.median(d)) if len(d) else float("nan")


def expected_pitch(meta: dict, measured_um: float | None = None) -> tuple[float, str, str] | str:
    """(expected centre-to-centre µm, technology, where it came from), or why there is none (a str).
    ``measured_um`` picks between an ``inter_spot_dist`` and a ``spot_diameter`` that look swapped."""
    technology = str(meta.get("st_technology") or "").strip()
    key = _tech_key(technology)
    stated = positive(meta.get("inter_spot_dist"))
    if stated is not None and key == "visiumhd" and meta.get("hd_bin_um") is None:
        return (
            f"the metadata's inter_spot_dist ({stated:g} µm) is HEST's Visium HD bin, not necessarily the "
            "pitch of the (pooled) spots in the .h5ad, and no hd_bin_um says which bins they are"
        )
    if stated is not None:
        diameter = positive(meta.get("spot_diameter"))
        if diameter is not None and diameter > stated and measured_um is not None:
            nearer = min((stated, diameter), key=lambda v: abs(np.log(measured_um / v)))
            if nearer == diameter:
                return (
                    diameter,
                    technology or "unknown technology",
                    f"the metadata's spot_diameter ({diameter:g} µm; its inter_spot_dist {stated:g} µm is smaller "
                    "than the spots, so the two look swapped)",
                )
        return stated, technology or "unknown technology", "the metadata's inter_spot_dist"
    if key in TECHNOLOGY_PITCH_UM:
        name, pitch = TECHNOLOGY_PITCH_UM[key]
        return pitch, name, f"the {name} spot pitch (the metadata states no inter_spot_dist)"
    if not technology:
        return "the metadata states neither inter_spot_dist nor st_technology"
    return f"the metadata states no inter_spot_dist and {technology!r} has no fixed spot pitch genedml knows"


def _source_words(source: str, meta: dict) -> str:
    if source == "metadata":
        how = str(meta.get("pixel_size_um_source") or "")
        key = "pixel_size_um_estimated" if positive(meta.get("pixel_size_um_estimated")) else "pixel_size_um_embedded"
        if how == "configured":
            return f"the metadata's {key}, which the legacy import took from data.mpp / --mpp"
        return f"the metadata's {key}" + (f" ({how})" if how else "")
    if source == "slide tags":
        return "the slide's resolution tags (the metadata states none)"
    return source


def _fix_words(sample: str, meta: dict) -> str:
    imported = meta.get("imported_from")
    fix = (
        f'set "pixel_size_um_estimated" (µm per level-0 pixel of the slide) in metadata/{sample}.json to the '
        "slide's real pixel size"
    )
    if isinstance(imported, dict) and "counts" in imported:
        fix += "; for a legacy ST import, set data.mpp (genedml import-legacy --mpp) to it and import again"
    elif isinstance(imported, dict) and "spaceranger" in imported:
        fix += "; for a Space Ranger import, check the scale factors (spot_diameter_fullres) and import again"
    else:
        fix += " (or data.mpp for a legacy ST import)"
    return fix


def check_pixel_size(
    sample: str,
    centres: np.ndarray,
    mpp: float,
    source: str,
    meta: dict,
    metadata_path=None,
    slide_path=None,
    st_path=None,
) -> PitchCheck | None:
    """Check ``mpp`` (µm per level-0 px, found in ``source``: "metadata" or "slide tags") against the spot
    centres (level-0 px, all spots with a position): their median nearest-neighbour distance in µm over the
    expected pitch must lie in ``PITCH_TOLERANCE``, else an ``InputError`` says what was measured, what was
    expected and how to fix it. Returns what was compared, or None when nothing could be (logged at info)."""
    centres = np.asarray(centres, float)
    n = len(centres)
    if n < MIN_SPOTS:
        log.info("%s: pixel size not checked against the spot pitch: only %d spots (< %d)", sample, n, MIN_SPOTS)
        return None
    measured_px = median_nn_px(centres)
    if not measured_px > 0:
        log.info("%s: pixel size not checked against the spot pitch: the spot centres coincide", sample)
        return None
    expected = expected_pitch(meta, measured_px * mpp)
    if isinstance(expected, str):
        log.info("%s: pixel size not checked against the spot pitch: %s", sample, expected)
        return None
    expected_um, technology, basis = expected
    check = PitchCheck(sample, float(mpp), n, measured_px, expected_um, technology, basis)
    lo, hi = PITCH_TOLERANCE
    if lo <= check.ratio <= hi:
        log.info(
            "%s: pixel size %.4g µm/px fits the spots: median spot distance %.1f px = %.1f µm, %s spots %g µm "
            "apart (%.2fx)",
            sample,
            mpp,
            measured_px,
            check.measured_um,
            technology,
            expected_um,
            check.ratio,
        )
        return check
    slide = Path(slide_path).name if slide_path is not None else "the slide"
    spots = f" ({st_path})" if st_path is not None else ""
    raise InputError(
        f"the pixel size does not fit the spots: {mpp:.4g} µm/px, from {_source_words(source, meta)}, makes the "
        f"median distance between neighbouring spot centres{spots} {measured_px:.1f} px = {check.measured_um:.4g} "
        f"µm, but {technology} spots are {expected_um:g} µm apart ({basis}): {check.ratio:.2f}x the expected "
        f"pitch (allowed {lo}-{hi}x). The pixel size of {slide} is probably wrong; the spots say about "
        f"{check.implied_mpp:.4g} µm/px. Fix: {_fix_words(sample, meta)}",
        sample,
        metadata_path if metadata_path is not None else slide_path,
    )
