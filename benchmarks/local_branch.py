"""What Gene-DML's local branch costs in training: the cached CLS token against all tokens under 8 views.

    python benchmarks/local_branch.py --her2st ../shared/data/her2st --train B4 C2 --test C3 C4

Converts the HER2ST sections (legacy ST layout) to pyramidal TIFFs, tiles them (224 px at native
resolution, grid neighbour mode), selects Gene-DML's 250 genes, builds the reference targets and embeds
every section twice with the same random-init encoder (a small ViT with UNI's architecture, 197 tokens):
one view without tokens, and 8 dihedral views with the token cache (``encoder.local_views: 8,
cache_local_tokens: true``). Then one fold (train on --train, test on --test, no validation: the last
epoch is kept) is fitted with a small Gene-DML head per configuration, each in its own process so that its
peak RSS is its own:

- ``cls``: the CLS embedding of the unflipped crop (``local_input: cls``), the one-view store;
- ``cls_views``: CLS, one random view per spot per epoch (``train_views: random``), the 8-view store;
- ``tokens_views``: all 197 tokens streamed from the store, random view per spot per epoch
  (``local_input: tokens``), the 8-view store.

Prints per configuration: PCC(A) on the test sections, seconds per epoch, fit seconds and peak RSS; then
seconds per epoch as a ratio of the first. Random-init features: the PCCs say whether the branch trains,
not what UNI would give. Timings on a shared machine swing: compare the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from common import report_rows

STORES = {
    "one_view": {"local_views": 1, "cache_local_tokens": False},
    "views8_tokens": {"local_views": 8, "cache_local_tokens": True},
}
CONFIGS = {
    "cls": ("one_view", {"local_input": "cls"}),
    "cls_views": ("views8_tokens", {"local_input": "cls", "train_views": "random"}),
    "tokens_views": ("views8_tokens", {"local_input": "tokens", "train_views": "random"}),
}


def prepare(a) -> dict:
    """Slides, geometries, targets and both feature stores of every section (kept in --work-dir)."""
    from genedml.bench import SMALL_UNI, _prepare_her2st
    from genedml.io.hest import SamplePaths
    from genedml.study.genes import GeneSpec, select_genes
    from genedml.study.targets import TargetSpec, build_sample_targets
    from genedml.tiles.embed import embed_sample
    from genedml.tiles.encoders import build_encoder
    from genedml.tiles.geometry import TileSpec, tile_sample

    work = a.work_dir
    hest = work / "her2st" / "hest"
    sections = a.train + a.test
    _prepare_her2st(a.her2st, sections, hest)
    paths = {s: SamplePaths.in_hest_dir(hest, s) for s in sections}
    genes, _ = select_genes({s: p.st for s, p in paths.items()}, GeneSpec.of(list="genedml:her2st_250"))
    spec = TileSpec.of(tile_px=224, target_mpp="native", neighbour_mode="grid")
    facts = {"genes": len(genes), "embed_s": {}}
    for store, settings in STORES.items():
        enc = build_encoder({**SMALL_UNI, **settings})
        t = time.perf_counter()
        for s in sections:
            out = work / "features" / store / f"{s}.zarr"
            targets = work / "targets" / f"{s}.h5ad"
            if not targets.exists():
                targets.parent.mkdir(parents=True, exist_ok=True)
                build_sample_targets(paths[s].st, s, genes, TargetSpec.of(), targets)
            if not out.exists():
                g = tile_sample(paths[s], spec, work / "tiles" / f"{s}.npz")
                embed_sample(g, enc, out, batch_size=64, num_workers=1, progress=False)
        facts["embed_s"][store] = round(time.perf_counter() - t, 1)
    return facts


def child(job: dict) -> dict:
    """One configuration in this process: load the fold, fit, predict; PCC(A), timings, peak RSS."""
    import numpy as np
    import torch

    from genedml.bench import _peak_rss_mb
    from genedml.evaluation.metrics import nanmean, pearson_per_gene
    from genedml.heads import head_class
    from genedml.heads.train import load_section

    torch.set_num_threads(job["threads"])
    work = Path(job["work_dir"])

    def section(s):
        return load_section(s, s[0], work / "features" / job["store"] / f"{s}.zarr", work / "targets" / f"{s}.h5ad")

    train, test = [section(s) for s in job["train"]], [section(s) for s in job["test"]]
    head = head_class("genedml")({"size": "small", "epochs": job["epochs"], **job["params"]}, seed=0)
    t = time.perf_counter()
    head.fit(train, [])
    fit_s = time.perf_counter() - t
    pcc = [nanmean(pearson_per_gene(s.targets, head.predict(s))) for s in test]
    epochs = [h["train_s"] for h in head.history]
    return {
        "train_spots": sum(s.n_spots for s in train),
        "test_spots": sum(s.n_spots for s in test),
        "local_tokens": head.dims["local_tokens"],
        "epochs": len(epochs),
        "s_per_epoch": round(float(np.mean(epochs)), 3),
        "fit_s": round(fit_s, 1),
        "test_PCC_A": round(float(np.mean(pcc)), 4),
        # VmHWM: ru_maxrss would carry the parent's peak across fork + exec
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--her2st", type=Path, default=Path("../shared/data/her2st"))
    ap.add_argument("--train", nargs="+", default=["B4", "C2"])
    ap.add_argument("--test", nargs="+", default=["C3", "C4"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--work-dir", type=Path, default=Path("results/bench/local_branch"))
    ap.add_argument("--out", type=Path, help="write the table as TSV here")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: one configuration, as JSON
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.child:
        print("RESULT " + json.dumps(child(json.loads(a.child))), flush=True)
        return

    t = time.perf_counter()
    facts = prepare(a)
    print(
        f"train {a.train}, test {a.test}; {facts['genes']} genes; prepared in {time.perf_counter() - t:.0f} s "
        f"(embedding: {facts['embed_s']}); {a.epochs} epochs, {a.threads} threads, {os.cpu_count()} CPUs"
    )
    rows = []
    for name in a.configs:
        store, params = CONFIGS[name]
        job = {
            "work_dir": str(a.work_dir),
            "store": store,
            "params": params,
            "train": a.train,
            "test": a.test,
            "epochs": a.epochs,
            "threads": a.threads,
        }
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True, env=env
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            raise SystemExit(f"configuration {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        rows.append({"config": name, "store": store, **json.loads(line[len("RESULT ") :])})
        print(rows[-1], flush=True)
    report_rows(rows, "s_per_epoch", "epoch_ratio", a.out)


if __name__ == "__main__":
    main()
