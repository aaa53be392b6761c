"""Training folds read lazily from the feature stores give exactly what the eagerly loaded features give."""

import numpy as np
import pytest
import torch
import zarr

from genedml.heads import Section, head_class
from genedml.heads.base import neighbour_mean
from genedml.heads.torch_head import make_batch, make_mixed_batch, section_tensors, training_views
from genedml.heads.train import load_section
from genedml.tiles.features import (
    FEATURE_CACHE,
    FORMAT_VERSION,
    ChunkCache,
    NeighbourTiles,
    StoreLayout,
    create_store,
    load_features,
)
from support.sections import TINY_GENEDML

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, TILES, TOKENS, VIEWS = 16, 25, 5, 4
CHUNK = 4096  # bytes: several chunks per section, so batches cross chunks


def write_store(path, sample: str, n: int, mode: str, rng, views: int = VIEWS, tokens: int = TOKENS):
    """A complete store of random float16 embeddings (some neighbour slots masked) and its spots' targets."""
    side = int(np.ceil(np.sqrt(n)))
    nodes = (side + 4) ** 2 if mode == "grid" else 0
    layout = StoreLayout(n, TILES, DIM, mode, nodes, tokens, CHUNK, views)
    names = [f"v{i}" for i in range(views)]
    attrs = {"genedml_features_version": FORMAT_VERSION, "sample": sample, "neighbour_mode": mode}
    group = create_store(path, layout, {**attrs, "local_view_names": names})
    local = rng.normal(size=(n, DIM)).astype(np.float16)
    group["local"][:] = local
    if views > 1:
        v = rng.normal(size=(n, views, DIM)).astype(np.float16)
        v[:, 0] = local
        group["local_views"][:] = v
    rc = np.stack(np.divmod(np.arange(n), side), 1).astype(np.int32)
    mask = rng.random((n, TILES)) > 0.2
    if mode == "grid":
        dr, dc = np.divmod(np.arange(TILES), 5)
        index = (rc[:, :1] + dr) * (side + 4) + (rc[:, 1:] + dc)
        group["grid_tiles"][:] = rng.normal(size=(nodes, DIM)).astype(np.float16)
        group["grid_tile_centres"][:] = np.zeros((nodes, 2))
        group["neighbour_index"][:] = np.where(mask, index, -1).astype(np.int32)
    else:
        group["neighbour"][:] = (rng.normal(size=(n, TILES, DIM)) * mask[..., None]).astype(np.float16)
    if tokens:
        shape = (n, TOKENS, DIM) if views == 1 else (n, views, TOKENS, DIM)
        group["local_tokens"][:] = rng.normal(size=shape).astype(np.float16)
    group["neighbour_mask"][:] = mask
    group["barcodes"][:] = np.array([f"{sample}-{i}" for i in range(n)])
    group["spatial"][:] = rc[:, ::-1] * 100.0
    group["array_coords"][:] = rc
    group.attrs["complete"] = True
    return path


@pytest.fixture(scope="module", params=["centred", "grid"])
def stores(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"lazy_{request.param}")
    rng = np.random.default_rng(0)
    return [write_store(root / f"S{i}.zarr", f"S{i}", n, request.param, rng) for i, n in enumerate((45, 38, 30))]


def sections(stores, lazy: bool) -> list[Section]:
    out = []
    for path in stores:
        f = load_features(path, lazy=lazy)
        y = np.tanh(f.local[:, :4] + 0.3 * np.asarray(f.local_views, np.float32)[:, 1, :4]).astype(np.float32)
        order = np.random.default_rng(len(f.local)).permutation(len(f.local))  # as load_section: a reorder
        out.append(Section(f.sample, "P" + f.sample, f.subset(order), y[order], [f"g{i}" for i in range(4)]))
    return out


def test_lazy_features_read_the_eager_values(stores):
    for path in stores:
        eager, lazy = load_features(path), load_features(path, lazy=True)
        assert isinstance(lazy.neighbour, NeighbourTiles) and lazy.neighbour.shape == eager.neighbour.shape
        assert lazy.local_views.dtype == np.float16
        np.testing.assert_array_equal(lazy.local_views.astype(np.float32), eager.local_views)
        np.testing.assert_array_equal(lazy.local, eager.local)
        rows = np.array([7, 0, 29, 7, 15, 3])  # repeats and several chunks, out of order
        np.testing.assert_array_equal(lazy.neighbour[rows], eager.neighbour[rows])
        np.testing.assert_array_equal(np.asarray(lazy.neighbour), eager.neighbour)
        sub = lazy.subset(np.array([5, 2, 9, 11]))  # a mapping, composed with the next
        np.testing.assert_array_equal(sub.subset([3, 0]).neighbour[[1, 0]], eager.neighbour[[5, 11]])
        block = load_features(path, rows=slice(10, 27), lazy=True)
        np.testing.assert_array_equal(block.neighbour[2:9], eager.neighbour[12:19])
        np.testing.assert_array_equal(neighbour_mean(lazy, block=7), neighbour_mean(eager))


