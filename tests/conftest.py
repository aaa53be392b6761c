"""Shared fixtures: small real inputs (demo sections, pyramidal TIFFs) and a Snakemake runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.workflow import PIPELINE_SAMPLES, snakemake, tiny_config


@pytest.fixture(scope="module")
def one_thread():
    """Tiny torch models: one thread is as fast as two and avoids OpenMP spin-waiting on a busy 2-core
    machine. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_hest(tmp_path_factory) -> Path:
    """Four small synthetic sections (two patients) in the HEST-1k layout."""
    from genedml.io.demo import DemoSpec, make_section

    root = tmp_path_factory.mktemp("demo_hest")
    for sample, patient in [("S1", "PA"), ("S2", "PA"), ("S3", "PB"), ("S4", "PB")]:
        make_section(sample, patient, root, DemoSpec.of(width_um=900, height_um=700, n_genes=60))
    return root


@pytest.fixture(scope="session")
def demo_pipeline(tmp_path_factory):
    """One tiny demo run of the whole pipeline, shared (read-only) by test_pipeline.py and test_report.py.

    Returns (workdir, configfile). Tests that change the run must work on a copy of the workdir."""
    work = tmp_path_factory.mktemp("pipeline")
    config = tiny_config(work, PIPELINE_SAMPLES)
    snakemake(work, config, "--cores", "2")
    return work, config


@pytest.fixture
def copy_tree():
    def _copy(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        return dst

    return _copy
