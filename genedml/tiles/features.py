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

With ``encoder.local_views`` V > 1 (dihedral views of the local crop, ``views.py``, named in the attribute
``local_view_names``), format 3 adds
- ``local_views``     (N, V, D)   float16  CLS / pooled embedding per view; view 0 (identity) equals ``local``
- ``local_tokens``    (N, V, 197, D) float16 (instead of the above): tokens per view, in chunks of one view of
  one spot (what a training batch reads) grouped into shards of whole spots (few files)
A V = 1 store has exactly the arrays of format 2, and format-2 stores load as V = 1.

``centred`` (the reference)
- ``neighbour``       (N, T, D)   float16  the spot's own T neighbour tiles (zeros where masked)

``grid`` (one tile lattice per slide, each tile embedded once)
- ``grid_tiles``      (M, D)      float16  embeddings of the M grid tiles some neighbourhood uses
- ``grid_tile_centres`` (M, 2)    float64  their centres, level-0 px
- ``neighbour_index`` (N, T)      int32    row of ``grid_tiles`` per spot and slot, -1 where masked

``load_features`` returns the same ``SampleFeatures`` view for both (``neighbour`` gathered to (N, T, D)),
so heads never see the difference; ``local_views`` is loaded (small), the token maps never are: they stay
a lazy Zarr array, read a batch's rows at a time (``TokenMaps``). ``load_features(lazy=True)`` (what training
uses) leaves the neighbours on disk too: ``neighbour`` is then a ``NeighbourTiles`` reader (centred: chunks
decoded on demand through a shared byte-budgeted LRU, ``FEATURE_CACHE``; grid: the small ``grid_tiles`` kept
in float16 with the (N, T) index, gathered per batch) and ``local_views`` stays float16, so a fold's memory
is set by the batch and the cache budget, not by the dataset.

Attributes: encoder, weights_sha256, tile spec, neighbour mode, package
version, sample, slide µm/px, encoder calls, and ``complete`` (set last). The store is written under a
hidden ``.{sample}.partial-*.zarr`` name and renamed into place when complete (see ``embed.py``).

Chunks and compression (measured by ``genedml bench embed``, see docs/embedding.md): chunks hold
whole spots (or grid tiles) and about ``CHUNK_BYTES`` each, so loading a sample reads a few large files;
the codec is blosc Zstandard over byte-shuffled float16. Float16 embeddings barely compress: 1.09x for
Gaussian float16 with any zstd variant, 1.40x (vs 1.12x for plain zstd) on a small encoder's real output.
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genedml.errors import InputError

# 1: centred only (no neighbour_mode attribute); 2: centred | grid, optional tokens; 3: optional local views
FORMAT_VERSION = 3

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
    neighbour: np.ndarray  # (N, T, D) float32, or a lazy ``NeighbourTiles`` (load_features(lazy=True))
    neighbour_mask: np.ndarray  # (N, T) bool
    barcodes: np.ndarray
    spatial: np.ndarray
    array_coords: np.ndarray
    attrs: dict
    local_views: np.ndarray | None = None  # (N, V, D) dihedral views when V > 1 (view 0 = local); float16 if lazy
    local_tokens: object = None  # token maps (M, T, D) or (M, V, T, D): the lazy Zarr array, never loaded
    token_rows: np.ndarray | None = None  # row of ``local_tokens`` per spot (set by ``subset``); None: 0..N-1
    path: str | None = None  # the store, for error messages
    # (N, px, px, 3) uint8 local crops (tiles.spot_images), attached for heads with a trainable image encoder
    spot_images: np.ndarray | None = None

    @property
    def n_spots(self) -> int:
        return len(self.barcodes)

    def subset(self, index) -> SampleFeatures:
        rows = None
        if self.local_tokens is not None:  # a row mapping, not a copy: the token maps stay on disk
            rows = (np.arange(self.n_spots) if self.token_rows is None else np.asarray(self.token_rows))[index]
        lazy = isinstance(self.neighbour, NeighbourTiles)
        return SampleFeatures(
            self.sample,
            self.local[index],
            self.neighbour.subset(index) if lazy else self.neighbour[index],
            self.neighbour_mask[index],
            self.barcodes[index],
            self.spatial[index],
            self.array_coords[index],
            self.attrs,
            None if self.local_views is None else self.local_views[index],
            self.local_tokens,
            rows,
            self.path,
            None if self.spot_images is None else self.spot_images[index],
        )

    def with_spot_images(self, path, rows: slice | None = None) -> SampleFeatures:
        """These features with the spot images of the store at ``path`` attached, in the features' spot order
        (``rows``: these features are that block of the store's spots, so only its images are read)."""
        from genedml.tiles.spot_images import load_spot_images

        self.spot_images = load_spot_images(path, self.sample, rows).aligned(self.barcodes, self.sample)
        return self

    def token_maps(self) -> TokenMaps | None:
        """These spots' token maps as a lazy reader, or None when the store has none."""
        if self.local_tokens is None:
            return None
        return TokenMaps(self.local_tokens, self.token_rows, self.sample, self.path)


