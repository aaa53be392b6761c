"""Peak memory and seconds per epoch of one training fold, on synthetic feature stores of a given size.

    .venv/bin/python benchmarks/fold_memory.py --spots 30655 --sections 68 --dim 1024 --head stnet
    .venv/bin/python benchmarks/fold_memory.py --spots 2048 --tokens --head gene_dml --epochs 1

Writes one real feature store per section with the package's own writer (``create_store`` / ``StoreLayout``,
float16, chunked as the embed stage chunks them; ``--mode centred | grid``, ``--tokens`` adds the 197-token
cache, ``--views`` the dihedral local views), the targets as ``h5ad`` and a fold table (all but 8 sections
train, 4 select, 4 are predicted), under ``--dir`` (reused when present). Then it runs ``train_fold`` (the
train stage's path: load the sections, fit, predict the test sections) in a child process and prints the
child's peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``), the loading seconds, seconds per epoch (wall)
and the child's CPU seconds (user + system, the whole run: on a shared machine less noisy than wall time).
``GENEDML_FEATURE_CACHE_MB`` sets the lazy reader's cache budget (``tiles.features.FEATURE_CACHE``).
The embeddings are random: they compress as badly as real float16 embeddings (about 1.1x), so reading
costs what it would; the accuracy means nothing. The default is STNet's dataset: 68 sections, 30,655 spots,
UNI width 1,024, 5 x 5 neighbours.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HEADS = {
    # small heads: the reading path is measured, not the model; stnet reads the neighbours (neighbour_mean)
    "stnet": {"type": "stnet", "hidden": 256, "features": ["local", "neighbour_mean"], "batch_size": 256},
    "gene_dml": {"type": "genedml", "size": "small"},
}
N_GENES = 250
N_TOKENS = 197


def store_dir(a) -> Path:
    tag = f"{a.mode}-n{a.spots}-s{a.sections}-d{a.dim}-t{int(a.tokens)}-v{a.views}"
    return a.dir / tag


def write_fold(a) -> Path:
    """The stores, targets and fold table (skipped when a complete set is there)."""
    import anndata as ad
    import pandas as pd

    from genedml.tiles.features import FORMAT_VERSION, StoreLayout, create_store

    root = store_dir(a)
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # a pool of random float16 that every array is cut from at random offsets: cheap to make, and it
    # compresses as badly as fresh noise (blosc compresses each block on its own)
    pool = rng.standard_normal(1 << 24, dtype=np.float32).astype(np.float16)

    def noise(*shape):
        size = int(np.prod(shape))
        out = np.empty(size, np.float16)
        step = 1 << 20
        for lo in range(0, size, step):
            n = min(step, size - lo)
            start = int(rng.integers(0, len(pool) - n))
            out[lo : lo + n] = pool[start : start + n]
        return out.reshape(shape)

    counts = np.full(a.sections, a.spots // a.sections)
    counts[: a.spots % a.sections] += 1
    t = 25
    rows = []
    t0 = time.perf_counter()
    for s, n in enumerate(counts):
        sample = f"S{s:03d}"
        side = int(np.ceil(np.sqrt(n)))
        rc = np.stack([np.arange(n) // side, np.arange(n) % side], 1).astype(np.int32)
        nodes = (side + 4) ** 2 if a.mode == "grid" else 0
        layout = StoreLayout(int(n), t, a.dim, a.mode, nodes, N_TOKENS if a.tokens else 0, n_views=a.views)
        attrs = {
            "genedml_features_version": FORMAT_VERSION,
            "sample": sample,
            "embed_dim": a.dim,
            "neighbour_mode": a.mode,
            "spots": int(n),
            "encoder": "synthetic",
            "local_view_names": [f"view{v}" for v in range(a.views)],
        }
        path = root / f"{sample}.zarr"
        group = create_store(path, layout, attrs)
        local = noise(n, a.dim)
        group["local"][:] = local
        if a.views > 1:
            views = noise(n, a.views, a.dim)
            views[:, 0] = local
            group["local_views"][:] = views
        dr, dc = np.divmod(np.arange(t), 5)
        if a.mode == "grid":
            index = (rc[:, :1] + dr) * (side + 4) + (rc[:, 1:] + dc)  # the lattice has a 2-tile margin
            group["grid_tiles"][:] = noise(nodes, a.dim)
            group["grid_tile_centres"][:] = np.stack(np.divmod(np.arange(nodes), side + 4), 1) * 100.0
            group["neighbour_index"][:] = index.astype(np.int32)
        else:
            block = layout.spot_rows
            for lo in range(0, n, block):  # a chunk of spots at a time, as the embed stage writes
                group["neighbour"][lo : lo + block] = noise(min(block, n - lo), t, a.dim)
        if a.tokens:
            block = layout.token_rows
            shape = (N_TOKENS, a.dim) if a.views == 1 else (a.views, N_TOKENS, a.dim)
            for lo in range(0, n, block):
                group["local_tokens"][lo : lo + block] = noise(min(block, n - lo), *shape)
        group["neighbour_mask"][:] = np.ones((n, t), bool)
        barcodes = np.array([f"{sample}-{i}" for i in range(n)])
        group["barcodes"][:] = barcodes
        group["spatial"][:] = rc[:, ::-1] * 100.0
        group["array_coords"][:] = rc
        group.attrs["complete"] = True
        # targets: a function of the local embedding (something to learn), in a shuffled spot order
        y = np.tanh(local[:, np.arange(N_GENES) % a.dim].astype(np.float32))
        y += rng.normal(0, 0.1, y.shape).astype(np.float32)
        order = rng.permutation(n)
        obs = pd.DataFrame(index=pd.Index(barcodes[order]))
        var = pd.DataFrame(index=pd.Index([f"g{i}" for i in range(N_GENES)]))
        ad.AnnData(X=y[order], obs=obs, var=var).write_h5ad(root / f"{sample}.h5ad")
        split = "test" if s < 4 else "val" if s < 8 else "train"
        rows.append({"sample": sample, "patient": f"P{s:03d}", "split": split, "fold": 0})
    pd.DataFrame(rows).to_csv(root / "folds.tsv", sep="\t", index=False)
    (root / "done").write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return root


def child(spec: dict) -> None:
    """Train the fold in this process (the child) and print its facts as JSON."""
    import logging

    import pandas as pd
    import torch

    from genedml.heads.train import train_fold

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(spec["threads"])
    root = Path(spec["root"])
    samples = pd.read_csv(root / "folds.tsv", sep="\t")["sample"].tolist()
    features = {s: root / f"{s}.zarr" for s in samples}
    targets = {s: root / f"{s}.h5ad" for s in samples}
    out = Path(spec["out"])
    t0 = time.perf_counter()
    train_fold(spec["head"], spec["cfg"], root / "folds.tsv", 0, features, targets, out)
    record = json.loads((out / "fold.json").read_text())
    import genedml.tiles.features as features

    cache = getattr(features, "FEATURE_CACHE", None)  # lazy reading (absent before it existed)
    history = pd.read_csv(out / "history.csv")
    print(
        json.dumps(
            {
                "load_s": record["load_s"],
                "s_per_epoch": round(float(history["train_s"].mean()), 2),
                "epochs": len(history),
                "total_s": round(time.perf_counter() - t0, 1),
                "chunks_decoded": None if cache is None else cache.decoded,
                "cache_mb": None if cache is None else round(cache.budget / 2**20),
            }
        )
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spots", type=int, default=30655)
    ap.add_argument("--sections", type=int, default=68)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--mode", choices=("centred", "grid"), default="centred")
    ap.add_argument("--tokens", action="store_true", help="write the 197-token cache")
    ap.add_argument("--views", type=int, default=1, help="dihedral local views (1, 4 or 8)")
    ap.add_argument("--head", choices=sorted(HEADS), default="stnet")
    ap.add_argument("--params", type=json.loads, default={}, help="JSON settings over the head's")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/genedml_fold_memory"))
    ap.add_argument("--child", type=json.loads, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child)
    t0 = time.perf_counter()
    root = write_fold(a)
    print(f"stores: {root} ({time.perf_counter() - t0:.0f} s)", flush=True)
    cfg = {**HEADS[a.head], "epochs": a.epochs, "patience": a.epochs, **a.params}
    out = root.parent / f"out-{a.head}-{time.strftime('%H%M%S')}"
    spec = {"root": str(root), "head": a.head, "cfg": cfg, "out": str(out), "threads": a.threads}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        sys.exit(f"the training child failed:\n{proc.stderr[-4000:]}")
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_gb = usage.ru_maxrss / 2**20  # KiB on Linux
    row = {
        "head": a.head,
        "mode": a.mode,
        "spots": a.spots,
        "sections": a.sections,
        "dim": a.dim,
        "tokens": a.tokens,
        "views": a.views,
        "peak_rss_gb": round(peak_gb, 2),
        **facts,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # the child's, whole run: less swayed by load
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
