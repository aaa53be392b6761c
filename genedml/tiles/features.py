"""The per-sample embedding cache: one Zarr v3 store per sample and encoder.

Layout of ``results/features/{encoder}/{sample}.zarr`` (attribute ``neighbour_mode`` says which):

Both modes
- ``local``           (N, D)      float16  CLS / pooled embedding of the spot-centred crop
- ``neighbour_mask``  (N, T)      bool     True where the neighbour tile lies in the image (T = grid x grid)
- ``barcodes``        (N,)        string
- ``spatial``         (N, 2)      float64  spot centres, level-0 pixels (x, y)
- ``array_coords``    (N, 2)      int32    array (row, col)
- ``local_tokens``    (N, 197, D) float16  optional (``encoder.cache_local_tokens``): every output token of the
  local crop (CLS + 196 patch tokens for a ViT/16 at 224 px): 197 x D x 2 bytes per spot, 403 KB for UNI

``centred`` (the reference)
- ``neighbour``       (N, T, D)   float16  the spot's own T neighbour tiles (zeros where masked)

``grid`` (one tile lattice per slide, each tile embedded once)
- ``grid_tiles``      (M, D)      float16  embeddings of the M grid tiles some neighbourhood uses
- ``grid_tile_centres`` (M, 2)    float64  their centres, level-0 px
- ``neighbour_index`` (N, T)      int32    row of ``grid_tiles`` per spot and slot, -1 where masked

``load_features`` returns the same ``SampleFeatures`` view for both (``neighbour`` gathered to (N, T, D)),
so heads never see the difference. Attributes: encoder, weights_sha256, tile spec, neighbour mode, package
version, sample, slide µm/px, encoder calls, and ``complete`` (set last). The store is written under a
hidden ``.{sample}.partial-*.zarr`` name and renamed into place when complete (see ``embed.py``).

Chunks and compression (measured by ``genedml bench embed``, see docs/embedding.md): chunks hold
whole spots (or grid tiles) and about ``CHUNK_BYTES`` each, so loading a sample reads a few large files;
the codec is blosc Zstandard over byte-shuffled float16. Float16 embeddings barely compress: 1.09x for
Gaussian float16 with any zstd variant, 1.40x (vs 1.12x for plain zstd) on a small encoder's real output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genedml.errors import InputError

FORMAT_VERSION = 2  # 1: centred only (no neighbour_mode attribute); 2: centred | grid, optional tokens

# uncompressed bytes aimed for per chunk: big enough that a per-sample load is a handful of reads,
# small enough that a unit of work (one chunk) is cheap to redo after an interruption
CHUNK_BYTES = 4 << 20


def embedding_codecs():
    """Compressors for float16 embeddings: blosc zstd level 3 with byte shuffle (chosen by measurement)."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=2)]


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

    def subset(self, index) -> SampleFeatures:
        return SampleFeatures(
            self.sample,
            self.local[index],
            self.neighbour[index],
            self.neighbour_mask[index],
            self.barcodes[index],
            self.spatial[index],
            self.array_coords[index],
            self.attrs,
        )


