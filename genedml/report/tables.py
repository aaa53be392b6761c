"""The report's metric tables: Table 1 beside the published rows, every metric per head, sweep points."""

from __future__ import annotations

import pandas as pd

from genedml.report.render import Table
from genedml.report.results import HeadResults, dataset_name

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


def short_protocol(protocol: str) -> str:
    if "TEST" in protocol:
        return "test fold (optimistic)"
    if "inner validation" in protocol:
        return "inner validation"
    return protocol


def table1(
    heads: list[HeadResults], run_datasets: list[str], published: pd.DataFrame, designs: dict | None = None
) -> Table:
    """Rows per dataset: the published rows, then this run's rows (for the run's own dataset; one row per
    fold design when the run mixes designs, since their folds do not measure the same thing).

    Published rows are matched to the run through ``dataset_name`` and keep the papers' dataset names."""
    run_name = "+".join(run_datasets)
    keys = published["dataset"].map(dataset_name)
    groups = [run_name] + [d for d in pd.unique(keys) if d != run_name]
    rows, classes = [], []
    for group in groups:
        entries = [(row, "published") for row in _published_rows(published[keys == group])]
        if group == run_name:
            entries += [(row, "this-run") for row in _run_rows(heads, run_name, designs)]
        for i, (row, kind) in enumerate(entries):
            rows.append(row)
            classes.append(f"{kind} group-start" if i == 0 else kind)
    return Table(
        "table1",
        pd.DataFrame(rows, columns=TABLE1_COLUMNS),
        classes,
        "Mean ± std over cross-validation folds (a single fold shows its value alone). Rows marked "
        "“this run” come from this pipeline run; "
        "rows marked “published” are copied from the papers.",
    )


def _published_rows(published: pd.DataFrame) -> list[dict]:
    return [
        {
            "Dataset": r.dataset,
            "Model": r.model,
            "Source": f"published ({r.source})",
            **{METRIC_LABEL[m]: f"{getattr(r, m)} ± {getattr(r, f'{m}_sd')}" for m in TABLE1_METRICS},
            "Model selection": "as published",
        }
        for r in published.itertuples(index=False)
    ]


def _run_rows(heads: list[HeadResults], run_name: str, designs: dict | None) -> list[dict]:
    rows = []
    for h in heads:
        if not h.spec.get("table1", True):
            continue
        model = h.label + (f" (reimplements {h.spec['published_as']})" if h.spec.get("published_as") else "")
        for design, design_folds in (designs or {None: None}).items():
            name = model if design is None else f"{model}, {design} folds ({len(design_folds)})"
            rows.append(
                {
                    "Dataset": run_name,
                    "Model": name,
                    "Source": "this run",
                    **{METRIC_LABEL[m]: fmt_pm(*h.metric(m, design_folds)) for m in TABLE1_METRICS},
                    "Model selection": short_protocol(h.protocol),
                }
            )
    return rows


def metrics_table(
    heads: list[HeadResults], table_id: str = "metrics", labels: dict | None = None, designs: dict | None = None
) -> Table:
    """One row per head (and per fold design, after the all-folds row, when the run mixes designs)."""
    rows = []
    for h in heads:
        for design, design_folds in {None: None, **(designs or {})}.items():
            n_folds = (
                (int(h.summary["n_folds"].max()) if len(h.summary) else 0)
                if design is None
                else int(h.per_fold["fold"].isin(design_folds).sum())
            )
            row = {"Head": (labels or {}).get(h.name, h.label), "Config key": h.name}
            if designs:
                row["Folds used"] = "all" if design is None else f"design {design}"
            row.update({METRIC_LABEL[m]: fmt_pm(*h.metric(m, design_folds)) for m in METRIC_ORDER})
            sections = len(h.per_section) if design is None else int(h.per_section["fold"].isin(design_folds).sum())
            row.update({"Folds": n_folds, "Sections": sections, "Model selection": short_protocol(h.protocol)})
            rows.append(row)
    return Table(table_id, pd.DataFrame(rows), ["this-run"] * len(rows))


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
    frame = pd.DataFrame(
        {
            param: pts["value"].astype(str),
            "Head": pts["head"],
            "PCC(A)": [fmt_pm(a, s) for a, s in zip(pts["PCC_A"], pts["PCC_A_std"])],
            "PCC(H)": [fmt_pm(a, s) for a, s in zip(pts["PCC_H"], pts["PCC_H_std"])],
        }
    )
    return Table(f"sweep-{param}", frame, ["this-run"] * len(frame))