def test_batches_from_lazy_sections_equal_the_eager_ones(stores):
    eager = [section_tensors(s, "cpu") for s in sections(stores, False)]
    lazy = [section_tensors(s, "cpu") for s in sections(stores, True)]
    assert isinstance(lazy[0].neighbour, NeighbourTiles) and lazy[0].local_views.dtype == torch.float16
    rows = torch.tensor([9, 1, 30, 4, 4, 22])
    for rng in (None, 3):
        a = make_batch(eager[0], rows, None if rng is None else np.random.default_rng(rng))
        b = make_batch(lazy[0], rows, None if rng is None else np.random.default_rng(rng))
        for name in ("local", "neighbour", "neighbour_mask", "targets", "local_tokens"):
            assert getattr(b, name).dtype == getattr(a, name).dtype
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0)
    parts = lambda secs: [(secs[0], torch.tensor([4, 1, 4])), (secs[2], torch.tensor([0, 29, 2]))]  # noqa: E731
    a = make_mixed_batch(parts(eager), np.random.default_rng(1))
    b = make_mixed_batch(parts(lazy), np.random.default_rng(1))
    for name in ("local", "neighbour", "neighbour_mask", "local_tokens"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0)
    views = ["local", "neighbour_mean", "global_mean"]
    torch.testing.assert_close(training_views(lazy, views, block=16), training_views(eager, views), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kind, params",
    [
        ("stnet", {"hidden": 8, "features": ["local", "neighbour_mean", "global_mean"], "epochs": 3}),
        ("genedml", {**TINY_GENEDML, "local_input": "tokens"}),
        ("ridge", {"features": ["local", "neighbour_mean"], "alphas": [1.0, 10.0]}),
    ],
)
def test_a_head_trained_on_lazy_sections_predicts_exactly_as_on_eager_ones(stores, kind, params):
    out = []
    for lazy in (False, True):
        secs = sections(stores, lazy)
        head = head_class(kind)({"type": kind, "batch_size": 16, **params} if kind != "ridge" else params, seed=3)
        facts = head.fit(secs[:2], [secs[2]])
        out.append((head.predict(secs[2]), getattr(head, "history", None), facts.get("best_epoch")))
    (pa, ha, ea), (pb, hb, eb) = out
    np.testing.assert_array_equal(pb, pa)
    assert ea == eb and (ha is None or [h["loss"] for h in ha] == [h["loss"] for h in hb])


def test_the_chunk_cache_decodes_each_chunk_once_and_keeps_to_its_budget(stores):
    path = stores[0]
    eager = load_features(path)
    cache = ChunkCache(1 << 30)
    group = zarr.open_group(str(path), mode="r")
    if "neighbour" not in group:
        pytest.skip("grid stores keep their tiles in memory: nothing to cache")
    array = group["neighbour"]
    reader = NeighbourTiles.centred(array, cache=cache)
    per = array.chunks[0]
    n_chunks = -(-array.shape[0] // per)
    rows = np.random.default_rng(0).permutation(array.shape[0])
    np.testing.assert_array_equal(reader[rows], eager.neighbour[rows])
    assert cache.decoded == n_chunks  # each chunk decoded once, however the rows are ordered
    reader[rows[:5]]
    assert cache.decoded == n_chunks  # and not again while it fits
    small = ChunkCache(2 * per * TILES * DIM * 2)  # two chunks
    tight = NeighbourTiles.centred(array, cache=small)
    for lo in range(0, len(rows), 8):
        np.testing.assert_array_equal(tight[rows[lo : lo + 8]], eager.neighbour[rows[lo : lo + 8]])
        assert small.bytes <= small.budget
    del reader, tight
    assert cache.bytes == 0 and small.bytes == 0  # a reader's chunks go with it


def test_load_section_reads_lazily_by_default(stores, tmp_path):
    import anndata as ad
    import pandas as pd

    f = load_features(stores[1])
    y = np.arange(len(f.barcodes) * 2, dtype=np.float32).reshape(-1, 2)[::-1]
    ad.AnnData(X=y, obs=pd.DataFrame(index=pd.Index(f.barcodes[::-1]))).write_h5ad(tmp_path / "t.h5ad")
    lazy = load_section("S1", "P1", stores[1], tmp_path / "t.h5ad")
    eager = load_section("S1", "P1", stores[1], tmp_path / "t.h5ad", lazy=False)
    assert isinstance(lazy.features.neighbour, NeighbourTiles) and isinstance(eager.features.neighbour, np.ndarray)
    np.testing.assert_array_equal(np.asarray(lazy.features.neighbour), eager.features.neighbour)
    np.testing.assert_array_equal(lazy.targets, eager.targets)
    assert FEATURE_CACHE.bytes <= FEATURE_CACHE.budget
