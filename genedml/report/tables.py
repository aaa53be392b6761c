"""The report's metric tables: Table 1 beside the published rows, every metric per head, sweep points.

Two conventions hold in every table (docs/report.md, "Missing values and protocols"):

- a mean over folds is written by ``fmt_mean``: ``0.512 ± 0.030``, followed by ``(7 of 8 folds)`` and / or
  ``(10 of 12 sections)`` when some fold or section had no value and the mean is over the others only;
  a table with such a value says so in its caption (``MISSING_NOTE``);
- every row of this run names its model-selection protocol (``protocol_label``): honest heads as the folds'
  ``selection`` words it (e.g. "inner validation"), heads selected on the TEST fold as
  ``PROTOCOL_LABEL["reference"]``, and a head whose folds differ as ``mixed: ...``, fold by fold.
"""

from __future__ import annotations

import pandas as pd

from genedml.report.render import Table
from genedml.report.results import HeadResults, MeanOver, dataset_name, fold_protocol, head_protocol, selection_protocol

METRIC_ORDER = ["PCC_A", "PCC_H", "HEG", "HVG", "MSE", "MAE"]
METRIC_LABEL = {"PCC_A": "PCC(A)", "PCC_H": "PCC(H)", "HEG": "HEG", "HVG": "HVG", "MSE": "MSE", "MAE": "MAE"}
TABLE1_METRICS = ["MSE", "MAE", "PCC_A", "PCC_H"]
TABLE1_COLUMNS = ["Dataset", "Model", "Source"] + [METRIC_LABEL[m] for m in TABLE1_METRICS] + ["Model selection"]


def fmt_pm(mean, std, digits: int = 3) -> str:
    if mean is None or pd.isna(mean):
        return "n/a"
    if std is None or pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


MISSING_NOTE = (
    "“(k of n folds)” or “(k of n sections)” after a value: only k of the n folds or held-out sections "
    "had a value (a section has none when the r of every gene it averages is undefined: constant genes, "
    "a single spot), and the mean is over those k alone."
)
PROTOCOL_LABEL = {
    "reference": "test fold (reference protocol, optimistic)",
    "honest": "honest",
    "unknown": "unknown",
}
OPTIMISTIC_NOTE = (
    "Rows marked “test fold (reference protocol, optimistic)” or “mixed” selected their model (checkpoint, "
    "penalty) on the held-out TEST fold in some or all folds, as the published code does: their numbers are "
    "optimistic and do not compare with honest rows."
)


HEG_HVG_LABEL = {
    "pooled": "DKAN's pooled gene sets",
    "per_section": "per-section gene sets (BLEEP's code)",
}
HEG_HVG_DEFINITION = {
    "pooled": "one set for the whole run, chosen from the labels of every evaluated spot of every section: "
    "HEG the {n} genes with the highest mean label, HVG the {n} genes with the highest variance of the "
    "labels after dividing each spot's labels by their sum; the definition of DKAN's evaluation notebook, "
    "which Gene-DML's Table 1 follows",
    "per_section": "each section's own {n} genes with the highest mean / variance of its true expression, as "
    "BLEEP's evaluation code; not the pooled sets of DKAN's notebook, which Gene-DML's Table 1 follows",
}


def heg_hvg_note(heads: list[HeadResults], n_top: int | None = None, short: bool = False) -> str:
    """Which HEG / HVG definition the heads' numbers use (gene_sets.json ``heg_hvg``), as a caption
    sentence: ``HEG / HVG: DKAN's pooled gene sets (...)`` (``short``: without the parenthesis); heads that
    differ are named per definition; "" when no head records one."""
    by_kind: dict[str, list[str]] = {}
    for h in heads:
        if h.heg_hvg is not None:
            by_kind.setdefault(h.heg_hvg, []).append(h.label)
    if not by_kind:
        return ""
    ns = {h.gene_sets.get("n_top") for h in heads if h.gene_sets.get("n_top") is not None}
    n = str(ns.pop()) if len(ns) == 1 else (str(n_top) if n_top is not None else "N")
    if len(by_kind) == 1:
        kind = next(iter(by_kind))
        text = "" if short else HEG_HVG_DEFINITION.get(kind, "")
        return f"HEG / HVG: {HEG_HVG_LABEL.get(kind, kind)}" + (f" ({text.format(n=n)})." if text else ".")
    order = list(HEG_HVG_LABEL)  # pooled first, then per_section, then anything else
    kinds = sorted(by_kind, key=lambda k: (order.index(k) if k in order else len(order), k))
    parts = [f"{HEG_HVG_LABEL.get(k, k)} for {', '.join(by_kind[k])}" for k in kinds]
    return "HEG / HVG: " + "; ".join(parts) + ". Their HEG and HVG values average different genes and do not compare."