class TokenMaps:
    """Per-spot token maps (T, D) of one section, read from the store a batch of rows at a time.

    ``array``: (M, T, D) (one view) or (M, V, T, D), a Zarr array (or numpy); ``rows`` maps spot i to its
    row (None: i). ``shape`` is the (N, T, D) of one view. ``read`` reads a batch's sorted unique rows (chunk
    order), one view at a time, and puts them back in the batch's order.
    """

    def __init__(self, array, rows=None, sample: str | None = None, path: str | None = None):
        self.array = array
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.sample = sample
        self.path = path
        self.per_view = array.ndim == 4

    @property
    def n_views(self) -> int:
        return int(self.array.shape[1]) if self.per_view else 1

    @property
    def shape(self) -> tuple:
        n = int(self.array.shape[0]) if self.rows is None else len(self.rows)
        return (n, *(int(x) for x in self.array.shape[-2:]))

    def read(self, index, views=None) -> np.ndarray:
        """(B, T, D) float16: the token maps of spots ``index`` (B,), in view ``views`` (B,) each (None: 0)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        rows = index if self.rows is None else self.rows[index]
        views = np.zeros(len(rows), np.int64) if views is None else np.asarray(views, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape[1:]), np.float16)
        try:
            for v in np.unique(views):
                pick = np.flatnonzero(views == v)
                unique, inverse = np.unique(rows[pick], return_inverse=True)  # sorted: chunk order
                out[pick] = self._rows(unique, int(v))[inverse]
        except Exception as exc:
            raise InputError(
                f"cannot read the local token maps ({type(exc).__name__}: {exc})", self.sample, self.path
            ) from exc
        return out

    def _rows(self, rows: np.ndarray, view: int) -> np.ndarray:
        arr = self.array
        if not self.per_view and view:
            raise ValueError(f"view {view} of a one-view token cache")
        if isinstance(arr, np.ndarray):
            return arr[rows, view] if self.per_view else arr[rows]
        return arr.get_orthogonal_selection((rows, view) if self.per_view else (rows,))


def _cache_budget() -> int:
    try:
        return int(float(os.environ.get("GENEDML_FEATURE_CACHE_MB", "2048")) * 2**20)
    except ValueError:
        return 2 << 30


class ChunkCache:
    """Decoded chunks of lazily read arrays, the least recently used dropped once they pass ``budget`` bytes:
    a batch that touches a chunk again (another batch of the section, or of a mixed batch) does not decode
    it again while it fits, and memory stays bounded when it does not."""

    def __init__(self, budget: int):
        self.budget = int(budget)
        self.bytes = 0
        self.decoded = 0  # chunks decoded (misses), for benchmarks
        self._items: OrderedDict = OrderedDict()

    def get(self, key, load):
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        value = load()
        self.decoded += 1
        if value.nbytes <= self.budget:
            self._items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.budget:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.nbytes
        return value

    def drop(self, owner) -> None:
        """Forget every chunk of ``owner`` (a store whose reader is gone)."""
        for key in [k for k in self._items if k[0] == owner]:
            self.bytes -= self._items.pop(key).nbytes

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


# shared by every lazy reader of the process: the budget bounds the fold, not each section
# (``GENEDML_FEATURE_CACHE_MB``, default 2048: an STNet-sized fold's neighbours fit)
FEATURE_CACHE = ChunkCache(_cache_budget())


class _Source:
    """One opened store array; its chunks leave the cache when the last reader of it is collected."""

    def __init__(self, array, cache: ChunkCache):
        self.array = array
        self.cache = cache
        self.rows = int(array.chunks[0]) if hasattr(array, "chunks") else max(1, len(array))
        weakref.finalize(self, cache.drop, id(self))

    def chunk(self, c: int) -> np.ndarray:
        lo = c * self.rows
        return self.cache.get((id(self), c), lambda: np.asarray(self.array[lo : lo + self.rows], dtype=np.float16))


class NeighbourTiles:
    """The (N, T, D) neighbour tile embeddings of one section, read a batch of rows at a time.

    Centred stores: ``source`` is the store's (M, T, D) ``neighbour`` array, ``rows`` maps spot i to its row
    (None: i); a read decodes the batch's chunks in chunk order, each once, through the shared ``ChunkCache``.
    Grid stores: ``tiles`` (M, D) float16 stays in memory (small: one row per grid tile) with ``index`` (N, T)
    (-1 where masked), gathered per batch. ``read`` gives float16 (the stored values), ``[index]`` float32, as
    the eager array; ``np.asarray`` of the whole reader materialises it (only for small sections).
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, source=None, rows=None, tiles=None, index=None, sample=None, path=None):
        self.source, self.tiles = source, tiles
        self.index = None if index is None else np.asarray(index)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.sample, self.path = sample, path

    @classmethod
    def centred(cls, array, rows=None, sample=None, path=None, cache: ChunkCache | None = None) -> NeighbourTiles:
        return cls(_Source(array, cache or FEATURE_CACHE), rows, sample=sample, path=path)

    @property
    def shape(self) -> tuple:
        if self.index is not None:
            return (*self.index.shape, int(self.tiles.shape[1]))
        n = int(self.source.array.shape[0]) if self.rows is None else len(self.rows)
        return (n, *(int(x) for x in self.source.array.shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def subset(self, index) -> NeighbourTiles:
        """These spots' rows (a mapping, nothing read)."""
        if self.index is not None:
            return NeighbourTiles(tiles=self.tiles, index=self.index[index], sample=self.sample, path=self.path)
        rows = np.arange(self.shape[0]) if self.rows is None else self.rows
        return NeighbourTiles(self.source, rows[index], sample=self.sample, path=self.path)

    def read(self, index, dtype=np.float16) -> np.ndarray:
        """(B, T, D) ``dtype`` (float16: as stored): the neighbour tiles of spots ``index`` (B,), in that order;
        float32 is cast while gathering (one pass over the batch, not a copy and then a cast)."""
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        index = index.reshape(-1)
        if self.index is not None:
            slots = self.index[index]
            out = np.zeros((*slots.shape, self.tiles.shape[1]), dtype)
            keep = slots >= 0
            out[keep] = self.tiles[slots[keep]]
            return out
        rows = index if self.rows is None else self.rows[index]
        out = np.empty((len(rows), *self.shape[1:]), dtype)
        per = self.source.rows
        try:
            chunks = rows // per
            for c in np.unique(chunks):  # sorted: chunk order, each chunk decoded (at most) once
                pick = np.flatnonzero(chunks == c)
                out[pick] = self.source.chunk(int(c))[rows[pick] - int(c) * per]
        except Exception as exc:
            raise InputError(
                f"cannot read the neighbour embeddings ({type(exc).__name__}: {exc})", self.sample, self.path
            ) from exc
        return out

    def __getitem__(self, index) -> np.ndarray:
        return self.read(index, np.float32)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)


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
    n_views: int = 1  # dihedral views of the local crop (encoder.local_views)

    @property
    def spot_rows(self) -> int:
        """Spots per chunk of the per-spot embedding arrays (and per unit of work)."""
        row = 2 * self.dim * max(self.n_tiles if self.mode == "centred" else 1, self.n_views)
        rows = chunk_rows(row, self.n_spots, self.chunk_bytes)
        return max(rows, self.token_rows)

    @property
    def token_rows(self) -> int:
        """Spots per token chunk (one view) or, with several views, per token shard (all views)."""
        if not self.n_tokens:
            return 1
        return chunk_rows(2 * self.dim * self.n_tokens * self.n_views, self.n_spots, self.chunk_bytes)

    @property
    def node_rows(self) -> int:
        return chunk_rows(2 * self.dim, self.n_nodes, self.chunk_bytes)

    def arrays(self) -> dict:
        """name -> (shape, chunks, dtype, compressed, shards or None)."""
        n, t, d, v, k = self.n_spots, self.n_tiles, self.dim, self.n_views, self.n_tokens
        spot = self.spot_rows
        out = {"local": ((n, d), (spot, d), "float16", True, None)}
        if v > 1:
            out["local_views"] = ((n, v, d), (spot, v, d), "float16", True, None)
        if self.mode == "centred":
            out["neighbour"] = ((n, t, d), (spot, t, d), "float16", True, None)
        else:
            m = max(self.n_nodes, 0)
            out["grid_tiles"] = ((m, d), (max(1, min(self.node_rows, max(m, 1))), d), "float16", True, None)
            out["grid_tile_centres"] = ((m, 2), (max(m, 1), 2), "float64", False, None)
            out["neighbour_index"] = ((n, t), (max(n, 1), t), "int32", False, None)
        if k and v > 1:
            # a training batch reads one view of a spot: one chunk; shards of whole spots keep the files few
            out["local_tokens"] = ((n, v, k, d), (1, 1, k, d), "float16", True, (self.token_rows, v, k, d))
        elif k:
            out["local_tokens"] = ((n, k, d), (self.token_rows, k, d), "float16", True, None)
        out["neighbour_mask"] = ((n, t), (max(n, 1), t), "bool", False, None)
        out["spatial"] = ((n, 2), (max(n, 1), 2), "float64", False, None)
        out["array_coords"] = ((n, 2), (max(n, 1), 2), "int32", False, None)
        return out


def create_store(path: str | os.PathLike, layout: StoreLayout, attrs: dict | None = None):
    """Create the arrays of an empty store at ``path`` (a temporary path) and return the group."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, (shape, chunks, dtype, compressed, shards) in layout.arrays().items():
        kwargs = {"compressors": embedding_codecs()} if compressed else {}
        if shards is not None:
            kwargs["shards"] = shards
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


def store_spots(path: str | os.PathLike, sample: str | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """(spots, their spatial (N, 2), their array coordinates (N, 2)) of a complete store, reading nothing else:
    what a caller needs to plan reading the store in blocks of spots (``load_features(rows=...)``)."""
    group, _ = _open_complete(path, sample)
    return int(group["local"].shape[0]), np.asarray(group["spatial"][:]), np.asarray(group["array_coords"][:])


def load_features(
    path: str | os.PathLike, sample: str | None = None, rows: slice | None = None, lazy: bool = False
) -> SampleFeatures:
    """One store's features; the local views are loaded, the token maps only opened (metadata, no data).
    ``rows``: only these consecutive spots (a slice), read from their chunks alone, so a whole slide's
    features can be processed a block at a time in flat memory. ``lazy``: the neighbours stay on disk (a
    ``NeighbourTiles`` reader, read per batch) and the local views stay float16, for training folds larger
    than memory; the values read are those of the eager arrays."""
    group, attrs = _open_complete(path, sample)
    name = attrs.get("sample", sample or Path(path).stem)
    part = slice(None) if rows is None else rows
    if attrs["neighbour_mode"] == "grid":
        index = np.asarray(group["neighbour_index"][part])
        used = np.unique(index[index >= 0])  # only the grid tiles this block's spots use
        dim = group["grid_tiles"].shape[1]
        tiles = np.asarray(group["grid_tiles"].get_orthogonal_selection(used)) if len(used) else None
        tiles = np.zeros((0, dim), np.float16) if tiles is None else tiles.astype(np.float16, copy=False)
        remap = np.full(int(used.max()) + 1 if len(used) else 1, -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        local_index = np.where(index >= 0, remap[np.maximum(index, 0)], -1)
        if lazy:
            neighbour = NeighbourTiles(tiles=tiles, index=local_index.astype(np.int32), sample=name, path=str(path))
        else:
            neighbour = gather_neighbours(tiles.astype(np.float32), local_index)
    elif lazy:
        spots = None if rows is None else np.arange(*rows.indices(group["neighbour"].shape[0]))
        neighbour = NeighbourTiles.centred(group["neighbour"], spots, name, str(path))
    else:
        neighbour = np.asarray(group["neighbour"][part], dtype=np.float32)
    local = np.asarray(group["local"][part], dtype=np.float32)
    view_type = np.float16 if lazy else np.float32
    views = np.asarray(group["local_views"][part], dtype=view_type) if "local_views" in group else None
    tokens = group["local_tokens"] if "local_tokens" in group else None
    token_rows = None
    if tokens is not None and rows is not None:  # a row mapping into the lazy token maps
        token_rows = np.arange(*rows.indices(tokens.shape[0]))
    _check_views(local, views, None if rows is not None else tokens, attrs, name, path)
    return SampleFeatures(
        sample=name,
        local=local,
        neighbour=neighbour,
        neighbour_mask=np.asarray(group["neighbour_mask"][part], dtype=bool),
        barcodes=np.array(group["barcodes"][part].tolist(), dtype=str),
        spatial=np.asarray(group["spatial"][part]),
        array_coords=np.asarray(group["array_coords"][part]),
        attrs=attrs,
        local_views=views,
        local_tokens=tokens,
        token_rows=token_rows,
        path=str(path),
    )


def _check_views(local, views, tokens, attrs: dict, sample, path) -> None:
    """The views' arrays agree with each other and with ``local_view_names`` (format 2: no views, one name)."""
    n_views = 1 if views is None else views.shape[1]
    ok = len(attrs.get("local_view_names", ["identity"])) == n_views
    ok &= views is None or (views.shape[0] == len(local) and n_views > 1)
    if tokens is not None:
        ok &= tokens.shape[0] == len(local) and tokens.ndim == (4 if n_views > 1 else 3)
        ok &= n_views == 1 or tokens.shape[1] == n_views
    if not ok:
        raise InputError(
            f"the feature store's local views disagree (local_views {None if views is None else views.shape}, "
            f"local_tokens {None if tokens is None else tokens.shape}, local_view_names "
            f"{attrs.get('local_view_names')}); delete it and re-embed",
            sample,
            path,
        )


def open_local_tokens(path: str | os.PathLike, sample: str | None = None):
    """The cached local tokens, (N, 197, D) or with several views (N, V, 197, D) float16, as a lazy Zarr
    array (too big to load whole), or an error saying how to enable the cache."""
    group, _ = _open_complete(path, sample)
    if "local_tokens" not in group:
        raise InputError(
            "this store has no local token cache (set encoder.cache_local_tokens: true and re-embed)", sample, path
        )
    return group["local_tokens"]
