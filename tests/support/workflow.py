"""Helpers of the workflow tests: where things are, small configs, and a Snakemake runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = (REPO / ".." / "shared").resolve()
SHARED_DATA = SHARED / "data"
BIN = Path(sys.executable).parent


def need_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (the team's shared data folder beside this checkout)")
    return path


def write_config(workdir: Path, config: dict, **overrides) -> Path:
    """Write ``config`` to workdir/config.yaml after applying overrides (dicts merge one level deep)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tiny_config(workdir: Path, samples: list[tuple[str, str]], **overrides) -> Path:
    """A fast configuration for pipeline tests, written into ``workdir``; returns its path."""
    sheet = workdir / "samples.tsv"
    sheet.write_text("sample\tpatient\tdataset\n" + "".join(f"{s}\t{p}\tdemo\n" for s, p in samples))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["samples"] = str(sheet)
    config["demo"].update({"width_um": 900, "height_um": 700, "n_genes": 60})
    config["tiles"].update({"tile_px": 32, "target_mpp": 2.0})
    config["encoder"].update({"batch_size": 256})
    config["genes"]["n_top"] = 40
    config["report"] = {"pcc_h_genes": 20}
    # only the cheap ridge head from config.yaml: the neural heads have their own pipeline tests
    # (tests/workflow/test_heads_pipeline.py); pass heads=... to add some
    config["heads"] = {"ridge": config["heads"]["ridge"]}
    # no controls: the tests that need them (the encoder x head matrix, tests/workflow/test_report.py) ask
    config["controls"] = []
    return write_config(workdir, config, **overrides)


def snakemake_command(workdir: Path, configfile: Path, *args: str) -> tuple[list[str], dict]:
    """The command and environment that run the repository's Snakefile in ``workdir`` (outputs under
    workdir/results), with this venv's tools first on PATH so that rules find `genedml`."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]
    return cmd, env


def snakemake(workdir: Path, configfile: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile with ``workdir`` as working directory (outputs under workdir/results)."""
    cmd, env = snakemake_command(workdir, configfile, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    text = proc.stdout + proc.stderr
    jobs: dict[str, int] = {}
    if "Nothing to be done" in text:
        return jobs
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs


PIPELINE_SAMPLES = [("S1", "PA"), ("S2", "PA"), ("S3", "PB"), ("S4", "PB"), ("S5", "PC"), ("S6", "PC")]
