"""Training on the dihedral views of the local crop and on token maps streamed from real feature stores."""

import numpy as np
import pytest
import torch

from genedml.heads import Section, head_class
from genedml.heads.torch_head import make_batch, make_mixed_batch, section_tensors
from genedml.io.hest import SamplePaths
from genedml.tiles.embed import embed_sample
from genedml.tiles.encoders import build_encoder
from genedml.tiles.features import TokenMaps, load_features
from genedml.tiles.geometry import TileSpec, tile_sample
from support.sections import TINY_GENEDML

pytestmark = pytest.mark.usefixtures("one_thread")

VARIED_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 3, "init_values": None}
TINY = TINY_GENEDML


@pytest.fixture(scope="module")
def sections(demo_hest, tmp_path_factory):
    """Three demo sections embedded with 8 views and tokens (a real store each), targets from their pixels."""
    root = tmp_path_factory.mktemp("view_training")
    enc = build_encoder(
        {
            "name": "uni",
            "allow_random_init": True,
            "model_kwargs": VARIED_VIT,
            "cache_local_tokens": True,
            "local_views": 8,
        }
    )
    spec = TileSpec.of(tile_px=32, target_mpp=4.0, grid=5, neighbour_mode="grid")
    out = []
    for sample in ("S1", "S2", "S3"):
        g = tile_sample(SamplePaths.in_hest_dir(demo_hest, sample), spec, root / f"{sample}.npz")
        embed_sample(g, enc, root / f"{sample}.zarr", batch_size=128, progress=False)
        f = load_features(root / f"{sample}.zarr", sample)
        y = np.tanh(f.local_views.mean(1)[:, :5]).astype(np.float32)
        out.append(Section(sample, "P" + sample, f, y, [f"g{i}" for i in range(5)]))
    return out


def test_training_batches_draw_views_and_evaluation_uses_the_identity(sections):
    st = section_tensors(sections[0], "cpu")
    assert st.n_views == 8 and isinstance(st.local_tokens, TokenMaps)  # tokens stay in the store
    rows = torch.arange(st.n_spots)
    batch = make_batch(st, rows, np.random.default_rng(0))
    assert (batch.views > 0).mean() > 0.7 and len(set(batch.views.tolist())) == 8
    torch.testing.assert_close(batch.local, st.local_views[rows, torch.as_tensor(batch.views)])
    tokens = batch.local_tokens  # streamed: the drawn view of each row, CLS first
    assert tokens.dtype == torch.float32 and tokens.shape[:2] == (st.n_spots, 5)
    torch.testing.assert_close(tokens[:, 0], batch.local, atol=1e-3, rtol=1e-3)
    plain = make_batch(st, rows)  # evaluation: view 0
    assert plain.views is None
    torch.testing.assert_close(plain.local, st.local)
    torch.testing.assert_close(plain.local_tokens[:, 0], st.local, atol=1e-3, rtol=1e-3)
    # the loop: shuffled training batches draw, evaluation batches never; train_views identity never draws
    head = head_class("genedml")({**TINY}, seed=0)
    train = [section_tensors(s, "cpu") for s in sections[:2]]
    drawn = [b.views for b in head._batches(train, np.random.default_rng(1), True, 16, mixed=True)]
    assert all(v is not None for v in drawn) and np.concatenate(drawn).max() > 0
    assert all(b.views is None for b in head._batches(train, np.random.default_rng(1), False, 16))
    fixed = head_class("genedml")({**TINY, "train_views": "identity"}, seed=0)
    assert all(b.views is None for b in fixed._batches(train, np.random.default_rng(1), True, 16, mixed=True))
    with pytest.raises(ValueError, match="train_views"):
        head_class("genedml")({**TINY, "train_views": "flip"}, seed=0)._batches(train, None, True, 16).__next__()


def test_mixed_batch_keeps_rows_views_and_tokens_of_every_section(sections):
    a, b = (section_tensors(s, "cpu") for s in sections[:2])
    parts = [(a, torch.tensor([4, 1, 4])), (b, torch.tensor([0, 2]))]
    batch = make_mixed_batch(parts, np.random.default_rng(3))
    assert batch.size == 5 and batch.views.shape == (5,)
    want = np.concatenate(
        [st.local_tokens.read(rows.numpy(), batch.views[lo : lo + len(rows)]) for (st, rows), lo in zip(parts, (0, 3))]
    )
    np.testing.assert_array_equal(batch.local_tokens.numpy(), want.astype(np.float32))
    torch.testing.assert_close(batch.local[3:], b.local_views[[0, 2], torch.as_tensor(batch.views[3:])])


def test_one_view_features_consume_no_draws(sections):
    one = Section("x", "Px", sections[0].features.subset(np.arange(10)), sections[0].targets[:10], sections[0].genes)
    one.features.local_views = None
    one.features.local_tokens = None
    st = section_tensors(one, "cpu")
    rng = np.random.default_rng(5)
    batch = make_batch(st, torch.arange(10), rng)
    assert batch.views is None and batch.local_tokens is None
    assert rng.integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)  # the stream is untouched


def test_local_input_tokens_trains_on_streamed_tokens(sections):
    head = head_class("genedml")({**TINY, "local_input": "tokens"}, seed=0)
    head.fit(sections[:2], [sections[2]])
    assert head.dims["local_tokens"] == 5  # token count (CLS + 4 patches at 32 px), not the view count
    assert np.isfinite([h["loss"] for h in head.history]).all()
    pred = head.predict(sections[2])
    assert pred.shape == sections[2].targets.shape and np.isfinite(pred).all()
    batch = make_batch(section_tensors(sections[2], "cpu"), torch.arange(4))
    assert head.model.image.local_tokens(batch).shape == (4, 5, 16)
    # a subset (as load_section aligns spots to targets) reads the right rows of the store
    sub = sections[2].features.subset(np.array([6, 3]))
    full = sections[2].features.token_maps().read(np.array([6, 3]))
    np.testing.assert_array_equal(sub.token_maps().read(np.array([0, 1])), full)
