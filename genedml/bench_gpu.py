"""``genedml bench gpu``: what a GPU gives genedml, measured in one run and printed as one table.

Rows:
- ``embed centred`` / ``embed grid``: the UNI architecture (timm ViT-L/16 with UNI's kwargs, random-init:
  the speed is the weights') embedding a generated Visium-size slide end to end through ``embed_sample``
  (slide reads in DataLoader workers, upload, forward, Zarr store), tiles/s, beside ``forward``: the same
  model's forward alone on synthetic uint8 tiles already on the device, same batch size and precision. The
  ratio end to end / forward says how much of the GPU the pipeline keeps busy (goal >= 0.8); TFLOP/s and the
  fraction of the GPU's dense bf16 peak follow from the architecture's FLOPs per tile.
- ``gene-dml <N> spots``: the Gene-DML head (her2st size) trained through ``TorchHead.fit`` on synthetic
  sections at UNI width (1024) with 250 genes: seconds per epoch and peak memory (GPU: allocated by torch).

It imports neither Snakemake nor the CLI, so ``python -m genedml.bench_gpu`` runs on a GPU node that has
torch, timm, numpy, scipy, h5py and scikit-learn plus the few wheels ``make gpu-wheels`` fetches
(``benchmarks/gpu.sh`` installs them offline). ``--device cpu --smoke`` shrinks everything to check the
code path in seconds. Nothing is estimated: every number in the table was measured in this run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), by a substring of torch.cuda.get_device_name;
# first match wins, so variants whose peak differs come before their family (None: unknown)
PEAK_BF16_TFLOPS = (
    ("H200 NVL", None),
    ("H200", 989.0),
    ("H100 PCIe", None),
    ("H100 NVL", None),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)

# the smoke run's ViT: UNI's kwargs with two blocks and a narrow width (timm's own VisionTransformer kwargs)
SMOKE_VIT = {"embed_dim": 64, "depth": 2, "num_heads": 4}
TILES = {"tile_px": 224, "target_mpp": 0.5, "grid": 5}  # HEST's crops: 112 µm at 0.5 µm/px
PITCH_UM = 100.0  # Visium's centre-to-centre spot distance
UNI_WIDTH = 1024
MODES = ("centred", "grid")

HELP = """\
UNI-architecture embedding end to end vs the model's pure forward, and the Gene-DML head's epoch time and
peak memory, on this machine's accelerator; a table on stdout and JSON in --out.

  genedml bench gpu                          # on a GPU: 6.5 x 6.5 mm Visium-size slide, heads at 1k and 10k spots
  genedml bench gpu --device cpu --smoke     # seconds on a CPU: tiny slide, 2-block narrow ViT, 1 epoch
  benchmarks/gpu.sh                          # the same on an offline GPU node (installs gpu-wheels/ first)
"""


def peak_tflops(device_name: str, given: float | None = None) -> float | None:
    """The dense bf16 peak of ``device_name`` from the table (``given`` wins); None when unknown."""
    if given:
        return float(given)
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def vit_flops_per_tile(model, tile_px: int) -> float:
    """Forward FLOPs (2 per multiply-add) of a timm ViT on one tile, from its layers: every Linear of the
    blocks on every token, attention's two (tokens x tokens x width) products per block, the patch
    embedding. LayerNorms, softmax and GELU are left out (<1%). UNI at 224 px: 2 x 61.6 G."""
    from torch import nn

    ph, pw = model.patch_embed.patch_size
    patches = (tile_px // ph) * (tile_px // pw)
    tokens = patches + int(getattr(model, "num_prefix_tokens", 1))
    width = int(model.embed_dim)
    linear = sum(m.in_features * m.out_features for m in model.blocks.modules() if isinstance(m, nn.Linear))
    attention = len(model.blocks) * 2 * tokens * tokens * width
    proj = model.patch_embed.proj
    patch_embed = patches * proj.in_channels * proj.out_channels * ph * pw
    return 2.0 * (tokens * linear + attention + patch_embed)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    else:
        try:  # Linux: 5 resets the peak RSS (VmHWM) to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def _peak_mb(device: str) -> float:
    """Peak memory since ``_reset_peak``: allocated by torch on CUDA, the process's peak RSS on CPU."""
    import torch

    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, 1)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ------------------------------------------------------------------------------------------------ slide


