"""Control heads: the mean predictor, and the shuffled-feature null (ridge's ``shuffle_features``), whose
permutation (``shuffled_sections``) stays within each section and is fixed by the seed."""

import json

import numpy as np
import pytest

from genedml.errors import InputError
from genedml.evaluation.metrics import pearson_per_gene
from genedml.heads import Section, head_class
from genedml.heads.base import neighbour_mean
from genedml.heads.controls import MeanHead, permuted_features, shuffled_sections
from genedml.tiles.features import ChunkCache, NeighbourTiles, SampleFeatures
from support.sections import synthetic_section


@pytest.fixture
def sections():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 6))
    return [synthetic_section(f"s{i}", rng, w, n=50 + 10 * i) for i in range(4)]


# ------------------------------------------------------------------------------------------- mean head


def test_mean_head_predicts_the_training_mean_exactly(sections):
    train, val, test = sections[:2], [sections[2]], sections[3]
    head = head_class("mean")({})
    facts = head.fit(train, val)
    # honest: the validation spots join the training spots, as ridge's refit
    want = np.concatenate([s.targets for s in train + val]).astype(np.float64).mean(0)
    pred = head.predict(test)
    assert pred.shape == test.targets.shape and pred.dtype == np.float32
    np.testing.assert_array_equal(pred, np.repeat(want[None].astype(np.float32), test.n_spots, 0))
    assert facts["n_train_spots"] == sum(s.n_spots for s in train + val)
    # reference: the selection sections are the TEST fold: never used
    ref = head_class("mean")({"protocol": "reference"})
    ref.fit(train, [test])
    only_train = np.concatenate([s.targets for s in train]).astype(np.float64).mean(0)
    np.testing.assert_array_equal(ref.predict(test)[0], only_train.astype(np.float32))


def test_mean_head_save_load_round_trip(sections, tmp_path):
    head = MeanHead({}, seed=3)
    head.fit(sections[:3], [])
    head.save(tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["format"] == "genedml-mean-1"
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        assert z.files == ["mean"]
    back = head_class("mean").load(tmp_path, {})
    assert back.seed == 3
    np.testing.assert_array_equal(back.predict(sections[3]), head.predict(sections[3]))


def test_mean_head_load_names_a_missing_or_broken_file(sections, tmp_path):
    head = MeanHead({})
    head.fit(sections[:2], [])
    head.save(tmp_path)
    facts = (tmp_path / "model.json").read_text()
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable mean model description"):
        MeanHead.load(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "genedml-ridge-1"}))
    with pytest.raises(InputError, match="not a genedml mean model description"):
        MeanHead.load(tmp_path)
    (tmp_path / "model.json").write_text(facts)
    with open(tmp_path / "model.npz", "wb") as fh:
        np.savez(fh, mean=np.zeros(2))  # 6 genes expected
    with pytest.raises(InputError, match="inconsistent mean model array"):
        MeanHead.load(tmp_path)
    with open(tmp_path / "model.npz", "wb") as fh:
        np.savez(fh, mean=np.array([object()] * 6, dtype=object))  # needs pickle: refused
    with pytest.raises(InputError, match="not a readable mean model array file"):
        MeanHead.load(tmp_path)
    (tmp_path / "model.npz").unlink()
    with pytest.raises(InputError, match="missing") as info:
        MeanHead.load(tmp_path)
    assert "model.npz" in str(info.value)


# ------------------------------------------------------------------------------------ the shuffled null


def test_shuffled_ridge_loses_the_skill_of_the_real_one():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 8))
    s = [synthetic_section(f"s{i}", rng, w, n=300, d=64, g=8) for i in range(6)]
    train, val, test = s[:4], [s[4]], s[5]
    real = head_class("ridge")({"alphas": [1.0, 100.0]})
    real.fit(train, val)
    null = head_class("ridge")({"alphas": [1.0, 100.0], "shuffle_features": True}, seed=0)
    facts = null.fit(train, val)
    pcc_real = np.nanmean(pearson_per_gene(test.targets, real.predict(test)))
    pcc_null = np.nanmean(pearson_per_gene(test.targets, null.predict(test)))
    assert pcc_real > 0.95
    assert abs(pcc_null) < 0.2
    assert facts["shuffled_features"] is True and "seed 0" in facts["shuffle"]
    assert real.fit(train, val)["shuffled_features"] is False
    # the sections given to fit are not modified: the real features predict the held-out section
    np.testing.assert_array_equal(train[0].features.local, s[0].features.local)


