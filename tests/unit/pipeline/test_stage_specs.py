"""The stage contracts: every stage's settings come from one schema, reach the stage in one generated form,
and mean the same thing whichever way they arrive (config mapping, rule flags, command line)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest
import yaml

from genedml.evaluation.ceiling import CeilingSpec
from genedml.evaluation.evaluate import EvaluateSpec
from genedml.evaluation.figures import SpatialFigureSpec
from genedml.evaluation.thumbnails import ThumbnailSpec
from genedml.io.demo import DemoSpec
from genedml.io.hest import SpotFilterSpec
from genedml.io.legacy_st import ImportSpec
from genedml.io.spaceranger import SpaceRangerSpec
from genedml.pipeline import schema
from genedml.pipeline.schema import ConfigError
from genedml.study.folds import FoldSpec
from genedml.study.gene_semantics import GeneSemanticsSpec
from genedml.study.genes import GeneSpec
from genedml.study.targets import TargetSpec
from genedml.tiles.encoders import EmbedRuntime, EncoderSpec
from genedml.tiles.geometry import TileSpec
from genedml.tiles.spot_images import SpotImageSpec
from support.workflow import REPO

SPECS = [
    SpaceRangerSpec,
    SpotFilterSpec,
    SpotImageSpec,
    DemoSpec,
    ImportSpec,
    TileSpec,
    EncoderSpec,
    EmbedRuntime,
    GeneSpec,
    TargetSpec,
    GeneSemanticsSpec,
    FoldSpec,
    EvaluateSpec,
    CeilingSpec,
    ThumbnailSpec,
    SpatialFigureSpec,
]
DEMO_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_spec_fields_are_the_schema_settings(spec):
    """A setting is added in the schema and the spec, nowhere else: the two must list the same names."""
    assert sorted(f.name for f in dataclasses.fields(spec)) == sorted(spec.setting_names())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_schema_declares_a_default_for_every_optional_setting(spec):
    node = schema.part(spec.section)
    required = set(node.get("required", []))
    for key in spec.setting_names():
        assert key in required or "default" in schema._resolve(node["properties"][key]), f"{spec.section}.{key}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.__name__)
def test_rule_flags_parse_back_to_the_same_spec(spec):
    """What a rule passes (flags generated from the config slice) is what the CLI reads."""
    values = DEMO_CONFIG.get(spec.section) or {}
    parser = argparse.ArgumentParser()
    spec.add_arguments(parser)
    args = parser.parse_args(shlex.split(spec.flags(values)))
    assert spec.from_args(args) == spec.from_config(values)


def test_flags_carry_lists_nulls_and_braces_through_a_shell():
    values = {"tile_px": 32, "grid_offset": [0.5, 0.25], "target_mpp": "native"}
    parser = argparse.ArgumentParser()
    TileSpec.add_arguments(parser)
    spec = TileSpec.from_args(parser.parse_args(shlex.split(TileSpec.flags(values))))
    assert spec.grid_offset == (0.5, 0.25) and spec.target_mpp is None and spec.tile_px == 32
    parser = argparse.ArgumentParser()
    FoldSpec.add_arguments(parser)
    assert FoldSpec.from_args(parser.parse_args(["--seed", "null"])).seed is None  # null is not "unset"
    parser = argparse.ArgumentParser()
    GeneSemanticsSpec.add_arguments(parser)
    args = parser.parse_args(shlex.split(GeneSemanticsSpec.flags({"template": "gene {symbol}"})))
    assert GeneSemanticsSpec.from_args(args).template == "gene {symbol}"


def test_defaults_come_from_the_schema_and_unset_flags_keep_them():
    parser = argparse.ArgumentParser()
    FoldSpec.add_arguments(parser)
    spec = FoldSpec.from_args(parser.parse_args([]))
    node = schema.part("folds")["properties"]
    assert spec.reference_set == node["reference_set"]["default"]
    assert spec == FoldSpec.from_config({})


@pytest.mark.parametrize(
    "spec, values, needle",
    [
        (TileSpec, {"neighbour_mode": "grd"}, "tiles.neighbour_mode"),
        (FoldSpec, {"reference_set": "2025"}, "folds.reference_set"),
        (GeneSpec, {"n_top": 0}, "genes.n_top"),
        (TileSpec, {"tile_pix": 64}, "tile_pix"),  # a typo is not silently ignored
    ],
)
def test_bad_values_name_the_setting(spec, values, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        spec.from_config(values)


def test_allowed_values_are_read_from_the_schema():
    assert schema.choices("folds.reference_set") == schema.part("folds")["properties"]["reference_set"]["enum"]
    assert "legacy" in schema.choices("folds.reference_set")


def test_encoder_identity_leaves_out_the_runtime_knobs():
    identity, knobs = schema.runtime_split("encoder")
    assert set(knobs) == {"batch_size", "num_workers", "device"}
    assert not set(EncoderSpec.setting_names()) & set(knobs)
    assert "--batch-size" not in EncoderSpec.flags({"name": "resnet18", "batch_size": 8})


def test_config_show_fills_every_default(tmp_path):
    text = schema.resolved_config([str(REPO / "config.yaml")])
    shown = yaml.safe_load(text)
    assert shown["folds"]["reference_set"] == "legacy" and shown["encoder"]["init_seed"] == 0
    assert shown["tiles"]["tile_px"] == DEMO_CONFIG["tiles"]["tile_px"]  # the config's own values win
    overlay = tmp_path / "o.yaml"
    overlay.write_text("tiles: {neighbour_mode: grid}\n")
    shown = yaml.safe_load(schema.resolved_config([str(REPO / "config.yaml"), str(overlay)]))
    assert shown["tiles"]["neighbour_mode"] == "grid" and shown["tiles"]["tile_px"] == DEMO_CONFIG["tiles"]["tile_px"]


def test_a_head_setting_typo_fails_when_the_run_starts_naming_the_head():
    from genedml.pipeline.plan import check_heads

    check_heads({"g": {"type": "genedml", "lambda_ig": 0.5, "report": {"label": "G"}}, "r": {"type": "ridge"}})
    with pytest.raises(ValueError, match=r"heads\.g: genedml: unknown setting\(s\) \['lamda_ig'\]"):
        check_heads({"g": {"type": "genedml", "lamda_ig": 0.5}})
    with pytest.raises(ValueError, match=r"heads\.d: dkan: unknown setting\(s\) \['dims'\]"):
        check_heads({"d": {"type": "dkan", "dims": 64}})
