"""The run heads: every head once per encoder, protocol and seed, the controls, and their keys."""

from __future__ import annotations

import pytest

from genedml.pipeline.run_heads import CONTROL_HEADS, expand_heads, key_label, select_names

RIDGE = {"type": "ridge", "alphas": [1, 10]}


def test_one_encoder_one_protocol_one_seed_keeps_the_head_names():
    run = expand_heads({"ridge": RIDGE, "stnet": {"type": "stnet"}}, ["uni"], "honest", [])
    assert list(run) == ["ridge", "stnet"]
    assert run["ridge"].config == {**RIDGE, "protocol": "honest", "seed": 0}
    assert run["ridge"].encoder == "uni" and run["ridge"].control is None


def test_keys_name_only_what_varies():
    heads = {
        "ridge": {**RIDGE, "protocol": ["honest", "reference"]},
        "stnet": {"type": "stnet", "seeds": [0, 1], "protocol": "reference"},
    }
    run = expand_heads(heads, ["uni", "resnet50"], "honest", [])
    assert sorted(run) == sorted(
        [
            "ridge@uni@honest",
            "ridge@uni@reference",
            "ridge@resnet50@honest",
            "ridge@resnet50@reference",
            "stnet@uni@seed0",
            "stnet@uni@seed1",
            "stnet@resnet50@seed0",
            "stnet@resnet50@seed1",
        ]
    )
    r = run["stnet@resnet50@seed1"]
    assert (r.head, r.encoder, r.protocol, r.seed) == ("stnet", "resnet50", "reference", 1)
    # what is passed to the head: one protocol, one seed, never the expansion keys
    assert r.config == {"type": "stnet", "protocol": "reference", "seed": 1}
    assert key_label(r, "ST-Net", True) == "ST-Net · resnet50 · seed 1"
    assert key_label(run["ridge@uni@reference"], "ridge", True) == "ridge · uni · reference"


def test_controls_run_on_every_encoder_under_the_run_protocol():
    run = expand_heads({"ridge": RIDGE}, ["a", "b"], "reference", ["mean", "shuffled", "ridge"])
    controls = {k: r for k, r in run.items() if r.control}
    assert sorted(controls) == sorted(f"control_{c}@{e}" for c in CONTROL_HEADS for e in "ab")
    shuffled = controls["control_shuffled@a"]
    assert shuffled.type == "ridge" and shuffled.config["shuffle_features"] is True
    assert shuffled.protocol == "reference" and controls["control_mean@b"].type == "mean"
    one = expand_heads({"ridge": RIDGE}, ["a"], "honest", ["mean"])
    assert "control_mean" in one  # one encoder: no suffix


def test_a_head_may_run_on_some_encoders_only():
    run = expand_heads(
        {"triplex": {"type": "triplex", "encoders": ["uni"]}, "ridge": RIDGE}, ["uni", "r50"], "honest", []
    )
    assert sorted(run) == ["ridge@r50", "ridge@uni", "triplex@uni"]
    with pytest.raises(ValueError, match=r"heads.triplex.encoders names \['conch'\]"):
        expand_heads({"triplex": {"type": "triplex", "encoders": ["conch"]}}, ["uni"], "honest", [])


def test_bad_names_are_errors_that_name_the_setting():
    with pytest.raises(ValueError, match="control_mean: the name is a control's"):
        expand_heads({"control_mean": RIDGE}, ["uni"], "honest", [])
    with pytest.raises(ValueError, match="unknown control 'median'"):
        expand_heads({}, ["uni"], "honest", ["median"])
    run = expand_heads({"ridge": {**RIDGE, "seeds": [1, 2]}}, ["uni"], "honest", ["mean"])
    # a head's name names all its run heads; a key names itself
    assert select_names(["ridge", "control_mean"], run, "predict.heads") == [
        "ridge@seed1",
        "ridge@seed2",
        "control_mean",
    ]
    with pytest.raises(ValueError, match="predict.heads names 'stnet'"):
        select_names(["stnet"], run, "predict.heads")
