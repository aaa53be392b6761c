"""The neural baselines (dkan, bleep, stnet, triplex with its trainable ResNet-18 on the spot images) run per
fold through the pipeline."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from support.workflow import planned_jobs, snakemake, tiny_config

pytestmark = pytest.mark.pipeline
SAMPLES = [("S1", "PA"), ("S2", "PB"), ("S3", "PC")]
SMALL = {"epochs": 8, "patience": 8, "batch_size": 64, "lr": 1e-3}
HEADS = {
    "stnet": {"type": "stnet", "hidden": 32, **SMALL},
    "bleep": {"type": "bleep", "dim": 32, "k": 10, **SMALL},
    "dkan": {"type": "dkan", "dim": 16, "heads": 2, "clip_dim": 8, "ff_mult": 1, **SMALL},
    # the only head that reads pixels: rule spot_images runs for it alone
    "triplex_pixels": {
        "type": "triplex",
        "size": "small",
        "encoder_dim": 16,
        "spot_encoder": "resnet18",
        **SMALL,
        "epochs": 2,
    },
}
SPOT_PX = 64


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("heads")
    config = tiny_config(work, SAMPLES, heads=HEADS)
    data = yaml.safe_load(config.read_text())
    data["heads"] = HEADS  # replace, not merge, the default heads
    data["spot_images"] = {"px": SPOT_PX}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    # one torch thread per job: tiny models, and a busy 2-core machine makes OpenMP threads spin-wait
    snakemake(work, config, "--cores", "2", "--set-threads", "train=1", "--", "results/metrics/summary.tsv")
    return work, config


def test_every_head_is_a_row_of_the_summary(run):
    work, _ = run
    summary = pd.read_csv(work / "results/metrics/summary.tsv", sep="\t")
    pcc = summary[summary["metric"] == "PCC_A"].set_index("head")
    assert set(pcc.index) == set(HEADS)
    assert (pcc["n_folds"] == len(SAMPLES)).all() and np.isfinite(pcc["mean"]).all()


def test_gene_semantics_are_made_once_and_travel_with_the_dkan_model(run):
    work, _ = run
    genes = pd.read_csv(work / "results/genes/genes.tsv", sep="\t")["gene"].tolist()
    with np.load(work / "results/genes/semantics.npz") as data:
        assert list(data["genes"]) == genes and data["embeddings"].shape == (len(genes), 384)
    facts = json.loads((work / "results/heads/dkan/fold0/fold.json").read_text())
    assert facts["fit"]["gene_semantics"]["file"] == "results/genes/semantics.npz"
    assert facts["fit"]["gene_semantics"]["model"] == "minilm"
    assert (work / "results/heads/dkan/fold0/history.csv").exists()
    bleep = json.loads((work / "results/heads/bleep/fold0/fold.json").read_text())
    assert bleep["fit"]["reference_spots"] > 0


def test_changing_heads_or_gene_texts_retrains_only_what_depends_on_them(run):
    work, config = run
    data = yaml.safe_load(config.read_text())
    data["heads"]["dkan"]["distill_lambda"] = 0.5
    changed = work / "dkan.yaml"
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    plan = planned_jobs(snakemake(work, changed, "-n", "results/metrics/summary.tsv"))
    assert plan.get("train") == len(SAMPLES) and "gene_semantics" not in plan and "embed" not in plan
    data = yaml.safe_load(config.read_text())
    table = work / "descriptions.tsv"
    table.write_text("gene\tdescription\nCOL1A1\tfibrillar collagen of the stroma\n")
    data["gene_semantics"] = {"descriptions": str(table)}
    described = work / "described.yaml"
    described.write_text(yaml.safe_dump(data, sort_keys=False))
    plan = planned_jobs(snakemake(work, described, "-n", "results/metrics/summary.tsv"))
    assert plan.get("gene_semantics") == 1 and plan.get("train") == len(SAMPLES)  # dkan's folds only
    assert "embed" not in plan and "targets" not in plan


def test_spot_images_are_made_once_per_sample_for_the_pixel_head_only(run):
    work, config = run
    for sample, _ in SAMPLES:
        assert (work / f"results/spot_images/{sample}.zarr").is_dir()
        assert "spot images" in (work / f"results/logs/spot_images/{sample}.log").read_text()
    facts = json.loads((work / "results/heads/triplex_pixels/fold0/fold.json").read_text())
    assert facts["fit"]["spot_encoder"]["px"] == SPOT_PX
    assert facts["fit"]["spot_encoder"]["weights_sha256"] == "random-init"
    data = yaml.safe_load(config.read_text())
    data["spot_images"] = {"px": 32}
    changed = work / "px.yaml"
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    plan = planned_jobs(snakemake(work, changed, "-n", "results/metrics/summary.tsv"))
    assert plan.get("spot_images") == len(SAMPLES) and plan.get("train") == len(SAMPLES)  # triplex_pixels only
    assert "embed" not in plan
    data = yaml.safe_load(config.read_text())
    data["run_heads"] = [h for h in HEADS if h != "triplex_pixels"]  # heads merge into config.yaml's
    frozen = work / "frozen.yaml"
    frozen.write_text(yaml.safe_dump(data, sort_keys=False))
    plan = planned_jobs(snakemake(work, frozen, "-n", "--forceall", "results/metrics/summary.tsv"))
    assert "spot_images" not in plan and plan.get("embed") == len(SAMPLES)
