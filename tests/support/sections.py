"""Synthetic sections with known linear signal, for head tests that need no slide."""

from __future__ import annotations

import numpy as np

from genedml.heads import Section
from genedml.tiles.features import SampleFeatures


def synthetic_section(name, rng, w, n=120, d=16, g=6, noise=0.1):
    local = rng.normal(size=(n, d)).astype(np.float32)
    neigh = np.repeat(local[:, None], 25, 1)
    f = SampleFeatures(
        name,
        local,
        neigh,
        np.ones((n, 25), bool),
        np.array([f"b{i}" for i in range(n)]),
        rng.uniform(0, 100, (n, 2)),
        rng.integers(0, 20, (n, 2)),
        {},
    )
    y = (local @ w + noise * rng.normal(size=(n, g))).astype(np.float32)
    return Section(name, "P" + name, f, y, [f"g{i}" for i in range(g)])


# a Gene-DML head small enough to train in seconds (unit tests)
TINY_GENEDML = {
    "size": "small",
    "encoder_dim": 16,
    "proj_dim": 16,
    "neighbour_heads": 2,
    "global_heads": 2,
    "k": 3,
    "batch_size": 32,
    "epochs": 2,
}
