"""The report's pieces without a run: how heads declare their rows, the published numbers, HTML escaping,
stage times from benchmark files."""

from __future__ import annotations

import pandas as pd
import pytest

from genedml.report.build import Document, Table, head_report_spec, load_published, stage_times
from support.workflow import REPO, SHARED_DATA

# ---------------------------------------------------------------------------------------------------------
# how a head declares its rows
# ---------------------------------------------------------------------------------------------------------


def test_head_report_spec_defaults_and_forms():
    assert head_report_spec("ridge", {"type": "ridge"}) == {
        "label": "ridge", "table1": True, "ablation": None, "sweep": {}, "published_as": None}
    spec = head_report_spec("genedml-k9", {"type": "genedml", "k": 9, "report": {"ablation": "k = 9", "sweep": "k"}})
    assert spec["table1"] is False and spec["sweep"] == {"k": 9} and spec["ablation"] == "k = 9"
    spec = head_report_spec("g", {"type": "genedml", "report": {"sweep": {"lambda": 0.8, "k": 18}, "table1": True}})
    assert spec["sweep"] == {"lambda": 0.8, "k": 18} and spec["table1"] is True


@pytest.mark.parametrize("report, message", [
    ({"colour": "red"}, "unknown key"),
    ({"sweep": ["k"]}, "not a key of the head's config"),
    ({"sweep": {"k": [1, 2]}}, "must be a number or a string"),
    ({"sweep": {"k/2": 1}}, "may only use"),
    ("ablation", "must be a mapping"),
])
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
