"""The report's content, one function per section, in the order of ``SECTIONS``.

Each section reads the run through ``ReportInputs``, appends its blocks to the ``Document`` and registers
in ``SiteFiles`` every figure and table file it shows or links to.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd

from genedml import __version__
from genedml.report.comparison import COMPARISON_SECTIONS
from genedml.report.render import Document, Table
from genedml.report.results import (
    HeadResults,
    MeanOver,
    ReportInputs,
    dataset_name,
    fold_protocol,
    package_versions,
    stage_times,
)
from genedml.report.site import SiteFiles
from genedml.report.specs import sweep_params
from genedml.report.tables import (
    METRIC_LABEL,
    METRIC_ORDER,
    MISSING_NOTE,
    fmt_mean,
    heg_hvg_note,
    is_optimistic,
    metrics_table,
    missing_note,
    protocol_label,
    sweep_table,
    table1,
)

# what evaluation writes per head, besides summary.tsv and per_gene.tsv, linked from the per-section tables
PER_SECTION_TABLES = ("per_section.tsv", "per_fold.tsv", "per_gene_section.tsv", "gene_sets.json")


def introduction(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """What was run, how the metrics are defined, and why the numbers may not compare with the papers'."""
    folds, facts = run.folds, run.facts
    doc.p(
        f"Cross-validated prediction of **{len(run.genes)} genes** from H&E images: {len(run.heads)} head(s) "
        f"({', '.join(h.name for h in run.heads)}), {folds['fold'].nunique()} folds over "
        f"{folds['patient'].nunique()} patients and {run.n_sections} sections "
        f"(dataset: {', '.join(run.run_datasets)}). "
        f"Targets: `{run.recipe}` recipe. Encoder: `{facts.get('encoder')}` (weights `{facts.get('weights_sha256')}`). "
        f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by genedml {__version__}."
    )
    doc.p(
        "Metrics, as the papers define them: per held-out section, per-gene Pearson r across spots (undefined "
        "for constant genes, which the means leave out and the tables count), MSE and MAE; PCC(A) over all "
        f"genes; PCC(H) over the {run.n_top} genes with the best rank averaged over folds; HEG / HVG over "
        f"{run.n_top} genes chosen from the labels (below). A fold's value is the mean over its sections; "
        "numbers are mean ± std (ddof 0) over folds. " + MISSING_NOTE
    )
    heg_hvg = heg_hvg_note(run.heads, run.n_top)
    if heg_hvg:
        doc.p(heg_hvg)
    for note in comparability_notes(run.heads, facts, run.run_datasets, run.published, run.recipe, len(run.genes)):
        doc.p(note, "note")


def comparability_notes(
    heads: list[HeadResults], facts: dict, run_datasets: list[str], published: pd.DataFrame, recipe: str, n_genes: int
) -> list[str]:
    """Where this run differs from the papers' setting: dataset, targets, gene count, encoder, selection."""
    notes = []
    known = sorted(set(published["dataset"]))  # the papers' names, as printed
    missing = [d for d in run_datasets if d not in {dataset_name(k) for k in known}]
    if missing:
        notes.append(
            f"No published numbers exist for dataset(s) {', '.join(missing)}: the published rows of "
            f"{', '.join(known)} are shown for reference only."
        )
    if recipe != "reference":
        notes.append(
            f"Targets use the `{recipe}` recipe; the published numbers use the reference recipe "
            "(the TRIPLEX / Gene-DML code's: log-normalised over the chosen genes, then averaged over "
            "neighbouring spots). Numbers from different recipes are not comparable."
        )
    if n_genes != 250:
        notes.append(f"This run predicts {n_genes} genes; the papers predict 250 per dataset.")
    enc = str(facts.get("encoder", ""))
    sha = str(facts.get("weights_sha256", ""))
    if enc.lower() != "uni" or sha == "random-init":
        notes.append(f"Features come from `{enc}` (weights: `{sha}`); the papers use UNI (ViT-L/16) weights.")
    kinds = {h.name: h.protocol_kind() for h in heads}
    reference = [n for n, k in kinds.items() if k == "reference"]
    mixed = [n for n, k in kinds.items() if k == "mixed"]
    if reference:
        notes.append(
            f"Head(s) {', '.join(reference)} select their model on the TEST fold (reference protocol): their "
            "numbers are optimistic, like the published ones, and are marked so in every table."
        )
    if mixed:
        notes.append(
            f"Head(s) {', '.join(mixed)} mix protocols: some folds selected on the TEST fold (optimistic), "
            "others on inner validation; their rows say which folds are which (“mixed: ...”) and do not "
            "compare with either kind."
        )
    if any("inner validation" in h.protocol for h in heads):
        notes.append(
            "Heads marked “inner validation” select models on patients held out from training, never on "
            "the test fold; the reference code of the published methods selects on the test fold, "
            "which flatters their numbers."
        )
    return notes


