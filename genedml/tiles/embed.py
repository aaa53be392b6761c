"""Embed every spot's local crop and neighbour tiles with a frozen encoder, once, into a Zarr store.

What is encoded (``tiles.neighbour_mode``, see ``geometry.py``):
- ``centred``: per spot, its grid x grid window is read in one region read and cut into tiles; the local
  crop is the window's centre tile (same centre, same size), so it is encoded once. ~25 calls per spot.
- ``grid``: every grid tile that some spot's neighbourhood uses is encoded once per slide, read block by
  block (one region read per ~5 x 5 tiles); local crops are read centred on their spots (a local crop that
  coincides exactly with a grid tile reuses it). ~1 + (grid tiles / spots) calls per spot.
``encoder.local_views`` V > 1 encodes each local crop under V dihedral transforms (``views.py``): V + the
neighbour tiles per spot (the neighbour tiles are never transformed).
Tiles outside the image (mask False) are not encoded and stored as zeros.

The engine, one module per side; ``embed_sample`` here drives them:
- ``embed_plan``: the units of work (chunk-aligned store rows) and the data-loader items that fill them.
- ``embed_loader``: ``DataLoader`` workers open the slide themselves (never a shared handle), read regions
  through ``genedml.io.slide.read_box`` and cut tiles off the main process.
- ``embed_runner``: the main process batches tiles to ``batch_size``, moves uint8 pixels to the device
  (pinned, non-blocking), normalises there, runs under ``torch.inference_mode()`` with bf16 / fp16
  autocast and channels-last on GPU, and copies batch k's results back while batch k+1 runs.
- ``embed_store``: the cache never lies. The store is built under ``.{name}.partial-{fingerprint}.zarr``
  (a name nothing reads), each unit marked done after its data is written; ``complete`` is set and the
  store renamed into place only at the end. A rerun after an interruption resumes the partial store when
  its fingerprint (geometry, slide, encoder, precision, format) matches, and discards it otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from genedml import __version__
from genedml.errors import InputError
from genedml.tiles.embed_loader import region_loader
from genedml.tiles.embed_plan import Unit, plan_units
from genedml.tiles.embed_runner import EncoderRunner, autocast_dtype, precision_name, resolve_device, token_count
from genedml.tiles.embed_store import UnitBuffers, finish_store, resume_or_create, store_fingerprint
from genedml.tiles.encoders import EmbedRuntime, Encoder
from genedml.tiles.features import CHUNK_BYTES, FORMAT_VERSION, StoreLayout
from genedml.tiles.geometry import Geometry
from genedml.tiles.views import view_names

log = logging.getLogger(__name__)


def _encode(loader, runner: EncoderRunner, sink: UnitBuffers, batch_size: int, bar) -> int:
    """Feed the loader's tiles to the runner in full batches, results to the sink; return the tiles encoded."""
    calls = 0

    def submit(fill: int, dests: list) -> None:
        nonlocal calls
        result = runner.submit(fill, np.concatenate(dests))
        if result is not None:
            sink.put(*result)
        calls += fill
        bar.update(fill)

    fill, dests = 0, []
    for tiles, dest in loader:
        dest = dest.numpy()
        pos = 0
        while pos < len(tiles):
            take = min(batch_size - fill, len(tiles) - pos)
            runner.batch()[fill : fill + take] = tiles[pos : pos + take]
            dests.append(dest[pos : pos + take])
            fill += take
            pos += take
            if fill == batch_size:
                submit(fill, dests)
                fill, dests = 0, []
    if fill:
        submit(fill, dests)
    last = runner.drain()
    if last is not None:
        sink.put(*last)
    return calls


