"""Prediction heads, selected by ``type`` in a head's config section."""

from __future__ import annotations

from genedml.heads.base import Head, Section
from genedml.heads.bleep import BLEEPHead
from genedml.heads.controls import MeanHead
from genedml.heads.dkan import DKANHead
from genedml.heads.gene_dml import GeneDMLHead
from genedml.heads.ridge import RidgeHead
from genedml.heads.stnet import STNetHead
from genedml.heads.triplex import TriplexHead

HEADS: dict[str, type[Head]] = {"ridge": RidgeHead, "stnet": STNetHead}
HEADS.update({"dkan": DKANHead, "bleep": BLEEPHead})
HEADS.update({"genedml": GeneDMLHead, "triplex": TriplexHead})
HEADS.update({"mean": MeanHead})  # the control floor (genedml.heads.controls)


def head_class(kind: str) -> type[Head]:
    if kind not in HEADS:
        raise ValueError(f"unknown head type {kind!r}; available: {', '.join(sorted(HEADS))}")
    return HEADS[kind]


__all__ = ["HEADS", "Head", "Section", "head_class"]
