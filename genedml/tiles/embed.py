"""Embed every spot's local crop and neighbour tiles with a frozen encoder, once, into a Zarr store.

What is encoded (``tiles.neighbour_mode``, see ``tiling.py``):
- ``centred``: per spot, its grid x grid window is read in one region read and cut into tiles; the local
  crop is the window's centre tile (same centre, same size), so it is encoded once. ~25 calls per spot.
- ``grid``: every grid tile that some spot's neighbourhood uses is encoded once per slide, read block by
  block (one region read per ~5 x 5 tiles); local crops are read centred on their spots (a local crop that
  coincides exactly with a grid tile reuses it). ~1 + (grid tiles / spots) calls per spot.
Tiles outside the image (mask False) are not encoded and stored as zeros.

Feeding the encoder: ``DataLoader`` workers open the slide themselves (never a shared handle), read regions
and cut tiles off the main process; the main process batches tiles to ``batch_size``, moves uint8 pixels
to the device (pinned, non-blocking), normalises there, runs under ``torch.inference_mode()`` with bf16 /
fp16 autocast and channels-last on GPU, and copies batch k's results back while batch k+1 runs.

The cache never lies: the store is built under ``.{name}.partial-{fingerprint}.zarr`` (a name nothing
reads) in chunk-sized units of work, each marked done after its data is written; ``complete`` is set and
the store renamed into place only at the end. A rerun after an interruption resumes the partial store
when its fingerprint (geometry, slide, encoder, precision, format) matches, and discards it otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genedml import __version__
from genedml.tiles.encoders import Encoder
from genedml.errors import InputError
from genedml.tiles.features import CHUNK_BYTES, FORMAT_VERSION, StoreLayout, create_store
from genedml.tiles.geometry import Geometry, nodes_per_block
from genedml.atomic import move_into_place, remove_path

log = logging.getLogger(__name__)

LOCALS_PER_ITEM = 16  # grid mode: local crops read per data-loader item


# ----------------------------------------------------------------------------------------------- reading


def read_box(slide, x0: float, y0: float, out_w: int, out_h: int, scale: float) -> np.ndarray:
    """(out_h, out_w, 3) uint8 RGB of the level-0 box at (x0, y0) of size (out_w, out_h) * ``scale``.

    Reads from the coarsest pyramid level that still has the requested resolution. When the box needs no
    resizing at that level (native resolution, or a scale that is exactly a pyramid downsample) its corner
    is snapped to the nearest whole pixel of the level (a shift of at most half a pixel) and the pixels are
    copied, not interpolated; otherwise it is resampled (bilinear, sub-pixel exact). Outside the image is
    black.
    """
    from PIL import Image

    level = slide.get_best_level_for_downsample(scale + 1e-6)
    down = slide.level_downsamples[level]
    w0, h0 = out_w * scale, out_h * scale
    if abs(w0 / down - out_w) < 1e-6 and abs(h0 / down - out_h) < 1e-6:
        lx, ly = int(np.floor(x0 / down + 0.5)), int(np.floor(y0 / down + 0.5))  # level px of the corner
        region = slide.read_region((int(round(lx * down)), int(round(ly * down))), level, (out_w, out_h))
        return np.asarray(region.convert("RGB"))  # outside the image: transparent black -> black
    left, top = int(np.floor(x0)), int(np.floor(y0))
    side_w = int(np.ceil(w0 / down)) + 2
    side_h = int(np.ceil(h0 / down)) + 2
    region = slide.read_region((left, top), level, (side_w, side_h)).convert("RGB")
    ox, oy = (x0 - left) / down, (y0 - top) / down
    box = (ox, oy, ox + w0 / down, oy + h0 / down)
    return np.asarray(region.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box))


@dataclass
class Item:
    """One data-loader item: region reads and the tiles cut from them, with where each tile's output goes.

    ``boxes`` (B, 4): level-0 corner x, y and output width, height; ``cuts`` (K, 3): box, x, y (output px);
    ``dest`` (K, 4): unit, row in the unit, neighbour slot (-1: none), is-local (1: also the local crop).
    """

    boxes: np.ndarray
    cuts: np.ndarray
    dest: np.ndarray


class RegionTiles:
    """Map-style dataset over ``Item``s; each worker process opens its own slide handle."""

    def __init__(self, slide_path: str, scale: float, tile_px: int, items: list[Item]):
        self.slide_path = slide_path
        self.scale = scale
        self.tile_px = tile_px
        self.items = items
        self._slide = None

    def __len__(self) -> int:
        return len(self.items)

    def _open(self):
        if self._slide is None:
            import openslide

            self._slide = openslide.OpenSlide(self.slide_path)
        return self._slide

    def __getitem__(self, j: int):
        import torch

        item, px = self.items[j], self.tile_px
        tiles = np.empty((len(item.cuts), px, px, 3), np.uint8)
        regions = [read_box(self._open(), x, y, int(w), int(h), self.scale) for x, y, w, h in item.boxes]
        for k, (b, cx, cy) in enumerate(item.cuts):
            tiles[k] = regions[b][cy : cy + px, cx : cx + px]
        return torch.from_numpy(tiles), torch.from_numpy(item.dest)


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)  # workers decode; the main process computes
    info = torch.utils.data.get_worker_info()
    info.dataset._slide = None  # never use a handle inherited from the parent


# ------------------------------------------------------------------------------------------------- plan


@dataclass
class Unit:
    """A chunk-aligned range of output rows, written (and marked done) as one piece."""

    kind: str  # spots (centred: local + neighbour) | nodes (grid tiles) | locals (grid: local crops)
    lo: int
    hi: int
    n_tiles: int = 0
    copy_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # locals reusing a node
    copy_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _box_at(centre, out_px: int, scale: float) -> list[float]:
    half = out_px * scale / 2.0
    return [centre[0] - half, centre[1] - half, out_px, out_px]


def coincident_locals(g: Geometry) -> np.ndarray:
    """Grid mode: spots whose local crop is exactly a grid tile that is encoded anyway (bool, N)."""
    centre = (g.spec.grid * g.spec.grid) // 2
    exact = (np.abs(g.misalignment) < 1e-6 * max(g.tile0, 1.0)).all(axis=1)
    return exact & (g.neighbour_index[:, centre] >= 0)


def _reading_order(centres: np.ndarray, band: float) -> np.ndarray:
    """Indices of ``centres`` in bands of rows, left to right: consecutive reads share the slide's decoded
    tiles in OpenSlide's cache (store rows stay in sample order; only the reading order changes)."""
    return np.lexsort((centres[:, 0], np.floor(centres[:, 1] / max(band, 1e-9))))