def chunk_rows(row_bytes: int, n_rows: int, target: int = CHUNK_BYTES) -> int:
    """Rows per chunk: the power of two at or below ``target`` bytes (powers of two nest, so the chunks of
    different arrays align), but no more than the power of two that covers ``n_rows``."""
    rows = max(1, target // max(1, row_bytes))
    rows = 1 << (int(rows).bit_length() - 1)
    cover = 1 << (max(1, n_rows) - 1).bit_length()
    return int(min(rows, cover))


@dataclass(frozen=True)
class StoreLayout:
    """Shapes and chunking of one sample's store."""

    n_spots: int
    n_tiles: int  # neighbour slots per spot (grid x grid)
    dim: int
    mode: str  # tiles.neighbour_mode
    n_nodes: int = 0  # grid mode: grid tiles
    n_tokens: int = 0  # > 0: cache the local crop's tokens
    chunk_bytes: int = CHUNK_BYTES

    @property
    def spot_rows(self) -> int:
        """Spots per chunk of the per-spot embedding arrays (and per unit of work)."""
        row = 2 * self.dim * (self.n_tiles if self.mode == "centred" else 1)
        rows = chunk_rows(row, self.n_spots, self.chunk_bytes)
        return max(rows, self.token_rows)

    @property
    def token_rows(self) -> int:
        return chunk_rows(2 * self.dim * self.n_tokens, self.n_spots, self.chunk_bytes) if self.n_tokens else 1

    @property
    def node_rows(self) -> int:
        return chunk_rows(2 * self.dim, self.n_nodes, self.chunk_bytes)

    def arrays(self) -> dict:
        """name -> (shape, chunks, dtype, compressed)."""
        n, t, d = self.n_spots, self.n_tiles, self.dim
        spot = self.spot_rows
        out = {"local": ((n, d), (spot, d), "float16", True)}
        if self.mode == "centred":
            out["neighbour"] = ((n, t, d), (spot, t, d), "float16", True)
        else:
            m = max(self.n_nodes, 0)
            out["grid_tiles"] = ((m, d), (max(1, min(self.node_rows, max(m, 1))), d), "float16", True)
            out["grid_tile_centres"] = ((m, 2), (max(m, 1), 2), "float64", False)
            out["neighbour_index"] = ((n, t), (max(n, 1), t), "int32", False)
        if self.n_tokens:
            out["local_tokens"] = ((n, self.n_tokens, d), (self.token_rows, self.n_tokens, d), "float16", True)
        out["neighbour_mask"] = ((n, t), (max(n, 1), t), "bool", False)
        out["spatial"] = ((n, 2), (max(n, 1), 2), "float64", False)
        out["array_coords"] = ((n, 2), (max(n, 1), 2), "int32", False)
        return out


def create_store(path: str | os.PathLike, layout: StoreLayout, attrs: dict | None = None):
    """Create the arrays of an empty store at ``path`` (a temporary path) and return the group."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, (shape, chunks, dtype, compressed) in layout.arrays().items():
        kwargs = {"compressors": embedding_codecs()} if compressed else {}
        group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, **kwargs)
    group.create_array("barcodes", shape=(layout.n_spots,), dtype=str)
    if attrs:
        group.attrs.update(attrs)
    return group


def _open_complete(path: str | os.PathLike, sample: str | None):
    import zarr

    path = Path(path)
    if not path.exists():
        raise InputError("feature store not found (run the embed step)", sample, path)
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    if not attrs.get("complete"):
        raise InputError("feature store is incomplete (interrupted embedding?); delete it and rerun", sample, path)
    return group, attrs


def gather_neighbours(grid_tiles: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(N, T, D) float32 from grid tiles (M, D) and per-slot rows (N, T), zeros where the row is -1."""
    n, t = index.shape
    out = np.zeros((n, t, grid_tiles.shape[1]), np.float32)
    keep = index >= 0
    out[keep] = grid_tiles[index[keep]]
    return out


def load_features(path: str | os.PathLike, sample: str | None = None) -> SampleFeatures:
    group, attrs = _open_complete(path, sample)
    if attrs["neighbour_mode"] == "grid":
        tiles = np.asarray(group["grid_tiles"][:], dtype=np.float32)
        neighbour = gather_neighbours(tiles, np.asarray(group["neighbour_index"][:]))
    else:
        neighbour = np.asarray(group["neighbour"][:], dtype=np.float32)
    return SampleFeatures(
        sample=attrs.get("sample", sample or Path(path).stem),
        local=np.asarray(group["local"][:], dtype=np.float32),
        neighbour=neighbour,
        neighbour_mask=np.asarray(group["neighbour_mask"][:], dtype=bool),
        barcodes=np.array(group["barcodes"][:].tolist(), dtype=str),
        spatial=np.asarray(group["spatial"][:]),
        array_coords=np.asarray(group["array_coords"][:]),
        attrs=attrs,
    )


def open_local_tokens(path: str | os.PathLike, sample: str | None = None):
    """The cached local tokens (N, 197, D) float16 as a lazy Zarr array (too big to load whole), or an error
    saying how to enable the cache."""
    group, _ = _open_complete(path, sample)
    if "local_tokens" not in group:
        raise InputError(
            "this store has no local token cache (set encoder.cache_local_tokens: true and re-embed)", sample, path
        )
    return group["local_tokens"]
