"""What the SLURM profile submits for a HEST-1k-shaped plan: a dry run, so no SLURM is needed.

Per-sample CPU steps are bundled into group jobs (workflow/profiles/slurm: 8 samples' tile + thumbnail, 16
samples' targets per submission); embed stays one GPU job per sample; train one job per head and fold; the
training-inputs index runs where Snakemake runs. The counts at HEST-1k scale are in docs/cluster.md.
"""

import math
import sys

import pytest
import yaml

from support.workflow import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import plan_scale  # noqa: E402  (the benchmark's HEST-1k-shaped placeholder folder and submission counter)

pytestmark = pytest.mark.pipeline
N_SAMPLES = 44  # 11 patients of 4 sections: not a multiple of either group size


def test_slurm_submissions_of_a_hest_shaped_plan(tmp_path):
    groups = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())["group-components"]
    config = plan_scale.write_config(tmp_path, plan_scale.make_hest_folder(tmp_path, N_SAMPLES))
    counts = plan_scale.slurm_submissions(config, tmp_path / "run")
    heads, folds = 6 + 3, 8  # config.yaml's heads and the three controls, the benchmark's group_kfold folds
    assert counts["rule embed"] == N_SAMPLES
    assert counts["group per_sample_prep"] == math.ceil(N_SAMPLES / groups["per_sample_prep"])
    assert counts["group per_sample_targets"] == math.ceil(N_SAMPLES / groups["per_sample_targets"])
    assert counts["rule train"] == heads * folds and counts["rule evaluate"] == heads
    assert counts["group report"] == 1
    assert "rule training_inputs" not in counts and "rule tile" not in counts and "rule targets" not in counts
    one_each = {"rule folds", "rule select_genes", "rule gene_semantics", "rule ceiling"}  # ceiling: per encoder
    assert {k for k, v in counts.items() if v == 1} - {"group report"} == one_each