def rich_section(name, rng, n=40, d=5, t=9, lazy=False):
    """A section with every per-spot array filled distinctly (views, tokens, spot images, a partial mask)."""
    local = rng.normal(size=(n, d)).astype(np.float32)
    neigh = rng.normal(size=(n, t, d)).astype(np.float16 if lazy else np.float32)
    f = SampleFeatures(
        name,
        local,
        NeighbourTiles.centred(neigh, cache=ChunkCache(1 << 24)) if lazy else neigh,
        rng.random((n, t)) > 0.3,
        np.array([f"{name}-b{i}" for i in range(n)]),
        rng.uniform(0, 100, (n, 2)),
        rng.integers(0, 20, (n, 2)),
        {},
        local_views=rng.normal(size=(n, 2, d)).astype(np.float32),
        local_tokens=rng.normal(size=(n, 3, d)).astype(np.float16),
        spot_images=rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8),
    )
    return Section(name, "P" + name, f, rng.normal(size=(n, 3)).astype(np.float32), ["a", "b", "c"])


def rows_of(features: SampleFeatures) -> np.ndarray:
    """Each spot's image-derived arrays as one row (for comparing multisets of rows)."""
    n = features.n_spots
    tokens = features.token_maps().read(np.arange(n)).astype(np.float32)
    parts = [
        features.local,
        np.asarray(features.neighbour[np.arange(n)], dtype=np.float32).reshape(n, -1),
        features.neighbour_mask.astype(np.float32),
        features.local_views.reshape(n, -1),
        tokens.reshape(n, -1),
        features.spot_images.reshape(n, -1).astype(np.float32),
    ]
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("lazy", [False, True])
def test_permutation_stays_within_each_section_and_moves_every_array_together(lazy):
    rng = np.random.default_rng(1)
    secs = [rich_section(f"s{i}", rng, n=30 + 5 * i, lazy=lazy) for i in range(3)]
    out = shuffled_sections(secs, seed=7)
    for before, after in zip(secs, out):
        a, b = rows_of(before.features), rows_of(after.features)
        # each section's multiset of feature rows is unchanged (a permutation within the section) ...
        np.testing.assert_array_equal(np.unique(a, axis=0), np.unique(b, axis=0))
        assert not np.array_equal(a, b)
        # ... and one permutation moved every array: row i of the copy is one original row whole
        order = np.array([np.flatnonzero((a == row).all(1))[0] for row in b])
        np.testing.assert_array_equal(np.sort(order), np.arange(before.n_spots))
        np.testing.assert_array_equal(neighbour_mean(after.features), neighbour_mean(before.features)[order])
        # targets, barcodes and positions stay with the spots
        np.testing.assert_array_equal(after.targets, before.targets)
        np.testing.assert_array_equal(after.features.barcodes, before.features.barcodes)
        np.testing.assert_array_equal(after.features.spatial, before.features.spatial)
        np.testing.assert_array_equal(after.features.array_coords, before.features.array_coords)
        assert (after.sample, after.patient, after.genes) == (before.sample, before.patient, before.genes)
        assert isinstance(after.features.neighbour, NeighbourTiles) == lazy  # lazy stays lazy


def test_permutation_is_deterministic_for_a_seed(sections):
    one = shuffled_sections(sections, seed=5)
    two = shuffled_sections(sections, seed=5)
    other = shuffled_sections(sections, seed=6)
    for a, b, c, s in zip(one, two, other, sections):
        np.testing.assert_array_equal(a.features.local, b.features.local)
        assert not np.array_equal(a.features.local, c.features.local)
        assert not np.array_equal(a.features.local, s.features.local)
    with pytest.raises(ValueError, match="not a permutation"):
        permuted_features(sections[0].features, np.zeros(sections[0].n_spots, int))


def test_shuffled_ridge_saves_and_loads_like_any_ridge(sections, tmp_path):
    head = head_class("ridge")({"alphas": [1.0, 10.0], "shuffle_features": True}, seed=2)
    head.fit(sections[:2], [sections[2]])
    head.save(tmp_path)
    back = head_class("ridge").load(tmp_path, {})
    assert back.params["shuffle_features"] is True
    np.testing.assert_allclose(back.predict(sections[3]), head.predict(sections[3]), rtol=1e-5, atol=1e-5)
