"""The report's comparison sections: the encoder x head matrix, the uncertainty of every number, the paired
tests, the optimism gap, the seed spread, the controls and the per-gene ceiling.

Each reads what ``genedml compare`` wrote under ``results/comparison/`` (and ``genedml ceiling-figure`` under
``results/figures/``); a run without them (an older run, or ``report.bootstrap: 0``) shows no such section.
One function per section, in the order of ``COMPARISON_SECTIONS``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genedml.report.render import Document, Table
from genedml.report.results import ReportInputs
from genedml.report.site import SiteFiles

COMPARISON = "comparison"  # results/comparison/, written by rule compare
# the comparison's column names as the report shows them
COLUMN_LABELS = {
    "head": "Head",
    "label": "Head",
    "encoder": "Encoder",
    "protocol": "Protocol",
    "seed": "Seed",
    "metric": "Metric",
    "estimate": "Estimate",
    "ci_low": "CI low",
    "ci_high": "CI high",
    "n_patients": "Patients",
    "n_sections": "Sections",
    "note": "Note",
}
METRIC_NAMES = {"PCC_A": "PCC(A)", "PCC_H": "PCC(H)", "MSE": "MSE", "MAE": "MAE"}


def _table(run: ReportInputs, name: str) -> pd.DataFrame | None:
    path = run.results / COMPARISON / name
    if not path.exists():
        return None
    frame = pd.read_csv(path, sep="\t")
    return frame if len(frame) else None


def _display(frame: pd.DataFrame, drop: tuple = ()) -> pd.DataFrame:
    """Numbers at 3 significant decimals (p-values in scientific notation when small), metric names as the
    report writes them, the comparison's column names in words."""
    out = frame.drop(columns=[c for c in drop if c in frame.columns]).copy()
    for col in out.columns:
        if col == "metric":
            out[col] = out[col].map(lambda m: METRIC_NAMES.get(m, m))
        elif pd.api.types.is_float_dtype(out[col]):
            is_p = col.startswith("p") and ("value" in col or col in ("p", "p_holm"))
            out[col] = out[col].map(lambda v, p=is_p: _number(v, p))
    return out.rename(columns={c: COLUMN_LABELS.get(c, c.replace("_", " ")) for c in out.columns})