def missing_note(value: MeanOver) -> str:
    """``7 of 8 folds``, ``10 of 12 sections``, both, or "" when every fold and section had a value."""
    parts = []
    if value.n_folds < value.n_folds_total:
        parts.append(f"{value.n_folds} of {value.n_folds_total} folds")
    if (
        value.n_sections is not None
        and value.n_sections_total is not None
        and value.n_sections < value.n_sections_total
    ):
        parts.append(f"{value.n_sections} of {value.n_sections_total} sections")
    return ", ".join(parts)


def fmt_mean(value: MeanOver, digits: int = 3) -> str:
    """The one way a mean over folds (or sections) is shown: ``mean ± std``, the mean alone for one value,
    ``n/a`` for none, followed by ``(k of n folds[, k of n sections])`` when some had no value."""
    note = missing_note(value)
    text = fmt_pm(value.mean, value.std, digits)
    return f"{text} ({note})" if note else text


def short_protocol(protocol: str) -> str:
    """The short form of fold.json ``selection`` strings (joined by ``selection_protocol``)."""
    if "TEST" in protocol:
        return PROTOCOL_LABEL["reference"]
    if "inner validation" in protocol:
        return "inner validation"
    return protocol


def protocol_label(head: HeadResults, folds: list | None = None) -> str:
    """How the head selected its model, over the given folds (all when None): honest heads as their
    ``selection`` says (``inner validation``), reference heads as test-fold selected (optimistic), and a
    head whose folds differ as ``mixed: <label> in folds ...; <label> in folds ...``."""
    facts = head.fold_facts(folds)
    kind = head_protocol(facts)
    if kind == "honest":
        known = [f for f in facts if "selection" in f]
        return short_protocol(selection_protocol(known)) if known else PROTOCOL_LABEL["honest"]
    if kind != "mixed":
        return PROTOCOL_LABEL[kind]
    groups: dict[str, list] = {}
    for f in facts:
        groups.setdefault(fold_protocol(f), []).append(f.get("fold", "?"))
    word = {"reference": "test fold (optimistic)", "honest": "honest", "unknown": "unknown"}
    return "mixed: " + "; ".join(
        f"{word[k]} in fold{'s' if len(v) > 1 else ''} {', '.join(str(x) for x in sorted(v, key=_fold_key))}"
        for k, v in sorted(groups.items())
    )


def _fold_key(fold) -> tuple:
    text = str(fold)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def is_optimistic(head: HeadResults, folds: list | None = None) -> bool:
    """Some of the folds selected on the TEST fold (protocol reference or mixed)."""
    return head.protocol_kind(folds) in ("reference", "mixed")


def _caption(text: str, flagged: bool, optimistic: bool) -> str:
    return " ".join([text] + ([MISSING_NOTE] if flagged else []) + ([OPTIMISTIC_NOTE] if optimistic else []))


def table1(
    heads: list[HeadResults], run_datasets: list[str], published: pd.DataFrame, designs: dict | None = None
) -> Table:
    """Rows per dataset: the published rows, then this run's rows (for the run's own dataset; one row per
    fold design when the run mixes designs, since their folds do not measure the same thing).

    Published rows are matched to the run through ``dataset_name`` and keep the papers' dataset names."""
    run_name = "+".join(run_datasets)
    keys = published["dataset"].map(dataset_name)
    groups = [run_name] + [d for d in pd.unique(keys) if d != run_name]
    rows, classes, flagged, optimistic = [], [], False, False
    for group in groups:
        entries = [(row, "published") for row in _published_rows(published[keys == group])]
        if group == run_name:
            run_rows = _run_rows(heads, run_name, designs)
            flagged = any(f for _, _, f in run_rows)
            optimistic = any(o for _, o, _ in run_rows)
            entries += [(row, "this-run optimistic" if o else "this-run") for row, o, _ in run_rows]
        for i, (row, kind) in enumerate(entries):
            rows.append(row)
            classes.append(f"{kind} group-start" if i == 0 else kind)
    return Table(
        "table1",
        pd.DataFrame(rows, columns=TABLE1_COLUMNS),
        classes,
        _caption(
            "Mean ± std over cross-validation folds (a single fold shows its value alone). Rows marked "
            "“this run” come from this pipeline run; "
            "rows marked “published” are copied from the papers.",
            flagged,
            optimistic,
        ),
    )


def _published_rows(published: pd.DataFrame) -> list[dict]:
    return [
        {
            "Dataset": r.dataset,
            "Model": r.model,
            "Source": f"published ({r.source})",
            **{METRIC_LABEL[m]: f"{getattr(r, m)} ± {getattr(r, f'{m}_sd')}" for m in TABLE1_METRICS},
            "Model selection": "as published (the papers' code selects on the test fold)",
        }
        for r in published.itertuples(index=False)
    ]


