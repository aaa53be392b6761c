"""The run's report as Markdown: headline metrics per head, per-section scores and the run's facts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import __version__
from .atomic import write_text

METRIC_ORDER = ["PCC_A", "PCC_H", "HEG", "HVG", "MSE", "MAE"]


def _fmt(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}"


def markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_wide(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for head, grp in summary.groupby("head", sort=False):
        row = {"head": head}
        for _, r in grp.iterrows():
            row[r["metric"]] = _fmt(r["mean"], r["std"])
        row["folds"] = int(grp["n_folds"].max())
        rows.append(row)
    wide = pd.DataFrame(rows)
    return wide[["head"] + [m for m in METRIC_ORDER if m in wide.columns] + ["folds"]]


def run_facts(features_attrs: dict, genes: list[str], folds: pd.DataFrame, recipe: str) -> dict:
    return {
        "genedml": __version__,
        "encoder": features_attrs.get("encoder"),
        "weights_sha256": features_attrs.get("weights_sha256"),
        "tile_spec": features_attrs.get("tile_spec"),
        "target_recipe": recipe,
        "genes": len(genes),
        "folds": int(folds["fold"].nunique()),
        "samples": int(folds["sample"].nunique()),
        "patients": int(folds["patient"].nunique()),
        "model_selection": "inner validation split of training patients"
        if (folds["split"] == "val").any() else "none (no validation split)",
    }


def write_report(out, summary_path, per_section_paths: dict, folds_path, genes_path, features_store, recipe: str) -> None:
    import zarr

    summary = pd.read_csv(summary_path, sep="\t")
    folds = pd.read_csv(folds_path, sep="\t")
    genes = pd.read_csv(genes_path, sep="\t")["gene"].tolist()
    attrs = dict(zarr.open_group(str(features_store), mode="r").attrs)
    facts = run_facts(attrs, genes, folds, recipe)
    parts = ["# genedml report", "",
             f"Cross-validated prediction of {len(genes)} genes ({facts['folds']} folds over "
             f"{facts['patients']} patients, {facts['samples']} sections). Targets: `{recipe}` recipe; "
             "numbers from different recipes are not comparable.", "",
             "## Headline metrics (mean ± std over folds)", "", markdown_table(summary_wide(summary)), "",
             "PCC(A): mean Pearson r over all genes. PCC(H): over the 50 genes with the best mean rank across "
             "folds. HEG / HVG: over the 50 most expressed / most variable genes. Per section, then mean over "
             "a fold's sections, then mean ± std over folds.", ""]
    for head, path in per_section_paths.items():
        table = pd.read_csv(path, sep="\t")
        parts += [f"## Per held-out section: {head}", "", markdown_table(table), ""]
    parts += ["## Run facts", "", "```json", json.dumps(facts, indent=2, default=str), "```", ""]
    parts += ["## Fold membership", "", markdown_table(folds), ""]
    write_text(out, "\n".join(parts))
