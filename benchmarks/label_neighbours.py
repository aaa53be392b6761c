"""How much the reference labels change between the two smoothing neighbourhoods on real legacy-ST sections.

For each section of a legacy-ST folder (default: the HER2ST sections beside this checkout), the reference
recipe's labels are computed with ``targets.neighbours: array_grid`` (the reference code) and
``pixel_radius`` (genedml 0.x). Printed per section: the array-grid neighbour pairs the pixel rule misses
(all and diagonal), and the per-gene Pearson r between the two label versions (median, min).

    python benchmarks/label_neighbours.py [--root ../shared/data/her2st] [--sections B4 C2 C3 C4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from genedml.evaluation.metrics import pearson_per_gene
from genedml.io import legacy_st
from genedml.study.genes import read_gene_list
from genedml.study.targets import array_grid_neighbours, grid_neighbours, make_targets


def section_agreement(root: Path, section: str) -> dict:
    files = legacy_st.LegacyFiles.find(root, section)
    barcodes, genes, counts, spots = legacy_st._spots_with_counts(files, section)
    chosen = [g for g in read_gene_list("genedml:her2st_250") if g in set(genes)]
    index = genes.get_indexer(chosen)
    c = counts[:, index].toarray()
    coords = np.stack([spots["y"].to_numpy(), spots["x"].to_numpy()], 1)
    pixel = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    grid = array_grid_neighbours(coords).tocoo()
    radius = grid_neighbours(pixel).tocsr()
    off = grid.row != grid.col
    diagonal = (np.abs(coords[grid.row, 0] - coords[grid.col, 0]) == 1) & (
        np.abs(coords[grid.row, 1] - coords[grid.col, 1]) == 1
    )
    found = np.asarray(radius[grid.row, grid.col]).ravel() > 0
    a = make_targets(c, pixel, "reference", "array_grid", array_coords=coords)
    b = make_targets(c, pixel, "reference", "pixel_radius")
    r = pearson_per_gene(a, b)
    return {
        "section": section,
        "spots": len(barcodes),
        "pairs_missed": float((~found[off]).mean()),
        "diagonals_missed": float((~found[off & diagonal]).mean()),
        "gene_r_median": float(np.nanmedian(r)),
        "gene_r_min": float(np.nanmin(r)),
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=here.parent / "shared/data/her2st")
    ap.add_argument("--sections", nargs="+", default=["B4", "C2", "C3", "C4"])
    a = ap.parse_args()
    print("section  spots  pairs missed  diagonals missed  per-gene r median  min   max |diff|")
    for s in a.sections:
        f = section_agreement(a.root, s)
        print(
            f"{s:7s} {f['spots']:6d} {f['pairs_missed']:12.1%} {f['diagonals_missed']:17.1%} "
            f"{f['gene_r_median']:18.3f} {f['gene_r_min']:5.3f} {f['max_abs_diff']:8.3f}"
        )


if __name__ == "__main__":
    main()
