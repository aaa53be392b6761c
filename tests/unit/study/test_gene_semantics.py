"""Offline gene text embeddings: the bundled sentence model, description tables, alignment to gene order."""

import json

import numpy as np
import pytest

from genedml.errors import InputError
from genedml.study.gene_semantics import GeneSemanticsSpec, read_descriptions, read_gene_semantics, write_gene_semantics

GENES = ["ERBB2", "GRB7", "KRT18", "KRT19"]


@pytest.fixture(scope="module")
def semantics(tmp_path_factory):
    out = tmp_path_factory.mktemp("sem") / "semantics.npz"
    meta = write_gene_semantics(out, GENES, GeneSemanticsSpec.of())
    return out, meta


def test_bundled_model_embeds_symbols_offline(semantics, monkeypatch):
    out, meta = semantics
    emb, back = read_gene_semantics(out, GENES)
    assert emb.shape == (4, meta["dim"]) and meta["dim"] == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert len(back["weights_sha256"]) == 64 and back["n_described"] == 0
    sim = emb @ emb.T
    # symbols of one gene family are closer to each other than to an unrelated symbol
    assert sim[2, 3] > sim[0, 3] and sim[2, 3] > sim[0, 2]


def test_embeddings_follow_the_requested_gene_order(semantics):
    out, _ = semantics
    emb, _ = read_gene_semantics(out, GENES)
    rev, _ = read_gene_semantics(out, GENES[::-1])
    np.testing.assert_array_equal(rev, emb[::-1])
    with pytest.raises(InputError, match="no semantic embedding.*MYC"):
        read_gene_semantics(out, ["ERBB2", "MYC"])


def test_description_table_is_used_and_checked(tmp_path):
    table = tmp_path / "desc.tsv"
    table.write_text(
        "gene\tdescription\nERBB2\treceptor tyrosine kinase amplified in breast cancer\n"
        "KRT19\tkeratin of epithelial cells\n"
    )
    assert read_descriptions(table) == {
        "ERBB2": "receptor tyrosine kinase amplified in breast cancer",
        "KRT19": "keratin of epithelial cells",
    }
    out = tmp_path / "s.npz"
    meta = write_gene_semantics(out, ["ERBB2", "GRB7", "KRT19"], GeneSemanticsSpec.of(descriptions=str(table)))
    assert meta["n_described"] == 2
    with np.load(out) as data:
        assert list(data["text_source"]) == ["description", "symbol", "description"]
        assert str(data["texts"][0]).startswith("ERBB2: receptor")
        assert json.loads(str(data["meta"]))["descriptions"] == str(table)
    with pytest.raises(InputError, match="no description"):
        write_gene_semantics(
            tmp_path / "f.npz",
            ["ERBB2", "GRB7"],
            GeneSemanticsSpec.of(descriptions=str(table), missing_description="fail"),
        )
    assert not (tmp_path / "f.npz").exists()
    bad = tmp_path / "bad.tsv"
    bad.write_text("symbol\ttext\nERBB2\tx\n")
    with pytest.raises(InputError, match="bad.tsv: gene description table lacks column"):
        read_descriptions(bad)
    dup = tmp_path / "dup.tsv"
    dup.write_text("gene\tdescription\nERBB2\tx\nERBB2\ty\n")
    with pytest.raises(InputError, match="twice"):
        read_descriptions(dup)


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_embedding_file_formats_are_read_by_symbol(tmp_path):
    import torch

    from genedml.study.gene_semantics import read_embedding_file

    vec = np.arange(12, dtype=np.float32).reshape(4, 3)
    tsv = tmp_path / "emb.tsv"
    tsv.write_text("gene\td0\td1\td2\n" + "".join(f"{g}\t" + "\t".join(map(str, v)) + "\n" for g, v in zip(GENES, vec)))
    csv = tmp_path / "emb.csv"  # no header
    csv.write_text("".join(f"{g}," + ",".join(map(str, v)) + "\n" for g, v in zip(GENES, vec)))
    npz = tmp_path / "emb.npz"
    np.savez(npz, genes=np.array(GENES), embeddings=vec)
    pt = tmp_path / "her2st_biobert.pt"  # DKAN's layout: a bare tensor, rows in the order of a gene list
    torch.save(torch.from_numpy(vec), pt)
    order = tmp_path / "genes_her2st.npy"
    np.save(order, np.array(GENES))
    for path, genes in [(tsv, None), (csv, None), (npz, None), (pt, order)]:
        names, emb = read_embedding_file(path, genes)
        assert names == GENES
        np.testing.assert_array_equal(emb, vec)
    with pytest.raises(InputError, match="embedding_genes"):
        read_embedding_file(pt)


def test_embedding_file_semantics_record_sha256_and_name_missing_genes(tmp_path):
    vec = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    src = tmp_path / "biobert.npz"
    np.savez(src, genes=np.array(["KRT19", "ERBB2", "GRB7"]), embeddings=vec)
    out = tmp_path / "semantics.npz"
    meta = write_gene_semantics(out, ["ERBB2", "GRB7"], GeneSemanticsSpec.of(embeddings=str(src)))
    assert meta["embeddings_sha256"] == _sha(src) and meta["dim"] == 5 and meta["model"] == "file"
    emb, back = read_gene_semantics(out, ["GRB7", "ERBB2"])
    np.testing.assert_array_equal(emb, vec[[2, 1]])  # taken as they are, in the requested order
    assert back["embeddings_sha256"] == _sha(src) and back["embeddings"] == str(src)
    with np.load(out) as data:
        assert set(data["text_source"]) == {"embedding_file"}
    with pytest.raises(InputError, match=r"biobert.npz: 2 of 3 predicted genes have no embedding.*MYC, TP53"):
        write_gene_semantics(tmp_path / "f.npz", ["ERBB2", "MYC", "TP53"], GeneSemanticsSpec.of(embeddings=str(src)))
    assert not (tmp_path / "f.npz").exists()
    with pytest.raises(InputError, match="not found"):
        write_gene_semantics(tmp_path / "g.npz", ["ERBB2"], GeneSemanticsSpec.of(embeddings=str(tmp_path / "no.npz")))
