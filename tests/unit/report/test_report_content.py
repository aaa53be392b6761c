"""The report's pieces without a run: how heads declare their rows, the published numbers and how they
are matched to a run's dataset, the document model's Markdown and HTML, stage times from benchmark files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from genedml.report.render import Document, Table
from genedml.report.results import HeadResults, dataset_name, load_published, stage_times
from genedml.report.specs import head_report_spec
from genedml.report.tables import table1
from support.workflow import REPO, SHARED_DATA

# ---------------------------------------------------------------------------------------------------------
# how a head declares its rows
# ---------------------------------------------------------------------------------------------------------


def test_head_report_spec_defaults_and_forms():
    assert head_report_spec("ridge", {"type": "ridge"}) == {
        "label": "ridge",
        "table1": True,
        "ablation": None,
        "sweep": {},
        "published_as": None,
    }
    spec = head_report_spec("genedml-k9", {"type": "genedml", "k": 9, "report": {"ablation": "k = 9", "sweep": "k"}})
    assert spec["table1"] is False and spec["sweep"] == {"k": 9} and spec["ablation"] == "k = 9"
    spec = head_report_spec("g", {"type": "genedml", "report": {"sweep": {"lambda": 0.8, "k": 18}, "table1": True}})
    assert spec["sweep"] == {"lambda": 0.8, "k": 18} and spec["table1"] is True


@pytest.mark.parametrize(
    "report, message",
    [
        ({"colour": "red"}, "unknown key"),
        ({"sweep": ["k"]}, "not a key of the head's config"),
        ({"sweep": {"k": [1, 2]}}, "must be a number or a string"),
        ({"sweep": {"k/2": 1}}, "may only use"),
        ("ablation", "must be a mapping"),
    ],
)
def test_head_report_spec_errors_name_the_head(report, message):
    with pytest.raises(ValueError, match=message) as err:
        head_report_spec("genedml-x", {"type": "genedml", "report": report})
    assert "heads.genedml-x.report" in str(err.value)


def test_published_numbers_ship_with_the_package_as_printed():
    pub = load_published(as_printed=True)
    row = pub[(pub["dataset"] == "her2st") & (pub["model"] == "Gene-DML")].iloc[0]
    assert (row["PCC_A"], row["PCC_A_sd"], row["source"]) == ("0.331", "0.07", "Gene-DML Tab1")
    assert set(pub["dataset"]) == {"her2st", "stnet", "skinst"}
    shared = SHARED_DATA.parent / "reference" / "published_results.csv"
    if shared.exists():  # the shipped copy is the reference file, unchanged
        assert shared.read_text() == (REPO / "genedml/data/published_results.csv").read_text()


def test_specs_import_without_pandas():
    """The workflow imports the specs when Snakemake parses it: nothing heavy may come with them."""
    code = "import sys, genedml.report.specs; sys.exit('pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def _head(name: str, spec: dict) -> HeadResults:
    summary = pd.DataFrame(
        {
            "metric": ["MSE", "MAE", "PCC_A", "PCC_H"],
            "mean": [0.2, 0.3, 0.4, 0.5],
            "std": [0.01, 0.02, 0.03, 0.04],
            "n_folds": 3,
        }
    )
    return HeadResults(
        name,
        spec,
        summary,
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(),
        {},
        [{"selection": "inner validation (val patients)"}],
        {},
    )


def test_published_rows_match_the_run_through_genedml_dataset_names():
    assert (dataset_name("skinst"), dataset_name("cSCC"), dataset_name("her2st")) == ("cscc", "cscc", "her2st")
    assert dataset_name("demo") == "demo"  # unknown to genedml: kept as it is
    pub = load_published(as_printed=True)
    t = table1([_head("ridge", {"label": "ridge", "table1": True})], ["cscc"], pub)
    frame = t.frame
    n_skin = int((pub["dataset"] == "skinst").sum())
    assert list(frame["Dataset"][:n_skin]) == ["skinst"] * n_skin  # the papers' name, as printed
    assert frame.iloc[n_skin][["Dataset", "Model", "Source", "PCC(A)"]].tolist() == [
        "cscc",
        "ridge",
        "this run",
        "0.400 ± 0.030",
    ]
    assert t.row_classes[0] == "published group-start" and t.row_classes[n_skin] == "this-run"
    assert len(frame) == len(pub) + 1 and t.row_classes.count("published group-start") == 3
    demo = table1([_head("ridge", {"label": "ridge"})], ["demo"], pub)
    assert demo.row_classes[0] == "this-run group-start" and demo.frame["Dataset"].iloc[0] == "demo"


def _every_element() -> Document:
    doc = Document("Title")
    doc.h(2, "Section A", "a")
    doc.p("See [the table](tables/t.tsv), [a site](https://x.org) and [a part](#a): `code`, **bold**.")
    doc.p("Careful.", "note")
    doc.h(3, "Sub", "a-sub")
    doc.bullets(["one [link](figures/f.png)", "two"])
    doc.table(
        Table(
            "t1",
            pd.DataFrame({"Head": ["a|b", "c"], "PCC": [0.123456, np.nan], "n": [3, 4]}),
            ["this-run", ""],
            "From [t.tsv](tables/t.tsv).",
        )
    )
    doc.figure("figures/f.png", "alt text", "A caption with `code`.", "spatial")
    doc.h(2, "Section B", "b")
    doc.code("x = 1\n", "Some code")
    doc.code("plain")
    return doc


def test_document_renders_every_element_to_markdown():
    assert _every_element().to_markdown(prefix="report/") == "\n".join(
        [
            "# Title",
            "",
            "## Section A",
            "",
            "See [the table](report/tables/t.tsv), [a site](https://x.org) and [a part](#a): `code`, **bold**.",
            "",
            "Careful.",
            "",
            "### Sub",
            "",
            "- one [link](report/figures/f.png)",
            "- two",
            "",
            "From [t.tsv](report/tables/t.tsv).",
            "",
            "| Head | PCC | n |",
            "|---|---|---|",
            "| a\\|b | 0.1235 | 3 |",
            "| c | n/a | 4 |",
            "",
            "![alt text](report/figures/f.png)",
            "",
            "*A caption with `code`.*",
            "",
            "## Section B",
            "",
            "Some code:",
            "",
            "```",
            "x = 1",
            "```",
            "",
            "```",
            "plain",
            "```",
            "",
        ]
    )


def test_document_renders_every_element_to_html():
    page = _every_element().to_html()
    assert page.startswith("<!DOCTYPE html>") and "<title>Title</title>" in page and "<h1>Title</h1>" in page
    # the table of contents lists the level-2 headings only
    assert (
        '<nav><ul>\n<li class="toc2"><a href="#a">Section A</a></li>\n<li class="toc2"><a href="#b">Section B'
        "</a></li>\n</ul></nav>" in page
    )
    assert '<h2 id="a">Section A</h2>' in page and '<h3 id="a-sub">Sub</h3>' in page
    assert (
        '<p>See <a href="tables/t.tsv">the table</a>, <a href="https://x.org">a site</a> and '
        '<a href="#a">a part</a>: <code>code</code>, <strong>bold</strong>.</p>'
    ) in page
    assert '<p class="note">Careful.</p>' in page
    assert '<ul><li>one <a href="figures/f.png">link</a></li><li>two</li></ul>' in page
    assert (
        '<div class="scroll"><table id="t1"><caption>From <a href="tables/t.tsv">t.tsv</a>.</caption>'
        "<thead><tr><th>Head</th><th>PCC</th><th>n</th></tr></thead><tbody>"
        '<tr class="this-run"><td>a|b</td><td class="num">0.1235</td><td class="num">3</td></tr>'
        '<tr><td>c</td><td class="num">n/a</td><td class="num">4</td></tr></tbody></table></div>'
    ) in page
    assert (
        '<figure class="spatial"><img src="figures/f.png" alt="alt text">'
        "<figcaption>A caption with <code>code</code>.</figcaption></figure>"
    ) in page
    assert "<details><summary>Some code</summary><pre>x = 1\n</pre></details>" in page
    assert "<pre>plain</pre>" in page and page.rstrip().endswith("</body>\n</html>")


def test_html_escapes_what_it_shows():
    doc = Document("t")
    doc.p("a <b> & `code`")
    doc.table(Table("x", pd.DataFrame({"Head": ["<script>alert(1)</script>"]})))
    page = doc.to_html()
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "<code>code</code>" in page


def test_stage_times_from_benchmark_files(tmp_path):
    (tmp_path / "train" / "ridge").mkdir(parents=True)
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "train" / "ridge" / "fold0.tsv").write_text(head + "2.5\t0:00:02\t100.0\t1\t1\t1\t0\t0\t0\t1\n")
    (tmp_path / "train" / "ridge" / "fold1.tsv").write_text(head + "1.5\t0:00:01\t300.0\t1\t1\t1\t0\t0\t0\t1\n")
    (tmp_path / "select_genes.tsv").write_text(head + "0.5\t0:00:00\t-\t-\t-\t-\t-\t-\t-\t-\n")
    t = stage_times(tmp_path).set_index("stage")
    assert t.loc["train/ridge", "jobs"] == 2 and t.loc["train/ridge", "total_s"] == 4.0
    assert t.loc["train/ridge", "longest_s"] == 2.5 and t.loc["train/ridge", "max_rss_mb"] == 300.0
    assert list(t.index) == ["select_genes", "train/ridge"]  # pipeline order
