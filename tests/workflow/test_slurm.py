"""The demo pipeline through a real SLURM with the project's SLURM profile (workflow/profiles/slurm).

Run with `make test-slurm` (or GENEDML_TEST_SLURM=1 pytest tests/workflow/test_slurm.py) as root on Debian: it
installs slurm-wlm and munge with apt-get when they are missing, starts a one-node cluster in a temporary
folder (tests/slurm_node.py) and stops the daemons it started, by PID, at the end.

What the test changes from the profile, on the command line, and why:
- ``--slurm-status-command squeue``: this throw-away cluster has no accounting database, so ``sacct``
  cannot answer (the profile keeps the plugin's default, sacct, for real clusters);
- ``--slurm-init-seconds-before-status-checks 2``: the plugin waits 40 s before its first status query;
- ``--slurm-keep-successful-logs``: the test reads every job's SLURM log;
- ``--cores N`` (N = the node's CPUs): a group job asks SLURM for the sum of its members' threads, so a
  group of three samples would ask for more CPUs than this 2-CPU node has and wait forever.
The embed rule's GPU request (``gpu: 1`` -> ``sbatch --gpus=1``) is NOT overridden: the node advertises
one GPU as a generic resource backed by /dev/null, so SLURM really checks and allocates the request
(CUDA_VISIBLE_DEVICES is set in the job); the encoder itself runs on the CPU because there is no GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from support.job_log import GROUP_LINE, job_blocks, slurm_submissions
from support.slurm_node import OneNodeSlurm, SlurmUnavailable, ensure_installed
from support.workflow import BIN, REPO, snakemake, tiny_config

PROFILE = REPO / "workflow" / "profiles" / "slurm"
SAMPLES = [("S1", "PA"), ("S2", "PB"), ("S3", "PC")]  # three patients: the fewest leave-one-out folds need
TEST_FLAGS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
)


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("GENEDML_TEST_SLURM") != "1":
        pytest.skip(
            "real-SLURM test: run `make test-slurm` (sets GENEDML_TEST_SLURM=1; as root it apt-get "
            "installs slurm-wlm and munge and starts a one-node cluster)"
        )
    try:
        how = ensure_installed()
    except SlurmUnavailable as exc:
        pytest.skip(f"no SLURM: {exc}")
    root = Path(tempfile.mkdtemp(prefix="genedml-slurm-", dir="/tmp"))
    node = OneNodeSlurm(root, gpus=1)
    try:
        node.start()
    except SlurmUnavailable as exc:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"no SLURM: {exc}")
    except BaseException:
        node.stop()
        raise
    print(f"SLURM: {how}; one node {node.node}: {node.cpus} CPUs, {node.mem_mb} MB, 1 GRES gpu; state in {root}")
    yield node
    node.stop()
    shutil.rmtree(root, ignore_errors=True)


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm_pipeline")
    config = tiny_config(work, SAMPLES)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", str(cluster.conf))  # read by the sbatch/squeue that Snakemake calls
        # what a local run would execute, job by job; and how the profile bundles it into submissions
        local_plan = job_blocks(_output(snakemake(work, config, "-n")))
        profile_text = _output(snakemake(work, config, "-n", "--profile", str(PROFILE)))
        profile_plan = job_blocks(profile_text)
        group_jobs = len(GROUP_LINE.findall(profile_text))
        proc = snakemake(
            work, config, "--profile", str(PROFILE), *TEST_FLAGS, "--cores", str(cluster.cpus), check=False
        )
        jobs = {j["job_id"]: j for j in cluster.jobs_json()}
    text = proc.stdout + proc.stderr
    (work / "snakemake.log").write_text(text)
    assert proc.returncode == 0, f"SLURM run failed:\n{text[-5000:]}\n{cluster.log_tail()}"
    return work, local_plan, profile_plan, group_jobs, text, jobs


@pytest.mark.slurm
def test_every_non_local_job_ran_as_a_slurm_job(slurm_run):
    work, local_plan, profile_plan, group_jobs, text, jobs = slurm_run
    # the profile plans the same jobs as a local run; all but the local rules (Snakemake's target rule and
    # the training-inputs index, one small file) went to SLURM
    local_rules = {"all", "training_inputs"}
    assert {b.key for b in profile_plan} == {b.key for b in local_plan}
    assert {b.rule for b in job_blocks(text) if b.local} == local_rules
    expected = {b.key for b in profile_plan if b.rule not in local_rules}
    submissions = slurm_submissions(text)
    assert submissions, text[-3000:]
    ran_in_slurm = set()
    for _, slurm_id, log_path in submissions:
        assert jobs[slurm_id]["job_state"] == "COMPLETED", jobs[slurm_id]
        ran_in_slurm |= {b.key for b in job_blocks(Path(log_path).read_text())}
    assert ran_in_slurm == expected
    assert pd.read_csv(work / "results/metrics/summary.tsv", sep="\t")["mean"].notna().any()
    # small per-sample CPU jobs went in bundles: fewer submissions than jobs
    top_level = [b for b in profile_plan if b.group is None and b.rule not in local_rules]
    assert {"per_sample_prep", "per_sample_targets"} <= {b.group for b in profile_plan if b.group}
    assert len(submissions) == len(top_level) + group_jobs < len(expected)


@pytest.mark.slurm
def test_only_embed_asks_for_a_gpu(slurm_run):
    _, _, profile_plan, _, text, jobs = slurm_run
    by_comment = {}
    for _, slurm_id, _ in slurm_submissions(text):
        job = jobs[slurm_id]
        by_comment[job["comment"]] = job["tres_per_job"] + job["tres_per_node"]
    embeds = {c: t for c, t in by_comment.items() if c.startswith("rule_embed_")}
    assert len(embeds) == len(SAMPLES) and all(t == "gres:gpu:1" for t in embeds.values()), embeds
    assert not any("gpu" in t for c, t in by_comment.items() if c not in embeds), by_comment
    assert {b.rule for b in profile_plan if b.resource("gpu")} == {"embed"}


@pytest.mark.slurm
def test_gres_form_of_the_gpu_request(slurm_run, cluster):
    """The other spelling clusters use, `gres: "gpu:1"`: one embed job re-run through SLURM with it."""
    work, *_ = slurm_run
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    embed = {k: v for k, v in profile["set-resources"]["embed"].items() if k != "gpu"}
    # --set-resources on the command line replaces the profile's whole set-resources, so give embed's all
    args = [f"embed:{k}={v!r}" for k, v in {**embed, "gres": "gpu:1"}.items()]
    config = work / "config.yaml"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", str(cluster.conf))
        proc = snakemake(
            work,
            config,
            "--profile",
            str(PROFILE),
            *TEST_FLAGS,
            "--cores",
            str(cluster.cpus),
            "--set-resources",
            *args,
            "--forcerun",
            "embed",
            "--jobs",
            "1",
            "results/features/resnet18/S1.zarr",
            check=False,
        )
        jobs = {j["job_id"]: j for j in cluster.jobs_json()}
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    (submission,) = slurm_submissions(text)
    job = jobs[submission[1]]
    assert job["job_state"] == "COMPLETED" and job["tres_per_node"] == "gres:gpu:1" and not job["tres_per_job"]


# --- `genedml profile install`: no SLURM needed -----------------------------------------------------------


def test_profile_install_fills_in_the_site_settings_and_never_overwrites(tmp_path):
    from genedml.pipeline.profile import ProfileError, install_profile

    dest = install_profile("cluster", partition="compute", account="lab1", gpu_partition="gpu", config_dir=tmp_path)
    assert dest == tmp_path / "cluster"
    data = yaml.safe_load((dest / "config.yaml").read_text())
    source = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert data["default-resources"] == {
        **source["default-resources"],
        "slurm_partition": "compute",
        "slurm_account": "lab1",
    }
    assert data["set-resources"]["embed"] == {**source["set-resources"]["embed"], "slurm_partition": "gpu"}
    assert {k: v for k, v in data.items() if k not in ("default-resources", "set-resources")} == {
        k: v for k, v in source.items() if k not in ("default-resources", "set-resources")
    }

    (dest / "config.yaml").write_text("# my own edits\n")
    with pytest.raises(ProfileError, match="already exists"):
        install_profile("cluster", partition="other", config_dir=tmp_path)
    assert (dest / "config.yaml").read_text() == "# my own edits\n"
    with pytest.raises(ProfileError, match="not a SLURM name"):
        install_profile("cluster2", partition="a; rm -rf ~", config_dir=tmp_path)
    assert not (tmp_path / "cluster2").exists()

    # the command line, --force, and the generic-resource form of the GPU request
    proc = subprocess.run(
        [
            str(BIN / "genedml"),
            "profile",
            "install",
            "cluster",
            "--config-dir",
            str(tmp_path),
            "--gpu-form",
            "gres",
            "--force",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    embed = yaml.safe_load((dest / "config.yaml").read_text())["set-resources"]["embed"]
    assert embed["gres"] == "gpu:1" and "gpu" not in embed
    proc = subprocess.run(
        [str(BIN / "genedml"), "profile", "install", "cluster", "--config-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "--force" in proc.stderr


def test_installed_profile_works_by_name(tmp_path, monkeypatch):
    """`snakemake --profile cluster` finds the installed profile: partition everywhere, a GPU for embed only."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    proc = subprocess.run(
        [str(BIN / "genedml"), "profile", "install", "cluster", "--partition", "compute"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "xdg" / "snakemake" / "cluster" / "config.yaml").is_file()
    work = tmp_path / "work"
    work.mkdir()
    plan = job_blocks(_output(snakemake(work, tiny_config(work, SAMPLES), "-n", "--profile", "cluster")))
    submitted = [b for b in plan if b.rule != "all"]
    assert submitted and all(b.resource("slurm_partition") == "compute" for b in submitted)
    assert {b.rule for b in submitted if b.resource("gpu") == "1"} == {"embed"}
    assert {b.group for b in submitted} >= {"per_sample_prep", "per_sample_targets", None}
