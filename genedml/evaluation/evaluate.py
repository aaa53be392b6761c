"""Score a head's held-out predictions over all folds and export per-section predictions for scanpy.

Writes, under ``out_dir``: ``per_section.tsv`` (every metric of every held-out section), ``per_fold.tsv``,
``summary.tsv`` (mean ± std over folds), ``per_gene.tsv`` (per-fold PCC, mean PCC, mean rank, PCC(H)
membership), ``per_gene_section.tsv`` (PCC of every gene in every section) and ``gene_sets.json``
(``heg_hvg``: which HEG / HVG definition was used; the PCC(H) genes; the HEG and HVG genes: one list when
``pooled``, DKAN's sets over every evaluated spot, else per section). Exports, one ``{sample}.h5ad`` per section:
X = prediction, ``layers['prediction']``, ``layers['truth']``, ``obsm['spatial']`` (level-0 px) and, given
the slide thumbnails, ``uns['spatial'][sample]`` with a 'hires' image and scale factors, so that
``sc.pl.spatial(adata, color=gene, layer='truth', library_id=sample)`` draws the spots on the H&E.

Every prediction (``X`` and ``layers['prediction']``) and every truth value must be finite: a NaN would drop
a section out of its fold's mean without a trace. Any other value is a ``NonFiniteError`` naming the head,
the fold, the section and the file, raised after every file is read and before anything is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from genedml.atomic import atomic_path, write_json, write_tsv
from genedml.errors import InputError, NonFiniteError
from genedml.evaluation.metrics import SECTION_METRICS, evaluate_sections, nonfinite_counts
from genedml.pipeline.spec import StageSpec

log = logging.getLogger(__name__)

SUMMARY_METRICS = SECTION_METRICS


@dataclass(frozen=True)
class EvaluateSpec(StageSpec):
    """How many genes PCC(H), HEG and HVG average over (config ``report.pcc_h_genes``), and how the HEG /
    HVG genes are chosen (``report.heg_hvg``: ``pooled``, DKAN's, or ``per_section``, BLEEP's)."""

    section: ClassVar[str] = "report"
    keys: ClassVar[tuple[str, ...]] = ("pcc_h_genes", "heg_hvg")

    pcc_h_genes: int
    heg_hvg: str  # "pooled" or "per_section" (genedml.evaluation.metrics.HEG_HVG)


def evaluate_head(
    head: str,
    prediction_files: list,
    out_dir,
    n_top: int,
    recipe: str,
    heg_hvg: str,
    export_dir=None,
    thumbnails: dict | None = None,
) -> pd.DataFrame:
    """``thumbnails``: sample -> thumbnail JSON (``genedml thumbnail``); samples without one export no image.
    ``heg_hvg``: ``EvaluateSpec.heg_hvg``; ``pooled`` chooses the HEG / HVG genes from the truth of every
    section of ``prediction_files`` together."""
    import anndata as ad

    sections, genes = [], None
    exports, problems = [], []
    seen = {}
    for path in prediction_files:
        pred = ad.read_h5ad(path)
        genes = pred.var_names.tolist() if genes is None else genes
        if pred.var_names.tolist() != genes:
            raise InputError("gene list differs from the other folds' predictions", None, path)
        if "truth" not in pred.layers:
            raise InputError("predictions have no layers['truth']", None, path)
        for sample in pd.unique(pred.obs["sample"]):
            if sample in seen:
                raise InputError(f"section is held out in two folds ({seen[sample]} and {path})", sample, path)
            seen[sample] = path
            part = pred[pred.obs["sample"] == sample]
            fold = int(part.obs["fold"].iloc[0])
            problems += _nonfinite(head, fold, sample, path, part)
            sections.append(
                {
                    "sample": sample,
                    "fold": fold,
                    "truth": np.asarray(part.layers["truth"]),
                    "prediction": np.asarray(part.X),
                    "head": head,
                    "path": str(path),
                }
            )
            exports.append((sample, part))
    if problems:  # nothing written yet: fail with the first section, listing the others
        first, rest = problems[0], problems[1:]
        also = "; also " + "; ".join(f"{p['what']} of {p['sample']!r} (fold {p['fold']})" for p in rest) if rest else ""
        raise NonFiniteError(**first, more=also)
    res = evaluate_sections(sections, genes, n_top=n_top, heg_hvg=heg_hvg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tsv(out_dir / "per_section.tsv", res["per_section"])
    write_tsv(out_dir / "per_fold.tsv", res["per_fold"])
    write_tsv(out_dir / "per_gene.tsv", res["per_gene"])
    write_tsv(out_dir / "per_gene_section.tsv", res["per_gene_section"])
    summary = res["summary"]
    summary.insert(0, "head", head)
    summary["target_recipe"] = recipe
    write_tsv(out_dir / "summary.tsv", summary)
    write_json(
        out_dir / "gene_sets.json",
        {
            "n_top": n_top,
            "heg_hvg": res["heg_hvg"],
            **({"pooled": res["pooled"]} if "pooled" in res else {}),
            "PCC_H": res["pcc_h_genes"],
            "HEG": res["heg_genes"],
            "HVG": res["hvg_genes"],
        },
    )
    if export_dir is not None:
        for sample, part in exports:
            export_section(head, sample, part, Path(export_dir) / f"{sample}.h5ad", (thumbnails or {}).get(sample))
    for _, row in summary.iterrows():
        log.info(
            "%s %s: %.4f ± %.4f over %d of %d folds, %d of %d sections",
            head,
            row["metric"],
            row["mean"],
            row["std"],
            row["n_folds"],
            row["n_folds_total"],
            row["n_sections"],
            row["n_sections_total"],
        )
    return summary


def _nonfinite(head: str, fold: int, sample: str, path, part) -> list[dict]:
    """The matrices of one section that hold NaN or inf, with their counts (``NonFiniteError``'s arguments)."""
    found = []
    matrices = [("prediction (X)", part.X)]
    if "prediction" in part.layers:
        matrices.append(("prediction (layers['prediction'])", part.layers["prediction"]))
    matrices.append(("truth (layers['truth'])", part.layers["truth"]))
    for what, matrix in matrices:
        matrix = matrix.toarray() if hasattr(matrix, "toarray") else matrix
        bad = nonfinite_counts(matrix)
        if bad is not None:
            found.append({"what": what, "sample": str(sample), "path": path, "head": head, "fold": fold, **bad})
    return found


def export_section(head: str, sample: str, part, out, thumbnail_json=None) -> None:
    """One held-out section as a scanpy-ready .h5ad (obs names = the section's own barcodes)."""
    from genedml.evaluation.thumbnails import scanpy_spatial_uns

    export = part.copy()
    export.obs_names = export.obs["barcode"].astype(str).to_numpy()
    export.layers["prediction"] = np.asarray(export.X, dtype=np.float32)
    export.uns["genedml"] = {**dict(export.uns.get("genedml", {})), "head": head, "sample": sample}
    if thumbnail_json is not None:
        export.uns["spatial"] = {sample: scanpy_spatial_uns(thumbnail_json)}
    with atomic_path(out) as tmp:
        export.write_h5ad(tmp, compression="gzip")


def combine_summaries(paths: list, out) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t") for p in paths]
    table = pd.concat(frames, ignore_index=True)
    write_tsv(out, table)
    return table
