"""Small real inputs cut from ../shared/data/her2st: a window of a section's JPEG with its spots and counts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from genedml.io.legacy_st import LegacyFiles
from genedml.study.genes import read_gene_list


def make_legacy_crop(src_root: Path, section: str, dst_root: Path, side: int = 1600, margin: int = 120) -> int:
    """Write ``section`` into ``dst_root`` (legacy-ST layout) cut to a ``side`` px window around its median spot.

    Keeps the spots at least ``margin`` px inside the window, shifts their pixel coordinates, keeps the
    genes of genedml's HER2ST 250-gene list, and re-encodes the window as JPEG (quality 92). Returns the
    number of spots kept.
    """
    src = LegacyFiles.find(src_root, section)
    spots = pd.read_csv(src.spots, sep="\t")
    counts = pd.read_csv(src.counts, sep="\t", index_col=0)
    cx, cy = spots["pixel_x"].median(), spots["pixel_y"].median()
    x0, y0 = int(cx - side / 2), int(cy - side / 2)
    inside = spots[
        (spots.pixel_x > x0 + margin)
        & (spots.pixel_x < x0 + side - margin)
        & (spots.pixel_y > y0 + margin)
        & (spots.pixel_y < y0 + side - margin)
    ].copy()
    inside["pixel_x"] -= x0
    inside["pixel_y"] -= y0
    ids = [f"{x}x{y}" for x, y in zip(inside["x"], inside["y"])]
    keep = [i for i in ids if i in counts.index]
    genes = read_gene_list("genedml:her2st_250")
    patient_dir = src.image.parent.parent.name
    for sub in ("ST-cnts", "ST-spotfiles", f"ST-imgs/{patient_dir}/{section}"):
        (dst_root / sub).mkdir(parents=True, exist_ok=True)
    counts.loc[keep, genes].to_csv(dst_root / f"ST-cnts/{section}.tsv.gz", sep="\t")
    inside.to_csv(dst_root / f"ST-spotfiles/{section}_selection.tsv", sep="\t", index=False)
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(src.image) as img:
        img.crop((x0, y0, x0 + side, y0 + side)).save(dst_root / f"ST-imgs/{patient_dir}/{section}/HE.jpg", quality=92)
    return len(keep)