def table1_section(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    doc.h(2, "Table 1: this run beside the published results", "table1")
    designs = run.designs
    if designs:
        doc.p(
            "The fold table mixes designs ("
            + ", ".join(f"{d}: folds {', '.join(map(str, f))}" for d, f in designs.items())
            + "); Table 1 gives one row per design, since pooling them mixes different questions.",
            "note",
        )
    t1 = table1(run.heads, run.run_datasets, run.published, designs)
    doc.table(t1)
    doc.p("As a table: [table1.tsv](tables/table1.tsv).")
    site.add_table("tables/table1.tsv", t1.frame)


def all_metrics(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    doc.h(2, "All metrics of this run", "metrics")
    doc.table(metrics_table(run.heads, designs=run.designs))
    doc.p(
        "Per-head tables: "
        + ", ".join(f"[{h.name}](tables/{h.name}/summary.tsv)" for h in run.heads)
        + "; all heads: [summary.tsv](tables/summary.tsv)."
    )
    site.add_table("tables/summary.tsv", pd.concat([h.summary for h in run.heads], ignore_index=True))
    for h in run.heads:
        site.add_if_exists(f"tables/{h.name}/summary.tsv", run.results / "metrics" / h.name / "summary.tsv")


def ablation(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """The heads declared as ablation rows, under their ablation labels (none: no section)."""
    heads = [h for h in run.heads if h.spec.get("ablation")]
    if not heads:
        return
    doc.h(2, "Ablation (Tab. 3 rows)", "ablation")
    t = metrics_table(heads, "ablation", {h.name: h.spec["ablation"] for h in heads})
    t.frame = t.frame.rename(columns={"Head": "Variant"})
    t.caption = " ".join(
        filter(None, ["Heads declared with `report: {ablation: <label>}` in their config.", t.caption])
    )
    doc.table(t)


def sweeps(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """One table (and plot, when drawn) per swept parameter (none: no section)."""
    params = sweep_params({h.name: h.spec for h in run.heads})
    if not params:
        return
    doc.h(2, "Hyper-parameter sweeps", "sweeps")
    for param in params:
        doc.h(3, f"Sweep over {param}", f"sweep-{param}")
        doc.table(sweep_table(run.heads, param))
        rel = f"figures/sweep_{param}.png"
        if site.add_if_exists(rel, run.figures_dir / f"sweep_{param}.png"):
            doc.figure(rel, f"sweep over {param}", sweep_caption(run.heads, param))


def sweep_caption(heads: list[HeadResults], param: str) -> str:
    """The sweep plot's caption; it names the points over fewer folds and those selected on the test fold."""
    points = [h for h in heads if param in h.spec.get("sweep", {})]
    text = f"PCC(A) and PCC(H), mean ± std over folds, against {param}."
    short = [
        f"{h.name} (PCC(A) {note_a or 'all folds'}; PCC(H) {note_h or 'all folds'})"
        for h in points
        for note_a, note_h in [(missing_note(h.metric("PCC_A")), missing_note(h.metric("PCC_H")))]
        if note_a or note_h
    ]
    if short:
        text += " Points averaged over fewer than all folds or sections: " + "; ".join(short) + "."
    optimistic = [f"{h.name} ({protocol_label(h)})" for h in points if is_optimistic(h)]
    if optimistic:
        text += " Selected on the TEST fold, optimistic: " + "; ".join(optimistic) + "."
    return text


def gene_fold_means(per_gene: pd.DataFrame) -> list[MeanOver]:
    """Each gene's mean PCC over folds (per_gene.tsv ``mean_pcc``) with the folds in which it had an r."""
    fold_cols = [c for c in per_gene.columns if c.startswith("fold") and c[4:].isdigit()]
    values = per_gene[fold_cols].to_numpy(dtype=float) if fold_cols else None
    return [
        MeanOver(
            float(m),
            float("nan"),
            int(pd.notna(values[i]).sum()) if values is not None else int(pd.notna(m)),
            len(fold_cols) if values is not None else 1,
        )
        for i, m in enumerate(per_gene["mean_pcc"].to_numpy(dtype=float))
    ]


def per_gene_pcc(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    doc.h(2, "Per-gene PCC", "per-gene")
    if site.add_if_exists("figures/pcc_per_gene.png", run.figures_dir / "pcc_per_gene.png"):
        partial = []
        for h in run.heads:
            means = gene_fold_means(h.per_gene)
            some = sum(1 for v in means if 0 < v.n_folds < v.n_folds_total)
            if some:
                partial.append(f"{h.name}: {some} gene(s)")
        doc.figure(
            "figures/pcc_per_gene.png",
            "per-gene PCC distribution per head",
            "Each point is a gene: its PCC averaged over folds (a fold's PCC is the mean over its held-out "
            "sections). Boxes: quartiles and median. Genes with no PCC in any fold are not drawn (counted "
            "in the table below)"
            + (
                "; genes averaged over only the folds where their r is defined: " + ", ".join(partial) + "."
                if partial
                else "."
            ),
        )
    rows = []
    for h in run.heads:
        order = h.per_gene.sort_values("mean_rank", kind="stable").index[:5]
        means = gene_fold_means(h.per_gene)
        rows.append(
            {
                "Head": h.name,
                "Best genes (mean rank over folds)": ", ".join(
                    f"{h.per_gene.loc[i, 'gene']} {fmt_mean(means[h.per_gene.index.get_loc(i)], 2)}" for i in order
                ),
                "Genes with PCC > 0.5": int((h.per_gene["mean_pcc"] > 0.5).sum()),
                "Genes with no PCC (constant)": int(h.per_gene["mean_pcc"].isna().sum()),
                "Table": f"[per_gene.tsv](tables/{h.name}/per_gene.tsv)",
            }
        )
        site.add_if_exists(f"tables/{h.name}/per_gene.tsv", run.results / "metrics" / h.name / "per_gene.tsv")
    doc.table(Table("per-gene", pd.DataFrame(rows)))


def spatial_maps(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Each head's maps of the held-out sections, in fold order, with the PCC of every gene drawn."""
    doc.h(2, "Spatial maps of held-out sections", "spatial")
    shown = next((h.spatial.get("genes") for h in run.heads if h.spatial), None)
    wanted = next((h.spatial.get("wanted") for h in run.heads if h.spatial), None)
    if shown:
        absent = [g for g in (wanted or []) if g not in shown]
        doc.p(
            f"Genes: {', '.join(shown)}"
            + (f" ({', '.join(absent)} not among the predicted genes)" if absent else "")
            + ". Truth and prediction are each min-max scaled to [0, 1] over the section's spots and drawn over "
            "the H&E thumbnail; the title gives the prediction's PCC for that gene in that section."
        )
    test = run.folds[run.folds["split"] == "test"]
    for h in run.heads:
        if h.spec.get("control") or not h.spatial:  # maps of one run head per head and encoder, no controls
            continue
        doc.h(3, f"{h.label}", f"spatial-{h.name}")
        for sample in run.test_samples:
            rel = f"figures/{h.name}/spatial_{sample}.jpg"
            if not site.add_if_exists(rel, run.figures_dir / h.name / "spatial" / f"{sample}.jpg"):
                continue
            scores = h.spatial.get("sections", {}).get(sample, [])
            pccs = ", ".join(
                f"{s['gene']} {s['pcc']:.3f}" if s["pcc"] == s["pcc"] else f"{s['gene']} n/a" for s in scores
            )
            fold = test.loc[test["sample"] == sample, "fold"]
            k = int(fold.iloc[0]) if len(fold) else None
            selected = (
                " Model selected on the TEST fold (optimistic)." if k is not None and is_optimistic(h, [k]) else ""
            )
            doc.figure(
                rel,
                f"{h.name} {sample} spatial maps",
                f"{sample} (fold {k if k is not None else '?'}), {h.name}: PCC {pccs}.{selected}",
                "spatial",
            )


def per_section_scores(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    doc.h(2, "Per held-out section", "per-section")
    folds = run.folds
    for h in run.heads:
        counts = [c for c in ("n_spots", "n_genes_undefined_r") if c in h.per_section]
        frame = h.per_section[["fold", "sample", *counts] + [m for m in METRIC_ORDER if m in h.per_section]]
        if "design" in folds.columns:  # a fold table holding several designs (within / across patients)
            frame = frame.assign(design=frame["fold"].map(folds.groupby("fold")["design"].first()))
            frame = frame[["fold", "design"] + [c for c in frame.columns if c not in ("fold", "design")]]
        doc.h(3, h.label, f"per-section-{h.name}")
        doc.table(
            Table(
                f"per-section-{h.name}",
                frame.rename(columns={**METRIC_LABEL, "n_genes_undefined_r": "genes with undefined r"}),
                ["this-run optimistic" if is_optimistic(h, [int(k)]) else "" for k in frame["fold"]],
                caption=f"Model selection: {protocol_label(h)}. A section's r-based metrics average its genes "
                "with a defined r only (n/a: none has one). "
                + (f"{heg_hvg_note([h], short=True)} " if h.heg_hvg else "")
                + ", ".join(f"[{name}](tables/{h.name}/{name})" for name in PER_SECTION_TABLES),
            )
        )
        for name in PER_SECTION_TABLES:
            site.add_if_exists(f"tables/{h.name}/{name}", run.results / "metrics" / h.name / name)


def geometry_section(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Per sample: what one spot's crop and neighbourhood cover on the tissue, and which spots took part."""
    if run.geometry.empty:
        return
    doc.h(2, "Geometry audit", "geometry")
    doc.table(
        Table(
            "geometry",
            run.geometry,
            caption="Per sample: the slide's µm/px and where it came from (metadata, slide tags); the spot's "
            "diameter and centre-to-centre pitch as the sample's metadata states them; the side of the local crop "
            "and of the grid x grid neighbourhood on the tissue; the share of the crop the spot itself covers; "
            "the spots used, and those left out because in_tissue marks them outside the tissue "
            "(data.in_tissue); the fraction of neighbour tiles inside the image.",
        )
    )
    site.add_table("tables/geometry.tsv", run.geometry)


def unlabelled_sections(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Sections and bare slides predicted without counts: tissue, lattice, OOD summary, QC and maps."""
    if not run.unlabelled:
        return
    from genedml.report.results import unlabelled_facts

    doc.h(2, "Predicted without counts", "unlabelled")
    doc.p(
        "Every fold model of each head predicts these sections; the `.h5ad` files hold the mean (X), each fold's "
        "prediction and their standard deviation (layers) and each spot's out-of-distribution (OOD) score "
        "(obs['ood_score']): the mean distance of its embedding to its nearest training spots, divided by that "
        "of a typical held-out spot of the same fold, so 1 is as far as the held-out sections lie and larger is "
        "farther. No number here is a measured accuracy."
    )
    facts = unlabelled_facts(run.results, run.unlabelled)
    doc.table(
        Table(
            "unlabelled",
            facts,
            caption="Per section: spots predicted; for bare slides the tissue area of the mask, the µm/px and the "
            "virtual lattice; the OOD score's median and 90th percentile, the share of spots above the threshold "
            "(config slides.ood_threshold) and whether the section is mostly out of distribution "
            "(slides.ood_warn_fraction): predictions there extrapolate beyond the training data.",
        )
    )
    site.add_table("tables/unlabelled.tsv", facts)
    for sample, spec in run.unlabelled.items():
        doc.h(3, sample, f"unlabelled-{sample}")
        qc = f"figures/slides/qc_{sample}.png"
        if spec.get("slide") and site.add_if_exists(qc, run.results / "slides" / "qc" / f"{sample}.png"):
            doc.figure(
                qc, f"{sample} tissue mask and virtual spots", f"{sample}: tissue mask and virtual spots.", "slide"
            )
        for head in spec.get("heads", []):
            rel = f"figures/slides/{head}_{sample}.png"
            if site.add_if_exists(rel, run.results / "slides" / "maps" / head / f"{sample}.png"):
                doc.figure(
                    rel,
                    f"{head} {sample} maps",
                    f"{sample}, {head}: predicted genes, fold disagreement and OOD score.",
                    "slide",
                )


def run_facts(run: ReportInputs, doc: Document, site: SiteFiles) -> None:
    """Encoder, tiles, targets, genes, folds, model selection, time per stage, versions and the config."""
    doc.h(2, "Run facts", "facts")
    doc.table(Table("facts", pd.DataFrame(_fact_rows(run), columns=["Fact", "Value"])))
    site.add_file("tables/folds.tsv", run.results / "folds" / "folds.tsv")
    site.add_file("tables/genes.tsv", run.results / "genes" / "genes.tsv")
    doc.h(3, "Model selection per head", "protocol")
    doc.table(
        Table(
            "protocol",
            pd.DataFrame(
                [
                    {
                        "Head": h.name,
                        "Type": h.spec.get("type", ""),
                        "Protocol": protocol_label(h),
                        "Model selection": h.protocol,
                        "Folds": len(h.folds),
                        "Folds per protocol": ", ".join(
                            f"{k} {n}"
                            for k, n in sorted(pd.Series([fold_protocol(f) for f in h.folds]).value_counts().items())
                        ),
                    }
                    for h in run.heads
                ]
            ),
        )
    )
    doc.h(3, "Folds", "folds")
    doc.table(Table("folds", pd.DataFrame(_fold_rows(run.folds))))
    doc.h(3, "Time per stage", "times")
    times = stage_times(run.results / "benchmarks")
    doc.table(
        Table(
            "times",
            times,
            caption="From Snakemake's benchmark files (`results/benchmarks/`): jobs, the "
            "sum and the longest of their wall times (s), peak memory (MB). The report "
            "stage itself is not included.",
        )
    )
    site.add_table("tables/stage_times.tsv", times)
    doc.h(3, "Package versions", "versions")
    doc.table(Table("versions", pd.DataFrame(list(package_versions().items()), columns=["Package", "Version"])))
    doc.code(", ".join(run.genes["gene"].astype(str)), f"The {len(run.genes)} genes")
    if run.config_facts:
        doc.code(
            json.dumps(run.config_facts, indent=2, sort_keys=True, default=str), "Configuration that shaped the results"
        )


def _fact_rows(run: ReportInputs) -> list[tuple[str, str]]:
    facts, folds = run.facts, run.folds
    tile = facts.get("tile_spec") or {}
    scheme = run.config_facts.get("folds", {}).get("scheme", "see folds.tsv")
    return [
        ("encoder", f"{facts.get('encoder')} ({facts.get('embed_dim')}-d, {facts.get('precision')})"),
        ("weights SHA-256", str(facts.get("weights_sha256"))),
        (
            "tiles",
            ", ".join(f"{k} {v}" for k, v in tile.items())
            + ("" if "neighbour_mode" in tile else f"; neighbour_mode {facts.get('neighbour_mode')}"),
        ),
        (
            "embedding",
            f"{facts.get('encoder_calls')} tiles in {facts.get('feature_stores')} stores, "
            f"{facts.get('embed_wall_s')} s, device {', '.join(facts.get('devices', []))}",
        ),
        ("targets", f"{run.recipe} recipe"),
        ("genes", f"{len(run.genes)} ([genes.tsv](tables/genes.tsv))"),
        ("folds", f"{folds['fold'].nunique()} ({scheme}); [folds.tsv](tables/folds.tsv)"),
        ("sections / patients", f"{run.n_sections} / {folds['patient'].nunique()}"),
        ("datasets", ", ".join(run.run_datasets)),
        ("genedml", __version__),
    ]


def _fold_rows(folds: pd.DataFrame) -> list[dict]:
    """One row per fold: its design (when the table has one) and its test, val and train sections."""
    rows = []
    for k, grp in folds.groupby("fold"):
        row = {"Fold": int(k)}
        if "design" in grp.columns:
            row["Design"] = str(grp["design"].fillna("").iloc[0])
        row.update(
            {s.capitalize(): ", ".join(grp.loc[grp["split"] == s, "sample"]) or "-" for s in ("test", "val", "train")}
        )
        rows.append(row)
    return rows


SECTIONS = (
    introduction,
    table1_section,
    all_metrics,
    *COMPARISON_SECTIONS,
    ablation,
    sweeps,
    per_gene_pcc,
    spatial_maps,
    per_section_scores,
    geometry_section,
    unlabelled_sections,
    run_facts,
)
