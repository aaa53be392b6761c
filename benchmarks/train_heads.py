"""Train heads on one fold of a finished pipeline run and compare their cost and accuracy in one run.

    python benchmarks/train_heads.py --results RUN/results --fold 3 --heads ridge stnet triplex genedml

Reads ``folds/folds.tsv``, ``features/{encoder}/*.zarr`` and ``targets/*.h5ad`` of the run (the sections are
loaded once), fits each head on the fold (model selection on the fold's validation sections, as the
pipeline), and prints per head: fit seconds, epochs, seconds per epoch per 1,000 training spots, peak
GPU memory, PCC(A) and MSE on the test sections; then every head's fit time as a ratio of the first's.
Timings on a shared machine swing: compare the ratios, measured in the same process. ``--params`` takes a
JSON object per head name to override settings, e.g. ``--params '{"genedml": {"size": "her2st"}}'``; a head
name that is not a type takes its type from there. ``--spot-images DIR`` (the run's ``spot_images/``) attaches
the spot images, for heads with ``spot_encoder: resnet18``: the trainable ResNet-18 against the frozen branch

    python benchmarks/train_heads.py --results results --fold 3 --spot-images results/spot_images \
        --heads triplex triplex_px --params '{"triplex_px": {"type": "triplex", "spot_encoder": "resnet18"}}'
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from common import report_rows

DEFAULTS = {
    "ridge": {"type": "ridge", "alphas": [1, 10, 100, 1000, 10000], "pca": 64, "features": ["local", "neighbour_mean"]},
    "stnet": {"type": "stnet"},
    "triplex": {"type": "triplex"},
    "genedml": {"type": "genedml"},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--heads", nargs="+", default=["ridge", "genedml"])
    ap.add_argument("--params", type=json.loads, default={})
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--spot-images", type=Path, help="the run's spot_images/ folder (heads with a ResNet on pixels)")
    ap.add_argument("--out", type=Path, help="write the table as TSV here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from genedml.evaluation.metrics import nanmean, pearson_per_gene
    from genedml.heads import head_class
    from genedml.heads.train import load_section
    from genedml.study.folds import read_folds

    if a.threads:
        torch.set_num_threads(a.threads)
    folds = read_folds(a.results / "folds/folds.tsv")
    plan = folds[folds["fold"] == a.fold]
    store = next((a.results / "features").iterdir())
    t0 = time.perf_counter()
    split = {
        k: [
            load_section(
                r.sample,
                r.patient,
                store / f"{r.sample}.zarr",
                a.results / f"targets/{r.sample}.h5ad",
                a.spot_images / f"{r.sample}.zarr" if a.spot_images else None,
            )
            for r in plan[plan["split"] == k].itertuples()
        ]
        for k in ("train", "val", "test")
    }
    print(
        f"fold {a.fold}: train {[s.sample for s in split['train']]} ({sum(s.n_spots for s in split['train'])} spots), "
        f"val {[s.sample for s in split['val']]}, test {[s.sample for s in split['test']]}; "
        f"{len(split['train'][0].genes)} genes; features {store.name}, loaded in {time.perf_counter() - t0:.1f} s; "
        f"torch threads {torch.get_num_threads()}"
    )
    rows = []
    for name in a.heads:
        cfg = {**DEFAULTS.get(name, {"type": name}), **a.params.get(name, {})}
        kind = cfg.pop("type")
        head = head_class(kind)(cfg, seed=0)
        t = time.perf_counter()
        facts = head.fit(split["train"], split["val"])
        fit_s = time.perf_counter() - t
        pcc, mse = [], []
        for s in split["test"]:
            p = head.predict(s)
            pcc.append(nanmean(pearson_per_gene(s.targets, p)))
            mse.append(float(((s.targets - p) ** 2).mean()))
        rows.append(
            {
                "head": name,
                "fit_s": round(fit_s, 1),
                "epochs": facts.get("epochs_run"),
                "best_epoch": facts.get("best_epoch"),
                "s_per_epoch": round(float(np.mean([h["train_s"] for h in head.history])), 2)
                if getattr(head, "history", None)
                else None,
                "s_per_epoch_per_1k_spots": facts.get("s_per_epoch_per_1k_spots"),
                "pixel_bytes_per_spot": (facts.get("spot_encoder") or {}).get("bytes_per_spot"),
                "n_params": facts.get("n_params"),
                "peak_gpu_mem_mb": facts.get("peak_gpu_mem_mb"),
                "val_pcc": round(float(facts.get("best_selection_pcc", facts.get("val_pcc", np.nan)) or np.nan), 4),
                "test_PCC_A": round(float(np.mean(pcc)), 4),
                "test_MSE": round(float(np.mean(mse)), 4),
            }
        )
        print(rows[-1], flush=True)
    report_rows(rows, "fit_s", "fit_ratio", a.out)


if __name__ == "__main__":
    main()
