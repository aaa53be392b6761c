"""Embed every spot's local crop and neighbour tiles with a frozen encoder, once, into a Zarr store.

Per spot the whole grid x grid neighbour window is read in one OpenSlide call at the target scale and cut
into tiles; the local crop is the window's centre tile (same centre, same size), so it is not encoded
twice. Tiles outside the image (mask False) are not encoded and stored as zeros. Data-loader workers open
the slide themselves (OpenSlide handles are not shared across processes).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from . import __version__
from .atomic import atomic_path
from .encoders import Encoder
from .features import FORMAT_VERSION, create_store
from .slide import read_crop
from .tiling import Geometry

log = logging.getLogger(__name__)


class WindowDataset:
    """Item i: the (T, H, W, 3) uint8 tiles of spot i's neighbour window, its mask and the index i."""

    def __init__(self, geometry: Geometry, slide_path: str):
        self.geometry = geometry
        self.slide_path = slide_path
        self._slide = None

    def __len__(self) -> int:
        return self.geometry.n_spots

    def _open(self):
        if self._slide is None:  # opened lazily, so every worker process gets its own handle
            import openslide

            self._slide = openslide.OpenSlide(self.slide_path)
        return self._slide

    def __getitem__(self, i: int):
        import torch

        g = self.geometry
        px, grid = g.spec.tile_px, g.spec.grid
        window = read_crop(self._open(), g.centres[i], px * grid, g.scale)
        tiles = window.reshape(grid, px, grid, px, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, px, px, 3)
        mask = g.neighbour_mask[i].copy()
        mask[(grid * grid) // 2] = True  # the centre tile is the local crop: always encoded
        return torch.from_numpy(np.ascontiguousarray(tiles)), torch.from_numpy(mask), i


def _collate(items):
    import torch

    tiles = torch.stack([t for t, _, _ in items])
    masks = torch.stack([m for _, m, _ in items])
    idx = torch.tensor([i for _, _, i in items])
    return tiles, masks, idx


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def autocast_dtype(precision: str, device: str):
    import torch

    if precision == "auto":
        precision = "bf16" if device == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def embed_sample(
    geometry: Geometry,
    encoder: Encoder,
    out: str | os.PathLike,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "auto",
) -> dict:
    """Write ``out`` (a Zarr v3 store); return run facts (spots, encoder calls, seconds)."""
    import torch
    from tqdm import tqdm

    device = resolve_device(device)
    dtype = autocast_dtype(encoder.precision, device)
    model = encoder.model.to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    mean = torch.tensor(encoder.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, device=device).view(1, 3, 1, 1)
    g = geometry
    n_tiles = g.spec.grid * g.spec.grid
    centre = n_tiles // 2
    spots_per_batch = max(1, batch_size // n_tiles)
    ds = WindowDataset(g, g.slide_path)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=spots_per_batch, shuffle=False, num_workers=num_workers, collate_fn=_collate,
        persistent_workers=False, pin_memory=device == "cuda",
    )
    calls = 0
    t0 = time.perf_counter()
    with atomic_path(out) as tmp:
        store = create_store(tmp, g.n_spots, n_tiles, encoder.embed_dim)
        store["barcodes"][:] = g.barcodes.astype(str)
        store["spatial"][:] = g.centres
        store["array_coords"][:] = g.array_coords
        store["neighbour_mask"][:] = g.neighbour_mask
        bar = tqdm(total=g.n_spots, desc=f"embed {g.sample}", unit="spot", mininterval=5, file=None)
        with torch.inference_mode():
            for tiles, masks, idx in loader:
                flat = tiles.reshape(-1, *tiles.shape[2:])  # (B*T, H, W, 3)
                keep = masks.reshape(-1)
                x = flat[keep].to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
                x = (x - mean) / std
                if device == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
                    emb = model(x)
                emb = emb.float().cpu()
                calls += int(keep.sum())
                full = torch.zeros(flat.shape[0], encoder.embed_dim)
                full[keep] = emb
                full = full.view(len(idx), n_tiles, -1)
                local = full[:, centre].clone()
                full[:, centre] *= masks[:, centre, None].float()  # stays zero when the mask says outside
                lo, hi = int(idx[0]), int(idx[-1]) + 1
                store["local"][lo:hi] = local.numpy().astype(np.float16)
                store["neighbour"][lo:hi] = full.numpy().astype(np.float16)
                bar.update(len(idx))
        bar.close()
        wall = time.perf_counter() - t0
        facts = {
            "genedml_features_version": FORMAT_VERSION,
            "sample": g.sample,
            "encoder": encoder.name,
            "embed_dim": encoder.embed_dim,
            "weights_sha256": encoder.weights_sha256,
            "precision": "fp32" if dtype is None else str(dtype).replace("torch.", ""),
            "tile_spec": g.spec.describe(),
            "neighbour_mode": "centred",
            "slide_mpp": g.slide_mpp,
            "mpp_source": g.mpp_source,
            "scale": g.scale,
            "genedml_version": __version__,
            "encoder_calls": calls,
            "spots": g.n_spots,
            "wall_s": round(wall, 3),
            "device": device,
        }
        store.attrs.update(facts)
        store.attrs["complete"] = True
    log.info("%s: %d spots, %d encoder calls, %.1f s (%.1f tiles/s)", g.sample, g.n_spots, calls, wall, calls / max(wall, 1e-9))
    return facts
