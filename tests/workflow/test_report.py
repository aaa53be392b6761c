"""The report of real runs: Table 1 beside the published numbers, the standalone HTML page in
a real browser (Debian's headless Chromium), `snakemake --report`, and scanpy on the exported sections."""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from support.workflow import PIPELINE_SAMPLES, REPO, need_shared, planned_jobs, snakemake

# ---------------------------------------------------------------------------------------------------------
# a real browser
# ---------------------------------------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# a page on the same origin that loads the report in a frame and writes what the browser saw into its DOM
CHECK_PAGE = b"""<!DOCTYPE html><html><body>
<iframe id="report" src="/index.html" style="width:1300px;height:900px"></iframe>
<script>
document.getElementById('report').addEventListener('load', function () {
  var d = this.contentDocument, images = [], tables = {};
  for (var i of d.images) images.push({src: i.getAttribute('src'), width: i.naturalWidth, complete: i.complete});
  d.querySelectorAll('table[id]').forEach(function (t) { tables[t.id] = t.tBodies[0].rows.length; });
  var out = document.createElement('pre');
  out.id = 'genedml-check';
  out.textContent = JSON.stringify({title: d.title, images: images, tables: tables,
                                    thisRun: d.querySelectorAll('#table1 tr.this-run').length,
                                    published: d.querySelectorAll('#table1 tr.published').length});
  document.body.appendChild(out);
});
</script></body></html>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (`apt-get install -y chromium`; .ci/run installs it)")
    return exe


class _ReportHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/__check__.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(CHECK_PAGE)))
            self.end_headers()
            self.wfile.write(CHECK_PAGE)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(root):
    """Serve ``root`` on a free local port (python's http.server); yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_ReportHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _run_chromium(args, profile):
    exe = chromium()
    proc = subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def browse_report(site, tmp_path) -> tuple[dict, object]:
    """Load ``site``/index.html in headless Chromium: what the page showed, and a screenshot's path."""
    with serve(site) as url:
        dom = _run_chromium(
            ["--virtual-time-budget=15000", "--dump-dom", f"{url}/__check__.html"], tmp_path / "profile-dom"
        ).stdout
        shot = tmp_path / "report_screenshot.png"
        _run_chromium(
            ["--window-size=1300,2400", f"--screenshot={shot}", f"{url}/index.html"], tmp_path / "profile-shot"
        )
    found = re.search(r'<pre id="genedml-check">(.*?)</pre>', dom, re.S)
    assert found, "the page never finished loading in Chromium:\n" + dom[-2000:]
    return json.loads(html.unescape(found.group(1))), shot


def check_screenshot(shot):
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1300, 2400)
        grey = np.asarray(im.convert("L"), dtype=float)
    assert grey.std() > 5  # not a blank page


# ---------------------------------------------------------------------------------------------------------
# the demo run, plus a second head declared as an ablation row and a sweep point
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_run(demo_pipeline, tmp_path_factory):
    """A copy of the session's demo run with a second ridge head (PCA 8) declared as ablation / sweep rows;
    the first head gets `report:` keys too, which must not retrain it."""
    src, config = demo_pipeline
    work = tmp_path_factory.mktemp("report_run") / "work"
    shutil.copytree(src, work, symlinks=True)
    cfg = yaml.safe_load(config.read_text())
    base = cfg["heads"]["ridge"]
    cfg["heads"] = {
        "ridge": {
            **base,
            "report": {"label": "ridge (PCA 64)", "table1": True, "ablation": "PCA 64", "sweep": ["pca"]},
        },
        "ridge-pca8": {**base, "pca": 8, "report": {"ablation": "PCA 8", "sweep": ["pca"]}},
    }
    path = work / "report_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = planned_jobs(snakemake(work, path, "-n"))
    snakemake(work, path, "--cores", "2")
    return work, path, plan


@pytest.mark.pipeline
def test_report_keys_never_retrain_a_head(report_run):
    _, _, plan = report_run
    assert plan["train"] == 3 and plan["evaluate"] == 1 and plan["figures"] == 1  # the new head only
    assert "embed" not in plan and "thumbnail" not in plan


