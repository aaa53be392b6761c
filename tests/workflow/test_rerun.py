"""What a rerun does after a change, read from Snakemake's own dry-run plan; and a killed run resumed.

One tiny run (three patients, a local resnet18 weights file) is the reference. Plans are compared job by
job (rule and wildcards), so "embed for every sample" means every sample's embed and nothing upstream.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from support.job_log import job_blocks
from support.workflow import REPO, snakemake, snakemake_command, tiny_config

pytestmark = pytest.mark.pipeline
SAMPLES = [("S1", "PA"), ("S2", "PB"), ("S3", "PC")]
# the results users compare; the report and figures are left out to keep the test small
TARGETS = ["results/metrics/summary.tsv", "results/predictions/ridge"]  # the folder of every section's .h5ad
# everything up to the features: a head or run-time change must plan none of these
UPSTREAM = {
    "demo_data",
    "import_st",
    "tile",
    "thumbnail",
    "embed",
    "select_genes",
    "targets",
    "folds",
    "gene_semantics",
}


def write_weights(path: Path, seed: int) -> Path:
    """A real resnet18 state dict (random init: no download here) as a local weights file."""
    import torch

    from genedml.compat import import_timm

    torch.manual_seed(seed)
    model = import_timm().create_model("resnet18", pretrained=False, num_classes=0)
    torch.save(model.state_dict(), path)
    return path


def make_config(work: Path, weights: Path, **overrides) -> Path:
    return tiny_config(work, SAMPLES, encoder={"weights": str(weights), "allow_random_init": False}, **overrides)


def plan(work: Path, config: Path, *extra: str) -> list:
    proc = snakemake(work, config, "-n", *extra, *TARGETS)
    return [b for b in job_blocks(proc.stdout + proc.stderr) if b.rule != "all"]


def variant(work: Path, config: Path, label: str, section: str, changes: dict) -> Path:
    data = yaml.safe_load(config.read_text())
    data[section] = {**data[section], **changes}
    path = work / f"{label}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def rules(blocks) -> dict[str, int]:
    counts: dict[str, int] = {}
    for b in blocks:
        counts[b.rule] = counts.get(b.rule, 0) + 1
    return counts


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = tmp_path_factory.mktemp("rerun_reference")
    config = make_config(work, write_weights(work / "resnet18.pt", seed=1))
    snakemake(work, config, "--cores", "2", *TARGETS)
    return work, config


def test_nothing_changed_plans_nothing(reference):
    assert plan(*reference) == []


def test_head_change_retrains_without_reembedding(reference):
    work, config = reference
    heads = yaml.safe_load(config.read_text())["heads"]
    changed = variant(work, config, "head", "heads", {"ridge": {**heads["ridge"], "alphas": [3.0, 30.0]}})
    jobs = plan(work, changed)
    counts = rules(jobs)
    assert not UPSTREAM & set(counts), counts
    assert counts["train"] == len(SAMPLES) and counts["evaluate"] == 1 and counts["summarize"] == 1


@pytest.mark.parametrize("change", ["name", "precision", "weights_path", "weights_file_replaced"])
def test_encoder_change_reembeds_every_sample_and_keeps_tiles(reference, change, tmp_path):
    work, config = reference
    weights = Path(yaml.safe_load(config.read_text())["encoder"]["weights"])
    if change == "name":  # another architecture: no weights file fits it, so random init
        changed = variant(
            work, config, "enc", "encoder", {"name": "resnet34", "weights": None, "allow_random_init": True}
        )
    elif change == "precision":
        changed = variant(work, config, "precision", "encoder", {"precision": "bf16"})
    elif change == "weights_path":
        changed = variant(work, config, "wpath", "encoder", {"weights": str(write_weights(tmp_path / "v2.pt", 2))})
    else:  # same path, new content (a user downloads a new checkpoint over the old one)
        changed = config
        original, stat = weights.read_bytes(), weights.stat()
    try:
        if change == "weights_file_replaced":
            write_weights(weights, seed=3)
        jobs = plan(work, changed)
    finally:
        if change == "weights_file_replaced":
            weights.write_bytes(original)
            os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    embedded = sorted(b.wildcards for b in jobs if b.rule == "embed")
    encoder = "resnet34" if change == "name" else "resnet18"
    assert embedded == [f"encoder={encoder}, sample={s}" for s, _ in SAMPLES]
    assert not {"demo_data", "tile", "thumbnail", "select_genes", "targets", "folds"} & set(rules(jobs))
    assert rules(jobs)["train"] == len(SAMPLES)


def test_tiling_change_retiles_and_reembeds(reference):
    work, config = reference
    counts = rules(plan(work, variant(work, config, "grid", "tiles", {"neighbour_mode": "grid"})))
    assert counts["tile"] == counts["embed"] == len(SAMPLES)
    assert not {"demo_data", "targets", "select_genes"} & set(counts)
    counts = rules(plan(work, variant(work, config, "tok", "encoder", {"cache_local_tokens": True})))
    assert counts["embed"] == len(SAMPLES) and "tile" not in counts


def test_runtime_knobs_plan_nothing(reference):
    work, config = reference
    knobs = variant(work, config, "knobs", "encoder", {"batch_size": 7, "num_workers": 1, "device": "cpu"})
    assert plan(work, knobs) == []
    # and the profile's run-time settings neither (SLURM profile: retries, groups, GPU request)
    assert plan(work, config, "--profile", str(REPO / "workflow/profiles/slurm")) == []


def test_adding_a_sample_prepares_only_that_sample(reference):
    work, config = reference
    sheet = work / "samples_more.tsv"
    sheet.write_text((work / "samples.tsv").read_text() + "S4\tPD\tdemo\n")
    data = yaml.safe_load(config.read_text())
    data["samples"] = str(sheet)
    more = work / "more.yaml"
    more.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = snakemake(work, more, "-n", *TARGETS)
    jobs = [b for b in job_blocks(proc.stdout + proc.stderr) if b.rule != "all"]
    for rule in ("demo_data", "tile", "embed"):
        assert [b.wildcards.split("sample=")[1] for b in jobs if b.rule == rule] == ["S4"], rule
    assert rules(jobs)["train"] == 4  # a fourth patient: four leave-one-patient-out folds


def test_memory_grows_with_each_attempt(reference):
    """--retries resubmits a failed job with attempt + 1; memory-hungry rules then ask for more."""
    work, config = reference
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["retries"] >= 1
    mem = {}
    for attempt in (1, 2):
        proc = snakemake(work, config, "-n", "--forcerun", "embed", "train", "--attempt", str(attempt), *TARGETS)
        for b in job_blocks(proc.stdout + proc.stderr):
            mem.setdefault((b.rule, attempt), int(b.resource("mem_mb")))
    for rule in ("embed", "train", "evaluate"):
        assert mem[(rule, 2)] == 2 * mem[(rule, 1)], (rule, mem)
    assert mem[("summarize", 2)] == mem[("summarize", 1)]


def running_outputs(work: Path) -> set[str]:
    """Outputs of the jobs Snakemake is running (it marks them incomplete until the job succeeds)."""
    markers = work / ".snakemake" / "incomplete"
    if not markers.is_dir():
        return set()
    return {base64.urlsafe_b64decode(m.name).decode() for m in markers.iterdir() if not m.name.startswith("@")}


def finished_stores(work: Path) -> set[str]:
    """Feature stores whose embed job Snakemake has seen finish."""
    features = work / "results/features/resnet18"
    if not features.is_dir():
        return set()
    running = {Path(p).name for p in running_outputs(work)}
    return {p.name for p in features.glob("*.zarr") if not p.name.startswith(".") and p.name not in running}


def _wait_for(predicate, timeout_s: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended ({proc.returncode}) before it could be killed")
        time.sleep(0.2)
    raise AssertionError(f"nothing to kill after {timeout_s} s")


def test_killed_run_resumes_to_identical_results(reference, tmp_path):
    ref_work, ref_config = reference
    work = tmp_path / "killed"
    work.mkdir()
    weights = shutil.copy2(ref_work / "resnet18.pt", work / "resnet18.pt")  # same bytes, own path
    config = make_config(work, Path(weights))
    cmd, env = snakemake_command(work, config, "--cores", "2", *TARGETS)
    log = open(work / "killed-run.log", "w")
    # its own session, so that the kill reaches snakemake and the jobs it is running, and nothing else
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        # kill once a feature store is finished and another job is running (its outputs marked incomplete)
        features = work / "results/features/resnet18"
        _wait_for(lambda: finished_stores(work) and running_outputs(work), 600, proc)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        log.close()
    assert not (work / "results/metrics/summary.tsv").exists() and running_outputs(work)
    finished = {name: (features / name).stat().st_mtime_ns for name in finished_stores(work)}

    # a kill leaves Snakemake's lock behind: the documented recovery is --unlock, then --rerun-incomplete
    snakemake(work, config, "--unlock", *TARGETS)
    snakemake(work, config, "--cores", "2", "--rerun-incomplete", *TARGETS)

    for name, mtime in finished.items():  # finished work is kept, not redone
        assert (features / name).stat().st_mtime_ns == mtime, name
    ours = pd.read_csv(work / "results/metrics/summary.tsv", sep="\t")
    theirs = pd.read_csv(ref_work / "results/metrics/summary.tsv", sep="\t")
    pd.testing.assert_frame_equal(ours, theirs)
    for sample, _ in SAMPLES:
        a = ad.read_h5ad(work / f"results/predictions/ridge/{sample}.h5ad")
        b = ad.read_h5ad(ref_work / f"results/predictions/ridge/{sample}.h5ad")
        assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
        np.testing.assert_array_equal(a.layers["prediction"], b.layers["prediction"])
    assert plan(work, config) == []
