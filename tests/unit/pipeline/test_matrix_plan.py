"""The run plan of an encoder x head matrix: each encoder its own slice, features and training inputs."""

import json

import pytest
import yaml

from genedml.pipeline.plan import RunPlan
from genedml.pipeline.schema import resolved_config
from support.workflow import REPO

ENCODERS = [
    {"name": "resnet18", "allow_random_init": True, "batch_size": 32},
    {"name": "resnet18b", "timm_name": "resnet18", "allow_random_init": True, "init_seed": 1, "device": "cpu"},
]


def plan(tmp_path, **overlay) -> RunPlan:
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump({"encoders": ENCODERS, "run_heads": ["ridge", "stnet"], **overlay}))
    return RunPlan(yaml.safe_load(resolved_config([str(REPO / "config.yaml"), str(path)])))


class Wildcards:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_every_encoder_has_its_own_slice_features_and_heads(tmp_path):
    run = plan(tmp_path, heads={"stnet": {"protocol": ["honest", "reference"]}})
    assert list(run.encoders) == ["resnet18", "resnet18b"] and run.encoder == "resnet18"
    flags = run.encoder_flags()
    a, b = flags(Wildcards(encoder="resnet18")), flags(Wildcards(encoder="resnet18b"))
    assert "--init-seed 0" in a and "--init-seed 1" in b and "--timm-name resnet18" in b
    # the run-time knobs are each encoder's own, and never in the flags (they re-embed nothing)
    assert run.embed_runtime("resnet18")["batch_size"] == 32 and run.embed_runtime("resnet18b")["device"] == "cpu"
    assert "--batch-size" not in a
    assert run.training_inputs_of("stnet@resnet18b@reference") == "results/features/resnet18b/training_inputs.tsv"
    assert run.feature_stores("resnet18b") == [f"results/features/resnet18b/{s}.zarr" for s in run.samples]
    assert set(run.heads_of_encoder("resnet18b")) == {
        "ridge@resnet18b",
        "stnet@resnet18b@honest",
        "stnet@resnet18b@reference",
        "control_mean@resnet18b",
        "control_shuffled@resnet18b",
        "control_ridge@resnet18b",
    }
    keys = json.loads(run.comparison_keys())
    assert keys["stnet@resnet18b@reference"] == {
        "head": "stnet",
        "type": "stnet",
        "encoder": "resnet18b",
        "protocol": "reference",
        "seed": 0,
        "control": None,
        "label": "stnet · resnet18b · reference",
    }
    assert keys["control_mean@resnet18"]["control"] == "mean"
    # the report rows carry the same facts
    assert run.head_report["ridge@resnet18b"]["encoder"] == "resnet18b"


def test_two_encoders_of_one_name_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="'resnet18' is listed twice"):
        plan(tmp_path, encoders=[ENCODERS[0], ENCODERS[0]])


def test_predicted_sections_default_to_every_head_but_the_controls(tmp_path):
    run = plan(tmp_path)
    assert all(run.run_heads[k].control is None for k in run.heads_without_controls())
    assert len(run.heads_without_controls()) == 4


def test_maps_are_drawn_for_one_run_head_per_head_and_encoder(tmp_path):
    run = plan(tmp_path, heads={"stnet": {"protocol": ["honest", "reference"], "seeds": [3, 4]}})
    assert run.mapped_heads() == [
        "ridge@resnet18",
        "ridge@resnet18b",
        "stnet@resnet18@honest@seed3",
        "stnet@resnet18b@honest@seed3",
    ]


def test_a_zoo_encoder_without_weights_fails_when_the_run_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("GENEDML_UNI_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match=r"'uni' has no weights file.*GENEDML_UNI_WEIGHTS"):
        plan(tmp_path, encoders=[ENCODERS[0], {"name": "uni"}])
    weights = tmp_path / "uni.bin"
    weights.write_bytes(b"")
    monkeypatch.setenv("GENEDML_UNI_WEIGHTS", str(weights))
    run = plan(tmp_path, encoders=[ENCODERS[0], {"name": "uni"}])
    assert run.encoder_weights_input("uni") == [str(weights)] and run.encoder_weights_input("resnet18") == []
