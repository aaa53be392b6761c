"""Real feature stores (the embed step's Zarr layout) holding given local embeddings, for tests that need
embeddings of a known distribution rather than an encoder's output."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genedml.atomic import atomic_path
from genedml.tiles.features import FORMAT_VERSION, StoreLayout, create_store

ENCODER_ATTRS = {
    "encoder": "test-encoder",
    "weights_sha256": "0" * 64,
    "precision": "fp32",
    "tile_spec": {"tile_px": 32, "target_mpp": 4.0, "grid": 1, "neighbour_mode": "centred"},
}


def write_feature_store(path, sample: str, local: np.ndarray, **attrs) -> Path:
    """A complete ``centred`` store at ``path`` with ``local`` (N, D) as the spots' embeddings (each spot its
    own single neighbour tile); ``attrs`` override the encoder attributes."""
    local = np.asarray(local, dtype=np.float32)
    n, d = local.shape
    facts = {
        "genedml_features_version": FORMAT_VERSION,
        "sample": sample,
        "embed_dim": d,
        "neighbour_mode": "centred",
        "spots": n,
        **ENCODER_ATTRS,
        **attrs,
    }
    with atomic_path(path) as tmp:
        group = create_store(tmp, StoreLayout(n_spots=n, n_tiles=1, dim=d, mode="centred"), facts)
        group["local"][:] = local.astype(np.float16)
        group["neighbour"][:] = local[:, None].astype(np.float16)
        group["neighbour_mask"][:] = np.ones((n, 1), bool)
        group["barcodes"][:] = np.array([f"{sample}-{i}" for i in range(n)])
        group["spatial"][:] = np.stack([np.arange(n) * 100.0, np.zeros(n)], 1)
        group["array_coords"][:] = np.stack([np.arange(n), np.zeros(n)], 1).astype(np.int32)
        group.attrs["complete"] = True
    return Path(path)