def make_slide(hest_dir: Path, size_um: tuple[float, float], mpp: float, seed: int = 0) -> str:
    """A Visium-size section in the HEST layout: an H&E-coloured textured image (deflate-compressed tiled
    pyramid: JPEG would need imagecodecs, 26 MB, which the offline wheel set leaves out) and a 100 µm hexagonal
    spot grid. Generated once per size in ``hest_dir``; returns the sample id.

    Not ``genedml.io.demo``: its painting takes minutes at this size, and the benchmark times the embedding,
    for which only the pixel reads matter."""
    import anndata as ad
    import pandas as pd
    from PIL import Image

    from genedml.atomic import atomic_path, write_json
    from genedml.io.hest import SamplePaths
    from genedml.io.tiff import write_pyramidal_tiff

    sample = f"GPU_BENCH_{int(size_um[0])}x{int(size_um[1])}um_{mpp:g}mpp"
    paths = SamplePaths.layout(hest_dir, sample)
    if paths.slide.exists() and paths.st.exists() and paths.metadata.exists():
        return sample
    log.info("generating the benchmark slide %s", sample)
    rng = np.random.default_rng(seed)
    w, h = int(round(size_um[0] / mpp)), int(round(size_um[1] / mpp))
    # stain mix from a coarse random field (cells of ~40 µm), bilinear up to full size, plus pixel noise
    coarse = rng.random((max(2, int(h * mpp / 40)), max(2, int(w * mpp / 40)))).astype(np.float32)
    mix = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR))
    eosin, haem = np.array([232, 150, 190], np.float32), np.array([95, 60, 150], np.float32)
    image = np.empty((h, w, 3), np.uint8)
    for lo in range(0, h, 1024):  # in bands: the float intermediates stay small
        m = mix[lo : lo + 1024, :, None]
        band = eosin * (1 - m) + haem * m + rng.normal(0, 4, (len(m), w, 1)).astype(np.float32)
        image[lo : lo + 1024] = np.clip(band, 0, 255).astype(np.uint8)
    paths.slide.parent.mkdir(parents=True, exist_ok=True)
    write_pyramidal_tiff(paths.slide, image, mpp=mpp, compression="zlib")
    del image, mix

    # Visium's layout: rows 100 * sqrt(3) / 2 µm apart, odd rows shifted by half a pitch, doubled column index
    margin = 150.0
    spots = []
    for r, y in enumerate(np.arange(margin, size_um[1] - margin, PITCH_UM * np.sqrt(3) / 2)):
        for c, x in enumerate(np.arange(margin + (PITCH_UM / 2) * (r % 2), size_um[0] - margin, PITCH_UM)):
            spots.append((r, 2 * c + r % 2, x / mpp, y / mpp))
    grid = np.array(spots)
    letters = np.array(list("ACGT"))
    obs = pd.DataFrame(
        {
            "in_tissue": 1,
            "array_row": grid[:, 0].astype(int),
            "array_col": grid[:, 1].astype(int),
            "pxl_col_in_fullres": grid[:, 2],
            "pxl_row_in_fullres": grid[:, 3],
        },
        index=pd.Index([f"{''.join(letters[rng.integers(0, 4, 12)])}-{i}" for i in range(len(grid))], name="barcode"),
    )
    counts = rng.poisson(3.0, (len(grid), 10)).astype(np.int32)
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=pd.Index([f"G{i}" for i in range(10)], name="gene")))
    adata.obsm["spatial"] = grid[:, 2:4].astype(np.float64)
    paths.st.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths.st) as tmp:
        adata.write_h5ad(tmp)
    meta = {
        "id": sample,
        "st_technology": "Visium",
        "pixel_size_um_estimated": mpp,
        "pixel_size_um_embedded": mpp,
        "spot_diameter": 55.0,
        "inter_spot_dist": PITCH_UM,
        "spots_under_tissue": len(grid),
        "fullres_px_width": w,
        "fullres_px_height": h,
    }
    write_json(paths.metadata, meta)
    return sample


# ------------------------------------------------------------------------------------------------ embed


def pure_forward(encoder, device: str, batch_size: int, tile_px: int, min_s: float) -> dict:
    """Tiles/s of the forward alone: the embed runner's own forward (normalise on the device, channels-last,
    autocast) on a fixed batch of uint8 tiles already on the device, repeated for at least ``min_s``."""
    import torch

    from genedml.tiles.embed_runner import EncoderRunner

    runner = EncoderRunner(encoder, device, batch_size, tile_px, tokens=False)
    x = torch.randint(0, 256, (batch_size, tile_px, tile_px, 3), dtype=torch.uint8, device=device)
    with torch.inference_mode():
        for _ in range(3):  # warm-up: kernels chosen, memory pools grown
            runner._forward(x)
        _sync(device)
        _reset_peak(device)
        batches, t0 = 0, time.perf_counter()
        while True:
            for _ in range(5):
                runner._forward(x)
            batches += 5
            _sync(device)
            wall = time.perf_counter() - t0
            if wall >= min_s:
                break
    return {"tiles": batches * batch_size, "wall_s": round(wall, 3), "tiles_per_s": batches * batch_size / wall}