@pytest.mark.pipeline
def test_demo_report_files(demo_pipeline):
    work, _ = demo_pipeline
    site = work / "results/report"
    images = sorted(p.relative_to(site).as_posix() for p in (site / "figures").rglob("*.*"))
    # the per-gene ceiling of the one encoder, the encoder x head heat map, the PCC distribution, the maps
    assert images == [
        "figures/ceiling_resnet18.png",
        "figures/matrix_pcc_a.png",
        "figures/pcc_per_gene.png",
    ] + [f"figures/ridge/spatial_{s}.jpg" for s, _ in PIPELINE_SAMPLES]
    t1 = pd.read_csv(site / "tables/table1.tsv", sep="\t")
    assert (t1["Source"] == "this run").sum() == 1 and t1["Source"].str.startswith("published").sum() == 30
    scores = json.loads((work / "results/figures/ridge/spatial_pcc.json").read_text())
    assert scores["genes"] == ["GNAS", "FASN", "ERBB2"]  # the default genes, all among the demo's
    # the PCC in a map's title is the section's per-gene PCC of the metrics table
    per_gene_section = pd.read_csv(work / "results/metrics/ridge/per_gene_section.tsv", sep="\t").set_index("gene")
    for s, _ in PIPELINE_SAMPLES:
        for entry in scores["sections"][s]:
            assert entry["pcc"] == pytest.approx(per_gene_section.loc[entry["gene"], s], abs=1e-5)
    md = (work / "results/report.md").read_text()
    assert "](report/figures/ridge/spatial_S1.jpg)" in md and (site / "index.md").exists()


