"""The per-gene ceiling: Geary's C of each gene on the kNN graph of the embeddings, training folds only.

Hand cases on a path graph; a gene that is a smooth function of the embedding scores near 1 and a permuted
copy near 0; constant genes have no score; on real feature stores and .h5ad targets, a fold's test section is
never read (its values, or its files being gone, leave that fold's result unchanged).
"""

import numpy as np
import pandas as pd
import pytest

from genedml.cli import main
from genedml.evaluation.ceiling import (
    CeilingSpec,
    ceiling_figure,
    ceiling_table,
    gearys_c,
    knn_graph,
    project,
    undirected_edges,
)
from genedml.study.folds import read_folds
from support.feature_stores import write_feature_store

N_SPOTS, DIM = 80, 8
GENES = ["smooth", "noise", "flat", "flat_in_fold0"]
FOLD_ROWS = [  # fold, sample, patient, split: D is fold 0's test section, B fold 1's
    (0, "A", "PA", "train"),
    (0, "B", "PB", "train"),
    (0, "C", "PC", "val"),
    (0, "D", "PD", "test"),
    (1, "A", "PA", "val"),
    (1, "C", "PC", "train"),
    (1, "D", "PD", "train"),
    (1, "B", "PB", "test"),
]


def dense_gearys_c(x, neighbours):
    """The textbook formula with an explicit N x N weight matrix (symmetrised kNN, no self-loops)."""
    n = len(x)
    w = np.zeros((n, n))
    for i, row in enumerate(neighbours):
        for j in row:
            if j != i:
                w[i, j] = w[j, i] = 1.0
    x = np.asarray(x, float)
    num = (w * (x[:, None] - x[None, :]) ** 2).sum()
    return (n - 1) * num / (2 * w.sum() * ((x - x.mean()) ** 2).sum())


def test_gearys_c_on_a_path_graph_by_hand():
    # path 0-1-2-3 given as each spot's one neighbour; edges {01, 12, 23}: E = 3, W = 6
    neighbours = np.array([[1], [0], [1], [2]])
    values = np.array([[0, 0, 5], [1, 1, 5], [2, 0, 5], [3, 1, 5]], dtype=float)
    c = gearys_c(values, neighbours)
    # ramp: sum_ij w (xi-xj)^2 = 2 * 3, SS = 5 -> C = 3 * 6 / (2 * 6 * 5) = 0.3
    # alternating 0,1,0,1: sum = 2 * 3, SS = 1 -> C = 3 * 6 / (2 * 6 * 1) = 1.5; constant: NaN
    np.testing.assert_allclose(c[:2], [0.3, 1.5])
    assert np.isnan(c[2])
    # the same graph listed both ways, with self-pairs, gives the same C (the graph is symmetrised)
    np.testing.assert_allclose(gearys_c(values, np.array([[1, 0], [0, 2], [3, 1], [2, 3]]))[:2], [0.3, 1.5])
    a, b = undirected_edges(neighbours)
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 1), (1, 2), (2, 3)]


def test_gearys_c_matches_the_dense_formula_in_any_block_size():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 5))
    neighbours = knn_graph(z, 4)
    values = rng.normal(size=(60, 7))
    expected = [dense_gearys_c(values[:, g], neighbours) for g in range(7)]
    np.testing.assert_allclose(gearys_c(values, neighbours), expected, rtol=1e-10)
    np.testing.assert_allclose(gearys_c(values, neighbours, block_bytes=1), expected, rtol=1e-10)  # one gene a block


def test_smooth_gene_scores_near_one_and_permuted_gene_near_zero():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(600, 3))  # embeddings of low intrinsic dimension, as an encoder's are
    z = latent @ rng.normal(size=(3, 24)) + 0.05 * rng.normal(size=(600, 24))
    smooth = np.sin(latent[:, 0]) + 0.5 * latent[:, 1] ** 2 + latent[:, 2]
    permuted = rng.permutation(smooth)
    neighbours = knn_graph(project(z, 8), 10)
    assert neighbours.shape == (600, 10) and not (neighbours == np.arange(600)[:, None]).any()
    c = gearys_c(np.stack([smooth, permuted], 1), neighbours)
    assert c[0] < 0.35  # ceiling score > 0.65
    assert abs(c[1] - 1.0) < 0.1


def test_knn_drops_self_even_with_duplicate_spots():
    z = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    nb = knn_graph(z, 2)
    assert not (nb == np.arange(4)[:, None]).any() and nb.shape == (4, 2)
    assert knn_graph(z, 10).shape == (4, 3)  # k capped at N - 1


