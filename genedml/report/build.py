"""The run's report: a standalone HTML page and the same content as Markdown.

``results/report/`` holds ``index.html`` and ``index.md`` with every figure (``figures/``) and every table
they quote (``tables/``, TSV) beside them, so the folder can be copied or zipped as it is;
``results/report.md`` is the same Markdown with links into ``report/``.

Sections: Table 1 (this run's heads per dataset beside the published rows, each row labelled "published"
or "this run"), every metric of this run, the ablation table and hyper-parameter sweeps (when heads
declare them), per-gene PCC distributions, spatial maps, per-section scores and the run's facts (encoder
and weights checksum, genes, folds, model-selection protocol, package versions, time per stage).

Which table a head appears in is declared in its config (``heads.<name>.report``; see ``head_report_spec``).
"""

from __future__ import annotations

import html
import json
import logging
import os
import platform
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from genedml import __version__
from genedml.atomic import atomic_path, write_text

log = logging.getLogger(__name__)

METRIC_ORDER = ["PCC_A", "PCC_H", "HEG", "HVG", "MSE", "MAE"]
METRIC_LABEL = {"PCC_A": "PCC(A)", "PCC_H": "PCC(H)", "HEG": "HEG", "HVG": "HVG", "MSE": "MSE", "MAE": "MAE"}
TABLE1_METRICS = ["MSE", "MAE", "PCC_A", "PCC_H"]
REPORT_KEYS = {"label", "table1", "ablation", "sweep", "published_as"}
PARAM_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# dataset names of the sample sheet -> the names used in published_results.csv
DATASET_ALIASES = {"her2st": "her2st", "her2": "her2st", "andersson": "her2st", "stnet": "stnet",
                   "skinst": "skinst", "cscc": "skinst", "skin": "skinst"}
PACKAGES = ["torch", "timm", "snakemake", "numpy", "scipy", "pandas", "scikit-learn", "anndata", "scanpy", "zarr",
            "openslide-python", "openslide-bin", "tifffile", "matplotlib"]
STAGE_ORDER = ["demo_data", "tile", "embed", "select_genes", "targets", "gene_semantics", "folds", "train",
               "evaluate", "thumbnail", "figures"]


# --------------------------------------------------------------------------------------------------
# Which rows a head gives: heads.<name>.report in the config
# --------------------------------------------------------------------------------------------------

def head_report_spec(head: str, cfg: dict) -> dict:
    """Normalise ``heads.<head>.report`` (all keys optional)::

        report:
          label: "Gene-DML (ours)"   # name in tables and figures (default: the head's key)
          table1: true               # a row of Table 1 (default: true unless ablation or sweep is set)
          ablation: "w/o global"     # a row of the ablation table, with this label
          sweep: [k]                 # a point of the sweep over these config keys (value read from the
                                     # head's config), or a mapping {k: 18, lambda: 0.8}
          published_as: "Gene-DML"   # the published model this head reimplements (shown in Table 1)

    Returns ``{label, table1, ablation, sweep: {param: value}, published_as}``; raises ValueError that
    names the head for anything it cannot use.
    """
    rep = cfg.get("report") or {}
    where = f"heads.{head}.report"
    if not isinstance(rep, dict):
        raise ValueError(f"{where} must be a mapping (label, table1, ablation, sweep, published_as)")
    unknown = sorted(set(rep) - REPORT_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(REPORT_KEYS)}")
    sweep = rep.get("sweep") or {}
    if isinstance(sweep, str):
        sweep = [sweep]
    if isinstance(sweep, list):
        values = {}
        for param in sweep:
            if param not in cfg:
                raise ValueError(f"{where}.sweep names {param!r}, which is not a key of the head's config; "
                                 f"give its value instead: sweep: {{{param}: VALUE}}")
            values[param] = cfg[param]
        sweep = values
    if not isinstance(sweep, dict):
        raise ValueError(f"{where}.sweep must be a config key, a list of keys or a mapping key: value")
    for param, value in sweep.items():
        if not PARAM_NAME.match(str(param)):
            raise ValueError(f"{where}.sweep: parameter name {param!r} may only use letters, digits, _ . -")
        if not isinstance(value, (int, float, str, bool)):
            raise ValueError(f"{where}.sweep: value of {param!r} must be a number or a string, got {value!r}")
    ablation = rep.get("ablation")
    table1 = rep.get("table1", not (ablation or sweep))
    return {"label": str(rep.get("label", head)), "table1": bool(table1),
            "ablation": None if ablation in (None, "") else str(ablation),
            "sweep": {str(k): v for k, v in sweep.items()},
            "published_as": rep.get("published_as")}


