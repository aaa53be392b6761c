"""Bare slides of two sizes through ``genedml predict-slide``: spots/s end to end and peak memory per stage.

    python benchmarks/predict_slide.py --workdir /tmp/bench-slides --sizes-mm 3 6

Makes a small demo run (the demo's six sections, a ridge head; skipped when ``--workdir`` already holds
one), writes one synthetic H&E-like pyramidal TIFF per size (pink tissue with nuclei-like texture filling
most of a square of that side, 0.5 µm/px), predicts each with ``genedml predict-slide`` (tissue mask,
virtual Visium spots, tile, embed, fold ensemble, OOD, maps), and prints per slide and stage the seconds and
peak resident memory that Snakemake's ``benchmark:`` files recorded, then spots/s end to end and each
slide's figures as ratios of the smaller's. Both slides run in one invocation, on the same machine state.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("virtual_spots", "tile", "embed", "ood_score", "predict", "slide_maps")


def synthetic_slide(path: Path, side_mm: float, mpp: float = 0.5, seed: int = 0) -> None:
    """A square slide of ``side_mm`` whose middle 80% is tissue-like (pink, textured), the rest glass."""
    from genedml.io.tiff import write_pyramidal_tiff

    n = int(round(side_mm * 1000 / mpp))
    rng = np.random.default_rng(seed)
    image = np.full((n, n, 3), 242, np.uint8)
    lo, hi = int(0.1 * n), int(0.9 * n)
    block = 512
    for y in range(lo, hi, block):
        for x in range(lo, hi, block):
            h, w = min(block, hi - y), min(block, hi - x)
            tile = np.array([215, 150, 190], float) + rng.normal(0, 12, (h, w, 1))
            tile[rng.random((h, w)) < 0.02] = [90, 60, 140]  # nuclei-like dots
            image[y : y + h, x : x + w] = np.clip(tile, 0, 255).astype(np.uint8)
    write_pyramidal_tiff(path, image, mpp)


def demo_run(workdir: Path) -> Path:
    """A tiny trained run in ``workdir`` (demo sections, ridge), reused when it exists."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.workflow import PIPELINE_SAMPLES, tiny_config

    config = workdir / "config.yaml"
    if not (workdir / "results" / "metrics" / "summary.tsv").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        config = tiny_config(workdir, PIPELINE_SAMPLES)
        cfg = yaml.safe_load(config.read_text())
        cfg["tiles"]["neighbour_mode"] = "grid"  # neighbour tiles shared: the mode a whole slide wants
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
        subprocess.run([*cmd, "--configfile", str(config), "--cores", "2", "-q"], check=True)
    return config


def stage_figures(workdir: Path, sample: str) -> dict:
    """{stage: (seconds, peak RSS MB)} from the run's benchmark files of ``sample``."""
    out = {}
    for stage in STAGES:
        files = sorted((workdir / "results" / "benchmarks" / stage).rglob(f"{sample}.tsv"))
        if not files:
            continue
        rows = [next(csv.DictReader(open(f), delimiter="\t")) for f in files]
        out[stage] = (sum(float(r["s"]) for r in rows), max(float(r["max_rss"]) for r in rows))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--sizes-mm", type=float, nargs="+", default=[3.0, 6.0])
    ap.add_argument("--cores", type=int, default=2)
    a = ap.parse_args(argv)
    workdir = a.workdir.resolve()
    config = demo_run(workdir)
    rows = []
    for side in a.sizes_mm:
        sample = f"synthetic_{side:g}mm".replace(".", "p")
        slide = workdir / f"{sample}.tif"
        if not slide.exists():
            synthetic_slide(slide, side)
        subprocess.run(
            [sys.executable, "-m", "genedml", "predict-slide", "--slide", str(slide), "--sample", sample]
            + ["--configfile", str(config), "--cores", str(a.cores), "--directory", str(workdir)],
            check=True,
        )
        meta = json.loads((workdir / "results" / "slides" / "metadata" / f"{sample}.json").read_text())
        stages = stage_figures(workdir, sample)
        total = sum(s for s, _ in stages.values())
        rows.append({"slide": sample, "spots": meta["n_spots"], "stages": stages, "total_s": total})
    print(f"\n{'slide':>18} {'spots':>7} " + " ".join(f"{s:>22}" for s in STAGES) + f" {'spots/s':>8}")
    for r in rows:
        cells = [
            f"{r['stages'][s][0]:8.1f} s {r['stages'][s][1]:7.0f} MB" if s in r["stages"] else f"{'-':>22}"
            for s in STAGES
        ]
        print(f"{r['slide']:>18} {r['spots']:>7} " + " ".join(cells) + f" {r['spots'] / r['total_s']:8.1f}")
    base = rows[0]
    for r in rows[1:]:
        peak = max(m for _, m in r["stages"].values()) / max(m for _, m in base["stages"].values())
        print(
            f"{r['slide']} vs {base['slide']}: {r['spots'] / base['spots']:.2f}x spots, "
            f"{r['total_s'] / base['total_s']:.2f}x time, {peak:.2f}x peak memory of the largest stage"
        )
    (workdir / "predict_slide_bench.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
