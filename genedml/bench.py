"""Benchmarks that print ratios measured in one run (``genedml bench ...``).

``genedml bench embed`` embeds the same slides in both neighbour modes (``centred``, ``grid``), each mode in
its own process so that its peak memory is its own, and reports per mode: encoder calls (per spot), wall
time, tiles/s, bytes per spot of the feature store and peak RSS; then the centred/grid ratios, and how
well float16 embeddings compress under candidate Zarr codecs and chunk sizes. With ``--local-views`` /
``--tokens`` it also embeds the slides (in the first of ``--modes``) for every count of dihedral views of
the local crop and with the token cache off and on, and reports encoder calls, bytes per spot and wall time
as ratios to one view without tokens, measured in the same run.

``genedml bench reader`` times what one data-loader worker does without the encoder (the embed step's
read-and-cut path) beside raw OpenSlide decoding of the same tiles, in both modes, in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from genedml.pipeline import schema

log = logging.getLogger(__name__)

NEIGHBOUR_MODES = schema.choices("tiles.neighbour_mode")  # both modes, compared

# a small encoder with UNI's architecture (ViT/16 at 224 px, 197 tokens): the same reading and batching
# work as UNI with ~1/1000 of its compute, so the benchmark runs on a laptop CPU. No layer-scale: a
# random-init ViT with UNI's init_values=1e-5 gives nearly the same output for every tile.
SMALL_UNI = {
    "name": "uni",
    "allow_random_init": True,
    "init_seed": 0,
    "model_kwargs": {"embed_dim": 48, "depth": 2, "num_heads": 3, "init_values": None},
}
HER2ST_SECTIONS = ["B4", "C2", "C3", "C4"]
REFERENCE_CALLS_PER_SPOT = 26  # the reference code: 25 window tiles (padded ones too) + the local crop again

EMBED_HELP = """\
Embed the same slides in both neighbour modes and compare encoder calls, tiles/s, bytes per spot and peak
memory; results go to --out (default results/bench/embed.json) and a table on stdout.

Slides (any combination; each is a dataset in the output):
  real HER2ST sections (legacy ST layout, 200 µm pitch; converted once to pyramidal TIFFs in --work-dir):
      genedml bench embed --her2st ../shared/data/her2st --sections B4 C2 C3 C4
  a Visium-like synthetic slide (100 µm hexagonal pitch, generated once in --work-dir):
      genedml bench embed --visium-demo --demo-size-um 4000 4000
  any HEST-1k folder (wsis/, st/, metadata/):
      genedml bench embed --hest-dir /data/hest1k --samples SPA119 SPA120
  both at once (one run, so the ratios share the machine's conditions):
      genedml bench embed --her2st ../shared/data/her2st --visium-demo

What the local branch costs (dihedral views x token cache, in the first of --modes):
      genedml bench embed --her2st ../shared/data/her2st --sections B4 --modes grid \
          --local-views 1 4 8 --tokens off on --no-compression

Tile settings per dataset: HER2ST uses the reference code's 224 px at native resolution, the Visium-like
slide and HEST folders HEST's 224 px at 0.5 µm/px (override with --her2st-tiles / --visium-tiles /
--hest-tiles, JSON like config.yaml's tiles section). The default encoder is a small random-init ViT with
UNI's architecture (use --encoder '{"name": "uni", "weights": "..."}' for the real one, on a GPU).
"""


def _rss_now_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    """Peak RSS of this process since start or the last ``_reset_peak`` (VmHWM), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    try:  # Linux >= 4.0: writing 5 resets the peak RSS (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _embed_mode_child(job: dict, queue) -> None:
    """Child process: embed every slide of one dataset in one mode; report facts through ``queue``."""
    try:
        import torch

        from genedml.tiles.embed import embed_sample
        from genedml.tiles.encoders import build_encoder
        from genedml.tiles.geometry import Geometry

        logging.basicConfig(level=logging.WARNING)
        if job["threads"]:
            torch.set_num_threads(job["threads"])
        encoder = build_encoder(job["encoder"])
        slides = []
        for sample, geometry_path, store in job["slides"]:
            geometry = Geometry.load(geometry_path)
            shutil.rmtree(store, ignore_errors=True)
            for partial in Path(store).parent.glob(f".{Path(store).stem}.partial-*"):
                shutil.rmtree(partial, ignore_errors=True)  # always a fresh run, never a resume
            _reset_peak()
            before = _rss_now_mb()
            facts = embed_sample(
                geometry,
                encoder,
                store,
                batch_size=job["batch_size"],
                num_workers=job["num_workers"],
                device=job["device"],
                progress=job["progress"],
            )
            slides.append(
                {
                    "sample": sample,
                    "spots": facts["spots"],
                    "encoder_calls": facts["encoder_calls"],
                    "wall_s": facts["wall_s"],
                    "rss_before_mb": round(before, 1),
                    "peak_rss_mb": round(_peak_rss_mb(), 1),
                    "store_bytes": _dir_bytes(Path(store)),
                    "slide_pixels": int(np.prod(geometry.slide_dims)),
                    "device": facts["device"],
                    "precision": facts["precision"],
                    "array_bytes": {p.name: _dir_bytes(p) for p in Path(store).iterdir() if p.is_dir()},
                }
            )
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        queue.put(
            {
                "slides": slides,
                "worker_peak_rss_mb": round(children, 1) if job["num_workers"] else None,
                "embed_dim": encoder.embed_dim,
            }
        )
    except BaseException as exc:  # report, do not hang the parent
        import traceback

        queue.put({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})


def run_mode(job: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_embed_mode_child, args=(job, queue))
    proc.start()
    import queue as queue_errors

    while True:  # the child may die without a word (killed for memory): do not wait forever
        try:
            result = queue.get(timeout=5)
            break
        except queue_errors.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"benchmark child exited with code {proc.exitcode} before reporting") from None
    proc.join()
    if "error" in result:
        raise RuntimeError(f"benchmark child failed: {result['error']}\n{result['traceback']}")
    return result