def report_specs(heads: dict) -> dict:
    return {name: {**head_report_spec(name, cfg), "type": cfg.get("type", name)} for name, cfg in heads.items()}


def sweep_params(specs: dict) -> list[str]:
    return sorted({p for s in specs.values() for p in s["sweep"]})


# --------------------------------------------------------------------------------------------------
# Published numbers (shipped with the package)
# --------------------------------------------------------------------------------------------------

def load_published(as_printed: bool = False) -> pd.DataFrame:
    """Published cross-validation results (Gene-DML Tab. 1 with the supplementary MAE; DKAN Tab. 1).

    ``as_printed``: keep the numbers as the papers print them (strings), for display."""
    from importlib.resources import files

    with files("genedml").joinpath("data/published_results.csv").open("r") as fh:
        return pd.read_csv(fh, dtype=str if as_printed else None)


def canonical_dataset(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return DATASET_ALIASES.get(key, str(name))


# --------------------------------------------------------------------------------------------------
# A tiny document model rendered to Markdown and HTML
# --------------------------------------------------------------------------------------------------

@dataclass
class Table:
    id: str
    frame: pd.DataFrame
    row_classes: list | None = None
    caption: str = ""


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str, anchor: str):
        self.blocks.append(("h", level, text, anchor))

    def p(self, text: str, cls: str = ""):
        self.blocks.append(("p", text, cls))

    def bullets(self, items: list[str]):
        self.blocks.append(("ul", items))

    def table(self, table: Table):
        self.blocks.append(("table", table))

    def figure(self, src: str, alt: str, caption: str, cls: str = ""):
        self.blocks.append(("figure", src, alt, caption, cls))

    def code(self, text: str, summary: str = ""):
        self.blocks.append(("code", text, summary))

    # -- Markdown --
    def to_markdown(self, prefix: str = "") -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out += [f"{'#' * block[1]} {block[2]}", ""]
            elif kind == "p":
                out += [_md_links(block[1], prefix), ""]
            elif kind == "ul":
                out += [f"- {_md_links(i, prefix)}" for i in block[1]] + [""]
            elif kind == "table":
                t = block[1]
                if t.caption:
                    out += [_md_links(t.caption, prefix), ""]
                out += [_md_table(t.frame), ""]
            elif kind == "figure":
                out += [f"![{block[2]}]({_prefixed(block[1], prefix)})", "", f"*{_md_links(block[3], prefix)}*", ""]
            elif kind == "code":
                if block[2]:
                    out += [f"{block[2]}:", ""]
                out += ["```", block[1].rstrip(), "```", ""]
        return "\n".join(out)

    # -- HTML --
    def to_html(self) -> str:
        toc = [f'<li class="toc{b[1]}"><a href="#{b[3]}">{html.escape(b[2])}</a></li>'
               for b in self.blocks if b[0] == "h" and b[1] == 2]
        body = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                body.append(f'<h{block[1]} id="{block[3]}">{html.escape(block[2])}</h{block[1]}>')
            elif kind == "p":
                cls = f' class="{block[2]}"' if block[2] else ""
                body.append(f"<p{cls}>{_inline_html(block[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                body.append(_html_table(block[1]))
            elif kind == "figure":
                cls = f' class="{block[4]}"' if block[4] else ""
                body.append(f'<figure{cls}><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}">'
                            f"<figcaption>{_inline_html(block[3])}</figcaption></figure>")
            elif kind == "code":
                pre = f"<pre>{html.escape(block[1])}</pre>"
                body.append(f"<details><summary>{html.escape(block[2])}</summary>{pre}</details>" if block[2] else pre)
        return HTML_PAGE.format(title=html.escape(self.title), toc="\n".join(toc), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1em 2em 4em; color: #222; line-height: 1.45; }}
h1 {{ border-bottom: 2px solid #444; }} h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
tr.this-run td {{ background: #e8f3ff; font-weight: 600; }}
tr.published td {{ color: #444; }}
tr.group-start td {{ border-top: 2px solid #666; }}
#table1 td {{ white-space: nowrap; }}
div.scroll {{ overflow-x: auto; }}
caption {{ caption-side: top; text-align: left; font-style: italic; padding-bottom: 0.3em; }}
figure {{ display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }}
figure img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.85em; color: #555; max-width: 760px; }}
figure.spatial {{ width: 560px; }} figure.spatial img {{ width: 100%; }}
p.note {{ background: #fff6dd; border-left: 4px solid #e0a800; padding: 0.5em 0.8em; }}
code {{ background: #f4f4f4; padding: 0 0.2em; }}
pre {{ background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }}
nav ul {{ columns: 2; }}
</style>
</head>
<body>
<h1>{title}</h1>
<nav><ul>
{toc}
</ul></nav>
{body}
</body>
</html>
"""


def _prefixed(href: str, prefix: str) -> str:
    if not prefix or re.match(r"^([a-z]+:|#|/)", href):
        return href
    return prefix + href


def _md_links(text: str, prefix: str) -> str:
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", lambda m: f"[{m.group(1)}]({_prefixed(m.group(2), prefix)})", text)


def _inline_html(text: str) -> str:
    """Escape, then render `code`, **bold** and [text](href)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', out)


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "n/a" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def _md_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _is_numeric_text(text: str) -> bool:
    return bool(re.match(r"^-?[0-9.]+(e-?\d+)?( ± [0-9.]+)?$|^n/a$", text))


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.frame.columns)
    rows = []
    for i, row in enumerate(t.frame.itertuples(index=False)):
        cls = f' class="{t.row_classes[i]}"' if t.row_classes and t.row_classes[i] else ""
        cells = []
        for v in row:
            text = _cell(v)
            num = ' class="num"' if _is_numeric_text(text) else ""
            cells.append(f"<td{num}>{_inline_html(text)}</td>")
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    caption = f"<caption>{_inline_html(t.caption)}</caption>" if t.caption else ""
    return (f'<div class="scroll"><table id="{t.id}">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


# --------------------------------------------------------------------------------------------------
# Facts gathered from the run's files
# --------------------------------------------------------------------------------------------------

def fmt_pm(mean, std, digits: int = 3) -> str:
    if mean is None or pd.isna(mean):
        return "n/a"
    if std is None or pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "genedml": __version__}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def stage_times(bench_dir) -> pd.DataFrame:
    """Wall time per stage from Snakemake's benchmark files (``results/benchmarks/<stage>[/<sub>]/...``)."""
    bench_dir = Path(bench_dir)
    rows = []
    for path in sorted(bench_dir.rglob("*.tsv")) if bench_dir.exists() else []:
        parts = path.relative_to(bench_dir).parts
        stage = path.stem if len(parts) == 1 else "/".join(parts[:2]) if len(parts) > 2 else parts[0]
        try:
            t = pd.read_csv(path, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        if "s" not in t:
            continue
        rss = pd.to_numeric(t["max_rss"], errors="coerce") if "max_rss" in t else pd.Series([np.nan])
        rows.append({"stage": stage, "s": float(pd.to_numeric(t["s"], errors="coerce").mean()), "rss": float(rss.max())})
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "total_s", "longest_s", "max_rss_mb"])
    df = pd.DataFrame(rows)
    table = df.groupby("stage", sort=False).agg(jobs=("s", "size"), total_s=("s", "sum"), longest_s=("s", "max"),
                                                 max_rss_mb=("rss", "max")).reset_index()
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    table["_o"] = [order.get(s.split("/")[0], len(order)) for s in table["stage"]]
    table = table.sort_values(["_o", "stage"]).drop(columns="_o").reset_index(drop=True)
    for c in ("total_s", "longest_s", "max_rss_mb"):
        table[c] = table[c].round(1)
    return table


def feature_facts(stores: list) -> dict:
    """Encoder facts from the feature stores' attributes; lists every checksum seen (there should be one)."""
    import zarr

    seen = []
    for store in stores:
        attrs = dict(zarr.open_group(str(store), mode="r").attrs)
        seen.append(attrs)
    if not seen:
        return {}
    first = seen[0]
    sums = sorted({str(a.get("weights_sha256")) for a in seen})
    return {
        "encoder": first.get("encoder"),
        "embed_dim": first.get("embed_dim"),
        "weights_sha256": sums[0] if len(sums) == 1 else sums,
        "precision": first.get("precision"),
        "tile_spec": first.get("tile_spec"),
        "neighbour_mode": first.get("neighbour_mode"),
        "feature_stores": len(seen),
        "encoder_calls": int(sum(int(a.get("encoder_calls", 0)) for a in seen)),
        "embed_wall_s": round(float(sum(float(a.get("wall_s", 0.0)) for a in seen)), 1),
        "devices": sorted({str(a.get("device")) for a in seen}),
    }


def selection_protocol(fold_facts: list[dict]) -> str:
    values = sorted({str(f.get("selection", "unknown")) for f in fold_facts})
    return "; ".join(values) if values else "unknown"


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------

@dataclass
class HeadResults:
    name: str
    spec: dict
    summary: pd.DataFrame
    per_fold: pd.DataFrame
    per_section: pd.DataFrame
    per_gene: pd.DataFrame
    gene_sets: dict
    folds: list[dict]
    spatial: dict

    def metric(self, m: str, folds: list | None = None) -> tuple[float, float]:
        """Mean and std (ddof 0) over folds; over the given folds only when ``folds`` is set.
        The std of a single fold is NaN (shown as the mean alone), not 0."""
        if folds is not None:
            v = self.per_fold.loc[self.per_fold["fold"].isin(folds), m].to_numpy(dtype=float) \
                if m in self.per_fold else np.array([])
            v = v[~np.isnan(v)]
            if not v.size:
                return float("nan"), float("nan")
            return float(v.mean()), float(v.std()) if v.size > 1 else float("nan")
        row = self.summary[self.summary["metric"] == m]
        if row.empty:
            return float("nan"), float("nan")
        n = int(row["n_folds"].iloc[0]) if "n_folds" in row else 2
        return float(row["mean"].iloc[0]), float(row["std"].iloc[0]) if n > 1 else float("nan")

    @property
    def label(self) -> str:
        return self.spec.get("label", self.name)

    @property
    def protocol(self) -> str:
        return selection_protocol(self.folds)


def load_head(results: Path, name: str, spec: dict) -> HeadResults:
    mdir = results / "metrics" / name
    missing = [p for p in ("summary.tsv", "per_fold.tsv", "per_section.tsv", "per_gene.tsv", "gene_sets.json")
               if not (mdir / p).exists()]
    if missing:
        raise FileNotFoundError(f"head {name!r}: {', '.join(missing)} missing in {mdir} (run `genedml evaluate` first)")
    folds = [json.loads(p.read_text()) for p in sorted((results / "heads" / name).glob("fold*/fold.json"))]
    spatial_json = results / "figures" / name / "spatial_pcc.json"
    return HeadResults(
        name=name, spec=spec,
        summary=pd.read_csv(mdir / "summary.tsv", sep="\t"),
        per_fold=pd.read_csv(mdir / "per_fold.tsv", sep="\t"),
        per_section=pd.read_csv(mdir / "per_section.tsv", sep="\t"),
        per_gene=pd.read_csv(mdir / "per_gene.tsv", sep="\t"),
        gene_sets=json.loads((mdir / "gene_sets.json").read_text()),
        folds=folds,
        spatial=json.loads(spatial_json.read_text()) if spatial_json.exists() else {},
    )


def _short_protocol(protocol: str) -> str:
    if "TEST" in protocol:
        return "test fold (optimistic)"
    if "inner validation" in protocol:
        return "inner validation"
    return protocol


def fold_designs(folds: pd.DataFrame) -> dict:
    """design label -> its folds, when the fold table holds more than one design (else {})."""
    if "design" not in folds.columns:
        return {}
    per_fold = folds.groupby("fold")["design"].first().fillna("").astype(str)
    if per_fold.nunique() < 2:
        return {}
    return {d: sorted(int(f) for f in per_fold.index[per_fold == d]) for d in pd.unique(per_fold)}


def table1(heads: list[HeadResults], run_datasets: list[str], published: pd.DataFrame,
           designs: dict | None = None) -> Table:
    """Rows per dataset: the published rows, then this run's rows (for the run's own dataset; one row per
    fold design when the run mixes designs, since their folds do not measure the same thing)."""
    run_name = "+".join(run_datasets)
    datasets = [run_name] + [d for d in pd.unique(published["dataset"]) if d != run_name]
    rows, classes = [], []
    for d in datasets:
        first = True
        for r in published[published["dataset"] == d].itertuples(index=False):
            rows.append({"Dataset": d, "Model": r.model, "Source": f"published ({r.source})",
                         **{METRIC_LABEL[m]: f"{getattr(r, m)} ± {getattr(r, f'{m}_sd')}" for m in TABLE1_METRICS},
                         "Model selection": "as published"})
            classes.append("published group-start" if first else "published")
            first = False
        if d == run_name:
            for h in heads:
                if not h.spec.get("table1", True):
                    continue
                model = h.label + (f" (reimplements {h.spec['published_as']})" if h.spec.get("published_as") else "")
                for design, design_folds in (designs or {None: None}).items():
                    name = model if design is None else f"{model}, {design} folds ({len(design_folds)})"
                    rows.append({"Dataset": d, "Model": name, "Source": "this run",
                                 **{METRIC_LABEL[m]: fmt_pm(*h.metric(m, design_folds)) for m in TABLE1_METRICS},
                                 "Model selection": _short_protocol(h.protocol)})
                    classes.append("this-run group-start" if first else "this-run")
                    first = False
    cols = ["Dataset", "Model", "Source"] + [METRIC_LABEL[m] for m in TABLE1_METRICS] + ["Model selection"]
    return Table("table1", pd.DataFrame(rows, columns=cols), classes,
                 "Mean ± std over cross-validation folds (a single fold shows its value alone). Rows marked "
                 "“this run” come from this pipeline run; "
                 "rows marked “published” are copied from the papers.")


def metrics_table(heads: list[HeadResults], table_id: str = "metrics", labels: dict | None = None,
                  designs: dict | None = None) -> Table:
    """One row per head (and per fold design, after the all-folds row, when the run mixes designs)."""
    rows = []
    for h in heads:
        for design, design_folds in {None: None, **(designs or {})}.items():
            n_folds = (int(h.summary["n_folds"].max()) if len(h.summary) else 0) if design is None \
                else int(h.per_fold["fold"].isin(design_folds).sum())
            row = {"Head": (labels or {}).get(h.name, h.label), "Config key": h.name}
            if designs:
                row["Folds used"] = "all" if design is None else f"design {design}"
            row.update({METRIC_LABEL[m]: fmt_pm(*h.metric(m, design_folds)) for m in METRIC_ORDER})
            sections = len(h.per_section) if design is None else int(h.per_section["fold"].isin(design_folds).sum())
            row.update({"Folds": n_folds, "Sections": sections, "Model selection": _short_protocol(h.protocol)})
            rows.append(row)
    return Table(table_id, pd.DataFrame(rows), ["this-run"] * len(rows))


def sweep_points(heads: list[HeadResults], param: str) -> pd.DataFrame:
    rows = []
    for h in heads:
        if param in h.spec.get("sweep", {}):
            a, a_sd = h.metric("PCC_A")
            hh, hh_sd = h.metric("PCC_H")
            rows.append({"value": h.spec["sweep"][param], "head": h.name, "PCC_A": a, "PCC_A_std": a_sd,
                         "PCC_H": hh, "PCC_H_std": hh_sd})
    return pd.DataFrame(rows, columns=["value", "head", "PCC_A", "PCC_A_std", "PCC_H", "PCC_H_std"])


def comparability_notes(heads: list[HeadResults], facts: dict, run_datasets: list[str], published: pd.DataFrame,
                        recipe: str, n_genes: int) -> list[str]:
    notes = []
    known = set(published["dataset"])
    missing = [d for d in run_datasets if d not in known]
    if missing:
        notes.append(f"No published numbers exist for dataset(s) {', '.join(missing)}: the published rows of "
                     f"{', '.join(sorted(known))} are shown for reference only.")
    if recipe != "reference":
        notes.append(f"Targets use the `{recipe}` recipe; the published numbers use the reference recipe "
                     "(METHOD.md §2). Numbers from different recipes are not comparable.")
    if n_genes != 250:
        notes.append(f"This run predicts {n_genes} genes; the papers predict 250 per dataset.")
    enc = str(facts.get("encoder", ""))
    sha = str(facts.get("weights_sha256", ""))
    if enc.lower() != "uni" or sha == "random-init":
        notes.append(f"Features come from `{enc}` (weights: `{sha}`); the papers use UNI (ViT-L/16) weights.")
    if any("TEST" in h.protocol for h in heads):
        notes.append("Some heads select their checkpoint on the TEST fold (reference protocol): their numbers "
                     "are optimistic, like the published ones.")
    if any("inner validation" in h.protocol for h in heads):
        notes.append("Heads marked “inner validation” select models on patients held out from training, never on "
                     "the test fold; the reference code of the published methods selects on the test fold, "
                     "which flatters their numbers (METHOD.md §5).")
    return notes


def build_report(results_dir, heads_spec: dict, sheet_path, recipe: str, feature_stores: list, site_dir, md_out,
                 config_facts: dict | None = None, n_top: int = 50) -> Document:
    """Write ``site_dir`` (index.html, index.md, figures/, tables/) and ``md_out``; return the document."""
    results = Path(results_dir)
    heads = [load_head(results, name, spec) for name, spec in heads_spec.items()]
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str)
    run_datasets = sorted({canonical_dataset(d) for d in sheet.get("dataset", pd.Series(["unnamed"])).fillna("unnamed")})
    folds = pd.read_csv(results / "folds" / "folds.tsv", sep="\t")
    genes = pd.read_csv(results / "genes" / "genes.tsv", sep="\t")
    facts = feature_facts(feature_stores)
    published = load_published(as_printed=True)
    config_facts = config_facts or {}
    figures_dir = results / "figures"
    samples_in_order = folds[folds["split"] == "test"].sort_values(["fold", "sample"])["sample"].tolist()

    files: dict[str, Path] = {}  # site-relative path -> source file

    doc = Document("genedml report")
    n_sections = int(folds["sample"].nunique())
    doc.p(f"Cross-validated prediction of **{len(genes)} genes** from H&E images: {len(heads)} head(s) "
          f"({', '.join(h.name for h in heads)}), {folds['fold'].nunique()} folds over "
          f"{folds['patient'].nunique()} patients and {n_sections} sections (dataset: {', '.join(run_datasets)}). "
          f"Targets: `{recipe}` recipe. Encoder: `{facts.get('encoder')}` (weights `{facts.get('weights_sha256')}`). "
          f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by genedml {__version__}.")
    doc.p("Metrics (METHOD.md §5): per held-out section, per-gene Pearson r across spots (NaN for constant genes, "
          "ignored by the means), MSE and MAE; PCC(A) over all genes; PCC(H) over the "
          f"{n_top} genes with the best rank averaged over folds; HEG / HVG over the {n_top} genes with the highest "
          "mean / variance of the section's true expression. A fold's value is the mean over its sections; "
          "numbers are mean ± std (ddof 0) over folds.")
    for note in comparability_notes(heads, facts, run_datasets, published, recipe, len(genes)):
        doc.p(note, "note")

    # Table 1
    doc.h(2, "Table 1: this run beside the published results", "table1")
    designs = fold_designs(folds)
    if designs:
        doc.p("The fold table mixes designs (" + ", ".join(f"{d}: folds {', '.join(map(str, f))}" for d, f in designs.items())
              + "); Table 1 gives one row per design, since pooling them mixes different questions.", "note")
    t1 = table1(heads, run_datasets, published, designs)
    doc.table(t1)
    doc.p("As a table: [table1.tsv](tables/table1.tsv).")

    # every metric
    doc.h(2, "All metrics of this run", "metrics")
    doc.table(metrics_table(heads, designs=designs))
    doc.p("Per-head tables: " + ", ".join(f"[{h.name}](tables/{h.name}/summary.tsv)" for h in heads)
          + "; all heads: [summary.tsv](tables/summary.tsv).")

    # ablation and sweeps
    ablation = [h for h in heads if h.spec.get("ablation")]
    if ablation:
        doc.h(2, "Ablation (Tab. 3 rows)", "ablation")
        t = metrics_table(ablation, "ablation", {h.name: h.spec["ablation"] for h in ablation})
        t.frame = t.frame.rename(columns={"Head": "Variant"})
        t.caption = "Heads declared with `report: {ablation: <label>}` in their config."
        doc.table(t)
    params = sweep_params({h.name: h.spec for h in heads})
    if params:
        doc.h(2, "Hyper-parameter sweeps", "sweeps")
        for param in params:
            pts = sweep_points(heads, param)
            numeric = pd.to_numeric(pts["value"], errors="coerce")
            pts = pts.assign(_x=numeric).sort_values("_x" if numeric.notna().all() else "value").drop(columns="_x")
            frame = pd.DataFrame({param: pts["value"].astype(str), "Head": pts["head"],
                                  "PCC(A)": [fmt_pm(a, s) for a, s in zip(pts["PCC_A"], pts["PCC_A_std"])],
                                  "PCC(H)": [fmt_pm(a, s) for a, s in zip(pts["PCC_H"], pts["PCC_H_std"])]})
            doc.h(3, f"Sweep over {param}", f"sweep-{param}")
            doc.table(Table(f"sweep-{param}", frame, ["this-run"] * len(frame)))
            src = figures_dir / f"sweep_{param}.png"
            if src.exists():
                files[f"figures/sweep_{param}.png"] = src
                doc.figure(f"figures/sweep_{param}.png", f"sweep over {param}",
                           f"PCC(A) and PCC(H), mean ± std over folds, against {param}.")

    # per-gene PCC
    doc.h(2, "Per-gene PCC", "per-gene")
    src = figures_dir / "pcc_per_gene.png"
    if src.exists():
        files["figures/pcc_per_gene.png"] = src
        doc.figure("figures/pcc_per_gene.png", "per-gene PCC distribution per head",
                   "Each point is a gene: its PCC averaged over folds (a fold's PCC is the mean over its held-out "
                   "sections). Boxes: quartiles and median.")
    rows = []
    for h in heads:
        top = h.per_gene.sort_values("mean_rank", kind="stable").head(5)
        rows.append({"Head": h.name, "Best genes (mean rank over folds)":
                     ", ".join(f"{g} ({p:.2f})" for g, p in zip(top["gene"], top["mean_pcc"])),
                     "Genes with PCC > 0.5": int((h.per_gene["mean_pcc"] > 0.5).sum()),
                     "Genes with no PCC (constant)": int(h.per_gene["mean_pcc"].isna().sum()),
                     "Table": f"[per_gene.tsv](tables/{h.name}/per_gene.tsv)"})
    doc.table(Table("per-gene", pd.DataFrame(rows)))

    # spatial maps
    doc.h(2, "Spatial maps of held-out sections", "spatial")
    shown = next((h.spatial.get("genes") for h in heads if h.spatial), None)
    wanted = next((h.spatial.get("wanted") for h in heads if h.spatial), None)
    if shown:
        absent = [g for g in (wanted or []) if g not in shown]
        doc.p(f"Genes: {', '.join(shown)}" + (f" ({', '.join(absent)} not among the predicted genes)" if absent else "")
              + ". Truth and prediction are each min-max scaled to [0, 1] over the section's spots and drawn over "
              "the H&E thumbnail; the title gives the prediction's PCC for that gene in that section.")
    for h in heads:
        doc.h(3, f"{h.label}", f"spatial-{h.name}")
        for sample in samples_in_order:
            src = figures_dir / h.name / f"spatial_{sample}.jpg"
            if not src.exists():
                continue
            rel = f"figures/{h.name}/spatial_{sample}.jpg"
            files[rel] = src
            scores = h.spatial.get("sections", {}).get(sample, [])
            pccs = ", ".join(f"{s['gene']} {s['pcc']:.3f}" if s["pcc"] == s["pcc"] else f"{s['gene']} n/a"
                             for s in scores)
            fold = folds.loc[(folds["sample"] == sample) & (folds["split"] == "test"), "fold"]
            doc.figure(rel, f"{h.name} {sample} spatial maps",
                       f"{sample} (fold {int(fold.iloc[0]) if len(fold) else '?'}), {h.name}: PCC {pccs}.", "spatial")

    # per section
    doc.h(2, "Per held-out section", "per-section")
    for h in heads:
        frame = h.per_section[["fold", "sample", "n_spots"] + [m for m in METRIC_ORDER if m in h.per_section]]
        if "design" in folds.columns:  # a fold table holding several designs (within / across patients)
            frame = frame.assign(design=frame["fold"].map(folds.groupby("fold")["design"].first()))
            frame = frame[["fold", "design"] + [c for c in frame.columns if c not in ("fold", "design")]]
        frame = frame.rename(columns=METRIC_LABEL)
        doc.h(3, h.label, f"per-section-{h.name}")
        doc.table(Table(f"per-section-{h.name}", frame,
                        caption=f"[per_section.tsv](tables/{h.name}/per_section.tsv), "
                                f"[per_fold.tsv](tables/{h.name}/per_fold.tsv), "
                                f"[per_gene_section.tsv](tables/{h.name}/per_gene_section.tsv), "
                                f"[gene_sets.json](tables/{h.name}/gene_sets.json)"))

    # run facts
    doc.h(2, "Run facts", "facts")
    tile = facts.get("tile_spec") or {}
    versions = package_versions()
    doc.table(Table("facts", pd.DataFrame([
        ("encoder", f"{facts.get('encoder')} ({facts.get('embed_dim')}-d, {facts.get('precision')})"),
        ("weights SHA-256", str(facts.get("weights_sha256"))),
        ("tiles", ", ".join(f"{k} {v}" for k, v in tile.items())
         + ("" if "neighbour_mode" in tile else f"; neighbour_mode {facts.get('neighbour_mode')}")),
        ("embedding", f"{facts.get('encoder_calls')} tiles in {facts.get('feature_stores')} stores, "
                      f"{facts.get('embed_wall_s')} s, device {', '.join(facts.get('devices', []))}"),
        ("targets", f"{recipe} recipe"),
        ("genes", f"{len(genes)} ([genes.tsv](tables/genes.tsv))"),
        ("folds", f"{folds['fold'].nunique()} ({config_facts.get('folds', {}).get('scheme', 'see folds.tsv')}); "
                  f"[folds.tsv](tables/folds.tsv)"),
        ("sections / patients", f"{n_sections} / {folds['patient'].nunique()}"),
        ("datasets", ", ".join(run_datasets)),
        ("genedml", __version__),
    ], columns=["Fact", "Value"])))
    doc.h(3, "Model selection per head", "protocol")
    doc.table(Table("protocol", pd.DataFrame([
        {"Head": h.name, "Type": h.spec.get("type", ""), "Model selection": h.protocol, "Folds": len(h.folds)}
        for h in heads])))
    doc.h(3, "Folds", "folds")
    fold_rows = []
    for k, grp in folds.groupby("fold"):
        row = {"Fold": int(k)}
        if "design" in grp.columns:
            row["Design"] = str(grp["design"].fillna("").iloc[0])
        row.update({s.capitalize(): ", ".join(grp.loc[grp["split"] == s, "sample"]) or "-"
                    for s in ("test", "val", "train")})
        fold_rows.append(row)
    doc.table(Table("folds", pd.DataFrame(fold_rows)))
    doc.h(3, "Time per stage", "times")
    times = stage_times(results / "benchmarks")
    doc.table(Table("times", times, caption="From Snakemake's benchmark files (`results/benchmarks/`): jobs, the "
                                            "sum and the longest of their wall times (s), peak memory (MB). The report "
                                            "stage itself is not included."))
    doc.h(3, "Package versions", "versions")
    doc.table(Table("versions", pd.DataFrame(list(versions.items()), columns=["Package", "Version"])))
    doc.code(", ".join(genes["gene"].astype(str)), f"The {len(genes)} genes")
    if config_facts:
        doc.code(json.dumps(config_facts, indent=2, sort_keys=True, default=str), "Configuration that shaped the results")

    # write the site
    tables = {
        "tables/summary.tsv": None, "tables/folds.tsv": results / "folds" / "folds.tsv",
        "tables/genes.tsv": results / "genes" / "genes.tsv",
    }
    for h in heads:
        for name in ("summary.tsv", "per_fold.tsv", "per_section.tsv", "per_gene.tsv", "per_gene_section.tsv",
                     "gene_sets.json"):
            src = results / "metrics" / h.name / name
            if src.exists():
                tables[f"tables/{h.name}/{name}"] = src
    markdown = doc.to_markdown()
    with atomic_path(site_dir) as tmp:
        tmp.mkdir(parents=True)
        for rel, src in {**files, **tables}.items():
            if src is not None:
                _link_or_copy(Path(src), tmp / rel)
        pd.concat([h.summary for h in heads], ignore_index=True).to_csv(tmp / "tables/summary.tsv", sep="\t", index=False)
        t1.frame.to_csv(tmp / "tables/table1.tsv", sep="\t", index=False)
        times.to_csv(tmp / "tables/stage_times.tsv", sep="\t", index=False)
        (tmp / "index.md").write_text(markdown)
        (tmp / "index.html").write_text(doc.to_html())
    if md_out is not None:
        prefix = os.path.relpath(Path(site_dir), Path(md_out).parent).replace(os.sep, "/") + "/"
        write_text(md_out, doc.to_markdown(prefix=prefix))
    log.info("report: %s (%d figures, %d tables)", Path(site_dir) / "index.html", len([f for f in files if f.startswith("figures/")]),
             len(tables) + 2)
    return doc