def _number(value, p_value: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if p_value and abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"


def _show(doc: Document, site: SiteFiles, run: ReportInputs, name: str, table_id: str, caption: str, drop=()):
    frame = _table(run, name)
    if frame is None:
        return None
    doc.table(Table(table_id, _display(frame, drop), caption=f"{caption} As a table: [{name}](tables/{name})."))
    site.add_file(f"tables/{name}", run.results / COMPARISON / name)
    return frame


def encoder_matrix(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """PCC(A) per (encoder, head): the heat map and its table."""
    if _table(run, "matrix.tsv") is None:
        return
    doc.h(2, "Encoder × head matrix", "matrix")
    png = run.results / COMPARISON / "matrix_pcc_a.png"
    if site.add_if_exists("figures/matrix_pcc_a.png", png):
        doc.figure(
            "figures/matrix_pcc_a.png",
            "PCC(A) per encoder and head",
            "PCC(A) of every head (rows, controls included) on every encoder's features (columns), each the mean "
            "over held-out sections, seeds averaged; every encoder's heads were trained on the same folds.",
        )
    _show(
        doc,
        site,
        run,
        "matrix.tsv",
        "matrix",
        "Each cell with its patient-level bootstrap interval. Heads under the reference protocol are their own "
        "rows: they selected on the test fold.",
    )


def uncertainty(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Every run head's PCC(A), PCC(H), MSE and MAE with a patient-level bootstrap interval."""
    if _table(run, "intervals.tsv") is None:
        return
    doc.h(2, "Uncertainty of every number", "intervals")
    _show(
        doc,
        site,
        run,
        "intervals.tsv",
        "intervals",
        "The estimate is the mean over held-out sections; the interval resamples patients with replacement "
        "(each drawn patient brings all its sections), since sections of one patient are not independent "
        "(percentile interval; docs/statistics.md). Few patients make wide intervals: two heads whose "
        "intervals overlap may still differ in a paired test below.",
    )


def paired_tests(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Wilcoxon signed-rank tests between heads and between encoders, over genes and over sections."""
    if _table(run, "paired_tests.tsv") is None:
        return
    doc.h(2, "Paired tests between heads", "paired-tests")
    _show(
        doc,
        site,
        run,
        "paired_tests.tsv",
        "paired-tests",
        "Two-sided Wilcoxon signed-rank tests of PCC, paired over genes (each gene's PCC averaged over folds) "
        "and over held-out sections, between heads on the same encoder and protocol and between encoders for "
        "the same head; seeds averaged first. The effect size is the matched-pairs rank-biserial correlation "
        "(+1: the first always better); p-values are Holm-adjusted within each family. Genes are not "
        "independent of each other, so the test over sections is the one to trust when they disagree.",
    )


def optimism_gap(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Heads run under both protocols: reference minus honest, with its paired interval."""
    if _table(run, "optimism_gap.tsv") is None:
        return
    doc.h(2, "Optimism gap: selecting on the test fold", "optimism-gap")
    doc.p(
        "The published code of TRIPLEX, Gene-DML and DKAN chooses its epoch (early stopping) on the test fold "
        "(the reference protocol); honest selection chooses on inner validation patients and never sees the test "
        "fold. A head run under both shows how much test-fold selection flatters it: the gap is reference minus "
        "honest on the same sections, with a patient-level bootstrap interval of the difference (for MSE and MAE "
        "a negative gap flatters)."
    )
    _show(doc, site, run, "optimism_gap.tsv", "optimism-gap", "Per head, encoder and seed.")


def seed_spread(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Heads trained with several seeds: mean, sd, min and max over seeds."""
    if _table(run, "seeds.tsv") is None:
        return
    doc.h(2, "Seed spread", "seed-spread")
    _show(
        doc,
        site,
        run,
        "seeds.tsv",
        "seed-spread",
        "Heads with `seeds: [...]`: each seed is a full training on every fold; the spread over seeds is the "
        "part of a difference between heads that a rerun alone could make (sd with ddof 1).",
    )


def controls(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Every head against the floors of its encoder: mean predictor, shuffled-feature null, ridge."""
    if _table(run, "controls.tsv") is None:
        return
    doc.h(2, "Against the controls", "controls")
    _show(
        doc,
        site,
        run,
        "controls.tsv",
        "controls",
        "The floors of each encoder, trained on the same folds: the mean predictor (each gene's training mean: "
        "its PCC is undefined, its MSE is the floor of the errors), the shuffled-feature null (ridge on features "
        "permuted across the spots of each training section: what a head reaches without the image) and a ridge "
        "baseline. The margin is a head's PCC(A) minus the shuffled null's, with a paired bootstrap interval.",
    )


def per_gene_ceiling(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Per encoder: each gene's predictability on the training folds against the PCC every head reached."""
    figures = sorted(Path(run.figures_dir).glob("ceiling_*.png"))
    if not figures:
        return
    doc.h(2, "Per-gene ceiling", "ceiling")
    doc.p(
        "A gene's ceiling score is 1 minus its Geary's C on the k-nearest-neighbour graph of the spots' image "
        "embeddings, computed on each fold's training sections only: near 1, spots that look alike have alike "
        "expression; near 0, the embedding says nothing about the gene. Genes at the bottom left are out of "
        "reach of every head on these features; genes at the bottom right are where a head falls short of what "
        "the features hold (docs/report.md)."
    )
    for png in figures:
        encoder = png.stem[len("ceiling_") :]
        rel = f"figures/{png.name}"
        site.add_file(rel, png)
        doc.figure(rel, f"ceiling vs PCC, {encoder}", f"Encoder {encoder}: ceiling score (x) against mean PCC (y).")
        table = run.results / "ceiling" / encoder / "per_gene.tsv"
        site.add_if_exists(f"tables/ceiling_{encoder}.tsv", table)


COMPARISON_SECTIONS = (
    encoder_matrix,
    uncertainty,
    paired_tests,
    optimism_gap,
    seed_spread,
    controls,
    per_gene_ceiling,
)
