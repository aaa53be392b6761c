"""Gene choice, target recipes and cross-validation folds."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from genedml.errors import InputError
from genedml.io.sample_sheet import read_sample_sheet
from genedml.study.folds import FoldSpec, make_folds
from genedml.study.genes import GeneSpec, select_genes
from genedml.study.targets import array_grid_kind, array_grid_neighbours, grid_neighbours, make_targets


def write_st(path, counts, genes, spatial=None):
    counts = np.asarray(counts)
    n = counts.shape[0]
    a = ad.AnnData(
        X=np.asarray(counts, dtype=np.int32),
        var=pd.DataFrame(index=genes),
        obs=pd.DataFrame(index=[f"b{i}" for i in range(n)]),
    )
    a.obsm["spatial"] = np.asarray(spatial if spatial is not None else np.arange(2 * n).reshape(n, 2), float)
    a.write_h5ad(path)
    return path


def test_reference_recipe_by_hand():
    counts = np.array([[10, 30], [0, 40], [5, 5]])
    spatial = np.array([[0.0, 0.0], [100.0, 0.0], [1000.0, 0.0]])
    coords = np.array([[0, 0], [0, 1], [0, 7]])  # (row, col): spots 0 and 1 are array neighbours
    y = make_targets(counts, spatial, "reference", "array_grid", array_coords=coords, smooth=False)
    np.testing.assert_allclose(y[0], np.log10(1 + 1e4 * np.array([0.25, 0.75])), rtol=1e-6)
    np.testing.assert_allclose(y[1], [0.0, np.log10(1 + 1e4)], rtol=1e-6)
    smoothed = make_targets(counts, spatial, "reference", "array_grid", array_coords=coords)
    np.testing.assert_allclose(smoothed[0], (y[0] + y[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(smoothed[2], y[2], rtol=1e-6)
    # the pixel rule sees the same pairs here (pitch 100)
    np.testing.assert_allclose(make_targets(counts, spatial, "reference", "pixel_radius"), smoothed, rtol=1e-6)
    np.testing.assert_allclose(make_targets(counts, spatial, "log1p", "array_grid"), np.log1p(counts), rtol=1e-6)


def test_pixel_smoothing_neighbourhoods():
    # square legacy-ST grid: the 3x3 neighbourhood (8 neighbours + self in the interior)
    xs, ys = np.meshgrid(np.arange(5) * 200.0, np.arange(5) * 200.0)
    square = np.stack([xs.ravel(), ys.ravel()], 1)
    adj = grid_neighbours(square).toarray()
    assert adj[12].sum() == 9 and adj[0].sum() == 4
    # Visium hexagons: the 6-spot ring
    rows = [(r, c) for r in range(5) for c in range(5)]
    hexes = np.array([[c * 100.0 + (50.0 if r % 2 else 0.0), r * 100.0 * np.sqrt(3) / 2] for r, c in rows])
    assert grid_neighbours(hexes).toarray()[12].sum() == 7


def test_array_grid_neighbourhoods():
    # legacy ST: Chebyshev distance <= 1 on (row, col); missing spots are simply absent
    square = np.array([(r, c) for r in range(5) for c in range(5) if (r, c) != (1, 1)])
    assert array_grid_kind(square) == "square"
    adj = array_grid_neighbours(square).toarray()
    centre = int(np.flatnonzero((square == [2, 2]).all(1))[0])
    corner = int(np.flatnonzero((square == [0, 0]).all(1))[0])
    assert adj[centre].sum() == 8  # 3x3 block minus the missing (1, 1)
    assert adj[corner].sum() == 3  # self, (0, 1), (1, 0); (1, 1) is missing
    assert (adj == adj.T).all()
    # Visium: columns step by 2 within a row, odd rows shifted: the 6-spot ring
    hexes = np.array([(r, 2 * c + r % 2) for r in range(5) for c in range(5)])
    assert array_grid_kind(hexes) == "hex"
    adj = array_grid_neighbours(hexes).toarray()
    centre = int(np.flatnonzero((hexes == [2, 4]).all(1))[0])
    ring = {tuple(hexes[j]) for j in np.flatnonzero(adj[centre])} - {(2, 4)}
    assert ring == {(2, 2), (2, 6), (1, 3), (1, 5), (3, 3), (3, 5)}


def test_array_grid_needs_coordinates():
    with pytest.raises(InputError, match="no array coordinates.*pixel_radius"):
        array_grid_neighbours(np.array([[0, 0], [-1, -1]]), "S1")
    with pytest.raises(InputError, match="share an array position"):
        array_grid_neighbours(np.array([[0, 0], [0, 0], [0, 1]]), "S1")


def test_top_genes_by_total_counts(tmp_path):
    genes = ["A", "B", "C", "D"]
    p1 = write_st(tmp_path / "s1.h5ad", [[1, 9, 0, 3], [1, 9, 0, 3]], genes)
    p2 = write_st(tmp_path / "s2.h5ad", [[0, 1, 5, 3], [0, 1, 0, 3]], genes)
    chosen, table = select_genes({"s1": p1, "s2": p2}, GeneSpec.of(n_top=2))
    assert chosen == ["B", "D"]  # totals B=20, D=12, C=5, A=2
    assert table["total_counts"].tolist() == [20, 12]
    chosen, _ = select_genes({"s1": p1, "s2": p2}, GeneSpec.of(n_top=3, min_spot_fraction=0.5))
    assert chosen == ["B", "D", "A"]  # C is detected in 1 of 4 spots


def test_gene_list_missing_genes_are_named(tmp_path, caplog):
    p1 = write_st(tmp_path / "s1.h5ad", [[1, 2]], ["A", "B"])
    p2 = write_st(tmp_path / "s2.h5ad", [[1, 2]], ["A", "C"])
    lst = tmp_path / "genes.txt"
    lst.write_text("B\nA\nZZZ\n")
    chosen, _ = select_genes({"s1": p1, "s2": p2}, GeneSpec.of(list=str(lst), missing="drop"))
    assert chosen == ["A"]
    assert "ZZZ" in caplog.text and "B (missing in s2)" in caplog.text
    with pytest.raises(InputError, match="ZZZ"):
        select_genes({"s1": p1, "s2": p2}, GeneSpec.of(list=str(lst), missing="fail"))
    lst.write_text("X\nY\n")
    with pytest.raises(InputError, match="no listed gene"):
        select_genes({"s1": p1, "s2": p2}, GeneSpec.of(list=str(lst)))


def sheet(patients):
    rows = [(f"{p}{i}", p, "d") for p in patients for i in (1, 2)]
    return pd.DataFrame(rows, columns=["sample", "patient", "dataset"])


def test_leave_one_patient_out_with_inner_validation():
    folds = make_folds(sheet(["A", "B", "C", "D"]), FoldSpec.of(scheme="leave_one_patient_out", val_patients=1))
    assert folds["fold"].nunique() == 4
    for _, grp in folds.groupby("fold"):
        test_p = set(grp.loc[grp.split == "test", "patient"])
        val_p = set(grp.loc[grp.split == "val", "patient"])
        train_p = set(grp.loc[grp.split == "train", "patient"])
        assert len(test_p) == 1 and len(val_p) == 1 and len(train_p) == 2
        assert not (test_p & val_p) and not (test_p & train_p) and not (val_p & train_p)
    # every section is tested exactly once
    assert sorted(folds.loc[folds.split == "test", "sample"]) == sorted(sheet(["A", "B", "C", "D"])["sample"])


def test_two_patients_fall_back_to_section_validation():
    folds = make_folds(sheet(["A", "B"]), FoldSpec.of(scheme="leave_one_patient_out"))
    for _, grp in folds.groupby("fold"):
        assert (grp.split == "val").sum() == 1 and (grp.split == "train").sum() == 1


def test_group_kfold_and_fold_table():
    patients = [f"P{i:02d}" for i in range(10)]
    folds = make_folds(sheet(patients), FoldSpec.of(scheme="group_kfold", n_folds=3, seed=2021, val_patients=0))
    tests = [set(g.loc[g.split == "test", "patient"]) for _, g in folds.groupby("fold")]
    assert sorted(len(t) for t in tests) == [3, 3, 4] and set.union(*tests) == set(patients)
    assert folds.equals(
        make_folds(sheet(patients), FoldSpec.of(scheme="group_kfold", n_folds=3, seed=2021, val_patients=0))
    )
    table = pd.DataFrame({"fold": [0, 1], "test_patients": ["P00,P03", "P01"]})
    folds = make_folds(sheet(patients), FoldSpec.of(scheme="table", val_patients=1), table)
    assert set(folds.loc[(folds.fold == 0) & (folds.split == "test"), "patient"]) == {"P00", "P03"}
    with pytest.raises(InputError, match="not in the sample sheet: X"):
        make_folds(sheet(patients), FoldSpec.of(scheme="table"), pd.DataFrame({"fold": [0], "test_patients": ["X"]}))


def test_sample_sheet_errors(tmp_path):
    bad = tmp_path / "s.tsv"
    bad.write_text("sample\tpatient\nA\tP\n")
    with pytest.raises(InputError, match="dataset"):
        read_sample_sheet(bad)
    bad.write_text("sample\tpatient\tdataset\nA\tP\td\nA\tQ\td\n")
    with pytest.raises(InputError, match="twice: A"):
        read_sample_sheet(bad)