def _summarise(slides: list[dict]) -> dict:
    calls = sum(s["encoder_calls"] for s in slides)
    spots = sum(s["spots"] for s in slides)
    wall = sum(s["wall_s"] for s in slides)
    store = sum(s["store_bytes"] for s in slides)
    return {
        "encoder_calls": calls,
        "spots": spots,
        "wall_s": round(wall, 3),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in slides),
        "calls_per_spot": round(calls / max(spots, 1), 3),
        "tiles_per_s": round(calls / max(wall, 1e-9), 1),
        "bytes_per_spot": round(store / max(spots, 1)),
        # memory: growth over the process's RSS before each slide (torch + model), against the slide's size
        "peak_rss_growth_mb": round(max(s["peak_rss_mb"] - s["rss_before_mb"] for s in slides), 1),
        "largest_slide_decoded_mb": round(max(s["slide_pixels"] for s in slides) * 3 / 2**20, 1),
    }


def _ratios(modes: dict) -> dict:
    if not {"centred", "grid"} <= set(modes):
        return {}
    c, g = modes["centred"], modes["grid"]
    return {
        "encoder_calls_centred_over_grid": round(c["encoder_calls"] / max(g["encoder_calls"], 1), 2),
        "wall_s_centred_over_grid": round(c["wall_s"] / max(g["wall_s"], 1e-9), 2),
        "bytes_per_spot_centred_over_grid": round(c["bytes_per_spot"] / max(g["bytes_per_spot"], 1), 2),
        "reference_code_calls_over_grid": round(REFERENCE_CALLS_PER_SPOT * g["spots"] / max(g["encoder_calls"], 1), 2),
    }


# ------------------------------------------------------------------------------------------ compression