@pytest.mark.pipeline
@pytest.mark.parametrize("which", ["demo", "demo_with_ablation"])
def test_report_renders_in_chromium(which, demo_pipeline, report_run, tmp_path):
    work = demo_pipeline[0] if which == "demo" else report_run[0]
    heads = ["ridge"] if which == "demo" else ["ridge", "ridge-pca8"]
    seen, shot = browse_report(work / "results/report", tmp_path)
    n_samples = len(PIPELINE_SAMPLES)
    # the PCC distribution, the maps, the heat map and the ceiling plot (+ the sweep plot)
    expected_images = 1 + n_samples * len(heads) + 2 + (1 if which != "demo" else 0)
    assert len(seen["images"]) == expected_images
    broken = [i["src"] for i in seen["images"] if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    tables = seen["tables"]
    assert seen["published"] == 30 and seen["thisRun"] == 1  # ridge-pca8 is no Table 1 row (ablation only)
    assert tables["table1"] == 31 and tables["metrics"] == len(heads)
    for head in heads:
        assert tables[f"per-section-{head}"] == n_samples
    assert tables["folds"] == 3 and tables["protocol"] == len(heads) and tables["times"] >= 5
    if which != "demo":
        assert tables["ablation"] == 2 and tables["sweep-pca"] == 2
    else:
        assert "ablation" not in tables
    check_screenshot(shot)
    shutil.copy2(shot, work / "results" / f"report_screenshot_{which}.png")


@pytest.mark.pipeline
def test_snakemake_report_html(report_run):
    work, config, _ = report_run
    out = work / "results/snakemake_report.html"
    snakemake(work, config, "--report", str(out))
    text = out.read_text()
    for name in ("S1.jpg", "pcc_per_gene.png", "sweep_pca.png", "per_section.tsv", "per_gene.tsv", "report.md"):
        assert name in text, f"{name} missing from the Snakemake report"


@pytest.mark.pipeline
def test_exports_draw_with_scanpy(demo_pipeline):
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    work, _ = demo_pipeline
    adata = ad.read_h5ad(work / "results/predictions/ridge/S3.h5ad")
    lib = adata.uns["spatial"]["S3"]
    scalef = lib["scalefactors"]["tissue_hires_scalef"]
    image = lib["images"]["hires"]
    assert image.dtype == np.uint8 and image.ndim == 3
    axes = sc.pl.spatial(adata, color="GNAS", layer="truth", library_id="S3", show=False)
    ax = axes[0]
    assert ax.images, "scanpy drew no H&E image"
    # spots land inside the image, where obsm['spatial'] * scale factor puts them
    xy = adata.obsm["spatial"] * scalef
    assert (xy >= 0).all() and (xy[:, 0] < image.shape[1]).all() and (xy[:, 1] < image.shape[0]).all()
    boxes = [path.get_extents() for path in ax.collections[0].get_paths()]  # scanpy draws one circle per spot
    centres = np.array([[(b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2] for b in boxes])
    in_order = lambda v: v[np.lexsort((v[:, 1], v[:, 0]))]  # noqa: E731
    np.testing.assert_allclose(in_order(centres), in_order(xy), atol=1e-6)
    diameter = lib["scalefactors"]["spot_diameter_fullres"] * scalef
    assert boxes[0].x1 - boxes[0].x0 == pytest.approx(diameter, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------
# an encoder x head matrix from the demo run's cache: a second encoder, a head under both protocols, a head
# with two seeds, and the controls
# ---------------------------------------------------------------------------------------------------------

SECOND_ENCODER = {"name": "resnet18b", "timm_name": "resnet18", "allow_random_init": True, "init_seed": 1}
COMPARISON_TABLES = ("matrix", "intervals", "paired-tests", "optimism-gap", "seed-spread", "controls")


@pytest.fixture(scope="module")
def comparison_run(demo_pipeline, tmp_path_factory):
    """A copy of the session's demo run (resnet18 features of six sections) with a second encoder, the ridge
    head under both protocols, a second ridge head with two seeds on the first encoder (PCA's randomised
    solver takes the seed), and two controls."""
    src, config = demo_pipeline
    work = tmp_path_factory.mktemp("comparison_run") / "work"
    shutil.copytree(src, work, symlinks=True)
    cfg = yaml.safe_load(config.read_text())
    cfg["encoders"] = [cfg["encoder"], {**SECOND_ENCODER, "batch_size": cfg["encoder"]["batch_size"]}]
    cfg["controls"] = ["mean", "shuffled"]
    ridge = cfg["heads"]["ridge"]
    seeded = {**ridge, "pca": 16, "seeds": [0, 1], "encoders": ["resnet18"]}
    cfg["heads"] = {"ridge": {**ridge, "protocol": ["honest", "reference"]}, "ridge_pca16": seeded}
    path = work / "comparison_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = job_blocks_of(snakemake(work, path, "-n"))
    snakemake(work, path, "--cores", "2")
    return work, path, plan


def job_blocks_of(proc) -> list:
    from support.job_log import job_blocks

    return [b for b in job_blocks(proc.stdout + proc.stderr) if b.rule != "all"]


@pytest.mark.pipeline
def test_a_second_encoder_embeds_only_itself(comparison_run):
    """The first encoder's features are the demo run's, reused; only the new encoder embeds."""
    _, _, plan = comparison_run
    embeds = [b.wildcards for b in plan if b.rule == "embed"]
    assert len(embeds) == len(PIPELINE_SAMPLES) and all("encoder=resnet18b" in w for w in embeds)
    assert {"tile", "thumbnail", "targets", "demo_data"}.isdisjoint(b.rule for b in plan)


@pytest.mark.pipeline
def test_changing_one_encoder_re_embeds_and_retrains_only_its_heads(comparison_run, tmp_path):
    work, path, _ = comparison_run
    cfg = yaml.safe_load(path.read_text())
    cfg["encoders"][1]["init_seed"] = 2
    changed = work / "changed_encoder.yaml"
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = job_blocks_of(snakemake(work, changed, "-n"))
    embeds = [b.wildcards for b in plan if b.rule == "embed"]
    assert len(embeds) == len(PIPELINE_SAMPLES) and all("encoder=resnet18b" in w for w in embeds)
    trained = {b.wildcards.split(",")[0] for b in plan if b.rule == "train"}
    assert trained == {
        "head=ridge@resnet18b@honest",
        "head=ridge@resnet18b@reference",
        "head=control_mean@resnet18b",
        "head=control_shuffled@resnet18b",
    }


@pytest.mark.pipeline
def test_comparison_tables(comparison_run):
    work, _, _ = comparison_run
    out = work / "results/comparison"
    matrix = pd.read_csv(out / "matrix.tsv", sep="\t")
    # every (encoder, head) the run trained, the controls included; seeds averaged into one cell
    cells = set(zip(matrix["encoder"], matrix["head"]))
    assert cells == {
        ("resnet18", "ridge"),
        ("resnet18b", "ridge"),
        ("resnet18", "ridge_pca16"),
        ("resnet18", "control_mean"),
        ("resnet18b", "control_mean"),
        ("resnet18", "control_shuffled"),
        ("resnet18b", "control_shuffled"),
    }
    assert matrix.loc[matrix["head"] == "ridge_pca16", "n_seeds"].item() == 2
    assert matrix.loc[matrix["head"] == "control_mean", "estimate"].isna().all()  # a constant has no PCC
    # the optimism gap is reference minus honest on the same sections, as the two heads' metrics say
    gap = pd.read_csv(out / "optimism_gap.tsv", sep="\t")
    row = gap[(gap["encoder"] == "resnet18b") & (gap["metric"] == "PCC_A")].iloc[0]
    per = {
        p: pd.read_csv(work / f"results/metrics/ridge@resnet18b@{p}/per_section.tsv", sep="\t")["PCC_A"].mean()
        for p in ("honest", "reference")
    }
    # (the tables hold six significant digits)
    assert row["honest"] == pytest.approx(per["honest"], rel=1e-5)
    assert row["reference"] == pytest.approx(per["reference"], rel=1e-5)
    assert row["gap"] == pytest.approx(per["reference"] - per["honest"], rel=1e-4, abs=1e-6)
    assert row["gap_ci_low"] <= row["gap"] <= row["gap_ci_high"]
    intervals = pd.read_csv(out / "intervals.tsv", sep="\t")
    ok = intervals["estimate"].notna()
    assert (intervals.loc[ok, "ci_low"] <= intervals.loc[ok, "estimate"] + 1e-12).all()
    assert (intervals.loc[ok, "n_patients"] == 3).all()
    seeds = pd.read_csv(out / "seeds.tsv", sep="\t")
    assert set(seeds["head"]) == {"ridge_pca16"} and (seeds["n_seeds"] == 2).all()
    tests = pd.read_csv(out / "paired_tests.tsv", sep="\t")
    between = tests[(tests["comparison"] == "encoders") & (tests["head_a"] == "ridge")]
    assert set(between["family"]) == {"genes", "sections"}
    assert (between.loc[between["family"] == "genes", "n"] > 0).all()


@pytest.mark.pipeline
def test_comparison_report_renders_in_chromium(comparison_run, tmp_path):
    work, _, _ = comparison_run
    seen, shot = browse_report(work / "results/report", tmp_path)
    srcs = [i["src"] for i in seen["images"]]
    assert "figures/matrix_pcc_a.png" in srcs
    assert {"figures/ceiling_resnet18.png", "figures/ceiling_resnet18b.png"} <= set(srcs)
    broken = [i["src"] for i in seen["images"] if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    tables = seen["tables"]
    for table in COMPARISON_TABLES:
        assert tables.get(table, 0) > 0, f"table {table} is missing or empty"
    matrix = pd.read_csv(work / "results/comparison/matrix.tsv", sep="\t")
    assert tables["matrix"] == len(matrix)
    # ridge on two encoders under both protocols: one optimism-gap row per encoder and metric
    assert tables["optimism-gap"] == 2 * 4
    # the run heads are rows of the metrics table; the controls have no spatial maps
    assert tables["metrics"] == 2 * 2 + 2 + 2 * 2
    # maps of one run head per head and encoder (the first protocol and seed), none of the controls
    mapped = {s.split("/")[1] for s in srcs if "/spatial_" in s}
    assert mapped == {"ridge@resnet18@honest", "ridge@resnet18b@honest", "ridge_pca16@resnet18@seed0"}
    check_screenshot(shot)


# ---------------------------------------------------------------------------------------------------------
# the real HER2ST sections (../shared/data), when the project's config for them exists
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.pipeline
@pytest.mark.shared_data
@pytest.mark.slow
def test_her2st_report_renders_in_chromium(tmp_path):
    """Runs workflow/configs/her2st-shared.yaml end to end (3 min on 2 idle cores) and browses its report;
    GENEDML_SLOW_TESTS=0 skips it. GENEDML_HER2ST_WORKDIR keeps the run in that folder, so a second call
    only browses the report."""
    if os.environ.get("GENEDML_SLOW_TESTS") == "0":
        pytest.skip("GENEDML_SLOW_TESTS=0: skips embedding the four real HER2ST slides (~3 min on 2 idle cores)")
    config_path = REPO / "workflow/configs/her2st-shared.yaml"
    if not config_path.exists():
        pytest.skip(f"{config_path} is absent")
    her2st = need_shared("her2st")
    chromium()
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    for key, value in yaml.safe_load(config_path.read_text()).items():  # config.yaml, then the HER2ST file
        cfg[key] = (
            {**cfg[key], **value}
            if isinstance(value, dict) and isinstance(cfg.get(key), dict) and key != "heads"
            else value
        )
    cfg["data"]["legacy_st_dir"] = str(her2st)  # the config's paths are relative to the repository root
    if cfg["folds"].get("table"):
        cfg["folds"]["table"] = str(REPO / cfg["folds"]["table"])
    work = Path(os.environ.get("GENEDML_HER2ST_WORKDIR") or tmp_path / "her2st")
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake(work, path, "--cores", "2")
    seen, shot = browse_report(work / "results/report", tmp_path)
    sections = ["B4", "C2", "C3", "C4"]
    # the per-gene PCC plot, the heads' maps (controls have none), the matrix and the per-gene ceiling
    assert len(seen["images"]) == 1 + len(sections) * len(cfg["heads"]) + 2
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
    assert seen["published"] == 30 and seen["thisRun"] >= len(cfg["heads"])
    for head in cfg["heads"]:
        assert seen["tables"][f"per-section-{head}"] == len(sections)
    check_screenshot(shot)
    shutil.copy2(shot, work / "results" / "report_screenshot.png")
