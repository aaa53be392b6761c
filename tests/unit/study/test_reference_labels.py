"""The reference labels on real HER2ST sections, against the reference recipe written out here by hand.

The recipe (TRIPLEX / Gene-DML code): library size over the chosen genes, ``log10(1 + 1e4 c / lib)``, then
each spot replaced by the mean of itself and the spots whose ``"{x}x{y}"`` ids are among its 8 array
neighbours. The by-hand version below reads the raw TSVs with pandas and looks neighbours up by id string;
a spot without counts over the chosen genes is 0/0 = NaN there, which pandas' mean skips.
"""

import numpy as np
import pandas as pd
import pytest

from genedml.io import legacy_st
from genedml.study.genes import read_gene_list
from genedml.study.targets import TargetSpec, build_sample_targets
from support.workflow import need_shared

SECTIONS = ["B4", "C2", "C3", "C4"]  # the shared sections with a spot file


def labels_by_hand(counts_path, spots_path, genes: list[str]) -> pd.DataFrame:
    counts = pd.read_csv(counts_path, sep="\t", index_col=0)
    spots = pd.read_csv(spots_path, sep="\t")
    spots = spots[spots["selected"] == 1]
    ids = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"])]
    counts = counts.loc[[i for i in counts.index if i in set(ids)], genes].astype(float)
    norm = np.log10(1 + 1e4 * counts.div(counts.sum(axis=1), axis=0))
    present = set(norm.index)
    out = {}
    for spot in norm.index:
        x, y = (int(v) for v in spot.split("x"))
        block = [f"{x + dx}x{y + dy}" for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
        out[spot] = norm.loc[[b for b in block if b in present]].mean(axis=0)
    return pd.DataFrame(out).T


@pytest.mark.parametrize("section", SECTIONS)
def test_reference_labels_match_the_recipe(section, tmp_path):
    root = need_shared("her2st")
    files = legacy_st.LegacyFiles.find(root, section)
    barcodes, all_genes, counts, spots = legacy_st._spots_with_counts(files, section)
    pixel = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    st = tmp_path / f"{section}.h5ad"
    legacy_st._section_anndata(barcodes, all_genes, counts, spots, pixel, "st").write_h5ad(st)
    genes = [g for g in read_gene_list("genedml:her2st_250") if g in set(all_genes)]
    assert len(genes) > 200

    out = tmp_path / f"{section}-targets.h5ad"
    build_sample_targets(st, section, genes, TargetSpec.of(), out)
    import anndata as ad

    ours = ad.read_h5ad(out)
    assert ours.uns["genedml_targets"]["neighbours"] == "array_grid"
    assert ours.uns["genedml_targets"]["grid"] == "square"
    expected = labels_by_hand(files.counts, files.spots, genes).loc[ours.obs_names, genes]
    assert expected.notna().all().all()  # every zero-count spot has a neighbour with counts
    diff = np.abs(np.asarray(ours.X, dtype=np.float64) - expected.to_numpy())
    assert diff.max(axis=0).max() < 1e-5
