"""How long Snakemake takes to plan a HEST-1k-sized run, before a single job runs.

Builds a HEST-1k-shaped folder of placeholder files (``wsis/``, ``st/``, ``metadata/`` of N samples, four
sections a patient), a sample sheet and a config (``group_kfold`` 8 folds, the demo's six heads), then times
``snakemake -n`` at each size, twice in the same working directory (the first run, and again: what every later
dry run, rerun or ``--report`` pays), with the child's peak RSS, and prints the sizes side by side with the
repeated run's time per sample as a ratio to the smallest size, measured in this run. ``--profile`` writes a cProfile of the
largest size's dry run (``python -m cProfile`` around Snakemake) and prints its top entries; ``--slurm``
counts what the SLURM profile would submit at each size (group jobs bundle small per-sample jobs).

    python benchmarks/plan_scale.py --sizes 100 400 1229
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import report_rows

ROOT = Path(__file__).resolve().parents[1]
SECTIONS_PER_PATIENT = 4


def make_hest_folder(root: Path, n: int) -> Path:
    """``n`` placeholder samples in the HEST-1k layout and their sample sheet (``root/samples.tsv``)."""
    for sub in ("wsis", "st", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = ["sample\tpatient\tdataset"]
    for i in range(n):
        sample = f"S{i:04d}"
        for path in (root / "wsis" / f"{sample}.tif", root / "st" / f"{sample}.h5ad"):
            path.touch()
        (root / "metadata" / f"{sample}.json").write_text("{}")
        rows.append(f"{sample}\tP{i // SECTIONS_PER_PATIENT:04d}\tcustom")
    (root / "samples.tsv").write_text("\n".join(rows) + "\n")
    return root / "samples.tsv"


def write_config(root: Path, sheet: Path) -> Path:
    config = {
        "samples": str(sheet),
        "dataset": None,
        "data": {"source": "hest", "hest_dir": str(root)},
        "folds": {"scheme": "group_kfold", "n_folds": 8},
    }
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return path


def dry_run(config: Path, workdir: Path, profile: Path | None = None) -> dict:
    """One ``snakemake -n`` in a fresh working directory: seconds, the child's peak RSS and the job count."""
    snakemake = [sys.executable, "-m", "snakemake"]
    if profile:
        snakemake = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "snakemake"]
    cmd = [*snakemake, "-n", "-q", "rules", "--snakefile", str(ROOT / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(ROOT / "config.yaml"), str(config), "--cores", "1"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"snakemake -n failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    jobs = 0
    for line in done.stdout.splitlines():  # "total   <n>" in the -q rules summary
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            jobs = int(parts[1])
    return {"seconds": round(seconds, 2), "peak_rss_gb": round(max(peak, before) / 2**20, 2), "jobs": jobs}


def local_rules() -> set[str]:
    """Rules that run where Snakemake runs (``localrule: True`` in workflow/rules, and ``all``): never submitted."""
    local = {"all"}
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        rule = None
        for line in smk.read_text().splitlines():
            if line.startswith("rule "):
                rule = line.split()[1].rstrip(":")
            elif line.strip() == "localrule: True" and rule:
                local.add(rule)
    return local


def slurm_submissions(config: Path, workdir: Path) -> dict:
    """What ``snakemake --profile workflow/profiles/slurm`` would submit for this config (a dry run, so no
    SLURM is needed): ``{"group <name>" | "rule <name>": submissions}``. A group job is one submission
    however many member jobs it bundles; local rules are none."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(ROOT / "config.yaml"), str(config)]
    cmd += ["--profile", str(ROOT / "workflow" / "profiles" / "slurm")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"snakemake -n --profile slurm failed:\n{done.stderr[-3000:]}")
    local, counts, in_group = local_rules(), {}, False
    for line in (done.stdout + done.stderr).splitlines():
        if "Group job " in line:  # "[date] Group job NAME (jobs in lexicogr. order):" then its member rules
            name = line.split("Group job ", 1)[1].split()[0]
            counts[f"group {name}"] = counts.get(f"group {name}", 0) + 1
            in_group = True
        elif line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1].rstrip(":")
            if not in_group and rule not in local:
                counts[f"rule {rule}"] = counts.get(f"rule {rule}", 0) + 1
        elif line.startswith("["):  # a new top-level entry: the group's member list has ended
            in_group = False
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[100, 400, 1229])
    ap.add_argument("--work", type=Path, default=ROOT / "results" / "bench" / "plan_scale")
    ap.add_argument("--profile", action="store_true", help="cProfile the largest size's dry run")
    ap.add_argument("--out", type=Path, help="save the table as TSV")
    ap.add_argument("--slurm", action="store_true", help="also count the SLURM profile's submissions at each size")
    a = ap.parse_args()
    rows, submissions = [], {}
    for n in sorted(a.sizes):
        root = a.work / f"hest_{n}"
        config = write_config(root, make_hest_folder(root, n))
        profile = root / "dry_run.prof" if a.profile and n == max(a.sizes) else None
        result = dry_run(config, root / "run", profile)
        # the same dry run again: what every later invocation (rerun, --report, another -n) pays
        again = dry_run(config, root / "run")["seconds"]
        row = {"samples": n, **result, "seconds_again": again, "s_per_100_samples": round(again / n * 100, 2)}
        rows.append(row)
        print(f"{n} samples: {row}", file=sys.stderr, flush=True)
        if a.slurm:
            submissions[n] = slurm_submissions(config, root / "run_slurm")
    report_rows(rows, "s_per_100_samples", "per_sample_vs_smallest", a.out)
    if submissions:
        import pandas as pd

        table = pd.DataFrame(submissions).fillna(0).astype(int)
        table.loc["total"] = table.sum()
        print("\nSLURM submissions (workflow/profiles/slurm) by rule or group, per sample count:")
        print(table.to_string())
    if a.profile:
        import pstats

        pstats.Stats(str(a.work / f"hest_{max(a.sizes)}" / "dry_run.prof")).sort_stats("cumulative").print_stats(40)
    print(f"machine: {os.cpu_count()} CPU(s)")


if __name__ == "__main__":
    main()