def plan_units(g: Geometry, layout: StoreLayout, reuse_grid_locals: bool = True) -> tuple[list[Unit], list[list[Item]]]:
    """Units of work in writing order and, per unit, the items that read its tiles."""
    px, grid, scale = g.spec.tile_px, g.spec.grid, g.scale
    n_slots = grid * grid
    centre = n_slots // 2
    units: list[Unit] = []
    items: list[list[Item]] = []
    spot_rows = layout.spot_rows
    if g.spec.neighbour_mode == "centred":
        slot_xy = np.stack([np.arange(n_slots) % grid, np.arange(n_slots) // grid], 1) * px
        for lo in range(0, g.n_spots, spot_rows):
            hi = min(lo + spot_rows, g.n_spots)
            u = len(units)
            unit_items = []
            for i in lo + _reading_order(g.centres[lo:hi], g.tile0):
                keep = g.neighbour_mask[i].copy()
                keep[centre] = True  # the centre tile is the local crop: always encoded
                slots = np.flatnonzero(keep)
                cuts = np.column_stack([np.zeros(len(slots), np.int64), slot_xy[slots]])
                dest = np.column_stack([
                    np.full(len(slots), u), np.full(len(slots), i - lo),
                    np.where(g.neighbour_mask[i, slots], slots, -1), (slots == centre).astype(np.int64),
                ])
                box = np.array([_box_at(g.centres[i], px * grid, scale)])
                unit_items.append(Item(box, cuts.astype(np.int64), dest.astype(np.int64)))
            units.append(Unit("spots", lo, hi, sum(len(it.cuts) for it in unit_items)))
            items.append(unit_items)
        return units, items

    # grid mode: grid tiles first (block by block), then the local crops
    node_rows = layout.node_rows
    stride_px = int(round(px * g.spec.grid_stride))
    block = nodes_per_block(g.spec)
    rc = g.grid_node_rc.astype(np.int64)
    half0 = g.tile0 / 2.0
    origin, stride0 = g.grid_origin, g.tile0 * g.spec.grid_stride
    for lo in range(0, len(g.grid_nodes), node_rows):
        hi = min(lo + node_rows, len(g.grid_nodes))
        u = len(units)
        unit_items = []
        blocks = (rc[lo:hi] // block) @ np.array([1 << 32, 1])
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
        for a, b in zip(starts, np.r_[starts[1:], hi - lo]):
            rows = np.arange(lo + a, lo + b)
            r0, c0 = rc[rows].min(0)
            r1, c1 = rc[rows].max(0)
            # one read covers the block's nodes: corner = centre of lattice node (r0, c0) minus half a tile
            x0 = origin[0] + c0 * stride0 - half0
            y0 = origin[1] + r0 * stride0 - half0
            box = np.array([[x0, y0, (c1 - c0) * stride_px + px, (r1 - r0) * stride_px + px]])
            cuts = np.column_stack([np.zeros(len(rows), np.int64), (rc[rows, 1] - c0) * stride_px,
                                    (rc[rows, 0] - r0) * stride_px])
            dest = np.column_stack([np.full(len(rows), u), rows - lo, np.full(len(rows), -1), np.zeros(len(rows), np.int64)])
            unit_items.append(Item(box, cuts.astype(np.int64), dest.astype(np.int64)))
        units.append(Unit("nodes", lo, hi, hi - lo))
        items.append(unit_items)
    reuse = coincident_locals(g) if reuse_grid_locals else np.zeros(g.n_spots, bool)
    for lo in range(0, g.n_spots, spot_rows):
        hi = min(lo + spot_rows, g.n_spots)
        u = len(units)
        read = lo + _reading_order(g.centres[lo:hi], g.tile0)
        read = read[~reuse[read]]
        unit_items = []
        for s in range(0, len(read), LOCALS_PER_ITEM):
            spots = read[s : s + LOCALS_PER_ITEM]
            boxes = np.array([_box_at(g.centres[i], px, scale) for i in spots])
            cuts = np.column_stack([np.arange(len(spots)), np.zeros((len(spots), 2), np.int64)])
            dest = np.column_stack([np.full(len(spots), u), spots - lo, np.full(len(spots), -1), np.ones(len(spots), np.int64)])
            unit_items.append(Item(boxes, cuts.astype(np.int64), dest.astype(np.int64)))
        copy_rows = np.flatnonzero(reuse[lo:hi])
        units.append(Unit("locals", lo, hi, len(read), copy_rows, g.neighbour_index[lo + copy_rows, centre].astype(np.int64)))
        items.append(unit_items)
    return units, items


# ------------------------------------------------------------------------------------------------ device


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def autocast_dtype(precision: str, device: str):
    import torch

    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class EncoderRunner:
    """Runs batches of uint8 NHWC tiles through the encoder; results of batch k come back while k+1 runs.

    The caller fills ``batch()`` (a reusable host buffer: pinned on CUDA) and calls ``submit(n, dest)``,
    which returns the previous batch's (embeddings, local tokens, dest) or None; ``drain()`` the last one.
    On CPU everything is synchronous. On CUDA the pixels go up from two pinned buffers in turn
    (non-blocking) and the outputs come back into pinned host buffers guarded by events, so the GPU queue
    never waits for the host.
    """

    def __init__(self, encoder: Encoder, device: str, batch_size: int, tile_px: int, tokens: bool):
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.startswith("cuda")
        self.dtype = autocast_dtype(encoder.precision, device)
        self.tokens = tokens
        model = encoder.model.to(device)
        if self.cuda:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.mean = torch.tensor(encoder.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(encoder.std, device=device).view(1, 3, 1, 1) * 255.0)
        self.dim = encoder.embed_dim
        self.pending = None
        self.slot = 0
        n_buf = 2 if self.cuda else 1
        self.staging = [torch.empty((batch_size, tile_px, tile_px, 3), dtype=torch.uint8, pin_memory=self.cuda)
                        for _ in range(n_buf)]
        if self.cuda:
            self.host = [torch.empty((batch_size, self.dim), dtype=torch.float32, pin_memory=True) for _ in range(2)]
            self.host_tok = [None, None]
            self.events = [torch.cuda.Event(), torch.cuda.Event()]

    def batch(self):
        """The host buffer to fill with the next batch's tiles (N, H, W, 3) uint8."""
        return self.staging[self.slot]

    def _forward(self, x):
        torch = self.torch
        x = x.permute(0, 3, 1, 2)  # NHWC uint8 viewed as NCHW: channels-last strides, no copy
        x = x.to(torch.float32, memory_format=torch.channels_last)
        x = (x - self.mean) * self.inv_std
        with torch.autocast(device_type="cuda" if self.cuda else "cpu", dtype=self.dtype, enabled=self.dtype is not None):
            if self.tokens:
                toks = self.model.forward_features(x)
                return self.model.forward_head(toks), toks
            return self.model(x), None

    def submit(self, n: int, dest: np.ndarray):
        torch = self.torch
        local_rows = np.flatnonzero(dest[:, 3] == 1) if self.tokens else None
        if not self.cuda:
            emb, toks = self._forward(self.staging[0][:n])
            tok = toks[torch.from_numpy(local_rows)].to(torch.float16).numpy() if toks is not None else None
            return emb.float().numpy(), tok, dest
        k = self.slot
        self.slot ^= 1
        x = self.staging[k][:n].to(self.device, non_blocking=True)
        emb, toks = self._forward(x)
        self.host[k][:n].copy_(emb.float(), non_blocking=True)
        n_tok = 0
        if toks is not None:
            n_tok = len(local_rows)
            sel = toks[torch.from_numpy(local_rows).to(self.device)].to(torch.float16)
            buf = self.host_tok[k]
            if buf is None or buf.shape[0] < n_tok or buf.shape[1:] != sel.shape[1:]:
                buf = self.host_tok[k] = torch.empty((len(self.staging[k]), *sel.shape[1:]), dtype=torch.float16,
                                                     pin_memory=True)
            buf[:n_tok].copy_(sel, non_blocking=True)
        self.events[k].record()
        previous, self.pending = self.pending, (k, n, n_tok, dest)
        result = self._collect(previous)
        # the buffer filled next was uploaded two batches ago; its event (just waited for) covers that
        return result

    def _collect(self, pending):
        if pending is None:
            return None
        k, n, n_tok, dest = pending
        self.events[k].synchronize()
        emb = self.host[k][:n].numpy().copy()
        tok = self.host_tok[k][:n_tok].numpy().copy() if self.tokens else None
        return emb, tok, dest

    def drain(self):
        if not self.cuda:
            return None
        pending, self.pending = self.pending, None
        return self._collect(pending)


# ------------------------------------------------------------------------------------------------ writing


class UnitBuffers:
    """Rows of the units in flight; a unit is written to the store once all its tiles are in."""

    def __init__(self, store, units: list[Unit], layout: StoreLayout, done: np.ndarray):
        self.store = store
        self.units = units
        self.layout = layout
        self.done = done
        self.remaining = np.array([0 if done[u] else unit.n_tiles for u, unit in enumerate(units)])
        self.buffers: dict[int, dict] = {}
        self.next = 0

    def _buffer(self, u: int) -> dict:
        if u not in self.buffers:
            unit, d, t = self.units[u], self.layout.dim, self.layout.n_tiles
            rows = unit.hi - unit.lo
            if unit.kind == "nodes":
                buf = {"grid_tiles": np.zeros((rows, d), np.float32)}
            else:
                buf = {"local": np.zeros((rows, d), np.float32)}
                if unit.kind == "spots":
                    buf["neighbour"] = np.zeros((rows, t, d), np.float32)
                if self.layout.n_tokens:
                    buf["local_tokens"] = np.zeros((rows, self.layout.n_tokens, d), np.float16)
            self.buffers[u] = buf
        return self.buffers[u]

    def put(self, emb: np.ndarray, tokens: np.ndarray | None, dest: np.ndarray) -> None:
        local_pos = np.cumsum(dest[:, 3]) - 1  # row of each local tile in ``tokens``
        for u in np.unique(dest[:, 0]):
            sel = dest[:, 0] == u
            buf = self._buffer(int(u))
            rows, slots, is_local = dest[sel, 1], dest[sel, 2], dest[sel, 3] == 1
            e = emb[sel]
            if "grid_tiles" in buf:
                buf["grid_tiles"][rows] = e
            else:
                buf["local"][rows[is_local]] = e[is_local]
                if "neighbour" in buf:
                    nb = slots >= 0
                    buf["neighbour"][rows[nb], slots[nb]] = e[nb]
                if tokens is not None and "local_tokens" in buf:
                    buf["local_tokens"][rows[is_local]] = tokens[local_pos[sel][is_local]]
            self.remaining[u] -= int(sel.sum())
        self.flush()

    def flush(self) -> int:
        """Write every finished unit, in order; return how many units are done."""
        while self.next < len(self.units) and self.remaining[self.next] == 0:
            u = self.next
            if not self.done[u]:
                self._write(u)
            self.buffers.pop(u, None)
            self.next += 1
        return self.next

    def _write(self, u: int) -> None:
        unit = self.units[u]
        buf = self._buffer(u)
        if unit.kind == "locals" and len(unit.copy_rows):
            buf["local"][unit.copy_rows] = self.store["grid_tiles"].get_orthogonal_selection(
                (unit.copy_nodes, slice(None)))
        for name, values in buf.items():
            self.store[name][unit.lo : unit.hi] = values.astype(np.float16)
        self.store["progress"][u] = True  # after the data: a unit marked done is on disk
        self.done[u] = True


# -------------------------------------------------------------------------------------------- the store


def _hash_geometry(g: Geometry) -> str:
    h = hashlib.sha256()
    for arr in (g.centres, g.neighbour_mask, g.neighbour_centres, g.grid_nodes, g.neighbour_index):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\n".join(g.barcodes.astype(str)).encode())
    h.update(json.dumps([g.scale, g.spec.describe(), list(g.slide_dims)], sort_keys=True).encode())
    return h.hexdigest()


def _slide_identity(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def partial_path(out: Path, fingerprint: str) -> Path:
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f".{stem}.partial-{fingerprint[:16]}{out.suffix}")


def _open_partial(path: Path, fingerprint: str, n_units: int):
    """The partial store at ``path`` and its done units, or None when absent, foreign or unreadable."""
    import zarr

    if not path.exists():
        return None
    try:
        group = zarr.open_group(str(path), mode="r+")
        if group.attrs.get("fingerprint") != fingerprint or group.attrs.get("units") != n_units:
            return None
        return group, np.asarray(group["progress"][:], dtype=bool)
    except Exception as exc:  # a store cut off mid-write: start again
        log.warning("partial store %s is unreadable (%s); starting again", path, exc)
        return None


def token_count(encoder: Encoder, tile_px: int, device: str) -> int:
    """Output tokens per tile (197 for a ViT/16 at 224 px); an error when the encoder has no token output."""
    import torch

    with torch.inference_mode():
        probe = encoder.model.to(device).forward_features(torch.zeros(1, 3, tile_px, tile_px, device=device))
    if probe.ndim != 3:
        raise ValueError(f"encoder {encoder.name!r} gives no token sequence (forward_features shape "
                         f"{tuple(probe.shape)}); cache_local_tokens needs a ViT-like encoder")
    return int(probe.shape[1])


# ----------------------------------------------------------------------------------------------- driver


def embed_sample(
    geometry: Geometry,
    encoder: Encoder,
    out: str | os.PathLike,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict:
    """Write ``out`` (a Zarr v3 store); return run facts (spots, encoder calls, seconds, ...).

    ``chunk_bytes`` sets the chunk (and unit of work) size; smaller units lose less work to an interruption.
    """
    import torch
    from tqdm import tqdm

    g = geometry
    out = Path(out)
    if not Path(g.slide_path).is_file():
        raise InputError("slide image not found (moved since tiling? pass --slide)", g.sample, g.slide_path)
    device = resolve_device(device)
    dtype = autocast_dtype(encoder.precision, device)
    precision = "fp32" if dtype is None else str(dtype).replace("torch.", "")
    n_slots = g.spec.grid * g.spec.grid
    tokens = bool(getattr(encoder, "cache_local_tokens", False))
    n_tokens = token_count(encoder, g.spec.tile_px, device) if tokens else 0
    grid_mode = g.spec.neighbour_mode == "grid"
    layout = StoreLayout(g.n_spots, n_slots, encoder.embed_dim, g.spec.neighbour_mode,
                         len(g.grid_nodes) if grid_mode else 0, n_tokens, chunk_bytes)
    units, unit_items = plan_units(g, layout, reuse_grid_locals=not tokens)
    planned_calls = int(sum(u.n_tiles for u in units))
    fingerprint = hashlib.sha256(json.dumps({
        "format": FORMAT_VERSION, "geometry": _hash_geometry(g), "slide": _slide_identity(g.slide_path),
        "encoder": encoder.identity(), "precision": precision, "tokens": n_tokens,
        "chunks": [layout.spot_rows, layout.node_rows, layout.token_rows],
    }, sort_keys=True, default=str).encode()).hexdigest()

    tmp = partial_path(out, fingerprint)
    stem = tmp.name.split(".partial-")[0]
    for stale in out.parent.glob(f"{stem}.partial-*") if out.parent.exists() else []:
        if stale != tmp:  # a partial store of other settings: it can never be resumed
            log.info("removing stale partial store %s", stale)
            remove_path(stale)
    opened = _open_partial(tmp, fingerprint, len(units))
    if opened is not None:
        store, done = opened
        log.info("%s: resuming %s (%d of %d units already written)", g.sample, tmp, int(done.sum()), len(units))
    else:
        remove_path(tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        store = create_store(tmp, layout, {"fingerprint": fingerprint, "units": len(units), "complete": False})
        store.create_array("progress", shape=(len(units),), chunks=(1,), dtype="bool", fill_value=False)
        store["barcodes"][:] = g.barcodes.astype(str)
        store["spatial"][:] = g.centres
        store["array_coords"][:] = g.array_coords
        store["neighbour_mask"][:] = g.neighbour_mask
        if grid_mode:
            store["neighbour_index"][:] = g.neighbour_index
            store["grid_tile_centres"][:] = g.grid_nodes
        done = np.zeros(len(units), bool)

    todo = [item for u, its in enumerate(unit_items) if not done[u] for item in its]
    todo_tiles = int(sum(len(it.cuts) for it in todo))
    sink = UnitBuffers(store, units, layout, done)
    runner = EncoderRunner(encoder, device, batch_size, g.spec.tile_px, tokens)
    loader = torch.utils.data.DataLoader(
        RegionTiles(g.slide_path, g.scale, g.spec.tile_px, todo), batch_size=None, shuffle=False,
        num_workers=num_workers, worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=4 if num_workers else None, persistent_workers=False,
    )
    calls = 0
    t0 = time.perf_counter()
    bar = tqdm(total=todo_tiles, desc=f"embed {g.sample} ({g.spec.neighbour_mode})", unit="tile",
               mininterval=5, file=sys.stderr, disable=not progress)

    def consume(result):
        if result is not None:
            emb, tok, dest = result
            sink.put(emb, tok, dest)

    with torch.inference_mode():
        sink.flush()  # units with nothing to encode (e.g. all locals reused)
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
                    consume(runner.submit(fill, np.concatenate(dests)))
                    calls += fill
                    bar.update(fill)
                    fill, dests = 0, []
        if fill:
            consume(runner.submit(fill, np.concatenate(dests)))
            calls += fill
            bar.update(fill)
        consume(runner.drain())
        sink.flush()
    bar.close()
    wall = time.perf_counter() - t0
    if sink.next != len(units):
        raise RuntimeError(f"{g.sample}: {len(units) - sink.next} units of work were not finished")

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
        "encoder_calls": planned_calls,
        "encoder_calls_this_run": calls,
        "spots": g.n_spots,
        "wall_s": round(wall, 3),
        "device": device,
        "local_tokens": n_tokens,
    }
    if grid_mode:
        facts.update({k: v for k, v in g.summary().items() if k.startswith(("grid", "misalignment"))})
        facts["locals_reused_from_grid"] = int(sum(len(u.copy_rows) for u in units if u.kind == "locals"))
    store.attrs.update(facts)
    del store["progress"]
    store.attrs["complete"] = True
    move_into_place(tmp, out)
    log.info("%s: %d spots, %d encoder calls this run (%d in the store), %.1f s (%.1f tiles/s)",
             g.sample, g.n_spots, calls, planned_calls, wall, calls / max(wall, 1e-9))
    return facts
