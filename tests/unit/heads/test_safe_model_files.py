"""Fold models load without executing code: ridge as arrays + JSON, torch heads with weights-only loading,
and an older genedml's (or a crafted) pickle is refused with a clear message, never unpickled."""

import builtins
import json
import pickle

import numpy as np
import pytest

from genedml.errors import InputError
from genedml.heads import head_class
from genedml.heads.predict import load_fold_model
from support.sections import synthetic_section

pytestmark = pytest.mark.usefixtures("one_thread")

UNSAFE = "can execute code when loaded"
TINY_STNET = {"hidden": 0, "epochs": 2, "lr": 1e-2, "batch_size": 64, "device": "cpu"}


@pytest.fixture
def sections():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 6))
    return [synthetic_section(f"s{i}", rng, w, n=60) for i in range(4)]


class Creates:
    """Unpickling this opens (creates) ``marker``: what a crafted model file could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def assert_refused(load, path, marker):
    with pytest.raises(InputError) as info:
        load()
    message = str(info.value)
    assert UNSAFE in message and str(path) in message
    assert "no longer loads it" in message and "retrain the head (rerun the train step)" in message
    assert not marker.exists()


def assert_no_pickle(directory):
    assert not (directory / "model.pkl").exists()
    assert not list(directory.glob("*.pkl"))


@pytest.mark.parametrize("params", [{"alphas": [1.0, 100.0], "pca": 0}, {"alphas": [10.0], "pca": 5}])
def test_ridge_saves_arrays_and_json_and_predicts_the_same_after_loading(sections, tmp_path, params):
    cls = head_class("ridge")
    head = cls({**params, "features": ["local", "neighbour_mean"]})
    head.fit(sections[:2], [sections[2]])
    pred = head.predict(sections[3])
    (tmp_path / "model.pkl").write_bytes(b"stale")  # an older genedml's file in the same folder goes away
    head.save(tmp_path)
    assert_no_pickle(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"model.npz", "model.json"}
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        assert all(z[k].dtype.kind == "f" for k in z.files)
        assert ("pca_components" in z.files) == bool(params["pca"])
    facts = json.loads((tmp_path / "model.json").read_text())
    assert facts["alpha"] == head.alpha and facts["params"]["alphas"] == params["alphas"]
    back = cls.load(tmp_path, {})
    assert back.alpha == head.alpha and back.params == head.params
    np.testing.assert_allclose(back.predict(sections[3]), pred, rtol=1e-5, atol=1e-5)


def test_ridge_model_files_with_missing_or_inconsistent_arrays_are_named(sections, tmp_path):
    head = head_class("ridge")({"pca": 4})
    head.fit(sections[:2], [])
    head.save(tmp_path)
    with np.load(tmp_path / "model.npz") as z:
        arrays = dict(z)
    np.savez(tmp_path / "model.npz", **{k: v for k, v in arrays.items() if k != "coef"})
    with pytest.raises(InputError, match=r"model\.npz.*lacks array\(s\) \['coef'\]"):
        head_class("ridge").load(tmp_path, {})
    np.savez(tmp_path / "model.npz", **{**arrays, "coef": arrays["coef"][:, :2]})
    with pytest.raises(InputError, match=r"model\.npz.*coef has shape"):
        head_class("ridge").load(tmp_path, {})
    np.savez(tmp_path / "model.npz", **{**arrays, "coef": np.array([Creates(tmp_path / "m")], dtype=object)})
    with pytest.raises(InputError, match=r"model\.npz: not a readable ridge model array file"):
        head_class("ridge").load(tmp_path, {})
    assert not (tmp_path / "m").exists()
    (tmp_path / "model.json").unlink()
    with pytest.raises(InputError, match=r"model\.json: the ridge model file is missing"):
        head_class("ridge").load(tmp_path, {})


def test_a_crafted_ridge_pickle_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    model_dir = tmp_path / "fold0"
    model_dir.mkdir()
    (model_dir / "model.pkl").write_bytes(pickle.dumps({"alpha": 1.0, "model": Creates(marker), "params": {}}))
    (model_dir / "fold.json").write_text(json.dumps({"type": "ridge", "fold": 0}))
    path = model_dir / "model.pkl"
    assert_refused(lambda: head_class("ridge").load(model_dir, {}), path, marker)
    assert_refused(lambda: load_fold_model(model_dir), path, marker)  # what `genedml predict --models` does


def test_torch_head_saves_weights_only_and_predicts_the_same_after_loading(sections, tmp_path):
    import torch

    cls = head_class("stnet")
    head = cls(TINY_STNET, seed=1)
    head.fit(sections[:2], [sections[2]])
    pred = head.predict(sections[3])
    head.save(tmp_path)
    assert_no_pickle(tmp_path)
    assert not (tmp_path / "model_meta.json").exists()  # plain settings stay in model.pt
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert state["kind"] == "stnet" and state["dims"] == head.dims
    back = cls.load(tmp_path)
    np.testing.assert_allclose(back.predict(sections[3]), pred, atol=1e-6)


def test_torch_head_settings_of_other_types_go_to_a_json_side_file(sections, tmp_path):
    import torch

    cls = head_class("stnet")
    head = cls(TINY_STNET, seed=1)
    head.fit(sections[:2], [])
    pred = head.predict(sections[3])
    head.params["epochs"] = np.int64(2)  # e.g. a value a script set from numpy
    head.dims["n_genes"] = np.int64(head.dims["n_genes"])
    head.save(tmp_path)
    state = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert "params" not in state and state["meta_file"] == "model_meta.json"
    back = cls.load(tmp_path)
    assert back.params["epochs"] == 2 and back.dims["n_genes"] == 6
    np.testing.assert_allclose(back.predict(sections[3]), pred, atol=1e-6)


def test_a_crafted_torch_model_is_refused_and_never_unpickled(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    model_dir = tmp_path / "fold0"
    model_dir.mkdir()
    path = model_dir / "model.pt"
    torch.save({"state_dict": {}, "dims": {}, "params": Creates(marker), "seed": 0, "kind": "stnet"}, path)
    (model_dir / "fold.json").write_text(json.dumps({"type": "stnet", "fold": 0}))
    assert not marker.exists()
    assert_refused(lambda: head_class("stnet").load(model_dir), path, marker)
    assert_refused(lambda: load_fold_model(model_dir), path, marker)
