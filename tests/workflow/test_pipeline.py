"""The Snakemake pipeline end to end on a tiny demo, and what a rerun plans after a config change."""

import json
import shutil
import subprocess

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from support.workflow import PIPELINE_SAMPLES, REPO

pytestmark = pytest.mark.pipeline
SAMPLES = PIPELINE_SAMPLES


@pytest.fixture(scope="module")
def run(demo_pipeline):
    return demo_pipeline  # one run for the session (conftest), also read by test_report.py


def test_summary_table_and_report(run):
    work, _ = run
    summary = pd.read_csv(work / "results/metrics/summary.tsv", sep="\t")
    assert {"head", "metric", "mean", "std"} <= set(summary.columns)
    assert {"PCC_A", "PCC_H", "MSE", "MAE"} <= set(summary["metric"])
    ridge = summary[summary["head"] == "ridge"].set_index("metric")
    assert ridge.loc["PCC_A", "n_folds"] == 3
    # the demo's expression follows its images: a working pipeline shows clearly positive correlation
    assert ridge.loc["PCC_A", "mean"] > 0.3
    assert ridge.loc["PCC_H", "mean"] >= ridge.loc["PCC_A", "mean"]
    text = (work / "results/report.md").read_text()
    assert "| ridge |" in text and "reference" in text and "inner validation" in text


def test_every_rule_wrote_a_log_and_a_feature_store(run):
    work, _ = run
    logs = {p.relative_to(work / "results/logs").parts[0] for p in (work / "results/logs").rglob("*.log")}
    assert logs >= {
        "demo_data",
        "tile",
        "embed",
        "targets",
        "select_genes.log",
        "folds.log",
        "train",
        "evaluate",
        "summarize.log",
        "thumbnail",
        "figures",
        "figures_overview.log",
        "report_markdown.log",
    }
    store = zarr.open_group(str(work / "results/features/resnet18/S1.zarr"), mode="r")
    assert store.attrs["complete"] and store.attrs["weights_sha256"] == "random-init"
    assert store["neighbour"].shape[1:] == (25, 512)


def test_predictions_open_in_scanpy_layout(run):
    work, _ = run
    pred = ad.read_h5ad(work / "results/predictions/ridge/S3.h5ad")
    truth = ad.read_h5ad(work / "results/targets/S3.h5ad")
    assert pred.shape == truth.shape and list(pred.var_names) == list(truth.var_names)
    np.testing.assert_allclose(pred.layers["truth"], truth.X, rtol=1e-6)
    np.testing.assert_allclose(pred.obsm["spatial"], truth.obsm["spatial"])
    assert "prediction" in pred.layers and (pred.obs["sample"] == "S3").all()
    facts = json.loads((work / f"results/heads/ridge/fold{int(pred.obs['fold'].iloc[0])}/fold.json").read_text())
    assert facts["test"] == ["S3", "S4"] and facts["val"] and not set(facts["val"]) & {"S3", "S4"}


def test_scrambled_features_predict_nothing(run):
    """Control: the same head on features shuffled across spots loses the signal."""
    from genedml.evaluation.metrics import nanmean, pearson_per_gene
    from genedml.heads.ridge import RidgeHead
    from genedml.heads.train import load_section

    work, config = run
    cfg = yaml.safe_load(config.read_text())["heads"]["ridge"]
    secs = {
        s: load_section(s, p, work / f"results/features/resnet18/{s}.zarr", work / f"results/targets/{s}.h5ad")
        for s, p in SAMPLES
    }
    rng = np.random.default_rng(0)
    for s in secs.values():
        perm = rng.permutation(s.n_spots)
        s.features.local = s.features.local[perm]
        s.features.neighbour = s.features.neighbour[perm]
    head = RidgeHead(cfg)
    head.fit([secs["S1"], secs["S2"]], [secs["S3"]])
    pcc = nanmean([nanmean(pearson_per_gene(secs[t].targets, head.predict(secs[t]))) for t in ("S5", "S6")])
    assert pcc < 0.15


def test_dry_run_and_lint_from_a_fresh_checkout(tmp_path):
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    clone = tmp_path / "clone"
    for f in files:
        if (REPO / f).is_file():
            (clone / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, clone / f)
    bin_dir = REPO / ".venv" / "bin"
    exe = shutil.which("snakemake") or str(bin_dir / "snakemake")
    for args in (["-n"], ["--lint"]):
        proc = subprocess.run([exe, *args], cwd=clone, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (clone / "results").exists()
