"""The per-sample embedding cache: one Zarr v3 store per sample and encoder.

Layout of ``results/features/{encoder}/{sample}.zarr``:
- ``local``           (N, D)      float16  CLS / pooled embedding of the spot-centred crop
- ``neighbour``       (N, T, D)   float16  embeddings of the T = grid x grid neighbour tiles (zeros where masked)
- ``neighbour_mask``  (N, T)      bool     True where the tile lies in the image
- ``barcodes``        (N,)        string
- ``spatial``         (N, 2)      float64  spot centres, level-0 pixels (x, y)
- ``array_coords``    (N, 2)      int32    array (row, col)
Attributes: encoder, weights_sha256, tile spec, package version, sample, slide µm/px and ``complete``.
The store is written under a temporary name and renamed into place; ``complete`` is set last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

FORMAT_VERSION = 1


@dataclass
class SampleFeatures:
    sample: str
    local: np.ndarray  # (N, D) float32
    neighbour: np.ndarray  # (N, T, D) float32
    neighbour_mask: np.ndarray  # (N, T) bool
    barcodes: np.ndarray
    spatial: np.ndarray
    array_coords: np.ndarray
    attrs: dict

    @property
    def n_spots(self) -> int:
        return len(self.barcodes)

    def subset(self, index) -> "SampleFeatures":
        return SampleFeatures(
            self.sample, self.local[index], self.neighbour[index], self.neighbour_mask[index],
            self.barcodes[index], self.spatial[index], self.array_coords[index], self.attrs,
        )


def create_store(path: str | os.PathLike, n_spots: int, n_tiles: int, dim: int, chunk_spots: int = 512):
    """Create the arrays of an empty store at ``path`` (normally a temporary path) and return the group."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    c = max(1, min(chunk_spots, n_spots))
    group.create_array("local", shape=(n_spots, dim), chunks=(max(1, min(4096, n_spots)), dim), dtype="float16")
    group.create_array("neighbour", shape=(n_spots, n_tiles, dim), chunks=(c, n_tiles, dim), dtype="float16")
    group.create_array("neighbour_mask", shape=(n_spots, n_tiles), chunks=(n_spots, n_tiles), dtype="bool")
    group.create_array("barcodes", shape=(n_spots,), dtype=str)
    group.create_array("spatial", shape=(n_spots, 2), dtype="float64")
    group.create_array("array_coords", shape=(n_spots, 2), dtype="int32")
    return group


def load_features(path: str | os.PathLike, sample: str | None = None) -> SampleFeatures:
    import zarr

    path = Path(path)
    if not path.exists():
        raise InputError("feature store not found (run the embed step)", sample, path)
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    if not attrs.get("complete"):
        raise InputError("feature store is incomplete (interrupted embedding?); delete it and rerun", sample, path)
    return SampleFeatures(
        sample=attrs.get("sample", sample or path.stem),
        local=np.asarray(group["local"][:], dtype=np.float32),
        neighbour=np.asarray(group["neighbour"][:], dtype=np.float32),
        neighbour_mask=np.asarray(group["neighbour_mask"][:], dtype=bool),
        barcodes=np.array(group["barcodes"][:].tolist(), dtype=str),
        spatial=np.asarray(group["spatial"][:]),
        array_coords=np.asarray(group["array_coords"][:]),
        attrs=attrs,
    )
