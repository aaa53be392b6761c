"""HEST-Benchmark mode of the ridge head: the fixed penalty (alpha_rule: hest), the scikit-learn settings it
needs (fit_intercept, standardize, solver, max_iter), defaults that keep today's ridge exactly, model files
that round-trip (and older ones without the new keys that still load), and the overlay config."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from genedml.evaluation.metrics import nanmean, pearson_per_gene
from genedml.heads import head_class
from genedml.heads.base import spot_features
from genedml.heads.ridge import hest_alpha
from genedml.pipeline import schema
from genedml.study.genes import GeneSpec
from support.sections import synthetic_section

ROOT = Path(__file__).resolve().parents[3]
HEST = {"alpha_rule": "hest", "pca": 8, "fit_intercept": False, "solver": "lsqr", "max_iter": 1000}
VIEWS = ["local", "neighbour_mean"]


@pytest.fixture
def sections():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 6))
    return [synthetic_section(f"s{i}", rng, w, n=60 + 5 * i) for i in range(5)]


def xy(sections, views=VIEWS):
    x = np.concatenate([spot_features(s.features, views) for s in sections])
    return x, np.concatenate([s.targets for s in sections])


def test_hest_alpha_on_known_sizes():
    assert hest_alpha(256, 50) == 100 / 12800 == 0.0078125  # HEST-Benchmark: 256 PCA components, 50 genes
    assert hest_alpha(1024, 250) == pytest.approx(3.90625e-4)
    with pytest.raises(ValueError):
        hest_alpha(0, 50)


def test_fixed_alpha_selects_nothing_and_fits_on_every_non_test_spot(sections):
    train, val, test = sections[:3], [sections[3]], sections[4]
    head = head_class("ridge")({**HEST, "alphas": [0.1, 1, 10, 1000], "features": VIEWS}, seed=1)
    facts = head.fit(train, val)
    x, y = xy(train + val)
    assert facts["alpha"] == hest_alpha(8, 6) == head.alpha and facts["val_pcc_by_alpha"] == {}
    assert facts["alpha_rule"] == "hest" and facts["n_train_spots"] == len(x)
    # exactly HEST-Benchmark's steps, by hand, on training + validation spots
    ref = make_pipeline(
        StandardScaler(),
        PCA(8, random_state=1),
        Ridge(alpha=hest_alpha(8, 6), fit_intercept=False, solver="lsqr", max_iter=1000, random_state=1),
    ).fit(x, y)
    want = ref.predict(spot_features(test.features, VIEWS)).astype(np.float32)
    np.testing.assert_array_equal(head.predict(test), want)
    # reference protocol: the selection sections (the TEST fold) are never used by a fixed penalty
    ref_head = head_class("ridge")({**HEST, "features": VIEWS, "protocol": "reference"}, seed=1)
    ref_head.fit(train + val, [test])
    np.testing.assert_array_equal(ref_head.predict(test), want)


def test_no_intercept_changes_the_offset_not_the_pcc(sections):
    """PCA scores of the training spots are centred, so without an intercept the ridge has the same
    coefficients: the predictions lose the training mean, the per-gene PCC is unchanged."""
    train, test = sections[:4], sections[4]
    with_b = head_class("ridge")({**HEST, "fit_intercept": True, "solver": "cholesky"})
    without = head_class("ridge")({**HEST, "solver": "cholesky"})
    with_b.fit(train, [])
    without.fit(train, [])
    a, b = with_b.predict(test), without.predict(test)
    np.testing.assert_allclose(pearson_per_gene(test.targets, a), pearson_per_gene(test.targets, b), atol=1e-5)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("pca", [0, 5])
def test_default_settings_reproduce_the_ridge_of_before(sections, pca):
    train, val, test = sections[:3], [sections[3]], sections[4]
    alphas = [0.1, 10.0, 1000.0]
    head = head_class("ridge")({"alphas": alphas, "pca": pca, "features": VIEWS}, seed=2)
    facts = head.fit(train, val)

    def before(alpha, x, y):  # the pipeline this head built before the new settings
        steps = [StandardScaler()] + ([PCA(min(pca, x.shape[1], x.shape[0]), random_state=2)] if pca else [])
        return make_pipeline(*steps, Ridge(alpha=alpha)).fit(x, y)

    x, y = xy(train)
    scores = {
        a: nanmean(
            [
                nanmean(pearson_per_gene(s.targets, before(a, x, y).predict(spot_features(s.features, VIEWS))))
                for s in val
            ]
        )
        for a in alphas
    }
    best = max(alphas, key=lambda a: (scores[a], -a))
    assert facts["alpha"] == best and facts["val_pcc_by_alpha"] == {str(a): v for a, v in scores.items()}
    final = before(best, *xy(train + val))
    want = final.predict(spot_features(test.features, VIEWS)).astype(np.float32)
    np.testing.assert_array_equal(head.predict(test), want)
    assert facts["alpha_rule"] == "grid" and facts["shuffled_features"] is False


@pytest.mark.parametrize(
    "params",
    [
        HEST,
        {**HEST, "standardize": False},
        {"alphas": [1.0, 10.0], "pca": 0, "standardize": False, "fit_intercept": False},
    ],
)
def test_hest_settings_save_and_load(sections, tmp_path, params):
    head = head_class("ridge")({**params, "features": VIEWS}, seed=1)
    head.fit(sections[:3], [sections[3]])
    pred = head.predict(sections[4])
    head.save(tmp_path)
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        if not params.get("fit_intercept", True):
            assert z["intercept"].shape == (6,) and not z["intercept"].any()
        if not params.get("standardize", True):
            assert not z["scaler_mean"].any() and (z["scaler_scale"] == 1).all()
    back = head_class("ridge").load(tmp_path, {})
    assert back.alpha == head.alpha and back.params == head.params
    np.testing.assert_allclose(back.predict(sections[4]), pred, rtol=1e-5, atol=1e-5)


def test_an_older_model_file_without_the_new_keys_still_loads(sections, tmp_path):
    head = head_class("ridge")({"alphas": [1.0, 10.0], "pca": 5, "features": VIEWS})
    head.fit(sections[:3], [sections[3]])
    pred = head.predict(sections[4])
    head.save(tmp_path)
    facts = json.loads((tmp_path / "model.json").read_text())
    new = ["alpha_rule", "fit_intercept", "standardize", "solver", "max_iter", "shuffle_features"]
    facts["params"] = {k: v for k, v in facts["params"].items() if k not in new}
    (tmp_path / "model.json").write_text(json.dumps(facts))  # what genedml wrote before these settings
    back = head_class("ridge").load(tmp_path, {})
    assert back.params["alpha_rule"] == "grid" and back.params["fit_intercept"] is True
    np.testing.assert_allclose(back.predict(sections[4]), pred, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"alpha_rule": "fixed"}, "alpha_rule"),
        ({"solver": "lbfgs"}, "solver"),
        ({"max_iter": 0}, "max_iter"),
        ({"fit_intercept": "no"}, "fit_intercept"),
        ({"shuffle_features": 1}, "shuffle_features"),
        ({"alphas": []}, "alphas"),
    ],
)
def test_bad_settings_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        head_class("ridge")(bad)


def test_the_hest_benchmark_overlay_is_a_valid_config():
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "workflow/configs/hest-benchmark.yaml").read_text())
    config = schema.validate_config(schema.merge(base, overlay))
    assert config["targets"]["recipe"] == "log1p"
    assert (
        config["genes"].items() >= {"n_top": 50, "rank": "dispersion", "min_spot_fraction_in": "every_sample"}.items()
    )
    assert config["folds"]["scheme"] == "leave_one_patient_out"
    assert GeneSpec.from_config(config["genes"]).rank == "dispersion"
    assert config["run_heads"] == ["hest_ridge", "hest_ridge_cv"]
    fixed = head_class("ridge").checked_settings(config["heads"]["hest_ridge"])
    selected = head_class("ridge").checked_settings(config["heads"]["hest_ridge_cv"])
    assert fixed["alpha_rule"] == "hest" and fixed["pca"] == 256 and fixed["fit_intercept"] is False
    assert selected["alpha_rule"] == "grid" and len(selected["alphas"]) > 1
    assert all(isinstance(a, (int, float)) for a in selected["alphas"])
    assert {k: v for k, v in fixed.items() if k not in ("alpha_rule", "alphas", "report")} == {
        k: v for k, v in selected.items() if k not in ("alpha_rule", "alphas", "report")
    }
