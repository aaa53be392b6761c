"""User text files of gene symbols and TSVs read BOM-safely; the `genes` and `targets` stages read a section's
.h5ad through the one reader (duplicate symbols renamed the same way, broken files named)."""

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from genedml.cli import main
from genedml.errors import InputError
from genedml.study.folds import FoldSpec, resolve_fold_table
from genedml.study.gene_semantics import read_descriptions, read_embedding_file
from genedml.study.genes import GeneSpec, read_gene_list, select_genes

GENES = ["ERBB2", "GATA3", "KRT19"]


def write_st(path, counts, genes):
    """A small real section .h5ad: integer counts, grid barcodes ("{x}x{y}") and pixel centres."""
    counts = np.asarray(counts, dtype=np.int32)
    n = counts.shape[0]
    xy = [(i % 3 + 1, i // 3 + 1) for i in range(n)]
    with warnings.catch_warnings():  # anndata warns about duplicate symbols, which some tests write on purpose
        warnings.filterwarnings("ignore", message="Variable names are not unique")
        a = ad.AnnData(
            X=counts, var=pd.DataFrame(index=list(genes)), obs=pd.DataFrame(index=[f"{x}x{y}" for x, y in xy])
        )
        a.obsm["spatial"] = np.asarray([[100.0 * x, 100.0 * y] for x, y in xy])
        a.write_h5ad(path)
    return path


# ------------------------------------------------------------------------------------- byte-order marks


def test_gene_list_with_utf8_bom_keeps_the_first_gene(tmp_path):
    path = tmp_path / "genes.txt"
    path.write_bytes(("\n".join(GENES) + "\n").encode("utf-8-sig"))
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert read_gene_list(path) == GENES


def test_gene_list_with_utf8_bom_and_comment_first(tmp_path):
    path = tmp_path / "genes.txt"
    path.write_bytes(("# top genes\r\n" + "\r\n".join(GENES) + "\r\n").encode("utf-8-sig"))
    assert read_gene_list(path) == GENES


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_gene_list_in_utf16_or_utf32_with_bom(tmp_path, encoding):
    path = tmp_path / "genes.txt"
    data = ("\n".join(GENES) + "\n").encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path.write_bytes(data)
    assert read_gene_list(path) == GENES


def test_gene_list_concatenated_with_a_bom_inside(tmp_path):
    path = tmp_path / "genes.txt"
    path.write_bytes("ERBB2\n".encode("utf-8-sig") + "GATA3\nKRT19\n".encode("utf-8-sig"))
    assert read_gene_list(path) == GENES


def test_gene_list_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "genes.txt"
    path.write_bytes(b"ERBB2\n\xff\xff\xfa\n")
    with pytest.raises(InputError, match="gene list is not utf-8 text") as err:
        read_gene_list(path)
    assert str(path) in str(err.value)


def test_select_genes_keeps_the_top_ranked_listed_gene_of_a_bom_list(tmp_path, caplog):
    st = {s: write_st(tmp_path / f"{s}.h5ad", [[5, 3, 1]] * 4, GENES) for s in ("s1", "s2")}
    lst = tmp_path / "genes.txt"
    lst.write_bytes("ERBB2\nKRT19\n".encode("utf-8-sig"))
    with caplog.at_level(logging.WARNING):
        chosen, table = select_genes(st, GeneSpec.of(list=str(lst), missing="drop"))
    assert chosen == ["ERBB2", "KRT19"]
    assert table["gene"].tolist() == chosen
    assert "missing" not in caplog.text and "\ufeff" not in caplog.text


def test_description_table_and_embedding_file_with_bom(tmp_path):
    desc = tmp_path / "descriptions.tsv"
    desc.write_bytes("gene\tdescription\nERBB2\treceptor tyrosine kinase\n".encode("utf-8-sig"))
    assert read_descriptions(desc) == {"ERBB2": "receptor tyrosine kinase"}
    desc16 = tmp_path / "descriptions16.tsv"
    desc16.write_bytes("gene\tdescription\nGATA3\ttranscription factor\n".encode("utf-16"))
    assert read_descriptions(desc16) == {"GATA3": "transcription factor"}
    emb = tmp_path / "emb.tsv"
    emb.write_bytes("ERBB2\t0.5\t1.0\nGATA3\t2.0\t3.0\n".encode("utf-8-sig"))
    genes, matrix = read_embedding_file(emb)
    assert genes == ["ERBB2", "GATA3"]
    np.testing.assert_allclose(matrix, [[0.5, 1.0], [2.0, 3.0]])
    order = tmp_path / "order.txt"
    order.write_bytes("ERBB2\nGATA3\n".encode("utf-8-sig"))
    np.save(tmp_path / "emb.npy", np.eye(2, dtype=np.float32))
    genes, _ = read_embedding_file(tmp_path / "emb.npy", order)
    assert genes == ["ERBB2", "GATA3"]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_fold_table_with_bom(tmp_path, encoding):
    table = tmp_path / "folds.tsv"
    table.write_bytes("# my folds\nfold\ttest_patients\n0\tPA\n1\tPB\n".encode(encoding))
    sheet = pd.DataFrame({"sample": ["S1", "S2"], "patient": ["PA", "PB"]})
    spec = FoldSpec.of(scheme="table", table=str(table))
    _, folds = resolve_fold_table(spec, sheet)
    assert folds["fold"].tolist() == [0, 1]
    assert folds["test_patients"].tolist() == ["PA", "PB"]


# ------------------------------------------------- one .h5ad reader for the genes and targets stages


def test_duplicate_symbols_through_genes_and_targets_cli(tmp_path, caplog):
    symbols = ["ERBB2", "GATA3", "ERBB2", "KRT19", "GATA3", "ERBB2"]  # ERBB2 three times, GATA3 twice
    counts = np.array([[9, 1, 7, 2, 3, 5]] * 9) + np.arange(9)[:, None]
    s1 = write_st(tmp_path / "s1.h5ad", counts, symbols)
    s2 = write_st(tmp_path / "s2.h5ad", counts[:, ::1] + 1, symbols)
    out = tmp_path / "genes.tsv"
    with caplog.at_level(logging.WARNING):
        rc = main(["genes", "--st", str(s1), str(s2), "--samples", "s1", "s2", "--out", str(out), "--n-top", "6"])
    assert rc == 0
    warning = [r.getMessage() for r in caplog.records if "more than once" in r.getMessage()]
    assert len(warning) == 2  # once per sample
    assert "sample 's1'" in warning[0] and str(s1) in warning[0]
    assert "2 gene symbol(s)" in warning[0] and "ERBB2 (3x)" in warning[0] and "GATA3 (2x)" in warning[0]
    chosen = pd.read_csv(out, sep="\t")["gene"].tolist()
    assert sorted(chosen) == sorted(["ERBB2", "GATA3", "ERBB2-1", "KRT19", "GATA3-1", "ERBB2-2"])
    assert chosen[0] == "ERBB2"  # the largest column keeps the plain symbol (first occurrence)

    tgt = tmp_path / "s1_targets.h5ad"
    rc = main(["targets", "--sample", "s1", "--st", str(s1), "--genes", str(out), "--out", str(tgt)])
    assert rc == 0
    targets = ad.read_h5ad(tgt)
    assert targets.var_names.tolist() == chosen
    renamed = ["ERBB2", "GATA3", "ERBB2-1", "KRT19", "GATA3-1", "ERBB2-2"]
    # each renamed column holds the counts of the column it names, in the order genes.tsv lists them
    expected = counts[:, [renamed.index(g) for g in chosen]]
    np.testing.assert_array_equal(targets.layers["counts"], expected)


@pytest.mark.parametrize("content", [b"", b"\x00" * 64])
def test_broken_h5ad_names_sample_and_file_in_select_genes(tmp_path, content):
    good = write_st(tmp_path / "s1.h5ad", [[1, 2, 3]] * 4, GENES)
    bad = tmp_path / "s2.h5ad"
    bad.write_bytes(content)
    with pytest.raises(InputError) as err:
        select_genes({"s1": good, "s2": bad}, GeneSpec.of(n_top=2))
    assert err.value.sample == "s2" and err.value.path == str(bad)
    assert ("empty (0 bytes)" if not content else "not an HDF5 file") in str(err.value)


def test_zero_byte_h5ad_is_a_clean_error_in_genes_and_targets_cli(tmp_path, capsys):
    good = write_st(tmp_path / "s1.h5ad", [[1, 2, 3]] * 4, GENES)
    bad = tmp_path / "s2.h5ad"
    bad.write_bytes(b"")
    out = tmp_path / "genes.tsv"
    assert main(["genes", "--st", str(good), str(bad), "--samples", "s1", "s2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "genedml genes: error: sample 's2'" in err and str(bad) in err and "empty (0 bytes)" in err
    assert "Traceback" not in err and not out.exists()

    genes = tmp_path / "chosen.tsv"
    pd.DataFrame({"gene": GENES}).to_csv(genes, sep="\t", index=False)
    tgt = tmp_path / "s2_targets.h5ad"
    assert main(["targets", "--sample", "s2", "--st", str(bad), "--genes", str(genes), "--out", str(tgt)]) == 2
    err = capsys.readouterr().err
    assert "genedml targets: error: sample 's2'" in err and str(bad) in err and "empty (0 bytes)" in err
    assert "Traceback" not in err and not tgt.exists()
