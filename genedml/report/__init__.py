"""The run's report: a standalone HTML page and the same content as Markdown.

``results/report/`` holds ``index.html`` and ``index.md`` with every figure (``figures/``) and every table
they quote (``tables/``, TSV) beside them, so the folder can be copied or zipped as it is;
``results/report.md`` is the same Markdown with links into ``report/``.

Sections (``genedml.report.sections``): Table 1 (this run's heads per dataset beside the published rows,
each row labelled "published" or "this run"), every metric of this run, the ablation table and
hyper-parameter sweeps (when heads declare them), per-gene PCC distributions, spatial maps, per-section
scores and the run's facts (encoder and weights checksum, genes, folds, model-selection protocol, package
versions, time per stage). Which table a head appears in is declared in its config
(``heads.<name>.report``; see ``genedml.report.specs.head_report_spec``).

The modules: ``render`` (document model, Markdown and HTML), ``specs`` (report keys of the config),
``results`` (what a run wrote), ``tables`` (the metric tables), ``sections`` (the content) and ``site``
(the folder written).
"""

from __future__ import annotations

import importlib

# names re-exported here, by the module that defines them; loaded on first use, so that the workflow's
# `from genedml.report.specs import ...` at parse time pulls in nothing else
_EXPORTS = {
    "Document": "render",
    "Table": "render",
    "head_report_spec": "specs",
    "report_specs": "specs",
    "sweep_params": "specs",
    "load_published": "results",
    "stage_times": "results",
    "table1": "tables",
}
__all__ = ["build_report", *_EXPORTS]


def build_report(
    results_dir,
    heads_spec: dict,
    sheet_path,
    recipe: str,
    feature_stores: list,
    site_dir,
    md_out,
    config_facts: dict | None = None,
    n_top: int = 50,
    unlabelled: dict | None = None,
):
    """Write ``site_dir`` (index.html, index.md, figures/, tables/) and ``md_out``; return the document."""
    from genedml.report.render import Document
    from genedml.report.results import load_inputs
    from genedml.report.sections import SECTIONS
    from genedml.report.site import SiteFiles, write_site

    run = load_inputs(results_dir, heads_spec, sheet_path, recipe, feature_stores, config_facts, n_top, unlabelled)
    doc, files = Document("genedml report"), SiteFiles()
    for section in SECTIONS:
        section(run, doc, files)
    write_site(doc, files, site_dir, md_out)
    return doc


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"genedml.report.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
