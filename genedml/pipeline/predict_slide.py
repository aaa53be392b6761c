"""``genedml predict-slide``: one bare slide through a finished run's pipeline, with one command.

The slide goes through the same rules as a config's ``slides`` list (tissue mask and virtual spots, the
run's tile and embed steps with its encoder and tile spec, every fold model of each head, OOD scores,
maps), so it resumes, logs and caches exactly as they do. This writes a one-row slides TSV and an overlay
config under ``results/slides/requests/``, then runs Snakemake on the run's own config files with that
overlay, asking only for the slide's outputs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from genedml.errors import InputError

REPO = Path(__file__).resolve().parents[2]
SAMPLE_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


def slide_outputs(sample: str, heads: list[str]) -> list[str]:
    """The files a slide's run makes: per head the predictions and maps; the QC image and OOD scores."""
    files = [f"results/predict/{h}/{sample}.h5ad" for h in heads]
    files += [f"results/slides/maps/{h}/{sample}.png" for h in heads]
    return files + [f"results/slides/qc/{sample}.png", f"results/ood/{sample}.json"]


def request(slide, sample: str | None, mpp: float | None, heads: list[str] | None, workdir) -> tuple[Path, str]:
    """Write the one-slide TSV and overlay config for ``slide``; return (overlay path, sample id)."""
    slide = Path(slide).resolve()
    if not slide.exists():
        raise InputError("slide not found", sample, slide)
    sample = sample or re.sub(r"[^A-Za-z0-9_.\-]", "_", slide.stem)
    if not SAMPLE_ID.match(sample):
        raise InputError("a sample id may hold letters, digits and . _ - only", sample, slide)
    folder = Path(workdir) / "results" / "slides" / "requests"
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / f"{sample}.tsv"
    table.write_text("sample\tslide\tmpp\n" + f"{sample}\t{slide}\t{'' if mpp is None else mpp}\n")
    overlay = folder / f"{sample}.yaml"
    slides = {"list": str(table.resolve())}
    if heads:
        slides["heads"] = list(heads)
    overlay.write_text(yaml.safe_dump({"slides": slides}, sort_keys=False))
    return overlay, sample


def run_heads(configfiles: list[str], heads: list[str] | None) -> list[str]:
    """The heads the slide is predicted with: those asked for, else every head the run's config runs."""
    from genedml.pipeline.plan import select_heads
    from genedml.pipeline.schema import merge

    config: dict = {}
    for path in configfiles:
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    names = list(select_heads(config.get("heads") or {}, config.get("run_heads")))
    unknown = sorted(set(heads or []) - set(names))
    if unknown:
        raise InputError(f"heads {unknown} are not heads of the run ({', '.join(names)})")
    return list(heads or names)


def predict_slide(
    slide,
    configfiles: list[str],
    sample: str | None = None,
    mpp: float | None = None,
    heads: list[str] | None = None,
    cores: int = 1,
    workdir=".",
    extra: list[str] | None = None,
) -> int:
    """Run the slide through the pipeline of the run in ``workdir`` (its config files); return the exit code."""
    configfiles = [str(Path(c).resolve()) for c in configfiles]
    use = run_heads(configfiles, heads)
    overlay, sample = request(slide, sample, mpp, heads, workdir)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", *configfiles, str(overlay), "--cores", str(cores), *(extra or [])]
    cmd += slide_outputs(sample, use)
    print("running:", " ".join(cmd), flush=True)
    code = subprocess.call(cmd)
    if code == 0:
        print(
            f"{sample}: predictions in results/predict/<head>/{sample}.h5ad; tissue mask and spots in "
            f"results/slides/qc/{sample}.png; maps in results/slides/maps/<head>/{sample}.png",
            flush=True,
        )
    return code
