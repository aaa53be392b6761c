"""genes.rank: the top genes by normalised dispersion (HEST-Benchmark's highly variable genes) instead of
total counts, and genes.min_spot_fraction_in: the detection filter in every sample."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from genedml.study.genes import GeneSpec, normalised_dispersion, select_genes


def write_st(path, counts, genes):
    counts = np.asarray(counts)
    n = counts.shape[0]
    a = ad.AnnData(
        X=np.asarray(counts, dtype=np.int32),
        var=pd.DataFrame(index=list(genes)),
        obs=pd.DataFrame(index=[f"b{i}" for i in range(n)]),
    )
    a.obsm["spatial"] = np.arange(2 * n, dtype=float).reshape(n, 2)
    a.write_h5ad(path)
    return path


# four genes of the same mean (2 counts a spot) over 2 + 2 spots, so one bin of mean expression:
# A is flat (variance 0: undefined dispersion), B < C < D in variance; every total is 8
GENES = ["A", "B", "C", "D"]
S1 = [[2, 1, 0, 0], [2, 3, 4, 0]]
S2 = [[2, 1, 0, 0], [2, 3, 4, 8]]


@pytest.fixture
def two_samples(tmp_path):
    return {"s1": write_st(tmp_path / "s1.h5ad", S1, GENES), "s2": write_st(tmp_path / "s2.h5ad", S2, GENES)}


def test_top_genes_by_normalised_dispersion(two_samples):
    chosen, table = select_genes(two_samples, GeneSpec.of(n_top=2, rank="dispersion"))
    assert chosen == ["D", "C"]
    # by hand: variances (n - 1) 4/3, 16/3, 16 over mean 2 -> log dispersions, z-scored within the one bin
    disp = np.log(np.array([4 / 3, 16 / 3, 16]) / 2)
    z = (disp - disp.mean()) / disp.std(ddof=1)
    np.testing.assert_allclose(table["normalised_dispersion"], [z[2], z[1]], rtol=1e-12)
    assert table["total_counts"].tolist() == [8, 8]
    # all four: the flat gene (no dispersion) is ranked last
    chosen, table = select_genes(two_samples, GeneSpec.of(n_top=4, rank="dispersion"))
    assert chosen == ["D", "C", "B", "A"] and np.isnan(table["normalised_dispersion"].iloc[-1])


def test_default_rank_is_total_counts_unchanged(two_samples):
    chosen, table = select_genes(two_samples, GeneSpec.of(n_top=2))
    assert chosen == ["A", "B"]  # equal totals: by name, as before
    assert "normalised_dispersion" not in table.columns
    assert GeneSpec.of().rank == "total_counts" and GeneSpec.of().min_spot_fraction_in == "mean"


def test_min_spot_fraction_in_every_sample(tmp_path):
    genes = ["A", "E"]
    p1 = write_st(tmp_path / "s1.h5ad", [[5, 1], [5, 1]], genes)  # E in 2 of 2 spots here
    p2 = write_st(tmp_path / "s2.h5ad", [[5, 0], [5, 0]], genes)  # and in none here: mean fraction 0.5
    st = {"s1": p1, "s2": p2}
    assert select_genes(st, GeneSpec.of(n_top=2, min_spot_fraction=0.5))[0] == ["A", "E"]
    every = GeneSpec.of(n_top=2, min_spot_fraction=0.5, min_spot_fraction_in="every_sample")
    assert select_genes(st, every)[0] == ["A"]


def test_rank_flags_reach_the_genes_stage():
    flags = GeneSpec.flags({"rank": "dispersion", "min_spot_fraction_in": "every_sample"})
    assert "--rank dispersion" in flags and "--min-spot-fraction-in every_sample" in flags
    with pytest.raises(ValueError, match="rank"):
        GeneSpec.of(rank="variance")


def test_normalised_dispersion_matches_scanpy_seurat_flavour():
    """What HEST-Benchmark computes: scanpy's seurat-flavour highly variable genes on log1p counts."""
    sc = pytest.importorskip("scanpy")
    rng = np.random.default_rng(0)
    means = rng.gamma(0.6, 4.0, size=300)
    counts = rng.negative_binomial(2, 2 / (2 + means), size=(400, 300)).astype(np.float32)
    counts[:, :3] = 0  # genes never detected: undefined dispersion
    counts[:, 3] = 7  # a flat gene
    adata = ad.AnnData(counts.copy())
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=50)
    ours = normalised_dispersion(counts.sum(0, dtype=np.float64), np.square(counts, dtype=np.float64).sum(0), 400)
    theirs = adata.var["dispersions_norm"].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(ours)
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-4, atol=1e-4)
    top = set(np.argsort(-np.nan_to_num(ours, nan=-np.inf), kind="stable")[:50])
    assert top == set(np.flatnonzero(adata.var["highly_variable"].to_numpy()))
