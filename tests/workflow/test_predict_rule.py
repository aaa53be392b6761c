"""The predict rule in Snakemake's plan: sections without counts go through the training sections' stages."""

from __future__ import annotations

import pytest

from support.workflow import planned_jobs, snakemake, tiny_config

pytestmark = pytest.mark.pipeline


def test_predict_rule_plans_new_sections_through_the_same_tiling_and_embedding(demo_hest, tmp_path):
    """Dry run: a section listed under `predict` is tiled and embedded like the training sections, then
    every fold model of each chosen head predicts it; nothing is planned for it without the section."""
    samples = [("T1", "PA"), ("T2", "PA"), ("T3", "PB"), ("T4", "PB"), ("T5", "PC"), ("T6", "PC")]
    config = tiny_config(
        tmp_path, samples, predict={"samples": ["S1", "S2"], "hest_dir": str(demo_hest), "heads": ["ridge"]}
    )
    jobs = planned_jobs(snakemake(tmp_path, config, "-n", "--cores", "1"))
    assert jobs["predict"] == 2
    assert jobs["tile"] == len(samples) + 2 and jobs["embed"] == len(samples) + 2
    assert jobs["demo_data"] == len(samples)  # the new sections are read from predict.hest_dir, not generated
    clash = tiny_config(tmp_path, samples, predict={"samples": ["T1"], "hest_dir": str(demo_hest)})
    proc = snakemake(tmp_path, clash, "-n", check=False)
    assert proc.returncode != 0 and "also training samples" in proc.stdout + proc.stderr