def test_spec_defaults_are_the_schema_defaults():
    assert CeilingSpec.from_config().to_config() == {"k": 10, "pca": 32, "max_spots": 20000, "seed": 0}


# ------------------------------------------------------------------------------------------- real stores


def write_targets(path, sample, local, rng, flat0: bool):
    import anndata as ad

    smooth = local[:, 0] + 0.5 * local[:, 1]
    y = np.stack(
        [smooth, rng.normal(size=len(local)), np.ones(len(local)), np.full(len(local), 2.0) if flat0 else smooth], 1
    ).astype(np.float32)
    barcodes = np.array([f"{sample}-{i}" for i in range(len(local))])
    order = np.arange(len(local))[::-1]  # targets in another spot order than the store: aligned by barcode
    ad.AnnData(X=y[order], obs=pd.DataFrame(index=pd.Index(barcodes[order])), var=pd.DataFrame(index=GENES)).write_h5ad(
        path
    )
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ceiling")
    rng = np.random.default_rng(2)
    rows = []
    for s in "ABCD":
        local = rng.normal(size=(N_SPOTS, DIM)).astype(np.float32)
        feats = write_feature_store(root / f"{s}.zarr", s, local)
        # flat_in_fold0: constant in A, B, C (fold 0's non-test sections), varying in D (its test section)
        tgt = write_targets(root / f"{s}.h5ad", s, local.astype(np.float16).astype(np.float32), rng, s != "D")
        rows.append({"sample": s, "features": str(feats), "targets": str(tgt)})
    pd.DataFrame(rows).to_csv(root / "training_inputs.tsv", sep="\t", index=False)
    pd.DataFrame(FOLD_ROWS, columns=["fold", "sample", "patient", "split"]).to_csv(
        root / "folds.tsv", sep="\t", index=False
    )
    pd.DataFrame({"rank": range(1, 5), "gene": GENES}).to_csv(root / "genes.tsv", sep="\t", index=False)
    return root


SPEC = CeilingSpec.of(k=6, pca=4, max_spots=20000, seed=0)


def test_table_columns_scores_and_notes(study):
    table = ceiling_table(read_folds(study / "folds.tsv"), study / "training_inputs.tsv", GENES, SPEC)
    assert list(table.columns) == [
        "gene",
        "ceiling_score",
        "gearys_c",
        "n_folds",
        "gearys_c_fold0",
        "gearys_c_fold1",
        "n_spots_fold0",
        "n_spots_fold1",
        "note",
    ]
    t = table.set_index("gene")
    assert (t["n_spots_fold0"] == 3 * N_SPOTS).all() and (t["n_spots_fold1"] == 3 * N_SPOTS).all()
    assert t.loc["smooth", "ceiling_score"] > 0.5 and abs(t.loc["noise", "ceiling_score"]) < 0.2
    np.testing.assert_allclose(t["ceiling_score"], 1 - t["gearys_c"])
    np.testing.assert_allclose(
        t.loc["smooth", "gearys_c"], t.loc["smooth", ["gearys_c_fold0", "gearys_c_fold1"]].mean()
    )
    assert (
        np.isnan(t.loc["flat", "gearys_c"]) and t.loc["flat", "n_folds"] == 0 and "every fold" in t.loc["flat", "note"]
    )
    # constant in fold 0's non-test spots only: its score is fold 1's, and the note says fold 0 was left out
    assert np.isnan(t.loc["flat_in_fold0", "gearys_c_fold0"]) and t.loc["flat_in_fold0", "n_folds"] == 1
    assert t.loc["flat_in_fold0", "gearys_c"] == t.loc["flat_in_fold0", "gearys_c_fold1"]
    assert "fold(s) 0" in t.loc["flat_in_fold0", "note"] and t.loc["smooth", "note"] == ""


