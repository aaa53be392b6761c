"""The contract of a pipeline stage: one spec object built from the stage's config slice.

A stage's spec is a frozen dataclass whose fields are the settings of its config section (or of ``keys``,
the part of a section the stage reads). Defaults and allowed values live in the config schema only
(``genedml.pipeline.schema``); the spec adds what the settings mean in code (types, derived values,
checks that span several settings). The same slice reaches a stage in two generated forms: command-line
flags (``flags`` for a rule, ``add_arguments`` / ``from_args`` for the CLI) and a mapping
(``from_config``).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import ClassVar

from genedml.pipeline import schema


class StageSpec:
    """Base of every stage spec (subclasses are ``@dataclass(frozen=True)``)."""

    section: ClassVar[str]  # config path of the slice: "tiles", "data", "report", "$defs/heads/ridge"
    keys: ClassVar[tuple[str, ...] | None] = None  # the settings of ``section`` the stage reads (None: all)

    @classmethod
    def from_config(cls, values: dict | None = None):
        """The spec of a config slice: checked against the schema, defaults filled in."""
        return cls(**cls.convert(schema.with_defaults(cls.section, values, cls.keys)))

    @classmethod
    def of(cls, **values):
        """``from_config`` with keyword arguments: ``TileSpec.of(tile_px=224, neighbour_mode="grid")``."""
        return cls.from_config(values)

    @classmethod
    def convert(cls, values: dict) -> dict:
        """Config values -> field values (e.g. ``"native"`` -> None); identity unless a stage needs more."""
        return values

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        schema.add_arguments(parser, cls.section, cls.keys)

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        return cls.from_config(schema.args_slice(args, cls.section, cls.keys))

    @classmethod
    def flags(cls, values: dict | None) -> str:
        """The slice as the command-line flags of ``add_arguments`` (what a rule passes its stage)."""
        return schema.to_flags(values or {}, cls.section, cls.keys)

    @classmethod
    def setting_names(cls) -> list[str]:
        return schema.keys_of(cls.section, cls.keys)

    def to_config(self) -> dict:
        """The settings as config values (inverse of ``convert``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
