"""Score a head's held-out predictions over all folds and export per-section predictions for scanpy."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_json, write_tsv
from .metrics import evaluate_sections

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("PCC_A", "PCC_H", "HEG", "HVG", "MSE", "MAE")


def evaluate_head(head: str, prediction_files: list, out_dir, n_top: int = 50, recipe: str = "",
                  export_dir=None) -> pd.DataFrame:
    import anndata as ad

    sections, genes = [], None
    exports = []
    for path in prediction_files:
        pred = ad.read_h5ad(path)
        genes = pred.var_names.tolist() if genes is None else genes
        if pred.var_names.tolist() != genes:
            raise ValueError(f"{path}: gene list differs from the other folds")
        for sample in pd.unique(pred.obs["sample"]):
            part = pred[pred.obs["sample"] == sample]
            fold = int(part.obs["fold"].iloc[0])
            sections.append({"sample": sample, "fold": fold, "truth": np.asarray(part.layers["truth"]),
                             "prediction": np.asarray(part.X)})
            exports.append((sample, part))
    res = evaluate_sections(sections, genes, n_top=n_top)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tsv(out_dir / "per_section.tsv", res["per_section"])
    write_tsv(out_dir / "per_fold.tsv", res["per_fold"])
    write_tsv(out_dir / "per_gene.tsv", res["per_gene"])
    summary = res["summary"]
    summary.insert(0, "head", head)
    summary["target_recipe"] = recipe
    write_tsv(out_dir / "summary.tsv", summary)
    write_json(out_dir / "gene_sets.json", {"PCC_H": res["pcc_h_genes"], "HEG": res["heg_genes"], "HVG": res["hvg_genes"]})
    if export_dir is not None:
        for sample, part in exports:
            export = part.copy()
            export.obs_names = export.obs["barcode"].astype(str).to_numpy()
            with atomic_path(Path(export_dir) / f"{sample}.h5ad") as tmp:
                export.write_h5ad(tmp)
    for _, row in summary.iterrows():
        log.info("%s %s: %.4f ± %.4f over %d folds", head, row["metric"], row["mean"], row["std"], row["n_folds"])
    return summary


def combine_summaries(paths: list, out) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t") for p in paths]
    table = pd.concat(frames, ignore_index=True)
    write_tsv(out, table)
    return table