def _run_rows(heads: list[HeadResults], run_name: str, designs: dict | None) -> list[tuple[dict, bool, bool]]:
    """(row, optimistic, some value over fewer than all folds / sections) per head and fold design."""
    rows = []
    for h in heads:
        if not h.spec.get("table1", True):
            continue
        model = h.label + (f" (reimplements {h.spec['published_as']})" if h.spec.get("published_as") else "")
        for design, design_folds in (designs or {None: None}).items():
            name = model if design is None else f"{model}, {design} folds ({len(design_folds)})"
            values = {m: h.metric(m, design_folds) for m in TABLE1_METRICS}
            row = {
                "Dataset": run_name,
                "Model": name,
                "Source": "this run",
                **{METRIC_LABEL[m]: fmt_mean(v) for m, v in values.items()},
                "Model selection": protocol_label(h, design_folds),
            }
            rows.append((row, is_optimistic(h, design_folds), any(v.missing for v in values.values())))
    return rows


def metrics_table(
    heads: list[HeadResults], table_id: str = "metrics", labels: dict | None = None, designs: dict | None = None
) -> Table:
    """One row per head (and per fold design, after the all-folds row, when the run mixes designs).

    ``Folds`` and ``Sections`` count every fold and held-out section; a metric averaged over fewer says so
    in its cell (``fmt_mean``). ``Genes with undefined r``: genes whose r is undefined in at least one
    section (from summary.tsv; all-folds rows only)."""
    rows, classes, flagged = [], [], False
    for h in heads:
        for design, design_folds in {None: None, **(designs or {})}.items():
            values = {m: h.metric(m, design_folds) for m in METRIC_ORDER}
            flagged = flagged or any(v.missing for v in values.values())
            n_folds = max((v.n_folds_total for v in values.values()), default=0)
            row = {"Head": (labels or {}).get(h.name, h.label), "Config key": h.name}
            if any(x.spec.get("encoder") for x in heads):  # the run head's encoder (the run plan's spec)
                row["Encoder"] = h.spec.get("encoder") or "-"
            if designs:
                row["Folds used"] = "all" if design is None else f"design {design}"
            row.update({METRIC_LABEL[m]: fmt_mean(v) for m, v in values.items()})
            sections = (
                len(h.per_section)
                if design is None or "fold" not in h.per_section
                else int(h.per_section["fold"].isin(design_folds).sum())
            )
            row.update({"Folds": n_folds, "Sections": sections})
            row["Genes with undefined r"] = _undefined_genes(h) if design is None else "-"
            row["Model selection"] = protocol_label(h, design_folds)
            rows.append(row)
            classes.append("this-run optimistic" if is_optimistic(h, design_folds) else "this-run")
    optimistic = any("optimistic" in c for c in classes)
    return Table(table_id, pd.DataFrame(rows), classes, _caption(heg_hvg_note(heads), flagged, optimistic).strip())


def _undefined_genes(h: HeadResults):
    if "n_genes_undefined_r" not in h.summary:
        return "-"
    v = pd.to_numeric(h.summary["n_genes_undefined_r"], errors="coerce").dropna()
    return int(v.max()) if len(v) else "-"


def sweep_points(heads: list[HeadResults], param: str) -> pd.DataFrame:
    rows = []
    for h in heads:
        if param in h.spec.get("sweep", {}):
            a, a_sd = h.metric("PCC_A")
            hh, hh_sd = h.metric("PCC_H")
            rows.append(
                {
                    "value": h.spec["sweep"][param],
                    "head": h.name,
                    "PCC_A": a,
                    "PCC_A_std": a_sd,
                    "PCC_H": hh,
                    "PCC_H_std": hh_sd,
                }
            )
    return pd.DataFrame(rows, columns=["value", "head", "PCC_A", "PCC_A_std", "PCC_H", "PCC_H_std"])


def sweep_table(heads: list[HeadResults], param: str) -> Table:
    """The heads of a sweep over ``param``, by its value (numerically when every value is a number)."""
    pts = sweep_points(heads, param)
    numeric = pd.to_numeric(pts["value"], errors="coerce")
    pts = pts.assign(_x=numeric).sort_values("_x" if numeric.notna().all() else "value").drop(columns="_x")
    by_name = {h.name: h for h in heads}
    values = [{m: by_name[name].metric(m) for m in ("PCC_A", "PCC_H")} for name in pts["head"]]
    frame = pd.DataFrame(
        {
            param: pts["value"].astype(str),
            "Head": pts["head"],
            "PCC(A)": [fmt_mean(v["PCC_A"]) for v in values],
            "PCC(H)": [fmt_mean(v["PCC_H"]) for v in values],
            "Model selection": [protocol_label(by_name[name]) for name in pts["head"]],
        }
    )
    optimistic = [is_optimistic(by_name[name]) for name in pts["head"]]
    flagged = any(v.missing for vs in values for v in vs.values())
    return Table(
        f"sweep-{param}",
        frame,
        ["this-run optimistic" if o else "this-run" for o in optimistic],
        _caption("", flagged, any(optimistic)).strip(),
    )