def test_a_test_section_is_never_read(study, tmp_path):
    import anndata as ad

    folds = read_folds(study / "folds.tsv")
    index = pd.read_csv(study / "training_inputs.tsv", sep="\t")
    base = ceiling_table(folds, study / "training_inputs.tsv", GENES, SPEC)
    # D's targets shuffled: fold 0 (D is its test section) is unchanged, fold 1 (D trains) is not
    shuffled = ad.read_h5ad(study / "D.h5ad")
    shuffled.X = np.random.default_rng(3).permutation(np.asarray(shuffled.X))
    shuffled.write_h5ad(tmp_path / "D.h5ad")
    index.loc[index["sample"] == "D", "targets"] = str(tmp_path / "D.h5ad")
    index.to_csv(tmp_path / "shuffled.tsv", sep="\t", index=False)
    other = ceiling_table(folds, tmp_path / "shuffled.tsv", GENES, SPEC)
    pd.testing.assert_series_equal(base["gearys_c_fold0"], other["gearys_c_fold0"])
    assert not np.allclose(base["gearys_c_fold1"].iloc[:2], other["gearys_c_fold1"].iloc[:2])
    # D's files gone: fold 0 alone still scores, from A, B, C
    index.loc[index["sample"] == "D", ["features", "targets"]] = [
        str(tmp_path / "gone.zarr"),
        str(tmp_path / "gone.h5ad"),
    ]
    fold0 = ceiling_table(
        folds[folds["fold"] == 0],
        {k: dict(zip(index["sample"], index[k])) for k in ("features", "targets")},
        GENES,
        SPEC,
    )
    pd.testing.assert_series_equal(base["gearys_c_fold0"], fold0["gearys_c_fold0"])


def test_max_spots_subsamples_with_the_seed(study):
    folds = read_folds(study / "folds.tsv")
    small = CeilingSpec.of(k=6, pca=4, max_spots=100, seed=5)
    a = ceiling_table(folds, study / "training_inputs.tsv", GENES, small)
    b = ceiling_table(folds, study / "training_inputs.tsv", GENES, small)
    assert (a["n_spots_fold0"] == 100).all()
    pd.testing.assert_frame_equal(a, b)
    c = ceiling_table(folds, study / "training_inputs.tsv", GENES, CeilingSpec.of(k=6, pca=4, max_spots=100, seed=6))
    assert not np.allclose(a["gearys_c"].iloc[:2], c["gearys_c"].iloc[:2])


def test_cli_table_and_figure(study, tmp_path):
    out = tmp_path / "ceiling" / "per_gene.tsv"
    rc = main(
        [
            "ceiling",
            "--folds",
            str(study / "folds.tsv"),
            "--inputs",
            str(study / "training_inputs.tsv"),
            "--genes",
            str(study / "genes.tsv"),
            "--out",
            str(out),
            "--k",
            "6",
            "--pca",
            "4",
        ]
    )
    assert rc == 0
    table = pd.read_csv(out, sep="\t")
    assert table["gene"].tolist() == GENES
    expected = ceiling_table(read_folds(study / "folds.tsv"), study / "training_inputs.tsv", GENES, SPEC)
    np.testing.assert_allclose(table["gearys_c"], expected["gearys_c"], rtol=1e-5)
    # two heads: one whose PCC follows the ceiling (high for smooth, low for noise), one against it
    good, bad = tmp_path / "good.tsv", tmp_path / "bad.tsv"
    pd.DataFrame({"gene": GENES + ["extra"], "mean_pcc": [0.8, 0.1, np.nan, 0.7, 0.5]}).to_csv(
        good, sep="\t", index=False
    )
    pd.DataFrame({"gene": GENES, "mean_pcc": [0.1, 0.6, 0.3, 0.2]}).to_csv(bad, sep="\t", index=False)
    png = tmp_path / "figures" / "ceiling_test.png"
    rc = main(
        [
            "ceiling-figure",
            "--ceiling",
            str(out),
            "--per-gene",
            f"good={good}",
            f"bad={bad}",
            "--labels",
            "good=Good head",
            "--out",
            str(png),
        ]
    )
    assert rc == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rho = ceiling_figure(out, {"good": good, "bad": bad}, {"good": "Good head"}, tmp_path / "again.png")
    assert rho["good"]["genes"] == 3 and rho["bad"]["genes"] == 3  # NaN ceiling (flat) and genes without a score out
    assert rho["good"]["spearman"] > 0 > rho["bad"]["spearman"]


def test_missing_gene_or_section_is_an_input_error_naming_it(study):
    from genedml.errors import InputError

    folds = read_folds(study / "folds.tsv")
    with pytest.raises(InputError, match=r"sample 'A'.*A\.h5ad.*lack 1 of the 5 genes"):
        ceiling_table(folds, study / "training_inputs.tsv", GENES + ["ABSENT"], SPEC)
    index = pd.read_csv(study / "training_inputs.tsv", sep="\t")
    paths = {k: dict(zip(index["sample"], index[k])) for k in ("features", "targets")}
    del paths["targets"]["C"]
    with pytest.raises(InputError, match="sample 'C'.*fold 0: no targets"):
        ceiling_table(folds, paths, GENES, SPEC)