def _run_facts(
    g: Geometry,
    encoder: Encoder,
    precision: str,
    units: list[Unit],
    calls: int,
    wall: float,
    device: str,
    n_tokens: int,
) -> dict:
    """The store's attributes and ``embed_sample``'s result: what was embedded, how, and at what cost."""
    facts = {
        "genedml_features_version": FORMAT_VERSION,
        "sample": g.sample,
        "encoder": encoder.name,
        "embed_dim": encoder.embed_dim,
        "weights_sha256": encoder.weights_sha256,
        "precision": precision,
        "tile_spec": g.spec.describe(),
        "neighbour_mode": g.spec.neighbour_mode,
        "slide_mpp": g.slide_mpp,
        "mpp_source": g.mpp_source,
        "scale": g.scale,
        "genedml_version": __version__,
        "encoder_calls": int(sum(u.n_tiles for u in units)),
        "encoder_calls_this_run": calls,
        "spots": g.n_spots,
        "wall_s": round(wall, 3),
        "device": device,
        "local_tokens": n_tokens,
        "local_views": int(getattr(encoder, "local_views", 1)),
        "local_view_names": view_names(int(getattr(encoder, "local_views", 1))),
    }
    facts["geometry_audit"] = g.audit_facts()  # for the report's geometry audit
    if g.spec.neighbour_mode == "grid":
        facts.update({k: v for k, v in g.summary().items() if k.startswith(("grid", "misalignment"))})
        facts["locals_reused_from_grid"] = int(sum(len(u.copy_rows) for u in units if u.kind == "locals"))
    return facts


def embed_sample(
    geometry: Geometry,
    encoder: Encoder,
    out: str | os.PathLike,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str | None = None,
    progress: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict:
    """Write ``out`` (a Zarr v3 store); return run facts (spots, encoder calls, seconds, ...).

    ``batch_size``, ``num_workers``, ``device``: the encoder's run-time knobs (None: the config schema's
    default). ``chunk_bytes`` sets the chunk (and unit of work) size; smaller units lose less work to an
    interruption.
    """
    import torch

    g, out = geometry, Path(out)
    knobs = {"batch_size": batch_size, "num_workers": num_workers, "device": device}
    runtime = EmbedRuntime.from_config({k: v for k, v in knobs.items() if v is not None})
    if not Path(g.slide_path).is_file():
        raise InputError("slide image not found (moved since tiling? pass --slide)", g.sample, g.slide_path)
    device = resolve_device(runtime.device)
    precision = precision_name(autocast_dtype(encoder.precision, device))
    tokens = bool(getattr(encoder, "cache_local_tokens", False))
    n_views = len(view_names(int(getattr(encoder, "local_views", 1))))
    n_tokens = token_count(encoder, g.spec.tile_px, device) if tokens else 0
    layout = _store_layout(g, encoder, n_tokens, chunk_bytes, n_views)
    units, unit_items = plan_units(g, layout, reuse_grid_locals=not tokens)
    fingerprint = store_fingerprint(g, encoder, precision, n_tokens, layout)
    store, done, tmp = resume_or_create(out, g, layout, fingerprint, len(units))

    todo = [item for u, its in enumerate(unit_items) if not done[u] for item in its]
    sink = UnitBuffers(store, units, layout, done)
    runner = EncoderRunner(encoder, device, runtime.batch_size, g.spec.tile_px, tokens)
    loader = region_loader(g.slide_path, g.scale, g.spec.tile_px, todo, runtime.num_workers)
    t0 = time.perf_counter()
    bar = _progress_bar(g, int(sum(len(it.cuts) for it in todo)), progress)
    with torch.inference_mode():
        sink.flush()  # units with nothing to encode (e.g. all locals reused)
        calls = _encode(loader, runner, sink, runtime.batch_size, bar)
        sink.flush()
    bar.close()
    wall = time.perf_counter() - t0
    if sink.next != len(units):
        raise RuntimeError(f"{g.sample}: {len(units) - sink.next} units of work were not finished")

    facts = _run_facts(g, encoder, precision, units, calls, wall, device, n_tokens)
    finish_store(store, facts, tmp, out)
    log.info(
        "%s: %d spots, %d encoder calls this run (%d in the store), %.1f s (%.1f tiles/s)",
        g.sample,
        g.n_spots,
        calls,
        facts["encoder_calls"],
        wall,
        calls / max(wall, 1e-9),
    )
    return facts


def _store_layout(g: Geometry, encoder: Encoder, n_tokens: int, chunk_bytes: int, n_views: int = 1) -> StoreLayout:
    grid_mode = g.spec.neighbour_mode == "grid"
    return StoreLayout(
        g.n_spots,
        g.spec.grid * g.spec.grid,
        encoder.embed_dim,
        g.spec.neighbour_mode,
        len(g.grid_nodes) if grid_mode else 0,
        n_tokens,
        chunk_bytes,
        n_views,
    )


def _progress_bar(g: Geometry, total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=f"embed {g.sample} ({g.spec.neighbour_mode})",
        unit="tile",
        mininterval=5,
        file=sys.stderr,
        disable=not enabled,
    )
