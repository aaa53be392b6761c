"""Choose the genes to predict: a fixed list, or the top N by total raw counts over the training samples."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from genedml.errors import InputError
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)


BOM = "\ufeff"
# byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one)
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def text_encoding(path: str | Path) -> str:
    """The encoding to read a user's text file (gene list, TSV) with: ``utf-16`` / ``utf-32`` when it starts
    with their byte-order mark (Excel's "Unicode text"), else ``utf-8-sig`` (UTF-8, a leading BOM dropped)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8-sig")


def read_text(path: str | Path, what: str = "text file") -> str:
    """A user's text file as str, whatever byte-order mark it has (see ``text_encoding``): BOMs are dropped
    wherever they are (files concatenated with a BOM each), so the first symbol is never lost. Bytes that are
    not text in that encoding are an ``InputError`` naming the file."""
    encoding = text_encoding(path)
    try:
        text = Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not {encoding.replace('-sig', '')} text (undecodable byte at position {exc.start}); "
            "save it as UTF-8",
            None,
            path,
        ) from exc
    return text.replace(BOM, "")


def read_gene_list(path: str | Path) -> list[str]:
    """Symbols of a gene list file (one per line, ``#`` comments); ``genedml:her2st_250`` etc. name the
    lists shipped with genedml (see ``genedml.io.datasets.gene_list_path``). UTF-8 with or without a
    byte-order mark, or UTF-16/32 with one."""
    from genedml.io.datasets import gene_list_path

    path = gene_list_path(path)
    if not path.exists():
        raise InputError("gene list file not found", None, path)
    lines = (line.strip() for line in read_text(path, "gene list").splitlines())
    genes = [g for g in lines if g and not g.startswith("#")]
    if not genes:
        raise InputError("gene list is empty", None, path)
    seen = set()
    return [g for g in genes if not (g in seen or seen.add(g))]


def gene_totals(st_paths: dict[str, Path], spots=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per gene: total counts and fraction of spots expressing it, per sample (genes x samples), over the
    spots ``spots`` keeps (``genedml.io.hest.SpotFilterSpec``; None: the schema's default)."""
    from genedml.io.hest import SpotFilterSpec, load_st, tissue_spots

    spots = spots or SpotFilterSpec.from_config({})
    totals, detected = {}, {}
    for sample, path in st_paths.items():
        # the one reader of a section's .h5ad: validated, duplicate symbols renamed as for the targets
        adata = tissue_spots(load_st(path, sample, require_counts=True), spots, sample, path)
        x = adata.X
        totals[sample] = pd.Series(np.asarray(x.sum(0)).ravel(), index=adata.var_names)
        nz = (x > 0).sum(0)
        detected[sample] = pd.Series(np.asarray(nz).ravel(), index=adata.var_names) / max(adata.n_obs, 1)
    return pd.DataFrame(totals), pd.DataFrame(detected)


@dataclass(frozen=True)
class GeneSpec(StageSpec):
    """Which genes to predict (config ``genes``; defaults and allowed values in the config schema)."""

    section: ClassVar[str] = "genes"

    list: str | None  # a gene list file or a built-in list name; None = the top n_top
    n_top: int
    min_spot_fraction: float
    missing: str  # what to do with listed genes a sample lacks


def select_genes(st_paths: dict[str, Path], spec: GeneSpec, spots=None) -> tuple[list[str], pd.DataFrame]:
    """Return the chosen genes and a table (gene, total_counts, spot_fraction, samples_with_gene).

    With ``gene_list`` the list's order is kept; genes missing from any sample are reported by name and
    either dropped from all samples (``missing='drop'``) or raise (``missing='fail'``). Without a list the
    genes present in every sample are ranked by total raw counts, optionally keeping only genes detected
    in at least ``min_spot_fraction`` of spots (the refactored TRIPLEX uses 0.1).
    """
    n_top, gene_list, min_spot_fraction, missing = spec.n_top, spec.list, spec.min_spot_fraction, spec.missing
    totals, detected = gene_totals(st_paths, spots)
    present_all = totals.notna().all(axis=1)
    table = pd.DataFrame(
        {
            "gene": totals.index,
            "total_counts": totals.fillna(0).sum(1).to_numpy(),
            "spot_fraction": detected.fillna(0).mean(1).to_numpy(),
            "samples_with_gene": totals.notna().sum(1).to_numpy(),
        }
    )
    if gene_list is not None:
        wanted = read_gene_list(gene_list)
        available = set(totals.index[present_all])
        absent = [g for g in wanted if g not in available]
        if absent:
            where = {
                g: [s for s in totals.columns if g not in totals.index or pd.isna(totals.at[g, s])] for g in absent
            }
            detail = "; ".join(f"{g} (missing in {', '.join(v) if v else 'all'})" for g, v in list(where.items())[:20])
            msg = f"{len(absent)} of {len(wanted)} listed genes are not in every sample: {detail}"
            if missing == "fail" or len(absent) == len(wanted):
                what = "no listed gene is present in the samples" if len(absent) == len(wanted) else msg
                raise InputError(what, None, gene_list)
            log.warning("%s -- dropped from all samples (genes.missing: drop)", msg)
        genes = [g for g in wanted if g in available]
    else:
        cand = table[present_all.to_numpy() & (table["spot_fraction"] >= min_spot_fraction).to_numpy()]
        cand = cand.sort_values(["total_counts", "gene"], ascending=[False, True], kind="mergesort")
        genes = cand["gene"].head(n_top).tolist()
        if len(genes) < n_top:
            log.warning("only %d genes qualify (asked for %d)", len(genes), n_top)
    table = table.set_index("gene").loc[genes].reset_index()
    table.insert(0, "rank", np.arange(1, len(genes) + 1))
    return genes, table