def embed_end_to_end(encoder, geometry_path: Path, store: Path, a) -> dict:
    """One ``embed_sample`` call, timed from the call to the finished store (a fresh store every time)."""
    from genedml.tiles.embed import embed_sample
    from genedml.tiles.geometry import Geometry

    geometry = Geometry.load(geometry_path)
    shutil.rmtree(store, ignore_errors=True)
    for partial in store.parent.glob(f".{store.stem}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)  # never a resume
    _sync(a.device)
    _reset_peak(a.device)
    t0 = time.perf_counter()
    facts = embed_sample(
        geometry,
        encoder,
        store,
        batch_size=a.batch_size,
        num_workers=a.num_workers,
        device=a.device,
        progress=False,
    )
    wall = time.perf_counter() - t0
    return {
        "spots": int(facts["spots"]),
        "tiles": int(facts["encoder_calls_this_run"]),
        "wall_s": round(wall, 3),
        "tiles_per_s": facts["encoder_calls_this_run"] / wall,
        "embed_loop_s": facts["wall_s"],
        "precision": facts["precision"],
        "peak_mem_mb": _peak_mb(a.device),
    }


def bench_embedding(a, work: Path, peak: float | None) -> tuple[list[dict], dict]:
    from genedml.io.hest import SamplePaths
    from genedml.tiles.embed_runner import autocast_dtype, precision_name
    from genedml.tiles.encoders import build_encoder
    from genedml.tiles.geometry import TileSpec, tile_sample

    hest_dir = work / "hest"
    t0 = time.perf_counter()
    sample = make_slide(hest_dir, tuple(a.slide_um), a.mpp)
    slide_s = time.perf_counter() - t0
    encoder_cfg = {"name": "uni", "allow_random_init": True, "init_seed": 0, "model_kwargs": a.vit_kwargs}
    encoder = build_encoder(encoder_cfg)
    flops = vit_flops_per_tile(encoder.model, TILES["tile_px"])
    precision = precision_name(autocast_dtype(encoder.precision, a.device))

    def derived(tiles_per_s: float) -> dict:
        tflops = tiles_per_s * flops / 1e12
        return {"tflops": tflops, "peak_fraction": None if peak is None else tflops / peak}

    fwd = pure_forward(encoder, a.device, a.batch_size, TILES["tile_px"], a.forward_s)
    fwd_row = {
        "row": "forward",
        "mode": "-",
        "spots": None,
        **fwd,
        "ratio": 1.0,
        **derived(fwd["tiles_per_s"]),
        "precision": precision,
        "peak_mem_mb": _peak_mb(a.device),
    }
    rows = [fwd_row]
    tiling = {}
    for mode in a.modes:
        spec = TileSpec.of(**TILES, neighbour_mode=mode)
        geometry_path = work / "tiles" / mode / f"{sample}.npz"
        t0 = time.perf_counter()
        tile_sample(SamplePaths.in_hest_dir(hest_dir, sample), spec, geometry_path)
        tiling[mode] = round(time.perf_counter() - t0, 2)
        e2e = embed_end_to_end(encoder, geometry_path, work / "stores" / mode / f"{sample}.zarr", a)
        rows.append(
            {
                "row": f"embed {mode}",
                "mode": mode,
                **e2e,
                "ratio": e2e["tiles_per_s"] / fwd["tiles_per_s"],
                **derived(e2e["tiles_per_s"]),
            }
        )
    facts = {
        "sample": sample,
        "slide_um": list(a.slide_um),
        "mpp": a.mpp,
        "slide_generation_s": round(slide_s, 2),
        "tiling_s": tiling,
        "tiles": TILES,
        "encoder": encoder_cfg,
        "embed_dim": encoder.embed_dim,
        "parameters": int(sum(p.numel() for p in encoder.model.parameters())),
        "gflop_per_tile": round(flops / 1e9, 3),
        "batch_size": a.batch_size,
        "num_workers": a.num_workers,
    }
    return rows, facts


# ------------------------------------------------------------------------------------------------ heads


def synthetic_sections(n_spots: int, per_section: int, width: int, genes: int, seed: int = 0) -> list:
    """Sections of random features (float32) with targets linear in the local feature, on a square grid of
    array coordinates, as ``Section`` objects like the unit tests build them (tests/support/sections.py)."""
    from genedml.heads import Section
    from genedml.tiles.features import SampleFeatures

    rng = np.random.default_rng(seed)
    w = rng.normal(0, width**-0.5, (width, genes)).astype(np.float32)
    sections = []
    for s, lo in enumerate(range(0, n_spots, per_section)):
        n = min(per_section, n_spots - lo)
        local = rng.standard_normal((n, width), dtype=np.float32)
        neighbour = local[:, None] + 0.5 * rng.standard_normal((n, 25, width), dtype=np.float32)
        side = int(np.ceil(np.sqrt(n)))
        rc = np.stack(np.divmod(np.arange(n), side), 1).astype(np.int32)
        features = SampleFeatures(
            f"syn{s}",
            local,
            neighbour,
            np.ones((n, 25), bool),
            np.array([f"b{i}" for i in range(n)]),
            rc[:, ::-1].astype(np.float64) * 200.0,
            rc,
            {},
        )
        y = (local @ w + 0.1 * rng.standard_normal((n, genes), dtype=np.float32)).astype(np.float32)
        sections.append(Section(f"syn{s}", f"P{s}", features, y, [f"g{i}" for i in range(genes)]))
    return sections


def bench_head(a, n_spots: int) -> dict:
    from genedml.heads import head_class

    train = synthetic_sections(n_spots, a.spots_per_section, UNI_WIDTH, a.genes)
    head = head_class("genedml")({"size": a.head_size, "epochs": a.epochs, "device": a.device}, seed=0)
    _reset_peak(a.device)
    facts = head.fit(train, [])  # no selection sections: every epoch is training only
    epochs = [h["train_s"] for h in head.history]
    steady = epochs[1:] or epochs  # the first epoch also pays for kernel selection and allocator growth
    return {
        "row": f"gene-dml {n_spots} spots",
        "mode": a.head_size,
        "spots": n_spots,
        "epochs": len(epochs),
        "s_per_epoch": statistics.median(steady),
        "first_epoch_s": epochs[0],
        "peak_mem_mb": facts["peak_gpu_mem_mb"] if a.device.startswith("cuda") else _peak_mb(a.device),
        "precision": "bfloat16" if a.device.startswith("cuda") and head.params["amp"] else "fp32",
        "params": facts["n_params"],
    }


# ------------------------------------------------------------------------------------------------ report


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict) -> None:
    run = result["run"]
    e = result["embed"]
    print(
        f"\ndevice: {run['device_name']} ({run['device']}); peak bf16 dense: {_fmt(run['peak_tflops'], '.0f')} TFLOP/s"
        f"; torch {run['torch']}, {run['cpu_count']} CPUs"
    )
    print(
        f"embed: {e['sample']} ({e['spots']} spots), encoder uni {json.dumps(e['encoder']['model_kwargs'] or {})} "
        f"({e['parameters'] / 1e6:.1f} M params, {e['gflop_per_tile']:.1f} GFLOP/tile), batch {e['batch_size']}, "
        f"workers {e['num_workers']}, precision {result['rows'][0]['precision']}"
    )
    head = (
        f"{'row':<22} {'spots':>6} {'tiles':>7} {'wall s':>7} {'tiles/s':>9} {'e2e/fwd':>7} {'TFLOP/s':>8} "
        f"{'of peak':>7} {'s/epoch':>8} {'peak MB':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(
            f"{r['row']:<22} {_fmt(r.get('spots'), 'd'):>6} {_fmt(r.get('tiles'), 'd'):>7} "
            f"{_fmt(r.get('wall_s'), '.1f'):>7} {_fmt(r.get('tiles_per_s'), '.1f'):>9} {_fmt(r.get('ratio'), '.2f'):>7} "
            f"{_fmt(r.get('tflops'), '.3g'):>8} {_fmt(r.get('peak_fraction'), '.1%'):>7} "
            f"{_fmt(r.get('s_per_epoch'), '.3f'):>8} {_fmt(r.get('peak_mem_mb'), '.0f'):>8}"
        )
    ratios = ", ".join(f"{r['mode']} {r['ratio']:.2f}" for r in result["rows"] if r["row"].startswith("embed"))
    print(f"end to end / pure forward: {ratios} (goal >= 0.8)")
    print(
        f"peak MB: {'allocated by torch on the GPU' if run['device'].startswith('cuda') else 'peak RSS of the process'}"
    )