def measure_codecs(values: np.ndarray, workdir: Path, repeats: int = 3) -> dict:
    """Compression ratio and write / read speed of candidate codecs on float16 embeddings (a local store)."""
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    candidates = {
        "none": None,
        "zstd-0 (zarr default)": [ZstdCodec(level=0)],
        "zstd-3": [ZstdCodec(level=3)],
        "zstd-9": [ZstdCodec(level=9)],
        "blosc-zstd-3-shuffle": [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=2)],
        "blosc-zstd-5-bitshuffle": [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle", typesize=2)],
        "blosc-lz4-5-shuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=2)],
    }
    values = np.ascontiguousarray(values, dtype=np.float16)
    rows = values.shape[0]
    row_bytes = values[0].nbytes
    chunk = max(1, min(rows, (4 << 20) // row_bytes))
    out = {}
    for name, codecs in candidates.items():
        path = workdir / f"codec-{abs(hash(name))}.zarr"
        best_w = best_r = float("inf")
        for _ in range(repeats):
            shutil.rmtree(path, ignore_errors=True)
            t = time.perf_counter()
            arr = zarr.create_array(
                str(path),
                shape=values.shape,
                chunks=(chunk, *values.shape[1:]),
                dtype="float16",
                compressors=codecs,
                zarr_format=3,
            )
            arr[:] = values
            best_w = min(best_w, time.perf_counter() - t)
            t = time.perf_counter()
            back = zarr.open_array(str(path), mode="r")[:]
            best_r = min(best_r, time.perf_counter() - t)
        assert np.array_equal(back.view(np.uint16), values.view(np.uint16))
        size = _dir_bytes(path)  # chunks plus ~1 KB of metadata
        out[name] = {
            "ratio": round(values.nbytes / size, 3),
            "write_mb_s": round(values.nbytes / 2**20 / best_w, 1),
            "read_mb_s": round(values.nbytes / 2**20 / best_r, 1),
        }
        shutil.rmtree(path, ignore_errors=True)
    return out


def measure_chunks(values: np.ndarray, workdir: Path, repeats: int = 3) -> dict:
    """Seconds to load a whole (sample-sized) array for several chunk sizes, with the chosen codec."""
    import zarr

    from genedml.tiles.features import embedding_codecs

    values = np.ascontiguousarray(values, dtype=np.float16)
    row_bytes = values[0].nbytes
    out = {}
    for target in (64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20):
        rows = max(1, min(values.shape[0], target // row_bytes))
        path = workdir / f"chunks-{target}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        arr = zarr.create_array(
            str(path),
            shape=values.shape,
            chunks=(rows, *values.shape[1:]),
            dtype="float16",
            compressors=embedding_codecs(),
            zarr_format=3,
        )
        arr[:] = values
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            zarr.open_array(str(path), mode="r")[:]
            best = min(best, time.perf_counter() - t)
        out[f"{target >> 10} KB"] = {
            "rows_per_chunk": rows,
            "files": -(-values.shape[0] // rows),
            "load_s": round(best, 4),
            "load_mb_s": round(values.nbytes / 2**20 / best, 1),
        }
        shutil.rmtree(path, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------- datasets


def _prepare_her2st(root: Path, sections: list[str], hest_dir: Path) -> list[str]:
    from genedml.io.hest import SamplePaths
    from genedml.io.legacy_st import ImportSpec, LegacyFiles, import_section

    for section in sections:
        if not SamplePaths.layout(hest_dir, section).slide.exists():
            log.info("converting HER2ST %s to a pyramidal TIFF in %s", section, hest_dir)
            import_section(
                LegacyFiles.find(root, section),
                hest_dir,
                ImportSpec.of(),
                sample=section,
                patient=section[0],
                dataset="her2st",
                overwrite=True,
            )
    return sections


def _prepare_visium(hest_dir: Path, size_um: tuple[float, float], mpp: float) -> list[str]:
    from genedml.io.demo import DemoSpec, make_section
    from genedml.io.hest import SamplePaths

    sample = f"VISIUM_DEMO_{int(size_um[0])}x{int(size_um[1])}um"
    if not SamplePaths.layout(hest_dir, sample).slide.exists():
        log.info("generating the Visium-like slide %s (%.0f x %.0f µm at %.2f µm/px)", sample, *size_um, mpp)
        make_section(
            sample, "demo", hest_dir, DemoSpec.of(width_um=size_um[0], height_um=size_um[1], mpp=mpp, n_genes=30)
        )
    return [sample]


def _tiles(spec_json: dict, mode: str, stride: float, offset):
    from genedml.tiles.geometry import TileSpec

    cfg = dict(spec_json)
    cfg.update({"neighbour_mode": mode, "grid_stride": stride, "grid_offset": offset})
    return TileSpec.from_config(cfg)


def bench_embed(a) -> dict:
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    datasets = _bench_datasets(a, work)
    encoder = json.loads(a.encoder) if a.encoder else dict(SMALL_UNI)
    result = {
        "encoder": encoder,
        "slides": [],
        "modes": {},
        "datasets": {},
        "run": {
            "batch_size": a.batch_size,
            "num_workers": a.num_workers,
            "device": a.device,
            "threads": a.threads,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "grid_stride": a.grid_stride,
            "grid_offset": a.grid_offset,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    }
    per_mode_slides: dict[str, list] = {m: [] for m in a.modes}
    for name, hest_dir, samples, tiles_json in datasets:
        entry = _bench_dataset(a, work, encoder, name, hest_dir, samples, tiles_json)
        for mode in a.modes:
            per_mode_slides[mode] += entry["per_slide"][mode]
        result["embed_dim"] = entry.pop("embed_dim")
        result["datasets"][name] = entry
        result["slides"] += [f"{name}:{s}" for s in samples]
    result["modes"] = {m: _summarise(s) for m, s in per_mode_slides.items() if s}
    result["ratios"] = _ratios(result["modes"])
    if a.compression and "centred" in a.modes:
        result["compression"] = _bench_compression(work, result, per_mode_slides["centred"])
    if a.local_views != [1] or a.tokens != ["off"]:
        result["local_branch"] = _bench_local_branch(a, work, encoder, datasets, per_mode_slides[a.modes[0]])
    out_path = Path(a.out)
    from genedml.atomic import write_json

    write_json(out_path, result)
    print_table(result)
    if "local_branch" in result:
        print_local_branch(result["local_branch"])
    print(f"\nwritten: {out_path}")
    return result


LOCAL_ARRAYS = ("local", "local_views", "local_tokens")  # the local branch's share of the store


def _bench_local_branch(a, work: Path, encoder: dict, datasets: list, baseline: list) -> dict:
    """Every (local_views, token cache) pair asked for, on the same slides and mode, with ratios to (1 view, no
    tokens), which is always measured: it is the mode's own run above."""
    mode = a.modes[0]
    slides = [
        (sample, str(work / "tiles" / name / mode / f"{sample}.npz"), name)
        for name, _, samples, _ in datasets
        for sample in samples
    ]
    variants = {}
    pairs = [(1, "off")] + [(v, t) for t in a.tokens for v in a.local_views if (v, t) != (1, "off")]
    for views, tokens in pairs:
        key = f"{views} views, tokens {tokens}"
        if (views, tokens) == (1, "off"):
            out = baseline  # the baseline is the mode's own run
        else:
            log.info("local branch: %s (%s mode)", key, mode)
            job_slides = [
                (s, g, str(work / "stores" / n / f"{mode}-v{views}-tok{tokens}" / f"{s}.zarr")) for s, g, n in slides
            ]
            cfg = {**encoder, "local_views": views, "cache_local_tokens": tokens == "on"}
            out = run_mode(
                {
                    "encoder": cfg,
                    "slides": job_slides,
                    "batch_size": a.batch_size,
                    "num_workers": a.num_workers,
                    "device": a.device,
                    "threads": a.threads,
                    "progress": a.progress,
                }
            )["slides"]
        summary = _summarise(out)
        local_bytes = sum(s["array_bytes"].get(k, 0) for s in out for k in LOCAL_ARRAYS)
        variants[key] = {
            "local_views": views,
            "tokens": tokens == "on",
            **summary,
            "local_branch_bytes_per_spot": round(local_bytes / max(summary["spots"], 1)),
        }
    base = variants["1 views, tokens off"]
    for v in variants.values():
        v["calls_ratio"] = round(v["encoder_calls"] / max(base["encoder_calls"], 1), 2)
        v["bytes_ratio"] = round(v["bytes_per_spot"] / max(base["bytes_per_spot"], 1), 2)
        v["wall_ratio"] = round(v["wall_s"] / max(base["wall_s"], 1e-9), 2)
    return {"mode": mode, "slides": [f"{n}:{s}" for s, _, n in slides], "variants": variants}


def print_local_branch(lb: dict) -> None:
    print(f"\nlocal branch ({lb['mode']} mode, {' '.join(lb.get('slides', []))}): ratios to 1 view without tokens")
    head = (
        f"{'views':>5} {'tokens':>6} {'calls/spot':>10} {'(x)':>6} {'bytes/spot':>11} {'(x)':>7} "
        f"{'local-branch bytes/spot':>23} {'wall s':>7} {'(x)':>6} {'tiles/s':>8} {'peak RSS MB':>11}"
    )
    print(head)
    print("-" * len(head))
    for v in lb["variants"].values():
        print(
            f"{v['local_views']:>5} {'on' if v['tokens'] else 'off':>6} {v['calls_per_spot']:>10.2f} "
            f"{v.get('calls_ratio', float('nan')):>6.2f} {v['bytes_per_spot']:>11} {v.get('bytes_ratio', float('nan')):>7.2f} "
            f"{v['local_branch_bytes_per_spot']:>23} {v['wall_s']:>7.1f} {v.get('wall_ratio', float('nan')):>6.2f} "
            f"{v['tiles_per_s']:>8.1f} {v['peak_rss_mb']:>11.0f}"
        )


def _bench_datasets(a, work: Path) -> list[tuple]:
    """(name, HEST folder, samples, tile settings) of every slide set the command line asks for."""
    datasets = []
    if a.her2st:
        hd = work / "her2st" / "hest"
        datasets.append(("her2st", hd, _prepare_her2st(Path(a.her2st), a.sections, hd), a.her2st_tiles))
    if a.visium_demo:
        hd = work / "visium_demo" / "hest"
        datasets.append(("visium_demo", hd, _prepare_visium(hd, tuple(a.demo_size_um), a.demo_mpp), a.visium_tiles))
    if a.hest_dir:
        if not a.samples:
            raise SystemExit("genedml bench embed: --hest-dir needs --samples")
        datasets.append(("hest", Path(a.hest_dir), a.samples, a.hest_tiles))
    if not datasets:
        raise SystemExit("genedml bench embed: give --her2st, --visium-demo and/or --hest-dir (see --help)")
    return datasets


def _bench_dataset(a, work: Path, encoder: dict, name: str, hest_dir, samples: list, tiles_json: dict) -> dict:
    """Tile and embed one slide set in every mode; per-mode summaries, per-slide facts and their ratios."""
    from genedml.io.hest import SamplePaths
    from genedml.tiles.geometry import tile_sample

    entry = {"slides": samples, "tiles": tiles_json, "modes": {}, "per_slide": {}, "geometry": {}}
    for mode in a.modes:
        spec = _tiles(tiles_json, mode, a.grid_stride, a.grid_offset)
        slides = []
        for sample in samples:
            geom_path = work / "tiles" / name / mode / f"{sample}.npz"
            g = tile_sample(SamplePaths.in_hest_dir(hest_dir, sample), spec, geom_path)
            entry["geometry"].setdefault(sample, {})[mode] = g.summary()
            slides.append((sample, str(geom_path), str(work / "stores" / name / mode / f"{sample}.zarr")))
        log.info("%s: embedding %d slides in %s mode", name, len(samples), mode)
        out = run_mode(
            {
                "encoder": encoder,
                "slides": slides,
                "batch_size": a.batch_size,
                "num_workers": a.num_workers,
                "device": a.device,
                "threads": a.threads,
                "progress": a.progress,
            }
        )
        entry["modes"][mode] = {**_summarise(out["slides"]), "worker_peak_rss_mb": out["worker_peak_rss_mb"]}
        entry["per_slide"][mode] = out["slides"]
        entry["embed_dim"] = out["embed_dim"]
    entry["ratios"] = _ratios(entry["modes"])
    return entry


def _bench_compression(work: Path, result: dict, centred_slides: list) -> dict:
    """Codecs and chunk sizes on the biggest centred store: this run's embeddings, masked zeros included."""
    import zarr

    biggest = max(centred_slides, key=lambda s: s["spots"])
    ds = next(n for n, e in result["datasets"].items() if biggest in e["per_slide"]["centred"])
    store = work / "stores" / ds / "centred" / f"{biggest['sample']}.zarr"
    values = zarr.open_group(str(store), mode="r")["neighbour"][:]
    rng = np.random.default_rng(0)
    gaussian = rng.standard_normal(values.shape).astype(np.float16)  # LayerNorm-like outputs, for reference
    return {
        "sample": f"{ds}:{biggest['sample']}",
        "shape": list(values.shape),
        "zero_fraction": round(float((values == 0).all(-1).mean()), 4),
        "codecs": measure_codecs(values, work),
        "codecs_on_gaussian_float16": measure_codecs(gaussian, work),
        "chunk_sizes": measure_chunks(values, work),
    }


def print_table(result: dict) -> None:
    enc = result["encoder"]
    print(
        f"\nencoder: {enc.get('name')} {json.dumps(enc.get('model_kwargs') or {})} "
        f"(weights: {enc.get('weights') or 'random-init'}), device {result['run']['device']}, "
        f"batch {result['run']['batch_size']}, workers {result['run']['num_workers']}"
    )
    head = (
        f"{'dataset':<12} {'mode':<8} {'slides':>6} {'spots':>6} {'calls':>7} {'calls/spot':>10} {'wall s':>8} "
        f"{'tiles/s':>8} {'bytes/spot':>10} {'peak RSS MB':>11} {'(growth)':>8}"
    )
    print(head)
    print("-" * len(head))
    rows = list(result["datasets"].items()) + [
        ("all", {"modes": result["modes"], "slides": result["slides"], "ratios": result["ratios"]})
    ]
    for name, entry in rows:
        for mode, m in entry["modes"].items():
            print(
                f"{name:<12} {mode:<8} {len(entry['slides']):>6} {m['spots']:>6} {m['encoder_calls']:>7} "
                f"{m['calls_per_spot']:>10.2f} {m['wall_s']:>8.1f} {m['tiles_per_s']:>8.1f} "
                f"{m['bytes_per_spot']:>10} {m['peak_rss_mb']:>11.0f} {m['peak_rss_growth_mb']:>8.0f}"
            )
        r = entry.get("ratios") or {}
        if r:
            print(
                f"{name:<12} centred/grid: {r['encoder_calls_centred_over_grid']}x fewer encoder calls, "
                f"{r['wall_s_centred_over_grid']}x wall time, {r['bytes_per_spot_centred_over_grid']}x bytes/spot; "
                f"reference code (26 calls/spot) / grid: {r['reference_code_calls_over_grid']}x"
            )
    comp = result.get("compression")
    if comp:
        print(
            f"\ncompression of float16 embeddings ({comp['sample']}, {comp['shape']}, "
            f"{comp['zero_fraction']:.1%} masked all-zero tiles): ratio, write / read MB/s"
        )
        for label, key in (
            ("this run's embeddings", "codecs"),
            ("Gaussian float16 reference", "codecs_on_gaussian_float16"),
        ):
            print(
                f"  {label}: "
                + "; ".join(
                    f"{n} {v['ratio']:.3f} ({v['write_mb_s']:.0f}/{v['read_mb_s']:.0f})" for n, v in comp[key].items()
                )
            )
        print(
            "  whole-array load by chunk size: "
            + "; ".join(f"{n} ({v['files']} files) {v['load_s'] * 1000:.1f} ms" for n, v in comp["chunk_sizes"].items())
        )


# ----------------------------------------------------------------------------------------------- reader

READER_HELP = """\
Measure what one data-loader worker does, without the encoder: iterate the embed step's RegionTiles items
(read boxes with read_box_pixels, cut tiles, torch tensors) in this process on one thread, beside raw decoding
(OpenSlide read_region of as many tile_px tiles at the same level and positions, converted to RGB numpy).
Both are timed alternately in the same run (fresh slide handle per pass; best of --repeats), per neighbour
mode; the table gives tiles/s (wall and CPU time) and the ratio read-and-cut / raw.

      genedml bench reader --her2st ../shared/data/her2st --sections B4
      genedml bench reader --visium-demo --demo-size-um 2000 2000 --max-tiles 2000
"""


def reader_items(g, embed_dim: int) -> list:
    """The data-loader items ``embed_sample`` would read for geometry ``g`` (one view, no token cache)."""
    from genedml.tiles.embed_plan import plan_units
    from genedml.tiles.features import StoreLayout

    n_nodes = len(g.grid_nodes) if g.spec.neighbour_mode == "grid" else 0
    layout = StoreLayout(g.n_spots, g.spec.grid * g.spec.grid, embed_dim, g.spec.neighbour_mode, n_nodes)
    _, unit_items = plan_units(g, layout)
    return [item for items in unit_items for item in items]


def _first_tiles(items: list, max_tiles: int) -> list:
    """The leading items holding about ``max_tiles`` tiles (0: all): a prefix keeps the reading order."""
    if not max_tiles:
        return items
    counts = np.cumsum([len(it.cuts) for it in items])
    return items[: int(np.searchsorted(counts, max_tiles)) + 1]


def raw_tile_corners(items: list, scale: float) -> np.ndarray:
    """(K, 2) level-0 corners of every tile the items cut, in cutting order."""
    corners = [it.boxes[it.cuts[:, 0], :2] + it.cuts[:, 1:3] * scale for it in items if len(it.cuts)]
    return np.round(np.concatenate(corners)).astype(np.int64) if corners else np.zeros((0, 2), np.int64)


def _time_raw(slide_path: str, level: int, corners: np.ndarray, tile_px: int) -> tuple[float, float]:
    import openslide

    slide = openslide.OpenSlide(slide_path)  # a fresh handle: its tile cache starts empty, like a worker's
    wall, cpu = time.perf_counter(), time.process_time()
    for x, y in corners:
        np.asarray(slide.read_region((int(x), int(y)), level, (tile_px, tile_px)).convert("RGB"))
    return time.perf_counter() - wall, time.process_time() - cpu


def _time_reader(slide_path: str, scale: float, tile_px: int, items: list) -> tuple[float, float]:
    from genedml.tiles.embed_loader import RegionTiles

    tiles = RegionTiles(slide_path, scale, tile_px, items)
    wall, cpu = time.perf_counter(), time.process_time()
    for j in range(len(tiles)):
        tiles[j]
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_reader(g, embed_dim: int = 48, max_tiles: int = 0, repeats: int = 3) -> dict:
    """Best-of-``repeats`` seconds (wall and CPU) of raw decoding and of read-and-cut on one geometry,
    alternating the two (ABBA) so that both see the same machine."""
    import openslide

    items = _first_tiles(reader_items(g, embed_dim), max_tiles)
    px = g.spec.tile_px
    with openslide.OpenSlide(g.slide_path) as slide:
        level = slide.get_best_level_for_downsample(g.scale + 1e-6)  # the level read_box reads from
    corners = raw_tile_corners(items, g.scale)
    _time_raw(g.slide_path, level, corners, px)  # warm the page cache for both
    best = {"raw": [float("inf")] * 2, "reader": [float("inf")] * 2}
    for r in range(repeats):
        for path in ("raw", "reader") if r % 2 == 0 else ("reader", "raw"):
            if path == "raw":
                seconds = _time_raw(g.slide_path, level, corners, px)
            else:
                seconds = _time_reader(g.slide_path, g.scale, px, items)
            best[path] = [min(a, b) for a, b in zip(best[path], seconds)]
    box_px = sum(float(b[2] * b[3]) for it in items for b in it.boxes)
    return {
        "items": len(items),
        "tiles": len(corners),
        "boxes": sum(len(it.boxes) for it in items),
        "box_px_per_tile_px": round(box_px / max(len(corners) * px * px, 1), 3),
        "level": int(level),
        "scale": g.scale,
        **{f"{path}_wall_s": round(best[path][0], 4) for path in best},
        **{f"{path}_cpu_s": round(best[path][1], 4) for path in best},
    }


def _reader_rates(m: dict) -> dict:
    """tiles/s of both paths and the ratio read-and-cut / raw, from summed tiles and seconds."""
    out = {}
    for clock in ("wall", "cpu"):
        raw = m["tiles"] / max(m[f"raw_{clock}_s"], 1e-9)
        reader = m["tiles"] / max(m[f"reader_{clock}_s"], 1e-9)
        out.update({f"raw_{clock}_tiles_per_s": round(raw, 1), f"reader_{clock}_tiles_per_s": round(reader, 1)})
        out[f"ratio_{clock}"] = round(reader / max(raw, 1e-9), 3)
    return out


def bench_reader(a) -> dict:
    import torch

    from genedml.io.hest import SamplePaths
    from genedml.tiles.geometry import tile_sample

    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    result = {
        "rows": [],
        "run": {
            "repeats": a.repeats,
            "max_tiles": a.max_tiles,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one loader worker: one thread
    try:
        for name, hest_dir, samples, tiles_json in _bench_datasets(a, work):
            for mode in a.modes:
                spec = _tiles(tiles_json, mode, a.grid_stride, a.grid_offset)
                total: dict = {}
                for sample in samples:
                    geom_path = work / "tiles" / name / mode / f"{sample}.npz"
                    g = tile_sample(SamplePaths.in_hest_dir(hest_dir, sample), spec, geom_path)
                    log.info("%s %s: read-and-cut vs raw decoding (%s mode)", name, sample, mode)
                    m = measure_reader(g, a.embed_dim, a.max_tiles, a.repeats)
                    result["rows"].append({"dataset": name, "sample": sample, "mode": mode, **m, **_reader_rates(m)})
                    for key in ("items", "tiles", "boxes", "raw_wall_s", "raw_cpu_s", "reader_wall_s", "reader_cpu_s"):
                        total[key] = total.get(key, 0) + m[key]
                if len(samples) > 1:
                    result["rows"].append(
                        {"dataset": name, "sample": "all", "mode": mode, **total, **_reader_rates(total)}
                    )
    finally:
        torch.set_num_threads(threads)
    from genedml.atomic import write_json

    write_json(Path(a.out), result)
    print_reader_table(result)
    print(f"\nwritten: {a.out}")
    return result


def print_reader_table(result: dict) -> None:
    print(
        f"\nread-and-cut (RegionTiles, no encoder) vs raw decoding, one process, one thread; best of {result['run']['repeats']}"
    )
    sw = max([10] + [len(str(r["sample"])) for r in result["rows"]])  # sample names run long (VISIUM_DEMO_...)
    head = (
        f"{'dataset':<12} {'sample':<{sw}} {'mode':<8} {'tiles':>6} {'boxes':>6} {'box/tile px':>11} "
        f"{'raw t/s':>8} {'read t/s':>8} {'ratio':>6} {'raw cpu t/s':>11} {'read cpu t/s':>12} {'cpu ratio':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(
            f"{r['dataset']:<12} {r['sample']:<{sw}} {r['mode']:<8} {r['tiles']:>6} {r['boxes']:>6} "
            f"{r.get('box_px_per_tile_px', float('nan')):>11.2f} {r['raw_wall_tiles_per_s']:>8.0f} "
            f"{r['reader_wall_tiles_per_s']:>8.0f} {r['ratio_wall']:>6.2f} {r['raw_cpu_tiles_per_s']:>11.0f} "
            f"{r['reader_cpu_tiles_per_s']:>12.0f} {r['ratio_cpu']:>9.2f}"
        )


def _add_slide_arguments(s, sections: list[str]) -> None:
    """The slides a bench runs on (HER2ST sections, a generated Visium-like slide, HEST samples), their tiles
    and neighbour modes: shared by ``bench embed`` and ``bench reader``."""
    s.add_argument("--her2st", metavar="DIR", help="legacy-ST folder with ST-cnts/, ST-spotfiles/, ST-imgs/")
    s.add_argument("--sections", nargs="+", default=sections, help="HER2ST sections with images")
    s.add_argument("--visium-demo", action="store_true", help="a generated Visium-like slide (100 µm hex pitch)")
    s.add_argument("--demo-size-um", nargs=2, type=float, default=[4000.0, 4000.0], metavar=("W", "H"))
    s.add_argument("--demo-mpp", type=float, default=0.5)
    s.add_argument("--hest-dir", metavar="DIR", help="a HEST-1k folder (wsis/, st/, metadata/)")
    s.add_argument("--samples", nargs="+", help="HEST ids in --hest-dir")
    s.add_argument("--her2st-tiles", type=json.loads, default={"tile_px": 224, "target_mpp": "native"})
    s.add_argument("--visium-tiles", type=json.loads, default={"tile_px": 224, "target_mpp": 0.5})
    s.add_argument("--hest-tiles", type=json.loads, default={"tile_px": 224, "target_mpp": 0.5})
    s.add_argument("--grid-stride", type=float, default=1.0)
    s.add_argument("--grid-offset", default="auto")
    s.add_argument("--modes", nargs="+", choices=NEIGHBOUR_MODES, default=NEIGHBOUR_MODES)


def _add_reader_parser(sub) -> None:
    s = sub.add_parser(
        "reader",
        help="tiles/s of the loader's read-and-cut path alone vs raw OpenSlide decoding, both modes",
        description=READER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_slide_arguments(s, sections=["B4"])
    s.add_argument("--embed-dim", type=int, default=SMALL_UNI["model_kwargs"]["embed_dim"], help="sets units of work")
    s.add_argument("--max-tiles", type=int, default=0, help="tiles per slide and mode, a prefix (0: all)")
    s.add_argument("--repeats", type=int, default=3, help="timed passes of each path (best counts)")
    s.add_argument("--work-dir", default="results/bench/work", help="converted slides and geometries")
    s.add_argument("--out", default="results/bench/reader.json")
    s.set_defaults(func=bench_reader)


def add_bench_parsers(sub) -> None:
    """``genedml bench <what>``: add ``embed`` (and ``reader``) to the ``bench`` sub-command's sub-parsers."""
    s = sub.add_parser(
        "embed",
        help="encoder calls, tiles/s, bytes and memory of both neighbour modes",
        description=EMBED_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_slide_arguments(s, sections=HER2ST_SECTIONS)
    s.add_argument("--encoder", help="encoder config as JSON (default: a small random-init UNI-architecture ViT)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--num-workers", type=int, default=1)
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--work-dir", default="results/bench/work", help="converted slides, geometries, stores")
    s.add_argument("--out", default="results/bench/embed.json")
    s.add_argument(
        "--no-compression", dest="compression", action="store_false", help="skip the codec and chunk-size measurements"
    )
    s.add_argument(
        "--local-views",
        nargs="+",
        type=int,
        choices=schema.choices("encoder.local_views"),
        default=[1],
        help="dihedral view counts of the local crop to compare (e.g. 1 4 8), in the first of --modes",
    )
    s.add_argument(
        "--tokens", nargs="+", choices=["off", "on"], default=["off"], help="token cache settings to compare"
    )
    s.add_argument("--progress", action="store_true", help="progress bars of each embedding")
    s.set_defaults(func=bench_embed)
    _add_reader_parser(sub)

    from genedml.bench_gpu import add_parser as add_gpu_parser

    add_gpu_parser(sub)  # genedml bench gpu (genedml/bench_gpu.py)