def bench_gpu(a) -> dict:
    import torch

    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.smoke:  # everything tiny: the code path in seconds, no meaningful speeds
        a.slide_um = a.slide_um or [700.0, 700.0]
        a.vit_kwargs = SMOKE_VIT if a.vit_kwargs is None else a.vit_kwargs
        a.batch_size = a.batch_size or 16
        a.head_spots = a.head_spots or [64, 128]
        a.spots_per_section = a.spots_per_section or 64
        a.epochs = a.epochs or 1
        a.head_size = a.head_size or "small"
        a.forward_s = 0.5 if a.forward_s is None else a.forward_s
    a.slide_um = a.slide_um or [6500.0, 6500.0]
    a.batch_size = a.batch_size or (256 if a.device.startswith("cuda") else 16)
    a.head_spots = a.head_spots or [1000, 10000]
    a.spots_per_section = a.spots_per_section or 500
    a.epochs = a.epochs or 3
    a.head_size = a.head_size or "her2st"
    a.forward_s = 5.0 if a.forward_s is None else a.forward_s
    if a.num_workers is None:  # workers decode the slide; the main process feeds the GPU
        a.num_workers = min(12, max(1, (os.cpu_count() or 2) - 2)) if a.device.startswith("cuda") else 0
    name = device_name(a.device)
    peak = peak_tflops(name, a.peak_tflops)
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    result = {
        "run": {
            "device": a.device,
            "device_name": name,
            "peak_tflops": peak,
            "peak_source": "--peak-tflops" if a.peak_tflops else ("table" if peak else "unknown"),
            "smoke": bool(a.smoke),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    }
    t_all = time.perf_counter()
    rows, result["embed"] = bench_embedding(a, work, peak)
    result["embed"]["spots"] = next((r["spots"] for r in rows if r.get("spots")), None)
    for n in a.head_spots:
        rows.append(bench_head(a, n))
    result["head"] = {
        "size": a.head_size,
        "width": UNI_WIDTH,
        "genes": a.genes,
        "spots_per_section": a.spots_per_section,
    }
    result["rows"] = rows
    result["run"]["total_s"] = round(time.perf_counter() - t_all, 1)
    from genedml.atomic import write_json

    write_json(Path(a.out), result)
    print_table(result)
    print(f"\ntotal {result['run']['total_s']} s; written: {a.out}")
    return result


def add_arguments(s) -> None:
    s.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:1 or cpu")
    s.add_argument("--smoke", action="store_true", help="tiny everything: checks the code path in seconds")
    s.add_argument(
        "--slide-um",
        nargs=2,
        type=float,
        metavar=("W", "H"),
        help="generated slide size in µm (default 6500 6500: a Visium capture area, ~4,400 spots)",
    )
    s.add_argument("--mpp", type=float, default=0.5, help="µm per pixel of the generated slide")
    s.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    s.add_argument("--batch-size", type=int, help="tiles per encoder call (default 256 on CUDA, 16 on CPU)")
    s.add_argument("--num-workers", type=int, help="DataLoader workers reading the slide (default: CPUs - 2, <= 12)")
    s.add_argument("--vit-kwargs", type=json.loads, help="override UNI's timm kwargs (JSON), e.g. a smaller depth")
    s.add_argument("--forward-s", type=float, help="seconds of pure-forward timing (default 5)")
    s.add_argument("--head-spots", nargs="+", type=int, help="training spots per head run (default 1000 10000)")
    s.add_argument("--spots-per-section", type=int, help="spots per synthetic section (default 500)")
    s.add_argument("--genes", type=int, default=250)
    s.add_argument("--head-size", choices=["small", "her2st"], help="Gene-DML size preset (default her2st)")
    s.add_argument("--epochs", type=int, help="epochs per head run (default 3; s/epoch is the median after the first)")
    s.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, when the table does not know it")
    s.add_argument("--work-dir", default="results/bench/gpu-work", help="generated slide, geometries, stores")
    s.add_argument("--out", default="results/bench/gpu.json")
    s.set_defaults(func=bench_gpu)


def add_parser(sub) -> None:
    """``genedml bench gpu`` in the ``bench`` sub-command's sub-parsers."""
    s = sub.add_parser(
        "gpu",
        help="UNI embed end to end vs pure forward, Gene-DML epoch time and memory, on the GPU",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(s)


def main(argv: list[str] | None = None) -> int:
    """``python -m genedml.bench_gpu``: the same without the CLI (nothing but this module's imports)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch is imported
    p = argparse.ArgumentParser(
        prog="python -m genedml.bench_gpu", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p)
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bench_gpu(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
